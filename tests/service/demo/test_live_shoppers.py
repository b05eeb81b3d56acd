"""The demo's live shoppers: drawn and clicking as the simulator's world does (one click model,
one user draw), and one visit through the HTTP API, here against a stand-in transport."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from service.demo.live_shoppers import (
    VERDICT_CHARS,
    LiveShoppers,
    Tally,
    demo_products,
    finetune_rows,
    finetune_summary,
    shop_once,
)
from service.finetune.trigger import RoundRecord
from service.simulate.catalog import make_catalog
from service.simulate.scenario import DEVICES, Scenario, parse_scenario
from service.simulate.world import Shoppers, World
from streams.schemas import Variant, VariantPool

TEXTS = ("限时8折 羊毛围巾", "冬季暖心之选 送给家人", "爆款围巾 您值得拥有!")


def _scenario(**changes: Any) -> Scenario:
    base: dict[str, Any] = {
        "name": "live",
        "seed": 4,
        "decisions": 200,
        "products": 2,
        "base_ctr": 0.05,
        "segments": [
            {
                "name": "young",
                "weight": 1,
                "user": {"age": [18, 24], "gender": "f", "city_tier": 1},
                "trait_effects": {"discount": 1.5, "emotion": -0.5},
            },
            {"name": "any", "weight": 3, "trait_effects": {"emotion": 1.0}},
        ],
    }
    return parse_scenario({**base, **changes})


def test_click_probability_is_the_logistic_of_base_and_effects() -> None:
    sc = _scenario()
    base = math.log(0.05 / 0.95)
    assert sc.click_probability(0, ()) == pytest.approx(0.05)
    want = 1 / (1 + math.exp(-(base + 1.5 - 0.5)))
    assert sc.click_probability(0, ("discount", "emotion", "question")) == pytest.approx(want)
    assert sc.click_probability(1, ("discount",)) == pytest.approx(0.05)


def test_draw_user_is_fixed_per_shopper_and_keeps_the_segment_fields() -> None:
    sc = _scenario()
    user, device = sc.draw_user(0, 7, seed=1)
    assert sc.draw_user(0, 7, seed=1) == (user, device)
    assert user["user_id"] == "shopper-0-7" and device in DEVICES
    assert 18 <= int(user["age"]) <= 24  # type: ignore[call-overload]
    assert (user["gender"], user["city_tier"]) == ("f", 1)
    bare, _ = sc.draw_user(1, 7, seed=1, prefix="demo")
    assert bare == {"user_id": "demo-1-7"}  # a field the segment leaves out is not sent
    ages = {sc.draw_user(0, w, seed=1)[0]["age"] for w in range(40)}
    assert len(ages) > 1  # shoppers differ


def test_the_world_and_its_shoppers_use_the_scenario_models() -> None:
    sc = _scenario()
    products = make_catalog(2, "zh", 3)
    pools = [
        VariantPool(
            product_id=p.product_id,
            pool_version=1,
            generator_version="hand",
            variants=[
                Variant(variant_id=f"v{i}", text=t, language="zh", channel="ad_headline")
                for i, t in enumerate(TEXTS)
            ],
        )
        for p in products
    ]
    world = World.build(sc, products, pools)
    for s in range(len(sc.segments)):
        for j, shown in enumerate(world.shown_traits):
            for k, traits in enumerate(shown):
                assert world.prob[s, j, k] == sc.click_probability(s, traits)
    shoppers = Shoppers.draw(
        sc,
        world,
        hash_key=b"k",
        start=datetime(2026, 1, 1, tzinfo=UTC),
        step_s=1.0,
        population=5,
        seed=9,
    )
    for t in range(shoppers.n):
        who = int(str(shoppers.users[t]["user_id"]).rsplit("-", 1)[1])
        user, _ = sc.draw_user(int(shoppers.segment[t]), who, seed=9)
        assert shoppers.users[t] == user


def test_live_shoppers_arrive_as_the_scenario_draws_them() -> None:
    sc = _scenario()
    catalog = demo_products(sc)
    shoppers = LiveShoppers(sc, catalog, seed=2, population=3)
    seen = set()
    for _ in range(50):
        visit = shoppers.arrive()
        who = int(str(visit.user["user_id"]).rsplit("-", 1)[1])
        assert 0 <= who < 3 and visit.product in catalog
        user, device = sc.draw_user(visit.segment, who, seed=2, prefix="demo")
        assert (visit.user, visit.context) == (user, {"device": device})
        seen.add(visit.segment)
    assert seen == {0, 1}
    with pytest.raises(ValueError, match="population"):
        LiveShoppers(sc, catalog, seed=2, population=0)


def test_one_visit_ranks_reports_and_tallies_the_known_probabilities() -> None:
    sc = _scenario(
        base_ctr=0.9,  # clicks are likely
        segments=[
            {"name": "all", "weight": 1, "trait_effects": {"discount": 2.0, "emotion": -2.0}}
        ],
    )
    catalog = demo_products(sc)
    shoppers = LiveShoppers(sc, catalog, seed=0)
    for product in catalog:
        shoppers.learn_pool(product, list(TEXTS))
    posted: list[tuple[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        posted.append((request.url.path, body))
        if request.url.path == "/v1/rank":
            return httpx.Response(
                200,
                json={"event_id": str(uuid.uuid4()), "text": TEXTS[0], "policy_version": "p7"},
            )
        return httpx.Response(202, json={"accepted": len(body)})

    tally = Tally()
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://x") as client:
        for _ in range(20):
            shop_once(client, shoppers, tally)
    ranks = [b for path, b in posted if path == "/v1/rank"]
    reports = [b for path, b in posted if path == "/v1/feedback"]
    assert len(ranks) == len(reports) == tally.decisions == 20 and tally.errors == 0
    assert all(r["channel"] == sc.channel and "device" in r["context"] for r in ranks)
    assert all(r[0]["kind"] == "impression" for r in reports)
    assert tally.clicks == sum(len(r) == 2 for r in reports) and tally.clicks > 10
    assert tally.policy_version == "p7"
    probs = [sc.click_probability(0, shoppers.traits(catalog[0], t)) for t in TEXTS]
    figures = tally.recent_figures()
    assert figures.decisions == 20
    assert figures.bandit == pytest.approx(probs[0])  # it was always shown TEXTS[0]
    assert figures.uniform == pytest.approx(float(np.mean(probs)))
    assert figures.oracle == pytest.approx(max(probs))
    assert max(probs) > min(probs)  # the variants differ, so the two figures do


def test_tally_windows_and_summary_line() -> None:
    now = [0.0]
    tally = Tally(window=3, last_s=10.0, clock=lambda: now[0])
    for t, shown in [(0.0, 0.01), (5.0, 0.02), (12.0, 0.04), (14.0, 0.04)]:
        now[0] = t
        tally.add(False, shown, uniform_p=0.02, oracle_p=0.05)
        tally.policy_version = "bandit-7"
    assert tally.recent_figures().decisions == 3  # the window of decisions
    last = tally.last_figures()  # the decisions of the last 10 s: at 5, 12 and 14 s
    assert last.decisions == 3 and last.bandit == pytest.approx((0.02 + 0.04 + 0.04) / 3)
    assert last.x_oracle == pytest.approx(last.bandit / 0.05)
    assert last.x_uniform == pytest.approx(last.bandit / 0.02)
    line = tally.summary()
    assert re.fullmatch(SUMMARY, line), line
    assert "decisions 4" in line and "model bandit-7" in line


#: the demo's final line (tests/service/demo/test_demo.py reads it from the real demo too)
SUMMARY = (
    r"summary: bandit ×oracle \d+\.\d{3}  bandit ×uniform \d+\.\d{3}  \(last \d+ s: \d+ "
    r"decisions, expected CTR bandit [\d.]+, uniform [\d.]+, oracle [\d.]+\)  "
    r"decisions \d+  model \S+"
)


def test_a_refused_rank_counts_as_an_error() -> None:
    sc = _scenario()
    shoppers = LiveShoppers(sc, demo_products(sc), seed=0)
    tally = Tally()
    transport = httpx.MockTransport(lambda request: httpx.Response(503, json={}))
    with httpx.Client(transport=transport, base_url="http://x") as client:
        shop_once(client, shoppers, tally)
    assert (tally.errors, tally.decisions) == (1, 0)


def test_a_refreshed_pool_is_read_again_when_rank_answers_name_its_version() -> None:
    """After a fine-tune promotion the uniform and oracle figures follow the new copy."""
    sc = _scenario(segments=[{"name": "all", "weight": 1, "trait_effects": {"discount": 2.0}}])
    catalog = demo_products(sc)[:1]
    product = catalog[0]
    shoppers = LiveShoppers(sc, catalog, seed=0)
    old_view = {"pool_version": 1, "generator_version": "g1", "variants": [{"text": TEXTS[1]}]}
    shoppers.learn_view(product, old_view)
    served = {"version": 1}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/rank":
            body = {"event_id": str(uuid.uuid4()), "text": TEXTS[0], "policy_version": "p"}
            return httpx.Response(200, json=body | {"pool_version": served["version"]})
        if request.url.path.endswith("/variants"):
            texts = [{"text": t} for t in TEXTS[:2]]
            return httpx.Response(
                200, json={"pool_version": 2, "generator_version": "g2", "variants": texts}
            )
        return httpx.Response(202, json={"accepted": 1})

    tally = Tally()
    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://x") as client:
        shop_once(client, shoppers, tally)
        assert tally.pool_swaps == 0 and shoppers.versions[product.product_id] == 1
        served["version"] = 2
        shop_once(client, shoppers, tally)
        shop_once(client, shoppers, tally)
    assert tally.pool_swaps == 1 and shoppers.versions[product.product_id] == 2
    assert shoppers.generator_version == "g2"
    p_new = sc.click_probability(0, shoppers.traits(product, TEXTS[0]))
    p_old = sc.click_probability(0, shoppers.traits(product, TEXTS[1]))
    assert p_new != p_old  # so the oracle differs between the two pools
    oracles = [row[3] for row in tally.recent]
    assert oracles[0] == pytest.approx(p_old) and oracles[-1] == pytest.approx(max(p_new, p_old))


def _record(n: int, status: str, reason: str = "why", version: str | None = "v0001") -> RoundRecord:
    return RoundRecord(n, "2026-12-04T00:00:00+00:00", status, reason, version, f"g{n}", 12)


#: the demo's fine-tune rows (tests/service/demo/test_demo.py reads them from the real demo too)
ROUND_ROW = (
    r"(none yet \(one every \d+ joined rewards\)"
    r"|\d+ \((v\d{4}, \d+ examples|not trained); \d+ promoted so far\))"
)
VERDICT_ROW = r"(-|promoted|held back: .+|skipped: .+)"


def test_finetune_rows_show_the_last_round_its_verdict_and_the_generator() -> None:
    assert finetune_rows([], 0, "g0") == {"fine-tune": "off"}
    waiting = finetune_rows([], 3000, "bootstrap-1")
    assert waiting == {
        "fine-tune round": "none yet (one every 3000 joined rewards)",
        "fine-tune verdict": "-",
        "generator version": "bootstrap-1",
    }
    long_reason = "not promoted: pass_rate 0.750 vs 0.792; " * 10
    rounds = [_record(1, "promoted"), _record(2, "rejected", long_reason, "v0002")]
    rows = finetune_rows(rounds, 3000, "bootstrap-1")
    assert rows["fine-tune round"] == "2 (v0002, 12 examples; 1 promoted so far)"
    verdict = rows["fine-tune verdict"]
    assert verdict.startswith("held back: not promoted: pass_rate 0.750 vs 0.792")
    assert len(verdict) == VERDICT_CHARS and verdict.endswith("…")
    assert rows["generator version"] == "g2"  # what serves after the last round
    skipped = finetune_rows([_record(3, "skipped", "too few decisions", None)], 3000, "b")
    assert skipped["fine-tune round"] == "3 (not trained; 0 promoted so far)"
    assert skipped["fine-tune verdict"] == "skipped: too few decisions"
    for table in (waiting, rows, skipped):
        assert re.fullmatch(ROUND_ROW, table["fine-tune round"])
        assert re.fullmatch(VERDICT_ROW, table["fine-tune verdict"])
    assert finetune_rows([_record(1, "promoted")], 1, "b")["fine-tune verdict"] == "promoted"


def test_finetune_summary_counts_the_outcomes() -> None:
    assert finetune_summary([], 0) == "fine-tune: off"
    assert finetune_summary([], 50) == "fine-tune: no round yet (one every 50 joined rewards)"
    rounds = [_record(1, "promoted"), _record(2, "rejected"), _record(3, "skipped")]
    assert finetune_summary(rounds, 50) == (
        "fine-tune: 3 round(s), 1 promoted, 1 held back, 1 skipped; generator g3"
    )

"""The simulator's parts on hand-written pools: scenario validation (a table of malformed inputs,
each named by its field), the catalog, the known click probabilities, common random numbers, the
fixed policies, the summary's shape and the self-contained report."""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bandit.policy import Policy
from bandit.presets import DEFAULT_PRESET, preset
from generator.traits import detect_traits
from service.cli import app
from service.errors import ScenarioError
from service.simulate import policies
from service.simulate.catalog import make_catalog
from service.simulate.offpolicy import evaluate_off_policy, logistic_reward_model
from service.simulate.report import plot_ctr, plot_regret, write_report
from service.simulate.run import SimulationConfig, _finetune_skip
from service.simulate.scenario import load_scenario, parse_scenario, random_scenario
from service.simulate.summary import build_summary, rolling
from service.simulate.world import Shoppers, World
from streams.schemas import Product, Variant, VariantPool

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()

BASE: dict[str, Any] = {
    "name": "unit",
    "seed": 3,
    "decisions": 4000,
    "products": 2,
    "base_ctr": 0.05,
    "segments": [
        {
            "name": "young",
            "weight": 1.0,
            "user": {"age": [18, 24], "gender": "f", "city_tier": 1},
            "trait_effects": {"urgency": 1.5, "quality": -0.5},
        },
        {
            "name": "old",
            "weight": 3.0,
            "user": {"age": [50, 59], "gender": "m", "city_tier": 3},
            "trait_effects": {"quality": 1.2, "urgency": -0.8},
        },
    ],
}
TEXTS = [
    ["羊毛围巾 限时抢购", "羊毛围巾 品质之选", "羊毛围巾 温暖整个冬天"],
    ["保温杯 马上下单", "保温杯 精选用料", "保温杯 送给你", "保温杯 爆款热销"],
]


def _seg(**changes: Any) -> dict[str, Any]:
    return {"name": "a", "weight": 1, **changes}


def _scenario(**changes: Any) -> Any:
    return parse_scenario({**BASE, **changes})


def _pools(products: list[Product]) -> list[VariantPool]:
    pools = []
    for product, texts in zip(products, TEXTS, strict=True):
        variants = [
            Variant(
                variant_id=f"{product.product_id}-v{i}",
                text=t,
                language="zh",
                channel="ad_headline",
                traits=detect_traits(t, language="zh", channel="ad_headline", brand=product.brand),
            )
            for i, t in enumerate(texts)
        ]
        pools.append(
            VariantPool(
                product_id=product.product_id,
                pool_version=1,
                generator_version="hand",
                variants=variants,
            )
        )
    return pools


@pytest.fixture(scope="module")
def world() -> World:
    scenario = _scenario()
    products = make_catalog(2, "zh", 3)
    return World.build(scenario, products, _pools(products))


@pytest.fixture(scope="module")
def shoppers(world: World) -> Shoppers:
    return Shoppers.draw(
        _scenario(),
        world,
        hash_key=b"k",
        start=datetime(2026, 1, 8, tzinfo=UTC),
        step_s=1.0,
        population=50,
        seed=3,
    )


# -- scenario -----------------------------------------------------------------------------------
def test_standard_scenario_is_the_contract_example() -> None:
    s = load_scenario(REPO / "scenarios" / "standard.json")
    assert (s.decisions, s.products, s.base_ctr, s.pool_size) == (20000, 12, 0.03, 8)
    assert [seg.name for seg in s.segments] == ["young-f-t1", "older-m"]
    assert s.segments[0].user.age == (18, 29)
    assert s.weights == pytest.approx([0.4, 0.6])


def test_shipped_scenarios_load() -> None:
    files = sorted((REPO / "scenarios").glob("*.json"))
    assert len(files) >= 3
    names = {load_scenario(f).name for f in files}
    assert len(names) == len(files)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"decisions": 0}, "decisions"),
        ({"decisions": "many"}, "decisions"),
        ({"decisons": 10}, "decisons"),
        ({"base_ctr": 1.5}, "base_ctr"),
        ({"base_ctr": 0}, "base_ctr"),
        ({"products": 0}, "products"),
        ({"products": [{"product_id": "p1", "title": "x"}]}, "products.0.category"),
        ({"channel": "billboard"}, "channel"),
        ({"language": "fr"}, "language"),
        ({"pool_size": 1}, "pool_size"),
        ({"segments": []}, "segments"),
        ({"segments": [{"name": "a", "weight": -1}]}, "segments.0.weight"),
        ({"segments": [_seg(trait_effects={"loud": 1})]}, "segments.0.trait_effects"),
        ({"segments": [_seg(trait_effects={"price": 9})]}, "segments.0.trait_effects"),
        ({"segments": [_seg(user={"age": [40, 20]})]}, "segments.0.user.age"),
        ({"segments": [_seg(user={"gender": "q"})]}, "segments.0.user.gender"),
        ({"segments": [_seg(user={"city_tier": 9})]}, "segments.0.user.city_tier"),
        ({"segments": [_seg(user={"income": 9})]}, "segments.0.user.income"),
        ({"segments": [_seg(), _seg()]}, "segments"),
    ],
)  # fmt: skip
def test_malformed_scenario_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario({**BASE, **change})
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)


def test_scenario_products_must_match_its_language() -> None:
    products = [p.model_dump() for p in make_catalog(2, "en", 1)]
    with pytest.raises(ScenarioError, match=r"products\.0\.language"):
        parse_scenario({**BASE, "products": products, "language": "zh"})
    parsed = parse_scenario({**BASE, "products": products, "language": "en"}).products
    assert isinstance(parsed, list) and len(parsed) == 2


def test_scenario_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot be read"):
        load_scenario(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "decisions": }', encoding="utf-8")
    with pytest.raises(ScenarioError, match="line 2"):
        load_scenario(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ScenarioError, match="JSON object"):
        load_scenario(bad)


def test_cli_malformed_scenario_exits_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**BASE, "segments": [{"name": "a", "weight": 0}]}), "utf-8")
    result = runner.invoke(app, ["simulate", "--scenario", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "segments.0.weight" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "summary.json").exists()
    result = runner.invoke(
        app, ["simulate", "--scenario", str(path), "--out", str(tmp_path), "--transport", "x"]
    )
    assert result.exit_code == 2 and "transport" in result.output


def test_random_scenarios_are_seeded_and_tell_segments_apart() -> None:
    a, b = random_scenario(11), random_scenario(11)
    assert a == b
    assert random_scenario(12) != a
    for seed in range(30):
        s = random_scenario(seed)
        ages = [seg.user.age for seg in s.segments]
        assert all(age is not None for age in ages)
        spans = sorted(age for age in ages if age is not None)
        # disjoint age bands: every segment differs from the others in a feature the bandit sees
        assert all(hi < lo for (_, hi), (lo, _) in itertools.pairwise(spans))
        assert all(seg.trait_effects for seg in s.segments)


# -- catalog ------------------------------------------------------------------------------------
@pytest.mark.parametrize("language", ["zh", "en"])
def test_catalog(language: str) -> None:
    products = make_catalog(13, language, 5)  # type: ignore[arg-type]
    assert products == make_catalog(13, language, 5)  # type: ignore[arg-type]
    assert len({p.product_id for p in products}) == 13
    assert len({p.category for p in products}) >= 5
    assert all(p.language == language and p.brand in p.title for p in products)
    assert all(p.sale_price is None or p.sale_price <= p.price for p in products)
    assert any(p.sale_price is not None for p in products)
    with pytest.raises(ValueError, match="`n`"):
        make_catalog(0, "zh", 1)


# -- the world and the policies -----------------------------------------------------------------
def test_click_probability_follows_the_trait_effects(world: World) -> None:
    scenario = _scenario()
    logit = math.log(0.05 / 0.95)
    for s, seg in enumerate(scenario.segments):
        for j, traits in enumerate(world.shown_traits):
            for k, ts in enumerate(traits):
                z = logit + sum(seg.trait_effects.get(t, 0.0) for t in ts)
                assert world.prob[s, j, k] == pytest.approx(1 / (1 + math.exp(-z)))
    assert "urgency" in world.shown_traits[0][0] and "quality" in world.shown_traits[0][1]
    assert np.isnan(world.prob[0, 0, 3])  # the first pool holds 3 variants, the second 4


def test_shoppers_are_seeded_and_carry_no_segment(world: World, shoppers: Shoppers) -> None:
    again = Shoppers.draw(
        _scenario(), world, hash_key=b"k", start=datetime(2026, 1, 8, tzinfo=UTC),
        step_s=1.0, population=50, seed=3,
    )  # fmt: skip
    assert np.array_equal(again.u, shoppers.u) and again.event_ids == shoppers.event_ids
    assert np.mean(shoppers.segment == 1) == pytest.approx(0.75, abs=0.03)
    for t in range(50):
        ctx = shoppers.contexts[t]
        assert not any("young" in str(v) or "old" in str(v) for v in ctx.values())
        assert ctx["u_gender"] == ("f" if shoppers.segment[t] == 0 else "m")
        assert "shopper" not in str(ctx["u_id"])  # the id only as a keyed hash
    # a returning shopper keeps their age
    seen: dict[str, object] = {}
    for user in shoppers.users:
        assert seen.setdefault(str(user["user_id"]), user.get("age")) == user.get("age")


def test_common_random_numbers(world: World, shoppers: Shoppers) -> None:
    traces = {
        "uniform": policies.uniform(world, shoppers),
        "best_fixed": policies.best_fixed(world, shoppers, _scenario().weights),
        "oracle": policies.oracle(world, shoppers),
    }
    for trace in traces.values():
        assert np.array_equal(trace.click, shoppers.u < trace.prob)
    # the oracle shows the likeliest variant, so with the same u it clicks whenever others do
    for name in ("uniform", "best_fixed"):
        assert np.all(traces["oracle"].click >= traces[name].click)
        assert np.all(traces["oracle"].prob >= traces[name].prob - 1e-12)


def test_off_policy_log_has_its_own_click_draws(world: World, shoppers: Shoppers) -> None:
    shared = policies.uniform(world, shoppers)
    log = policies.uniform(world, shoppers, u=shoppers.u_log)
    assert np.array_equal(log.action, shared.action)  # the same shoppers and variants shown
    assert np.array_equal(log.click, shoppers.u_log < log.prob)
    assert abs(np.corrcoef(shoppers.u, shoppers.u_log)[0, 1]) < 0.05
    assert not np.array_equal(log.click, shared.click)


def test_fixed_policies(world: World, shoppers: Shoppers) -> None:
    weights = _scenario().weights
    uni = policies.uniform(world, shoppers)
    sizes = world.sizes[shoppers.product]
    assert np.allclose(uni.pscore, 1 / sizes)
    assert np.all(uni.action < sizes)
    for j in range(2):  # every variant is shown, about equally often
        counts = np.bincount(uni.action[shoppers.product == j])
        assert len(counts) == world.sizes[j] and counts.min() > 0.7 * counts.mean()
    best = policies.best_fixed(world, shoppers, weights)
    for j in range(2):
        chosen = set(best.action[shoppers.product == j].tolist())
        mix = [
            sum(w * world.prob[s, j, k] for s, w in enumerate(weights))
            for k in range(world.sizes[j])
        ]
        assert chosen == {int(np.argmax(mix))}
    orc = policies.oracle(world, shoppers)
    rows = world.prob[shoppers.segment, shoppers.product]
    assert np.allclose(orc.prob, np.nanmax(rows, axis=1))
    assert np.allclose(uni.expected, np.nanmean(rows, axis=1))
    young, old = shoppers.segment == 0, shoppers.segment == 1
    assert set(orc.action[young & (shoppers.product == 0)].tolist()) == {0}  # 限时抢购
    assert set(orc.action[old & (shoppers.product == 0)].tolist()) == {1}  # 品质之选


def test_bandit_learns_and_its_trace_is_consistent(world: World, shoppers: Shoppers) -> None:
    run = policies.run_bandit_inprocess(
        world, shoppers, config=preset(DEFAULT_PRESET), seed=3, channel="ad_headline"
    )
    tr = run.trace
    assert run.policy.learned == shoppers.n
    assert np.array_equal(tr.click, shoppers.u < tr.prob)
    assert np.all((tr.pscore > 0) & (tr.pscore <= 1))
    half = shoppers.n // 2
    uni = policies.uniform(world, shoppers).expected[half:].mean()
    orc = policies.oracle(world, shoppers).expected[half:].mean()
    # two segments that want opposite copy: only a policy that reads the shopper gets near
    assert tr.expected[half:].mean() > uni + 0.6 * (orc - uni)
    again = policies.run_bandit_inprocess(
        world, shoppers, config=preset(DEFAULT_PRESET), seed=3, channel="ad_headline"
    )
    assert np.array_equal(again.trace.action, tr.action)  # seeded: the same run twice


def test_reward_model_and_off_policy_on_the_uniform_log(world: World, shoppers: Shoppers) -> None:
    log = policies.uniform(world, shoppers)
    q = logistic_reward_model(world, shoppers, log)
    rows = np.nan_to_num(world.prob[shoppers.segment, shoppers.product])
    valid = ~np.isnan(world.prob[shoppers.segment, shoppers.product])
    assert np.all(q[~valid] == 0)
    assert np.corrcoef(q[valid], rows[valid])[0, 1] > 0.8  # it found the segments' tastes
    off = evaluate_off_policy(Policy(preset(DEFAULT_PRESET), 1), world, shoppers, log)
    # an untrained policy: every variant alike, so its value is the uniform one
    assert off.true_value == pytest.approx(float(log.expected.mean()), rel=1e-6)
    assert off.dr.ci.low <= off.true_value <= off.dr.ci.high
    assert off.ips.value == pytest.approx(float(log.click.mean()), rel=1e-6)


# -- summary and report -------------------------------------------------------------------------
def test_rolling_mean() -> None:
    x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    assert rolling(x, 2).tolist() == [1.0, 0.5, 0.5, 1.0, 0.5, 0.0]


def test_summary_and_report(world: World, shoppers: Shoppers, tmp_path: Path) -> None:
    scenario = _scenario()
    run = policies.run_bandit_inprocess(
        world, shoppers, config=preset(DEFAULT_PRESET), seed=3, channel="ad_headline"
    )
    traces = {
        "uniform": policies.uniform(world, shoppers),
        "best_fixed": policies.best_fixed(world, shoppers, scenario.weights),
        "bandit": run.trace,
        "oracle": policies.oracle(world, shoppers),
    }
    off = evaluate_off_policy(run.policy, world, shoppers, traces["uniform"])
    summary = build_summary(scenario, traces, off)
    assert summary["scenario"] == "unit" and summary["decisions"] == 4000
    assert set(summary["policies"]) == {"uniform", "best_fixed", "bandit", "oracle"}
    assert "bandit_finetune" not in summary["policies"]  # never faked
    assert summary["finetune_rounds"] == []
    # simulate() says why fine-tuning was left out; a scenario without rounds is one reason
    no_rounds = scenario.model_copy(update={"finetune_every": 0})
    why = _finetune_skip(no_rounds, SimulationConfig(), None)  # type: ignore[arg-type]
    assert why is not None and "finetune_every" in why
    for name, f in summary["policies"].items():
        assert f["decisions"] == 4000
        assert f["ctr"] == pytest.approx(traces[name].click.mean(), abs=1e-6)
        assert f["ci95"][0] <= f["ctr"] <= f["ci95"][1]
        assert f["ctr_last_half"] == pytest.approx(traces[name].click[2000:].mean(), abs=1e-6)
    assert set(summary["ope"]) >= {"target", "ips", "snips", "dr", "true_value", "dr_ci95"}
    assert summary["ope"]["target"] == "bandit"
    plots = [plot_ctr(traces, tmp_path / "ctr.png"), plot_regret(traces, tmp_path / "regret.png")]
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_report(summary, world, plots, tmp_path).read_text("utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"""(?:src|href)=["'](?!data:)""", page)  # nothing outside the file
    assert "羊毛围巾 限时抢购" in page and "DR" in page
    assert "Fine-tune rounds" not in page  # none ran

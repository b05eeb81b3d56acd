"""Pooling KTO rows across rounds (``RoundConfig.pool_rounds``): earlier rounds' rows reach the
training data, copy failing a guardrail today never does, the newest label wins, and a round
trains the base generator on the pooled rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generator import finetune as finetune_module
from generator.finetune import FinetuneConfig
from generator.sampling import variant_id
from generator.traits import detect_traits
from service.finetune import rounds
from service.finetune.registry import Registry
from service.finetune.rounds import RoundConfig, earlier_rows, run_round
from service.finetune.training_data import TrainingSet, build_training_data, pool_rows
from tests.service.finetune.finetune_world import PRODUCT, UNLAWFUL, world_log
from tests.service.finetune.test_finetune_refresh import _forced_promotion

RETIRED = f"{PRODUCT.title}，超值好物"  # copy of an earlier pool, no longer shown
OTHER = f"{PRODUCT.title}，今日上架"
WINNER = f"限时抢购{PRODUCT.title}"


def _row(text: str, label: bool, **extra: Any) -> dict[str, Any]:
    """An earlier round's KTO row as ``kto.jsonl`` holds it."""
    traits = detect_traits(text, language="zh", channel="ad_headline", brand=PRODUCT.brand)
    return {
        "prompt": "stale prompt",
        "completion": f" {text}",
        "label": label,
        "product_id": PRODUCT.product_id,
        "variant_id": variant_id(text, "zh", "ad_headline"),
        "text": text,
        "channel": "ad_headline",
        "language": "zh",
        "traits": traits,
        "segments": ["25-29|f"],
        **extra,
    }


def _current() -> TrainingSet:
    products, pools, log = world_log(4000)
    data = build_training_data(log, pools, products)
    assert isinstance(data, TrainingSet)
    return data


def test_rows_of_earlier_rounds_reach_the_training_data() -> None:
    data = _current()
    rows, counts = pool_rows(data, [[_row(RETIRED, True)], [_row(OTHER, False)]], [PRODUCT])
    assert rows[: len(data.kto)] == [dict(r, round_age=0) for r in data.kto]
    pooled = {r["text"]: r for r in rows[len(data.kto) :]}
    assert set(pooled) == {RETIRED, OTHER}
    assert pooled[RETIRED]["label"] is True and pooled[RETIRED]["round_age"] == 1
    assert pooled[OTHER]["label"] is False and pooled[OTHER]["round_age"] == 2
    # asked as this round's rows are: the prompt is written anew in the model's format
    assert pooled[RETIRED]["prompt"].startswith("<s><lang:zh><ch:ad_headline>")
    assert counts["pooled"] == 2 and counts["current"] == len(data.kto)


def test_a_guardrail_failing_row_never_becomes_desirable() -> None:
    data = _current()
    unlawful = _row(UNLAWFUL, True)  # clicked most, labelled desirable by an earlier round
    rows, counts = pool_rows(data, [[unlawful]], [PRODUCT])
    assert UNLAWFUL not in {r["text"] for r in rows}
    assert counts["guardrail"] == 1 and counts["pooled"] == 0
    assert not any(r["label"] and r["text"] == UNLAWFUL for r in rows)


def test_the_newest_label_wins_and_rows_judged_again_are_left_to_this_round() -> None:
    data = _current()
    assert any(r["text"] == WINNER and r["label"] for r in data.kto)
    newer, older = [_row(RETIRED, False)], [_row(RETIRED, True), _row(WINNER, False)]
    rows, counts = pool_rows(data, [newer, older], [PRODUCT])
    assert [r["label"] for r in rows if r["text"] == RETIRED] == [False]  # the newer round's
    assert [r["label"] for r in rows if r["text"] == WINNER] == [True]  # this round's
    assert counts["duplicate"] == 1 and counts["judged_again"] == 1


def test_an_unlabelled_rejudged_variant_keeps_its_earlier_row_only_when_asked() -> None:
    data = _current()
    plain = PRODUCT.title  # judged undesirable by this round; made unlabelled here
    unlabelled = replace(
        data,
        kto=[r for r in data.kto if r["text"] != plain],
        values=[
            replace(v, label=None) if v.variant_id == _row(plain, True)["variant_id"] else v
            for v in data.values
        ],
    )
    earlier = [[_row(plain, True)]]
    rows, counts = pool_rows(unlabelled, earlier, [PRODUCT])
    assert plain not in {r["text"] for r in rows} and counts["judged_again"] == 1
    rows, counts = pool_rows(unlabelled, earlier, [PRODUCT], keep_rejudged=True)
    assert [r["label"] for r in rows if r["text"] == plain] == [True]
    # a label of this round still overrules: the winner stays desirable
    rows, _ = pool_rows(data, [[_row(WINNER, False)]], [PRODUCT], keep_rejudged=True)
    assert [r["label"] for r in rows if r["text"] == WINNER] == [True]


def test_unreadable_rows_and_unknown_products_are_dropped() -> None:
    data = _current()
    old_format = {k: v for k, v in _row(RETIRED, True).items() if k != "channel"}
    gone = _row(OTHER, True, product_id="p-gone")
    rows, counts = pool_rows(data, [[old_format, gone]], [PRODUCT])
    assert len(rows) == len(data.kto)
    assert counts["unreadable"] == 1 and counts["product_unknown"] == 1


def _version(registry: Registry, rows: list[dict[str, Any]]) -> str:
    name, folder = registry.new_version()
    (folder / "data").mkdir()
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (folder / "data" / "kto.jsonl").write_text(text, encoding="utf-8")
    registry.record(name, {"version": name, "status": "rejected", "data": {"folder": "data"}})
    return name


def test_earlier_rows_are_the_last_rounds_newest_first(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    for text in (RETIRED, OTHER, WINNER):
        _version(registry, [_row(text, True)])
    registry.new_version()  # a round still running: no record yet
    got = earlier_rows(registry, 2)
    assert [[r["text"] for r in rows] for rows in got] == [[WINNER], [OTHER]]
    assert len(earlier_rows(registry, 10)) == 3


def test_pool_rounds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="pool_rounds"):
        RoundConfig(pool_rounds=-1)


def test_a_pooling_round_trains_the_base_on_all_rows(
    tmp_path: Path, tiny_slots_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    products, pools, log = world_log(4000)
    registry = Registry(tmp_path / "reg")
    _version(registry, [_row(RETIRED, True), _row(UNLAWFUL, True)])
    monkeypatch.setattr(rounds, "gate", _forced_promotion)
    seen: dict[str, Any] = {}

    def spy(parent: Path, rows: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        seen["parent"], seen["rows"] = parent, list(rows)
        return finetune_module.finetune(parent, rows, *args, **kwargs)

    monkeypatch.setattr(rounds, "finetune", spy)
    config = RoundConfig(
        train=FinetuneConfig(max_steps=1, batch_size=4, progress=False, device="cpu"),
        device="cpu",
        refresh=None,
        pool_rounds=3,
        pool_from_base=True,
    )
    result = run_round(log, pools, products, registry, tiny_slots_model, config)
    assert result.promoted and result.examples["pooled"] == 1
    assert seen["parent"] == tiny_slots_model
    texts = {r["text"]: r["label"] for r in seen["rows"]}
    assert texts[RETIRED] is True and UNLAWFUL not in texts
    meta = registry.get(result.version or "").metadata
    assert meta["data"]["pooling"]["guardrail"] == 1
    assert meta["trained_from"] == str(tiny_slots_model)
    # the version keeps only its own round's rows, so rounds never pool each other's pools
    own = (registry.get(result.version or "").path / "data" / "kto.jsonl").read_text("utf-8")
    assert RETIRED not in own

"""Training data from the log: propensity-corrected values, guardrails, too little evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.guardrails import check
from service.finetune.registry import Registry
from service.finetune.rounds import run_round
from service.finetune.training_data import (
    DataConfig,
    NotEnoughEvidence,
    TrainingSet,
    build_training_data,
)
from tests.service.finetune.finetune_world import PRODUCT, TEXTS, UNLAWFUL, world_log


def test_the_world_is_as_described() -> None:
    """The premise of the guardrail test: only the unlawful text fails the guardrails."""
    failing = [t for t in TEXTS if not check(t, PRODUCT, "ad_headline").passed]
    assert failing == [UNLAWFUL]


def test_a_clicked_variant_that_breaks_a_guardrail_is_never_an_example(tmp_path: Path) -> None:
    products, pools, log = world_log(4000)
    data = build_training_data(log, pools, products)
    assert isinstance(data, TrainingSet)
    unlawful = next(v for v in pools[0].variants if v.text == UNLAWFUL)
    value = next(v for v in data.values if v.variant_id == unlawful.variant_id)
    assert value.label == "desirable"  # the log alone would have taught it
    assert value.excluded is not None and "ad_law_absolute" in value.excluded
    assert unlawful.text not in {r["text"] for r in data.kto}
    assert unlawful.variant_id not in {r["chosen_id"] for r in data.dpo}
    assert unlawful.variant_id not in {r["rejected_id"] for r in data.dpo}
    # the lawful favourite (urgency) is desirable, the disliked one (emotion) undesirable
    labels = {r["text"]: r["label"] for r in data.kto}
    assert labels[f"限时抢购{PRODUCT.title}"] is True
    assert labels[f"温暖上新{PRODUCT.title}"] is False
    paths = data.write(tmp_path)
    written = paths["kto"].read_text(encoding="utf-8")
    assert UNLAWFUL not in written and paths["provenance"].is_file()


def test_rows_are_in_the_slot_format() -> None:
    products, pools, log = world_log(4000)
    data = build_training_data(log, pools, products)
    assert isinstance(data, TrainingSet)
    row = data.kto[0]
    assert row["prompt"].startswith("<s><lang:zh><ch:ad_headline>") and row["prompt"].endswith(
        "<copy>"
    )
    assert row["completion"].endswith("</s>") and "{" in row["completion"]  # facts as slots


def test_a_row_is_prompted_with_the_styles_its_text_carries() -> None:
    """The tuned model is asked with the sampler's wished styles, so it is trained on them."""
    products, pools, log = world_log(4000)
    data = build_training_data(log, pools, products)
    assert isinstance(data, TrainingSet)
    prompts = {r["text"]: r["prompt"] for r in data.kto}
    assert "<sty:urgency>" in prompts[f"限时抢购{PRODUCT.title}"]
    assert "<sty:emotion>" in prompts[f"温暖上新{PRODUCT.title}"]


def test_too_little_evidence_ends_the_round_without_training(tmp_path: Path) -> None:
    products, pools, log = world_log(60)
    data = build_training_data(log, pools, products)
    assert isinstance(data, NotEnoughEvidence)
    assert "fewer than the 200" in data.reason
    registry = Registry(tmp_path / "reg")
    result = run_round(log, pools, products, registry, tmp_path / "no-model-needed")
    assert result.status == "skipped" and result.version is None
    assert "fewer than" in result.reason and "train_s" not in result.timings
    assert registry.versions() == []


def test_no_confident_difference_is_not_enough_evidence() -> None:
    products, pools, log = world_log(400)
    data = build_training_data(log, pools, products, config=DataConfig(confidence=0.999999))
    assert isinstance(data, NotEnoughEvidence)
    assert "confidently" in data.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("confidence", 0.4), ("confidence", 1.0), ("min_joined", 0), ("alpha", 0.0)],
)
def test_bad_data_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        DataConfig(**{field: value})  # type: ignore[arg-type]

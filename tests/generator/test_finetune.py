"""Fine-tuning with TRL + LoRA on a tiny model built from a config (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generator.finetune import FinetuneConfig, FinetuneError, build_trainer, check_rows, finetune
from generator.model import CopyGenerator
from generator.prompts import Plan, control_prompt

PROMPT = control_prompt(Plan("zh", "ad_headline", "short", ("urgency",), ()))
KTO_ROWS = [
    {"prompt": PROMPT, "completion": "限时{name}</s>", "label": True},
    {"prompt": PROMPT, "completion": "{brand}{name}</s>", "label": False},
] * 3


def _adapter(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_a_training_step_changes_the_adapter(tiny_slots_model: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(max_steps=1, batch_size=4, progress=False, device="cpu")
    trainer = build_trainer(tiny_slots_model, KTO_ROWS, config, tmp_path)
    before = _adapter(trainer.model)
    frozen = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n
    }
    assert before
    trainer.train()
    after = _adapter(trainer.model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed
    base_after = dict(trainer.model.named_parameters())
    assert all(torch.equal(frozen[n], base_after[n]) for n in frozen)  # only the adapter learns


def test_the_merged_model_loads_with_its_prompt_format(
    tiny_slots_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "candidate"
    config = FinetuneConfig(max_steps=2, batch_size=4, progress=False, device="cpu")
    result = finetune(tiny_slots_model, KTO_ROWS, out, config, meta={"version": "v0001"})
    assert result.steps == 2 and result.device == "cpu"
    gen = CopyGenerator.from_path(out, device="cpu")
    assert gen.prompt_format == "slots-v1"
    meta = json.loads((out / "copyloop.json").read_text())
    assert meta["finetune"]["version"] == "v0001" and meta["finetune"]["config"]["seed"] == 0
    assert not (out / ".trainer").exists()
    assert not any("lora" in k for k in gen.model.state_dict())  # merged, not an adapter


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "at least one"),
        ([{"prompt": "p", "completion": "c"}], r"rows\[0\]` lacks \['label'\]"),
        ([{"prompt": "", "completion": "c", "label": True}], r"rows\[0\].prompt"),
        ([{"prompt": "p", "completion": "c", "label": 1}], r"rows\[0\].label"),
        ([{"prompt": "p", "completion": "c", "label": False}], "at least one desirable"),
    ],
)
def test_bad_rows_name_the_field(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(FinetuneError, match=message):
        check_rows(rows, "kto")


@pytest.mark.parametrize(
    ("field", "value"), [("batch_size", 1), ("max_steps", 0), ("learning_rate", 2.0), ("beta", 0.0)]
)
def test_bad_config_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        FinetuneConfig(**{field: value})  # type: ignore[arg-type]

"""Loading models from a folder, prompting them in their format, seeded sampling."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from generator.errors import ModelLoadError
from generator.guardrails import Checker
from generator.model import CopyGenerator, model_version, pick_device, read_format
from generator.prompts import Plan, available_slots, control_prompt
from generator.sampling import SamplingConfig, plan_candidates, sample_candidates
from generator.slots import slot_values
from streams.schemas import Product

SCARF = Product(
    product_id="scarf-1",
    title="羊毛围巾 冬季加厚",
    category="围巾",
    brand="暖阳",
    price=199,
    sale_price=159,
    attributes={"材质": "羊毛"},
)
PLAN = Plan("zh", "ad_headline", "mid", ("urgency", "discount"), available_slots(SCARF))


def test_slots_format_model_gets_control_prompts(tiny_slots_model: Path) -> None:
    gen = CopyGenerator.from_path(tiny_slots_model, device="cpu")
    assert gen.prompt_format == "slots-v1"
    prompt = gen.prompt(SCARF, PLAN)
    assert prompt == control_prompt(PLAN)
    assert prompt.startswith("<s><lang:zh><ch:ad_headline><len:mid><sty:discount><sty:urgency>")
    assert "<has:discount>" in prompt and "<has:material>" in prompt
    assert "<has:color>" not in prompt
    ids = gen.tokenizer(prompt, add_special_tokens=False).input_ids
    assert len(ids) == prompt.count("<")  # every control code is one token


def test_chat_model_gets_the_facts_through_its_template(tiny_chat_model: Path) -> None:
    gen = CopyGenerator.from_path(tiny_chat_model, device="cpu")
    assert gen.prompt_format == "instruction"
    prompt = gen.prompt(SCARF, PLAN)
    assert prompt.startswith("<|system|>") and prompt.endswith("<|assistant|>")
    for fact in ("羊毛围巾 冬季加厚", "暖阳", "159", "199", "Simplified Chinese", "30 characters"):
        assert fact in prompt
    assert "create urgency" in prompt and "state the discount" in prompt


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_slots_model: Path) -> None:
    gen = CopyGenerator.from_path(tiny_slots_model, device="cpu", batch_size=3)
    prompts = [control_prompt(PLAN)] * 5
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = gen.complete(prompts, max_new_tokens=12, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert a == gen.complete(prompts, max_new_tokens=12, seed=7)
    assert a != gen.complete(prompts, max_new_tokens=12, seed=8)
    assert len(a) == 5
    assert len({c.text for c in a}) > 1  # one seed, but each row samples its own text


def test_version_names_the_folder_and_changes_with_the_weights(
    tiny_slots_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "my-model"
    shutil.copytree(tiny_slots_model, copy)
    v = model_version(copy)
    assert v.startswith("my-model-") and len(v) == len("my-model-") + 10
    assert model_version(copy) == v
    assert model_version(tiny_slots_model).split("-")[-1] == v.split("-")[-1]
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert model_version(copy) != v


def test_bad_folders_and_devices_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        CopyGenerator.from_path(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="cannot load"):
        CopyGenerator.from_path(tmp_path, device="cpu")
    with pytest.raises(ModelLoadError, match="`device`"):
        pick_device("warp-drive")
    assert pick_device("cpu").type == "cpu"
    (tmp_path / "copyloop.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"copyloop\.json"):
        read_format(tmp_path)


def test_generation_arguments_are_validated(tiny_slots_model: Path) -> None:
    gen = CopyGenerator.from_path(tiny_slots_model, device="cpu")
    with pytest.raises(ValueError, match="`max_new_tokens`"):
        gen.complete(["<s>"], max_new_tokens=0, seed=0)
    with pytest.raises(ValueError, match="`temperature`"):
        gen.complete(["<s>"], max_new_tokens=1, seed=0, temperature=0)
    with pytest.raises(ValueError, match="`threads`"):
        CopyGenerator.from_path(tiny_slots_model, device="cpu", threads=0)


def test_chat_model_candidates_go_through_the_same_checks(tiny_chat_model: Path) -> None:
    gen = CopyGenerator.from_path(tiny_chat_model, device="cpu")
    plans = plan_candidates(SCARF, "ad_headline", "zh", 6, random.Random(0))
    checker = Checker(SCARF, "ad_headline")
    cands = sample_candidates(gen, SCARF, plans, checker, slot_values(SCARF), 0, SamplingConfig())
    assert [c.plan for c in cands] == plans
    for c in cands:
        if c.reason is not None:
            assert c.reason in {"unfinished", "unknown_slot", "empty"} and c.result is None
        else:
            assert c.text and c.result is not None
            assert c.result.passed == checker.check(c.text).passed

"""Training the bootstrap model: it learns, it is reproducible from the seed, and what it saves
loads as a Hugging Face causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from generator.bootstrap.train import TrainConfig, train
from generator.model import CopyGenerator

TINY = dict(
    examples=400,
    steps=40,
    batch_tokens=1024,
    vocab_size=800,
    hidden_size=32,
    layers=1,
    heads=2,
    intermediate_size=64,
    warmup=5,
    lr=1e-2,
)


def test_training_learns_and_saves_a_loadable_model(tmp_path: Path) -> None:
    result = train(TrainConfig(seed=1, **TINY), tmp_path / "m", progress=False)  # type: ignore[arg-type]
    assert result.final_loss < 0.7 * result.first_loss
    meta = json.loads((tmp_path / "m" / "copyloop.json").read_text())
    assert meta["format"] == "slots-v1"
    assert meta["train_config"]["seed"] == 1
    price_id = AutoTokenizer.from_pretrained(tmp_path / "m").convert_tokens_to_ids("{price}")
    assert isinstance(price_id, int) and price_id > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.num_parameters() == result.parameters
    assert CopyGenerator.from_path(tmp_path / "m", device="cpu").prompt_format == "slots-v1"


def test_same_seed_same_weights(tmp_path: Path) -> None:
    config = TrainConfig(seed=2, **{**TINY, "steps": 5})  # type: ignore[arg-type]
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    c = train(TrainConfig(seed=3, **{**TINY, "steps": 5}), tmp_path / "c", progress=False)  # type: ignore[arg-type]
    assert a.corpus_sha256 == b.corpus_sha256 != c.corpus_sha256
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any(wa[k].shape != wc[k].shape or not (wa[k] == wc[k]).all() for k in wa)
    tok_a = (tmp_path / "a" / "tokenizer.json").read_text()
    assert tok_a == (tmp_path / "b" / "tokenizer.json").read_text()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "`steps`"),
        ("heads", 3, "`hidden_size`"),
        ("lr", 2.0, "`lr`"),
        ("vocab_size", 300, "`vocab_size`"),
    ],
)
def test_config_is_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]

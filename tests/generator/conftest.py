"""Models for the generator tests: tiny ones built from a config (random weights), and the
shipped bootstrap checkpoint (trained by the project itself, in the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from generator.bootstrap.corpus import examples
from generator.bootstrap.tokenizer import train_tokenizer
from generator.model import BOOTSTRAP_MODEL, CopyGenerator

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_model_folder(out: Path, *, slots_format: bool, seed: int = 0) -> Path:
    """A 2-layer, 32-wide Llama with a BPE tokenizer trained on 300 corpus examples."""
    tok = train_tokenizer((e.copy for e in examples(300, seed=seed)), vocab_size=700)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    if slots_format:
        (out / "copyloop.json").write_text(json.dumps({"format": "slots-v1"}))
    else:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_slots_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-slots"), slots_format=True)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("tiny-chat"), slots_format=False)


@pytest.fixture(scope="session")
def bootstrap() -> CopyGenerator:
    if not (BOOTSTRAP_MODEL / "config.json").is_file():
        pytest.fail("the shipped bootstrap model is missing; run generator.bootstrap.train")
    return CopyGenerator.from_path(BOOTSTRAP_MODEL, device="cpu")

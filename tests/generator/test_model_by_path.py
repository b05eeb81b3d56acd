"""``copyloop generate --model PATH`` with a Hugging Face chat model built here from a config
(a Llama with Qwen2.5-Instruct's conventions: a ChatML template, and ``<|im_end|>`` ends a turn
as listed in ``generation_config.json``), saved to a folder and loaded by path, as a user brings
Qwen2.5-Instruct.

The model is tiny and its weights are set by hand so that it is a bigram chain: every
attention and MLP output is zero, so the next token depends only on the current one, and the
chain runs from the last token of the ChatML generation prompt (``<|im_start|>assistant\\n``)
through one line of copy to ``<|im_end|>``. It therefore writes that line only when the prompt
ends as the chat template ends it, and the line counts as finished only when the model's own
end-of-turn token (listed in ``generation_config.json``, not the tokenizer's) is honoured."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from typer.testing import CliRunner

from generator.bootstrap.corpus import examples
from generator.bootstrap.tokenizer import train_tokenizer
from generator.guardrails import RULE_NAMES
from generator.model import CopyGenerator, model_version
from generator.prompts import SYSTEM_PROMPT
from service.cli import app
from streams.schemas import Product

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "products"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: What the chain writes: lawful copy for the scarf example (its brand, material and price).
COPY = "暖阳羊毛围巾 限时¥159"
HIDDEN = 64


def _chain(tok: PreTrainedTokenizerBase) -> list[int]:
    """Token ids from the generation prompt's last token through the copy to ``<|im_end|>``."""
    start = tok("<|im_start|>assistant\n", add_special_tokens=False).input_ids[-1]
    copy = tok(COPY, add_special_tokens=False).input_ids
    chain = [start, *copy, tok.convert_tokens_to_ids("<|im_end|>")]
    assert tok.decode(copy) == COPY
    assert len(set(chain)) == len(chain) <= HIDDEN  # a bigram chain must not revisit a token
    return chain


def chat_model_folder(out: Path) -> Path:
    """Save a tiny ChatML chat model whose greedy and sampled answers are :data:`COPY`."""
    # a real model's vocabulary covers its language: here the corpus and the line it writes
    tok = train_tokenizer([*(e.copy for e in examples(300, seed=0)), COPY], vocab_size=700)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    chain = _chain(tok)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream keeps the token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (current, following) in enumerate(itertools.pairwise(chain)):
            model.model.embed_tokens.weight[current] = torch.nn.functional.one_hot(
                torch.tensor(i), HIDDEN
            ).float()
            model.lm_head.weight[following, i] = 20.0  # logit ~160 against 0 for the rest
    model.generation_config = GenerationConfig(
        eos_token_id=[chain[-1], tok.eos_token_id], pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_model_folder(tmp_path_factory.mktemp("qwen-like-chat"))


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every prompt the sampler hands the model during the test."""
    seen: list[str] = []
    complete = CopyGenerator.complete

    def spy(self: CopyGenerator, batch: Sequence[str], **kwargs: Any) -> Any:
        seen.extend(batch)
        return complete(self, batch, **kwargs)

    monkeypatch.setattr(CopyGenerator, "complete", spy)
    return seen


def _generate(model: Path, product: str, *extra: str) -> Any:
    args = ["generate", "--model", str(model), "--product", str(EXAMPLES / product)]
    return CliRunner().invoke(app, [*args, "--device", "cpu", "--seed", "1", *extra])


def test_generate_by_path_uses_the_chat_template(chat_model: Path, prompts: list[str]) -> None:
    result = _generate(chat_model, "scarf-zh.json", "-n", "2", "--channel", "push")
    assert result.exit_code == 0, result.output
    product = Product.model_validate_json((EXAMPLES / "scarf-zh.json").read_text())
    assert prompts, "the model was never asked"
    for prompt in prompts:
        assert prompt.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
        assert "<|im_start|>user\nWrite a push notification in Simplified Chinese" in prompt
        assert product.title in prompt and '"sale_price": 159' in prompt
        assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    # every candidate is the same line, so near-duplicates leave one variant of the two asked
    assert len(rows) == 1
    (row,) = rows
    assert set(row) == {"variant_id", "text", "language", "channel", "traits", "checks"}
    assert row["text"] == COPY
    assert (row["language"], row["channel"]) == ("zh", "push")
    assert {"brand", "price", "urgency"} <= set(row["traits"])
    assert row["checks"] == {"passed": True, "violations": [], "rules": list(RULE_NAMES)}
    assert f"generator {model_version(chat_model)}" in result.stderr
    assert model_version(chat_model).startswith("qwen-like-chat")
    assert "only 1 of 2 variants passed" in result.stderr


def test_copy_that_fails_every_check_ends_with_a_message(
    chat_model: Path, prompts: list[str]
) -> None:
    # the same line for the tea: wool, a brand and a price the tea does not have
    result = _generate(chat_model, "tea-zh.json", "-n", "3")
    assert result.exit_code == 2
    assert "for tea-002 passed the guardrails" in result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert prompts and all(p.endswith("<|im_start|>assistant\n") for p in prompts)


def test_a_folder_without_a_model_is_named(tmp_path: Path) -> None:
    result = _generate(tmp_path, "scarf-zh.json")
    assert result.exit_code == 2
    assert f"`model` {tmp_path} is not a model folder (no config.json)" in result.output

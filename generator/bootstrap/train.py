"""Train the bootstrap model: corpus -> tokenizer -> a tiny Llama-style causal LM, saved as a
Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer files, ``copyloop.json``).

    python -m generator.bootstrap.train --seed 0 --out generator/bootstrap_model

The same seed gives the same corpus, tokenizer and initial weights; training runs on CPU in a few
minutes with a progress bar."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from generator.bootstrap.corpus import Example, examples
from generator.bootstrap.tokenizer import train_tokenizer
from generator.prompts import COPY

FORMAT = "slots-v1"
META_FILE = "copyloop.json"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = field(default=0, metadata={"help": "seeds the corpus, the weights and the order"})
    examples: int = field(default=40000, metadata={"help": "synthetic examples in the corpus"})
    steps: int = field(default=800, metadata={"help": "optimizer steps"})
    batch_tokens: int = field(default=1536, metadata={"help": "tokens per batch (padded)"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (cosine decay)"})
    warmup: int = field(default=50, metadata={"help": "linear warm-up steps"})
    vocab_size: int = field(default=2000, metadata={"help": "BPE vocabulary incl. 256 bytes"})
    hidden_size: int = field(default=160, metadata={"help": "model width"})
    layers: int = field(default=3, metadata={"help": "transformer blocks"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=448, metadata={"help": "MLP width"})
    max_positions: int = field(default=256, metadata={"help": "longest sequence"})
    threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (1: deterministic, and fastest on a busy machine)"},
    )

    def __post_init__(self) -> None:
        for name in ("examples", "steps", "batch_tokens", "vocab_size", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `heads` ({self.heads})"
            )
        if not 0 < self.lr < 1:
            raise ValueError(f"`lr` must be in (0, 1), got {self.lr}")
        if self.vocab_size <= 512:
            raise ValueError(
                f"`vocab_size` must be > 512 (256 bytes are reserved), got {self.vocab_size}"
            )


@dataclass(frozen=True)
class TrainResult:
    out: Path
    parameters: int
    first_loss: float
    final_loss: float
    seconds: float
    corpus_sha256: str


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(llama)


def _encode(
    corpus: list[Example], tokenizer: PreTrainedTokenizerFast, max_len: int
) -> list[tuple[list[int], int]]:
    """Token ids of each example and where its answer starts (the prompt is not learned)."""
    copy_id = tokenizer.convert_tokens_to_ids(COPY)
    ids = tokenizer([e.text() for e in corpus], add_special_tokens=False)["input_ids"]
    out = []
    for seq in ids:
        if len(seq) > max_len:
            continue
        out.append((seq, seq.index(copy_id) + 1))
    return out


def _batches(
    encoded: list[tuple[list[int], int]], batch_tokens: int, rng: random.Random
) -> list[list[int]]:
    """Indices grouped by similar length, so that padding stays small."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = len(encoded[i][0])
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def _tensors(
    encoded: list[tuple[list[int], int]], batch: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(encoded[i][0]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, i in enumerate(batch):
        seq, start = encoded[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, start : len(seq)] = torch.tensor(seq[start:])
    return ids, mask, labels


def corpus_digest(corpus: list[Example]) -> str:
    h = hashlib.sha256()
    for e in corpus:
        h.update(e.text().encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def train(config: TrainConfig, out: Path, *, progress: bool = True) -> TrainResult:
    """Build the corpus, the tokenizer and the model; train; save everything under ``out``."""
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    corpus = list(examples(config.examples, seed=config.seed))
    tokenizer = train_tokenizer((e.copy for e in corpus), vocab_size=config.vocab_size)
    model = build_model(config, tokenizer)
    encoded = _encode(corpus, tokenizer, config.max_positions)
    rng = random.Random(config.seed)  # noqa: S311 (seeded data, not secrets)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    batches: list[list[int]] = []
    losses: list[float] = []
    columns = (
        TextColumn("training bootstrap model"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=config.steps, loss=float("nan"))
        for step in range(config.steps):
            if not batches:
                batches = _batches(encoded, config.batch_tokens, rng)
            ids, mask, labels = _tensors(encoded, batches.pop(), tokenizer.pad_token_id)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
            bar.update(task, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
    tail = max(1, min(50, config.steps // 5))  # the loss at the end, smoothed over a few steps
    result = TrainResult(
        out=out,
        parameters=sum(p.numel() for p in model.parameters()),
        first_loss=losses[0],
        final_loss=sum(losses[-tail:]) / tail,
        seconds=time.perf_counter() - started,
        corpus_sha256=corpus_digest(corpus),
    )
    save(model, tokenizer, out, config, result)
    return result


def save(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    out: Path,
    config: TrainConfig,
    result: TrainResult,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    # half precision halves the shipped file; loading upcasts to float32 on CPU
    model.half().save_pretrained(out)
    model.float()
    tokenizer.save_pretrained(out)
    meta = {
        "format": FORMAT,
        "train_config": asdict(config),
        "parameters": result.parameters,
        "first_loss": round(result.first_loss, 4),
        "final_loss": round(result.final_loss, 4),
        "train_seconds": round(result.seconds, 1),
        "corpus_sha256": result.corpus_sha256,
        "torch": torch.__version__,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def cli(
    out: Annotated[Path, typer.Option(help="folder to write the model into")],
    seed: Annotated[int, typer.Option(help="seeds the corpus, the weights and the order")] = 0,
    steps: Annotated[int, typer.Option(help="optimizer steps")] = TrainConfig.steps,
    n_examples: Annotated[
        int, typer.Option("--examples", help="synthetic examples in the corpus")
    ] = TrainConfig.examples,
) -> None:
    """Train the bootstrap copy model and save it as a Hugging Face folder."""
    try:
        config = TrainConfig(seed=seed, steps=steps, examples=n_examples)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = train(config, out)
    typer.echo(
        json.dumps(
            {
                "out": str(result.out),
                "parameters": result.parameters,
                "first_loss": round(result.first_loss, 4),
                "final_loss": round(result.final_loss, 4),
                "seconds": round(result.seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    typer.run(cli)

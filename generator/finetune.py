"""Fine-tune the copy model on preference data with TRL and a LoRA adapter, then merge the adapter
and save a complete model folder that ``CopyGenerator.from_path`` loads.

KTO (``{prompt, completion, label}``) suits click / no-click evidence, which is unpaired; DPO
(``{prompt, chosen, rejected}``) is used when the data holds confident pairs. Both run through
TRL's trainers, never a hand-written loop: on CPU in float32 for the bootstrap model, on CUDA in
bf16 when a GPU is present. The saved folder keeps the parent's ``copyloop.json`` (its prompt
format), so the candidate is prompted exactly as the model it came from."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PrinterCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from generator.errors import GeneratorError, ModelLoadError
from generator.model import META_FILE

Method = Literal["kto", "dpo"]
#: the projections of a Llama-style block; the LM head is left alone (TRL reads its weight)
LLAMA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
_KTO_KEYS = frozenset({"prompt", "completion", "label"})
_DPO_KEYS = frozenset({"prompt", "chosen", "rejected"})


class FinetuneError(GeneratorError):
    """Training data or settings that cannot be trained on; the message names the field."""


@dataclass(frozen=True)
class FinetuneConfig:
    """How one adapter is trained (defaults fit the bootstrap model on a CPU in seconds)."""

    method: Method = field(default="kto", metadata={"help": "kto (unpaired) or dpo (pairs)"})
    seed: int = field(default=0, metadata={"help": "seeds the adapter's init and the data order"})
    max_steps: int = field(default=40, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "examples per step (KTO needs >= 2)"})
    learning_rate: float = field(
        # with 40 steps, measured on the bootstrap model (docs/experiments/2026-finetune-
        # rounds.md): weaker training left its copy as it was, stronger broke it
        default=5e-4,
        metadata={"help": "AdamW learning rate"},
    )
    beta: float = field(default=0.1, metadata={"help": "KL pull toward the parent model"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale numerator"})
    target_modules: tuple[str, ...] = field(
        default=LLAMA_TARGETS, metadata={"help": "module names that get an adapter"}
    )
    max_length: int = field(default=256, metadata={"help": "longest tokenised example"})
    device: str | None = field(default=None, metadata={"help": "default: cuda if present"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    free_prompt_share: float = field(
        # 0: asked as the untrained model is (planned styles); the bootstrap model asked with
        # no wished style writes plain copy and, once tuned, fails the guardrails more often
        default=0.0,
        metadata={
            "help": "share of a pool's candidates the tuned model is asked for with no wished "
            "style (written to copyloop.json)"
        },
    )

    def __post_init__(self) -> None:
        if self.method not in ("kto", "dpo"):
            raise ValueError(f"`method` must be kto or dpo, got {self.method!r}")
        if not 0.0 <= self.free_prompt_share <= 1.0:
            raise ValueError(f"`free_prompt_share` must be in [0, 1], got {self.free_prompt_share}")
        for name in ("max_steps", "lora_r", "lora_alpha", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:  # KTO's KL term pairs each example with a neighbour's
            raise ValueError(f"`batch_size` must be >= 2, got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"`learning_rate` must be in (0, 1), got {self.learning_rate}")
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}")
        if not self.target_modules:
            raise ValueError("`target_modules` must name at least one module")


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    method: Method
    examples: int
    steps: int
    seconds: float
    device: str
    dtype: str
    final_loss: float | None
    trainable_parameters: int


def check_rows(rows: Sequence[Mapping[str, object]], method: Method) -> list[dict[str, object]]:
    """The rows as TRL reads them; a row without the method's keys is an error naming it."""
    keys = _KTO_KEYS if method == "kto" else _DPO_KEYS
    if not rows:
        raise FinetuneError("`rows` must hold at least one example")
    out = []
    for i, row in enumerate(rows):
        missing = sorted(keys - set(row))
        if missing:
            raise FinetuneError(f"`rows[{i}]` lacks {missing} for {method}")
        for key in sorted(keys - {"label"}):
            if not isinstance(row[key], str) or not row[key]:
                raise FinetuneError(f"`rows[{i}].{key}` must be a non-empty string")
        if method == "kto" and not isinstance(row["label"], bool):
            raise FinetuneError(f"`rows[{i}].label` must be true or false")
        out.append({k: row[k] for k in keys})
    if method == "kto" and not any(r["label"] for r in out):
        # KTO takes unpaired rows, one kind alone included; only undesirable rows would teach
        # the model what not to write and nothing to write instead
        raise FinetuneError("`rows` must hold at least one desirable example for kto")
    return out


class RichProgress(TrainerCallback):
    """A rich progress bar over the trainer's steps, with the latest loss."""

    def __init__(self, description: str, *, enabled: bool = True) -> None:
        self.description = description
        self.enabled = enabled
        self._bar: Progress | None = None
        self._task: Any = None
        self.loss = float("nan")

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._bar = Progress(
            TextColumn(self.description),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.enabled,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=state.max_steps, loss=self.loss)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step, loss=self.loss)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """TRL, transformers and datasets log and draw bars of their own; the round shows one bar."""
    import datasets
    import transformers

    names = ("transformers", "trl", "datasets", "peft", "accelerate")
    levels = {n: logging.getLogger(n).level for n in names}
    bars = datasets.utils.logging.is_progress_bar_enabled()
    hf_bars = transformers.utils.logging.is_progress_bar_enabled()
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # renamed-argument notices from inside TRL's own config, nothing a caller can act on
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        if bars:
            datasets.utils.logging.enable_progress_bar()
        if hf_bars:
            transformers.utils.logging.enable_progress_bar()


def _device(config: FinetuneConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_parent(
    model_dir: Path, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model to adapt: bf16 on CUDA, float32 elsewhere (CPU half precision is slow and
    loses the small LoRA updates)."""
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"`model` {model_dir} is not a model folder (no config.json)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load a causal LM from {model_dir}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return cast(PreTrainedModel, cast(Any, model).to(device)), tokenizer


def build_trainer(
    model_dir: Path,
    rows: Sequence[Mapping[str, object]],
    config: FinetuneConfig,
    work_dir: Path,
    *,
    callbacks: Sequence[TrainerCallback] = (),
) -> Any:
    """A TRL trainer (``KTOTrainer`` or ``DPOTrainer``) over a fresh LoRA adapter on the model
    at ``model_dir``; ``trainer.train()`` runs it. ``work_dir`` takes the trainer's scratch."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    data = check_rows(rows, config.method)
    device = _device(config)
    model, tokenizer = load_parent(model_dir, device)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    common: dict[str, Any] = {
        "output_dir": str(work_dir),
        "seed": config.seed,
        "data_seed": config.seed,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": min(config.batch_size, max(2, len(data))),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "beta": config.beta,
        "max_length": config.max_length,
        "bf16": device.type == "cuda",
        "use_cpu": device.type == "cpu",
        "gradient_checkpointing": False,  # tiny models: recomputing costs more than it saves
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    dataset = Dataset.from_list(data)
    # the two trainers take the same arguments; only the config class and the loss differ
    pick: tuple[Any, Any] = (
        (KTOTrainer, KTOConfig) if config.method == "kto" else (DPOTrainer, DPOConfig)
    )
    trainer_cls, config_cls = pick
    trainer: Any = trainer_cls(
        model=model,
        args=config_cls(**common),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log line; the bar shows the loss
    return trainer


def finetune(
    model_dir: Path,
    rows: Sequence[Mapping[str, object]],
    out: Path,
    config: FinetuneConfig | None = None,
    *,
    meta: Mapping[str, object] | None = None,
) -> FinetuneResult:
    """Train an adapter on ``rows``, merge it into the weights and save a complete model folder
    at ``out`` (weights, tokenizer, ``copyloop.json`` with the parent's prompt format plus
    ``meta``)."""
    config = config or FinetuneConfig()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".trainer"
    # no download, no telemetry: every model here is a local folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with quiet_libraries():
        bar = RichProgress(f"fine-tuning ({config.method})", enabled=config.progress)
        trainer = build_trainer(model_dir, rows, config, work, callbacks=[bar])
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    _write_meta(model_dir, out, config, meta)
    _remove_tree(work)
    device = _device(config)
    return FinetuneResult(
        out=out,
        method=config.method,
        examples=len(rows),
        steps=int(trainer.state.global_step),
        seconds=time.perf_counter() - started,
        device=device.type,
        dtype="bfloat16" if device.type == "cuda" else "float32",
        final_loss=losses[-1] if losses else None,
        trainable_parameters=trainable,
    )


def _write_meta(
    parent: Path, out: Path, config: FinetuneConfig, meta: Mapping[str, object] | None
) -> None:
    """The parent's ``copyloop.json`` (its prompt format above all) with the fine-tune's record."""
    data: dict[str, Any] = {}
    src = parent / META_FILE
    if src.is_file():
        try:
            data = json.loads(src.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelLoadError(f"{src} is not valid JSON: {exc}") from exc
    data["free_prompt_share"] = config.free_prompt_share
    data["finetune"] = {
        "parent": str(parent),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "torch": torch.__version__,
        **dict(meta or {}),
    }
    (out / META_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

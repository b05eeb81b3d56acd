"""Loading a causal LM (any Hugging Face folder) and sampling completions from it.

The model's prompt format comes from its folder: ``copyloop.json`` with ``"format": "slots-v1"``
marks the bootstrap model; everything else is prompted in plain words (``generator.prompts``),
through its chat template when the tokenizer has one. ``version`` is a stable id of the weights
(folder name + content hash), so that pools and announcements say which model wrote them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from generator.errors import ModelLoadError
from generator.interface import Completion
from generator.prompts import Plan, PromptFormat, chat_messages, completion_prompt, control_prompt
from streams.schemas import Product

META_FILE = "copyloop.json"
#: The model trained by ``generator.bootstrap.train`` and shipped with the package.
BOOTSTRAP_MODEL = Path(__file__).resolve().parent / "bootstrap_model"
SMALL_MODEL_PARAMETERS = 50_000_000
_HASH_WHOLE_BELOW = 512 * 1024 * 1024  # bigger weight files are hashed by their ends and size
_WEIGHTS = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json")


def default_model_path(cache_dir: Path | None = None) -> Path:
    """The shipped bootstrap model; if a build left it out, one trained on first use (a few
    minutes, with a progress bar) and cached under ``cache_dir``."""
    if (BOOTSTRAP_MODEL / "config.json").is_file():
        return BOOTSTRAP_MODEL
    cached = (cache_dir or Path.home() / ".cache" / "copyloop") / "bootstrap_model"
    if not (cached / "config.json").is_file():
        from generator.bootstrap.train import TrainConfig, train

        train(TrainConfig(), cached)
    return cached


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else the GPU when there is one, else the CPU."""
    if device:
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ModelLoadError(f"`device` {device!r} is not a torch device: {exc}") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_version(path: Path) -> str:
    """``<folder>-<10 hex>``: the same weights give the same id wherever the folder lies."""
    h = hashlib.sha256()
    files = sorted({f for pattern in _WEIGHTS for f in path.glob(pattern) if f.is_file()})
    for f in files:
        h.update(f.name.encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with f.open("rb") as fh:
            if size <= _HASH_WHOLE_BELOW:
                h.update(fh.read())
            else:
                h.update(fh.read(16 << 20))
                fh.seek(-(16 << 20), 2)
                h.update(fh.read())
    name = re.sub(r"[^A-Za-z0-9._\-]", "-", path.name)[:100] or "model"
    return f"{name}-{h.hexdigest()[:10]}"


def _read_meta(path: Path) -> dict[str, Any]:
    """The folder's ``copyloop.json`` (empty when it has none)."""
    meta = path / META_FILE
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{meta} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{meta} must hold a JSON object")
    return data


def read_format(path: Path) -> PromptFormat:
    return "slots-v1" if _read_meta(path).get("format") == "slots-v1" else "instruction"


def read_free_share(path: Path) -> float:
    """``copyloop.json``'s ``free_prompt_share`` (0 when absent)."""
    share = _read_meta(path).get("free_prompt_share", 0.0)
    if not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        raise ModelLoadError(f"{path / META_FILE}: `free_prompt_share` must be a number in [0, 1]")
    return float(share)


class CopyGenerator:
    """A causal LM that writes copy (a :class:`generator.interface.CopyModel`). Load one with
    :meth:`from_path`; ``generator.sampling.generate`` turns it into pools."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        version: str,
        prompt_format: PromptFormat,
        device: torch.device,
        batch_size: int | None = None,
        free_prompt_share: float = 0.0,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        if not 0.0 <= free_prompt_share <= 1.0:
            raise ValueError(f"`free_prompt_share` must be in [0, 1], got {free_prompt_share}")
        #: the share of a pool's candidates asked for with no wished style, so that the model
        #: chooses the style itself: 0 for a model trained on wishes, more once fine-tuning
        #: taught it which copy sells (``copyloop.json``'s ``free_prompt_share``)
        self.free_prompt_share = free_prompt_share
        self.model = model
        self.tokenizer = tokenizer
        self.version = version
        self.prompt_format: PromptFormat = prompt_format
        self.device = device
        self.batch_size = batch_size or (128 if device.type == "cuda" else 32)
        tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_path(
        cls,
        path: str | Path | None = None,
        device: str | None = None,
        *,
        dtype: torch.dtype | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> CopyGenerator:
        """Load a model folder (default: the shipped bootstrap model).

        ``threads`` sets torch's CPU threads for the process; by default a small model on CPU
        gets one, because its matrices are too small to share out and extra threads only spin
        when the cores are busy (measured: 6x slower with 2 threads on a loaded 2-core box)."""
        folder = Path(path) if path is not None else default_model_path()
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"`model` {folder} is not a model folder (no config.json)")
        dev = pick_device(device)
        if dtype is None:  # half precision on accelerators; float32 on CPU, where it is faster
            dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load a causal LM from {folder}: {exc}") from exc
        cast(torch.nn.Module, model).to(dev).eval()
        if threads is not None:
            if threads < 1:
                raise ValueError(f"`threads` must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        elif dev.type == "cpu" and model.num_parameters() < SMALL_MODEL_PARAMETERS:
            torch.set_num_threads(1)
        return cls(
            model,
            tokenizer,
            version=model_version(folder),
            prompt_format=read_format(folder),
            device=dev,
            batch_size=batch_size,
            free_prompt_share=read_free_share(folder),
        )

    # -- prompts ----------------------------------------------------------------------------
    def prompt(self, product: Product, plan: Plan) -> str:
        if self.prompt_format == "slots-v1":
            return control_prompt(plan)
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template(
                chat_messages(product, plan), tokenize=False, add_generation_prompt=True
            )
            return str(rendered)
        return completion_prompt(product, plan)

    # -- sampling ---------------------------------------------------------------------------
    def vocabulary(self) -> Collection[str]:
        return self.tokenizer.get_vocab().keys()

    @torch.inference_mode()
    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        seed: int,
        temperature: float = 1.0,
        top_p: float = 0.95,
        suppress: Sequence[str] = (),
    ) -> list[Completion]:
        """Sample one completion per prompt, in batches. The same seed gives the same texts
        (on the same device); the global torch RNG is left as it was. Tokens in ``suppress``
        (whole tokens of the vocabulary, such as slots this product cannot fill) are never
        sampled."""
        if max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens}")
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}")
        devices = [self.device] if self.device.type == "cuda" else []
        vocab = self.tokenizer.get_vocab()
        banned = sorted({vocab[t] for t in suppress if t in vocab})
        out: list[Completion] = []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), self.batch_size):
                out.extend(
                    self._batch(
                        prompts[start : start + self.batch_size],
                        max_new_tokens,
                        temperature,
                        top_p,
                        banned,
                    )
                )
        return out

    def _batch(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        banned: list[int],
    ) -> list[Completion]:
        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        eos = self.eos_ids()
        kwargs: dict[str, Any] = {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": 0,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(eos),
        }
        if banned:
            kwargs["suppress_tokens"] = banned
        ids = cast(Any, self.model).generate(**enc, **kwargs)  # (batch, prompt + new)
        new = ids[:, enc["input_ids"].shape[1] :]
        ends = torch.tensor(sorted(eos), device=new.device)
        return [
            Completion(
                text=str(tok.decode(row, skip_special_tokens=True)),
                finished=bool(torch.isin(row, ends).any()),
            )
            for row in new
        ]

    def eos_ids(self) -> set[int]:
        """The tokenizer's end token and any the model's generation config adds (chat models
        often end a turn with their own token, e.g. ``<|im_end|>``)."""
        ids: set[int] = set()
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (self.tokenizer.eos_token_id, configured):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

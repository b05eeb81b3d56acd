"""What the sampler needs from a language model, and nothing more: a prompt for a plan, a batch of
seeded completions, and the tokens it could suppress. ``generator.model.CopyGenerator`` is one
such model; a test double or a served model can be another, without the sampler importing torch
or the model class (and without an import cycle between the two)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from generator.prompts import Plan, PromptFormat
from streams.schemas import Product


@dataclass(frozen=True)
class Completion:
    text: str
    finished: bool  # ended with the end-of-sequence token (not cut at the token limit)


class CopyModel(Protocol):
    """A causal LM as ``generator.sampling`` uses it."""

    @property
    def version(self) -> str:
        """A stable id of the weights, stamped on every pool the model writes."""
        ...

    @property
    def prompt_format(self) -> PromptFormat:
        """``slots-v1`` (control codes, copy in slot form) or ``instruction`` (plain words)."""
        ...

    def prompt(self, product: Product, plan: Plan) -> str: ...

    def vocabulary(self) -> Collection[str]:
        """Every whole token the model can sample (for ``suppress``)."""
        ...

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
        """One completion per prompt; the same seed gives the same texts."""
        ...

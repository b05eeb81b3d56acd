"""One exception root for the copy side; foreign errors (transformers, torch, OSError) are wrapped
and kept as ``__cause__``."""

from __future__ import annotations


class GeneratorError(Exception):
    """Root of the errors raised by ``generator``."""


class ModelLoadError(GeneratorError):
    """A model folder could not be loaded (missing, not a causal LM, or unreadable)."""


class SlotError(GeneratorError):
    """A generated text names a slot that the product cannot fill."""


class NoVariantsError(GeneratorError):
    """Not one candidate passed the guardrails, so there is no pool to publish."""

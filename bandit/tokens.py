"""Feature tokens: the names every scoring model gives an encoded context's entries and a
variant's features (``age=18-24``, ``t=urgency``, ``lang=zh``), and the namespace each belongs to.

One spelling for all models, so VW's text lines and the batch-refit model's weights name the
same thing (and a refit snapshot's vocabulary stays readable across versions). Pure strings:
nothing here knows a model's own format."""

from __future__ import annotations

import math
from collections.abc import Mapping

from streams.schemas import ActionFeatures, FeatureValue

#: Namespace of each encoded-context key prefix (see ``bandit.features``); other keys go to C.
USER_NS = "U"
CONTEXT_NS = "C"
ACTION_NS = "A"

# VW's text format splits on whitespace, '|' starts a namespace and ':' a value; tokens never
# hold them, whichever model reads them
_ESCAPE = str.maketrans({" ": "_", "\t": "_", "\n": "_", "\r": "_", "|": "/", ":": ";"})


def escape(text: str) -> str:
    return text.translate(_ESCAPE)


def value_tokens(name: str, value: FeatureValue) -> list[str]:
    """The tokens of one feature: ``name=value`` (one per element of a list), ``name:x`` for a
    float, which is a magnitude (bucketed values arrive as strings or ints)."""
    if isinstance(value, bool):
        return [f"{name}={'1' if value else '0'}"]
    if isinstance(value, float):
        return [f"{name}:{value:.6g}" if math.isfinite(value) else f"{name}=nan"]
    if isinstance(value, list):
        return [f"{name}={escape(str(v))}" for v in value] or [f"{name}=none"]
    return [f"{name}={escape(str(value))}"]


def context_tokens(key: str, value: FeatureValue) -> tuple[str, list[str]]:
    """``(namespace, tokens)`` of one encoded-context entry (``u_`` → U, ``c_`` or none → C)."""
    name = escape(key)
    if name.startswith("u_"):
        return USER_NS, value_tokens(name[2:], value)
    if name.startswith("c_"):
        return CONTEXT_NS, value_tokens(name[2:], value)
    return CONTEXT_NS, value_tokens(name, value)


def action_tokens(features: ActionFeatures, variant_id: str | None = None) -> list[str]:
    """``t=urgency ... lang=zh len=short gv=... [id=...]`` for one action."""
    parts = [f"t={escape(t)}" for t in features.traits]
    parts.append(f"lang={features.language}")
    parts.append(f"len={escape(features.length_bucket)}")
    parts.append(f"gv={escape(features.generator_version)}")
    if variant_id is not None:
        parts.append(f"id={escape(variant_id)}")
    return parts


def by_namespace(context: Mapping[str, FeatureValue]) -> dict[str, list[str]]:
    """Every token of an encoded context, per namespace, in the context's order."""
    out: dict[str, list[str]] = {USER_NS: [], CONTEXT_NS: []}
    for key, value in context.items():
        ns, tokens = context_tokens(key, value)
        out[ns] += tokens
    return out

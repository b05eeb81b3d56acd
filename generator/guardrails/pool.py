"""Rules about the copy as a published item rather than as claims: ``length_limit`` (the channel
limits of CONTRACT.md §5), ``near_duplicate`` (a pool's arms must be real alternatives) and
``ai_label`` (every variant is flagged as generated, and no copy pretends to be human-written).

Basis: the contract for the first two; 《人工智能生成合成内容标识办法》(2025) for the label."""

from __future__ import annotations

import re
from collections.abc import Iterator

from generator.guardrails.base import Context, Rule, Violation, squeeze
from streams.schemas import CHANNEL_LIMITS

LENGTH = "length_limit"
NEAR_DUPLICATE = "near_duplicate"
AI_LABEL = "ai_label"

#: Jaccard similarity of character bigrams (zh) or trigrams (en) at or above which two texts are
#: the same arm twice: `限时8折！羊毛围巾` vs `限时8折 羊毛围巾～` is 1.0, a changed hook is ~0.5.
NEAR_DUPLICATE_THRESHOLD = 0.8
_HUMAN_CLAIM = re.compile(
    r"人工撰写|纯人工|真人手写|真人撰写|非ai|不是ai|\bwritten by (?:a )?(?:human|person|people)\b|"
    r"\bhuman[- ]written\b|\bnot (?:written by )?ai\b|\bno ai\b",
    re.IGNORECASE,
)


def shingles(text: str, size: int) -> frozenset[str]:
    s = squeeze(text)
    if len(s) <= size:
        return frozenset({s})
    return frozenset(s[i : i + size] for i in range(len(s) - size + 1))


def similarity(a: str, b: str, *, language: str = "zh") -> float:
    """Jaccard similarity of the squeezed texts' character n-grams, in [0, 1]."""
    size = 2 if language == "zh" else 3
    sa, sb = shingles(a, size), shingles(b, size)
    if not sa or not sb:
        return 1.0 if sa == sb else 0.0
    return len(sa & sb) / len(sa | sb)


def find_length(ctx: Context) -> Iterator[Violation]:
    limit = CHANNEL_LIMITS[ctx.channel][ctx.language]
    n = len(ctx.text)
    if not ctx.text.strip():
        yield Violation(LENGTH, (0, n), "the text is empty")
    elif n > limit:
        yield Violation(
            LENGTH, (limit, n), f"{n} characters; {ctx.channel} allows {limit} in {ctx.language}"
        )


def find_near_duplicate(ctx: Context) -> Iterator[Violation]:
    for i, other in enumerate(ctx.others):
        sim = similarity(ctx.text, other, language=ctx.language)
        if sim >= NEAR_DUPLICATE_THRESHOLD:
            yield Violation(
                NEAR_DUPLICATE,
                None,
                f"{sim:.2f} similar to pool text #{i}: `{other[:40]}`",
            )
            return


def find_ai_label(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    for m in _HUMAN_CLAIM.finditer(plain.text):
        yield Violation(
            AI_LABEL, plain.span(*m.span()), f"`{m.group(0)}` denies that the copy is generated"
        )


LENGTH_RULE = Rule(LENGTH, "CONTRACT.md §5 channel limits", find_length)
NEAR_DUPLICATE_RULE = Rule(NEAR_DUPLICATE, "a pool's arms must differ", find_near_duplicate)
AI_LABEL_RULE = Rule(AI_LABEL, "《人工智能生成合成内容标识办法》(2025)", find_ai_label)

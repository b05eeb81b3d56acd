"""The synthetic corpus: (plan, copy in slot form) pairs composed from the phrase banks.

A text is the product's mention plus one hook per wished style, then attribute sentences and
neutral fillers until it reaches a length drawn from the wished bucket; the length token of the
prompt is the bucket the composed text actually falls in, so the model learns what it sees."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from generator.bootstrap.phrases import ATTRIBUTES, FILLERS, HOOKS, MENTIONS, SLOT_LENGTHS, TAGS
from generator.prompts import STYLES, Length, Plan, length_bucket, training_text
from generator.slots import OPTIONAL_SLOTS, SALE_SLOTS, SLOT_RE
from streams.schemas import CHANNEL_LIMITS, CHANNELS, LANGUAGES, Channel, Language

CHANNEL_WEIGHTS: dict[Channel, float] = {
    "ad_headline": 0.35,
    "push": 0.2,
    "product_desc": 0.25,
    "social": 0.2,
}
_SHORT_CHANNELS = frozenset({"ad_headline", "push"})
_HEADLINE_SEPARATORS = {"zh": ("｜", " ", "，", "·"), "en": (" | ", " - ", ". ", ", ")}


@dataclass(frozen=True)
class Example:
    plan: Plan
    copy: str  # slot form

    def text(self) -> str:
        return training_text(self.plan, self.copy)


def estimated_length(copy: str, language: Language) -> int:
    """Characters once the slots are filled with values of typical length."""
    lengths = SLOT_LENGTHS[language]
    return len(SLOT_RE.sub(lambda m: "x" * lengths.get(m.group(1), 4), copy))


def _usable(phrases: tuple[str, ...], slots: frozenset[str]) -> list[str]:
    return [p for p in phrases if all(s in slots for s in SLOT_RE.findall(p))]


def _join(rng: random.Random, pieces: list[str], language: Language, channel: Channel) -> str:
    """Headlines and pushes: pieces in a row with one separator. Longer copy: sentences of one
    to three clauses."""
    space = "" if language == "zh" else " "
    if channel in _SHORT_CHANNELS:
        sep = rng.choice(_HEADLINE_SEPARATORS[language])
        out = pieces[0]
        for p in pieces[1:]:
            out += (space + p) if out[-1] in "？！?!，," else sep + p
        return out
    comma, stop = ("，", "。") if language == "zh" else (", ", ".")
    sentences: list[str] = []
    clauses: list[str] = []
    for i, p in enumerate(pieces):
        clauses.append(p)
        last = i == len(pieces) - 1
        # English pieces are capitalised phrases, so each stands as its own sentence
        if last or language == "en" or p[-1] in "？！?!" or len(clauses) >= 3 or rng.random() < 0.5:
            sentence = comma.join(clauses)
            sentences.append(sentence if sentence[-1] in "？！?!" else sentence + stop)
            clauses = []
    return space.join(sentences)


def compose(rng: random.Random, plan: Plan, target: int) -> str:
    """Copy in slot form for ``plan``, about ``target`` characters long (never over the limit)."""
    lang, channel = plan.language, plan.channel
    slots = frozenset(("brand", "name", "price", *plan.slots))
    with_brand = "brand" in plan.styles and rng.random() < 0.6
    mention = rng.choice(MENTIONS[lang]["brand" if with_brand else "plain"])
    limit = CHANNEL_LIMITS[channel][lang]
    tight = target < limit / 3
    hooks = []
    for style in plan.styles:
        if style == "brand" and with_brand:
            continue
        options = sorted(_usable(HOOKS[lang][style], slots), key=len)
        if tight:  # a short text needs short hooks
            options = options[: max(1, len(options) // 2)]
        hooks.append(rng.choice(options))
    pieces = [*hooks]
    pieces.insert(rng.randrange(len(pieces) + 1), mention)
    extras = [rng.choice(ATTRIBUTES[lang][s]) for s in plan.slots if s in ATTRIBUTES[lang]]
    extras += rng.sample(FILLERS[lang], k=len(FILLERS[lang]))
    for style in plan.styles:  # long copy may say the same thing twice, in other words
        extras += rng.sample(_usable(HOOKS[lang][style], slots), k=1)
    rng.shuffle(extras)
    text = _join(rng, pieces, lang, channel)
    for extra in extras:
        if estimated_length(text, lang) >= target:
            break
        at = rng.randrange(1, len(pieces) + 1)
        longer = _join(rng, [*pieces[:at], extra, *pieces[at:]], lang, channel)
        if estimated_length(longer, lang) > 0.9 * limit:
            break
        pieces.insert(at, extra)
        text = longer
    if channel == "social" and rng.random() < 0.5:
        tagged = f"{text} {rng.choice(TAGS[lang])}"
        if estimated_length(tagged, lang) <= 0.9 * limit:
            text = tagged
    return text


def sample_plan(rng: random.Random) -> tuple[Plan, int]:
    """A random wish and a target length for it."""
    language: Language = rng.choice(LANGUAGES)
    channel: Channel = rng.choices(CHANNELS, weights=[CHANNEL_WEIGHTS[c] for c in CHANNELS])[0]
    on_sale = rng.random() < 0.5
    slots = tuple(
        s
        for s in OPTIONAL_SLOTS
        if (s in SALE_SLOTS and on_sale) or (s not in SALE_SLOTS and rng.random() < 0.35)
    )
    choices = [s for s in STYLES if on_sale or s != "discount"]
    k = rng.choices((1, 2, 3), weights=(0.35, 0.45, 0.2))[0]
    styles = tuple(rng.sample(choices, k=k))
    limit = CHANNEL_LIMITS[channel][language]
    want: Length = rng.choice(("short", "mid", "long"))
    lo, hi = {"short": (0.15, 0.33), "mid": (0.34, 0.66), "long": (0.67, 0.9)}[want]
    target = int(limit * rng.uniform(lo, hi))
    return Plan(language, channel, want, styles, slots), target


def examples(n: int, *, seed: int) -> Iterator[Example]:
    """``n`` examples, the same for the same seed."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    rng = random.Random(seed)  # noqa: S311 (seeded data, not secrets)
    for _ in range(n):
        plan, target = sample_plan(rng)
        copy = compose(rng, plan, target)
        actual = length_bucket(estimated_length(copy, plan.language), plan.language, plan.channel)
        yield Example(
            Plan(plan.language, plan.channel, actual, plan.styles, plan.slots),
            copy,
        )

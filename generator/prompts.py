"""The prompt formats, in one place, for generation and for any training of the same model.

Two formats:

* ``slots-v1`` — the bootstrap model's control codes: one token each for the language, channel,
  length, wished styles and the optional slots this product can fill, then ``<copy>``; the model
  answers with copy in slot form (``限时{discount}｜{brand}{name}``) and ``</s>``.
  :func:`training_text` is the same prompt followed by the answer, which is all that training on
  new copy (preference data included) needs.
* ``instruction`` — any other causal LM: the product's facts and the wish in plain words, through
  the tokenizer's chat template when it has one (instruction-tuned models), else as a completion
  prompt ending in ``Copy:``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from generator.slots import OPTIONAL_SLOTS, SLOTS, slot_values, unfill
from streams.schemas import CHANNEL_LIMITS, CHANNELS, LANGUAGES, TRAITS, Channel, Language, Product

PromptFormat = Literal["slots-v1", "instruction"]
Length = Literal["short", "mid", "long"]
LENGTHS: tuple[Length, ...] = ("short", "mid", "long")
#: Traits a prompt can ask for (length is asked for separately).
STYLES: tuple[str, ...] = tuple(t for t in TRAITS if t not in ("short", "long"))

BOS, EOS, PAD, COPY = "<s>", "</s>", "<pad>", "<copy>"
LANG_TOKENS = {lang: f"<lang:{lang}>" for lang in LANGUAGES}
CHANNEL_TOKENS = {ch: f"<ch:{ch}>" for ch in CHANNELS}
LENGTH_TOKENS = {n: f"<len:{n}>" for n in LENGTHS}
STYLE_TOKENS = {s: f"<sty:{s}>" for s in STYLES}
HAS_TOKENS = {s: f"<has:{s}>" for s in OPTIONAL_SLOTS}
#: Tokens of the control format that must never be split (special: dropped when decoding).
CONTROL_TOKENS: tuple[str, ...] = (
    PAD,
    BOS,
    EOS,
    COPY,
    *LANG_TOKENS.values(),
    *CHANNEL_TOKENS.values(),
    *LENGTH_TOKENS.values(),
    *STYLE_TOKENS.values(),
    *HAS_TOKENS.values(),
)
#: Slot tokens: kept when decoding, filled from the product afterwards.
SLOT_TOKENS: tuple[str, ...] = tuple(f"{{{s}}}" for s in SLOTS)

STYLE_HINTS: dict[str, str] = {
    "price": "state the price",
    "discount": "state the discount",
    "urgency": "create urgency (limited time)",
    "festive": "tie it to the season or a festival",
    "quality": "stress quality and craftsmanship",
    "emotion": "speak to feelings",
    "social_proof": "say that it is popular",
    "second_person": "address the shopper as you",
    "question": "ask a question",
    "exclaim": "use an exclamation",
    "brand": "name the brand",
}
_CHANNEL_WORDS = {
    "ad_headline": "an ad headline",
    "product_desc": "a product description",
    "push": "a push notification",
    "social": "a social media post",
}


@dataclass(frozen=True)
class Plan:
    """What one candidate should be: the wish that a prompt carries."""

    language: Language
    channel: Channel
    length: Length
    styles: tuple[str, ...]
    slots: tuple[str, ...] = ()  # optional slots the product can fill

    def __post_init__(self) -> None:
        if self.language not in LANG_TOKENS:
            raise ValueError(f"`language` must be one of {LANGUAGES}, got {self.language!r}")
        if self.channel not in CHANNEL_TOKENS:
            raise ValueError(f"`channel` must be one of {CHANNELS}, got {self.channel!r}")
        if self.length not in LENGTHS:
            raise ValueError(f"`length` must be one of {LENGTHS}, got {self.length!r}")
        bad = [s for s in self.styles if s not in STYLE_TOKENS]
        if bad:
            raise ValueError(f"`styles` must be among {STYLES}, got {bad}")
        bad = [s for s in self.slots if s not in HAS_TOKENS]
        if bad:
            raise ValueError(f"`slots` must be among {OPTIONAL_SLOTS}, got {bad}")


def available_slots(product: Product, language: Language | None = None) -> tuple[str, ...]:
    values = slot_values(product, language)
    return tuple(s for s in OPTIONAL_SLOTS if s in values)


def control_prompt(plan: Plan) -> str:
    """The ``slots-v1`` prompt (ends with ``<copy>``; the answer follows)."""
    return "".join(
        [
            BOS,
            LANG_TOKENS[plan.language],
            CHANNEL_TOKENS[plan.channel],
            LENGTH_TOKENS[plan.length],
            *(STYLE_TOKENS[s] for s in STYLES if s in plan.styles),
            *(HAS_TOKENS[s] for s in OPTIONAL_SLOTS if s in plan.slots),
            COPY,
        ]
    )


def training_text(plan: Plan, copy_in_slots: str) -> str:
    """One training sequence of the ``slots-v1`` format."""
    return f"{control_prompt(plan)}{copy_in_slots}{EOS}"


def length_bucket(length: int, language: Language, channel: Channel) -> Length:
    """``short`` under a third of the channel limit, ``long`` over two thirds (as the traits)."""
    limit = CHANNEL_LIMITS[channel][language]
    if length < limit / 3:
        return "short"
    if length > 2 * limit / 3:
        return "long"
    return "mid"


def plan_for(product: Product, channel: Channel, text: str, traits: Sequence[str]) -> Plan:
    """The wish that ``text`` (with its detected ``traits``) answers, for this product."""
    language = product.language
    return Plan(
        language,
        channel,
        length_bucket(len(text), language, channel),
        tuple(s for s in STYLES if s in traits),
        available_slots(product, language),
    )


def training_example(product: Product, channel: Channel, text: str, traits: Sequence[str]) -> str:
    """Shown copy as a ``slots-v1`` training sequence: its plan as the prompt, the text with the
    product's facts put back into slots as the answer (so the model keeps writing slots)."""
    copy = unfill(text, slot_values(product, product.language))
    return training_text(plan_for(product, channel, text, traits), copy)


def facts_block(product: Product) -> str:
    facts: dict[str, object] = {
        "title": product.title,
        "brand": product.brand,
        "category": product.category,
        "price": product.price,
        "currency": product.currency,
    }
    if product.sale_price is not None:
        facts["sale_price"] = product.sale_price
    if product.attributes:
        facts["attributes"] = dict(product.attributes)
    return json.dumps(facts, ensure_ascii=False)


def instruction(product: Product, plan: Plan) -> str:
    """The wish in plain words, for instruction-following models."""
    limit = CHANNEL_LIMITS[plan.channel][plan.language]
    lang = "Simplified Chinese" if plan.language == "zh" else "English"
    hints = "; ".join(STYLE_HINTS[s] for s in STYLES if s in plan.styles) or "plain and clear"
    return (
        f"Write {_CHANNEL_WORDS[plan.channel]} in {lang} for this product, at most {limit} "
        f"characters ({plan.length} for this channel). Style: {hints}.\n"
        f"Product facts: {facts_block(product)}\n"
        "Use only these facts: no other brand, no price, discount or attribute that is not "
        "listed, no absolute terms (best, No.1, 最佳, 第一, 顶级), no medical or health claims. "
        "Answer with the copy only, on one line."
    )


SYSTEM_PROMPT = "You write truthful, lawful e-commerce marketing copy."


def chat_messages(product: Product, plan: Plan) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instruction(product, plan)},
    ]


def completion_prompt(product: Product, plan: Plan) -> str:
    """For base models without a chat template."""
    return f"{SYSTEM_PROMPT}\n{instruction(product, plan)}\nCopy:"

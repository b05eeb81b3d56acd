"""Guardrails: named rules that every candidate passes before it may join a pool, and that
``copyloop check`` runs on any text.

>>> check("限时8折 羊毛围巾仅需¥400", product, "ad_headline").passed  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from generator.errors import GeneratorError
from generator.guardrails import (
    ad_law,
    evidence,
    facts,
    festivals,
    fluency,
    medical,
    personal,
    pool,
    prices,
)
from generator.guardrails.base import (
    CheckResult,
    Context,
    Facts,
    GuardrailConfig,
    Rule,
    Violation,
)
from generator.guardrails.pool import NEAR_DUPLICATE_THRESHOLD, similarity
from streams.schemas import CHANNEL_LIMITS, Channel, Language, Product, VariantPool

RULES: tuple[Rule, ...] = (
    ad_law.RULE,
    prices.RULE,
    facts.BRAND_RULE,
    facts.ATTRIBUTE_RULE,
    evidence.RULE,
    festivals.RULE,
    medical.RULE,
    personal.RULE,
    pool.LENGTH_RULE,
    pool.NEAR_DUPLICATE_RULE,
    pool.AI_LABEL_RULE,
    fluency.REPETITION_RULE,
    fluency.PUNCTUATION_RULE,
    fluency.BRACKETS_RULE,
    fluency.SLOT_FILL_RULE,
    fluency.MIXED_SCRIPT_RULE,
)
RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)

__all__ = [
    "NEAR_DUPLICATE_THRESHOLD",
    "RULES",
    "RULE_NAMES",
    "CheckResult",
    "Checker",
    "GuardrailConfig",
    "Rule",
    "Violation",
    "check",
    "check_pool",
    "similarity",
]


class Checker:
    """The rules bound to one product and channel; the product's facts are read once, so a
    generator checks many candidates cheaply."""

    def __init__(
        self,
        product: Product,
        channel: Channel,
        *,
        language: Language | None = None,
        shopper: Mapping[str, object] | None = None,
        config: GuardrailConfig | None = None,
    ) -> None:
        if channel not in CHANNEL_LIMITS:
            raise GeneratorError(
                f"`channel` must be one of {sorted(CHANNEL_LIMITS)}, got {channel!r}"
            )
        lang = language or product.language
        if lang not in ("zh", "en"):
            raise GeneratorError(f"`language` must be zh or en, got {lang!r}")
        self.product = product
        self.channel: Channel = channel
        self.language: Language = lang
        self.shopper = shopper
        self.facts = Facts(product)
        self.config = config or GuardrailConfig()

    def check(self, text: str, *, others: Iterable[str] = ()) -> CheckResult:
        ctx = Context(
            text=text,
            facts=self.facts,
            channel=self.channel,
            language=self.language,
            shopper=self.shopper,
            others=tuple(others),
            config=self.config,
        )
        found: list[Violation] = []
        for rule in RULES:
            found.extend(rule(ctx))
        return CheckResult.of(found, RULE_NAMES)


def check(
    text: str,
    product: Product,
    channel: Channel,
    *,
    shopper: Mapping[str, object] | None = None,
    others: Sequence[str] = (),
    language: Language | None = None,
    config: GuardrailConfig | None = None,
) -> CheckResult:
    """Run every rule on ``text`` as copy for ``product`` in ``channel``. ``others`` are the texts
    already in the pool (for ``near_duplicate``); ``shopper`` the attributes of whoever will see it
    (for ``personal_echo``); ``config`` the date and the catalog's brands (default: today, no
    catalog)."""
    checker = Checker(product, channel, language=language, shopper=shopper, config=config)
    return checker.check(text, others=others)


def check_pool(
    pool_: VariantPool, product: Product, *, config: GuardrailConfig | None = None
) -> dict[str, CheckResult]:
    """Every variant of a pool, each against the ones before it; also the AI-generated flag."""
    if pool_.product_id != product.product_id:
        raise GeneratorError(
            f"`pool.product_id` {pool_.product_id!r} is not the product {product.product_id!r}"
        )
    out: dict[str, CheckResult] = {}
    seen: list[str] = []
    for v in pool_.variants:
        checker = Checker(product, v.channel, language=v.language, config=config)
        result = checker.check(v.text, others=seen)
        if v.ai_generated is not True:
            flag = Violation(pool.AI_LABEL, None, "variant is not flagged `ai_generated`")
            result = CheckResult.of((*result.violations, flag), result.rules)
        out[v.variant_id] = result
        seen.append(v.text)
    return out

"""From a product to a checked pool: plan a spread of styles, sample candidates in batches, fill
slots, run the guardrails, detect traits, and keep ``n`` that differ (covering as many traits as
possible, no near-duplicates). Rounds continue, with fresh seeds, until ``n`` pass or
``max_rounds`` is spent."""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from generator.errors import GeneratorError, NoVariantsError, SlotError
from generator.guardrails import (
    NEAR_DUPLICATE_THRESHOLD,
    Checker,
    CheckResult,
    GuardrailConfig,
    similarity,
)
from generator.guardrails.festivals import off_season
from generator.interface import CopyModel
from generator.prompts import LENGTHS, STYLES, Length, Plan, available_slots
from generator.slots import SLOTS, slot_values
from generator.slots import fill as fill_slots
from generator.traits import detect_traits
from streams.schemas import CHANNEL_LIMITS, Channel, Language, Product, Variant, VariantPool

_QUOTES = "\"'“”‘’「」『』"
_LABEL = re.compile(r"^(?:copy|文案|headline|标题)\s*[:：]\s*", re.IGNORECASE)
#: ``The {name}`` reads wrong when the name is a capitalised title (``The Trail Running Shoes``).
_ARTICLE = re.compile(r"\b(?:[Tt]he|[Aa]n?) (?=\{name\})")


@dataclass(frozen=True)
class SamplingConfig:
    oversample: float = 3.0  # candidates sampled per wanted variant in the first round
    max_rounds: int = 3
    temperature: float = 1.0
    top_p: float = 0.95

    def __post_init__(self) -> None:
        if self.oversample < 1:
            raise ValueError(f"`oversample` must be >= 1, got {self.oversample}")
        if self.max_rounds < 1:
            raise ValueError(f"`max_rounds` must be >= 1, got {self.max_rounds}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class Candidate:
    plan: Plan
    raw: str
    text: str | None  # filled and cleaned; None when it could not be
    traits: tuple[str, ...] = ()
    result: CheckResult | None = None
    reason: str | None = None  # why it was dropped before the guardrails

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed


@dataclass
class Report:
    """What happened while making one pool (for the CLI, the service's metrics and the bench)."""

    pool: VariantPool
    sampled: int = 0
    passed: int = 0
    rounds: int = 0
    seconds: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)  # rule or reason -> candidates
    checks: dict[str, CheckResult] = field(default_factory=dict)  # variant_id -> result

    @property
    def pass_rate(self) -> float:
        return self.passed / self.sampled if self.sampled else 0.0


def variant_id(text: str, language: Language, channel: Channel) -> str:
    digest = hashlib.sha256(f"{language}|{channel}|{text}".encode()).hexdigest()
    return f"v{digest[:16]}"


def plan_candidates(
    product: Product,
    channel: Channel,
    language: Language,
    count: int,
    rng: random.Random,
    free_share: float = 0.0,
) -> list[Plan]:
    """``count`` wishes that cycle through every style the product allows, each with a random
    companion style and length, so that the candidates differ before sampling adds its own.
    A ``free_share`` of them (after the styled ones are drawn, so those stay as they were)
    wish for no style: the model picks it (a tuned model's ``free_prompt_share``, 0 unless set)."""
    slots = available_slots(product, language)
    styles = [s for s in STYLES if s != "discount" or "discount" in slots]
    offset = rng.randrange(len(styles))
    plans = []
    for i in range(count):
        primary = styles[(offset + i) % len(styles)]
        chosen = [primary]
        if rng.random() < 0.6:
            chosen.append(rng.choice([s for s in styles if s != primary]))
        length: Length = LENGTHS[rng.randrange(len(LENGTHS))]
        plans.append(Plan(language, channel, length, tuple(chosen), slots))
    if free_share > 0:
        free = random.Random(rng.random())  # noqa: S311 - sampling, not secrets
        plans = [replace(p, styles=()) if free.random() < free_share else p for p in plans]
    return plans


def clean(text: str) -> str:
    """First non-empty line, without wrapping quotes, a leading label or doubled spaces."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for _ in range(2):  # `"Copy: ..."` and `Copy: "..."` alike
        while len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
            line = line[1:-1].strip()
        line = _LABEL.sub("", line).strip()
    return re.sub(r"\s{2,}", " ", line)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Slots filled, without an article before a name that is already a capitalised title."""
    name = values.get("name", "")
    if name[:1].isupper():
        text = _ARTICLE.sub("", text)
    return fill_slots(text, values)


def seasonal_suppress(gen: CopyModel, product: Product, config: GuardrailConfig) -> list[str]:
    """Tokens of the bootstrap vocabulary that name a holiday or season far from the generation
    date (the model learnt ``中秋送礼`` as one token): not sampled, so that its festive lines
    fit the season instead of being written and then rejected. Holidays that the product's own
    facts name stay."""
    if gen.prompt_format != "slots-v1":
        return []
    facts = f"{product.title} {product.category} {' '.join(product.attributes.values())}".lower()
    words = [
        w.lower()
        for f in off_season(config.date(), config)
        if not f.pattern.search(facts)
        for w in f.words
    ]
    return sorted(
        tok for tok in gen.vocabulary() if any(w in tok.replace("▁", " ").lower() for w in words)
    )


def max_new_tokens(language: Language, channel: Channel, *, slot_format: bool) -> int:
    """Enough tokens for the channel's limit: bootstrap tokens are phrases, others ~chars/2-4."""
    limit = CHANNEL_LIMITS[channel][language]
    per_char = (
        (0.6 if language == "zh" else 0.3) if slot_format else (1.2 if language == "zh" else 0.4)
    )
    return math.ceil(limit * per_char) + 8


def sample_candidates(
    gen: CopyModel,
    product: Product,
    plans: list[Plan],
    checker: Checker,
    values: Mapping[str, str],
    seed: int,
    config: SamplingConfig,
    suppress: Sequence[str] = (),
) -> list[Candidate]:
    """One candidate per plan: sampled, slot-filled, cleaned, checked and traits detected."""
    plan0 = plans[0]
    prompts = [gen.prompt(product, p) for p in plans]
    completions = gen.complete(
        prompts,
        max_new_tokens=max_new_tokens(
            plan0.language, plan0.channel, slot_format=gen.prompt_format == "slots-v1"
        ),
        seed=seed,
        temperature=config.temperature,
        top_p=config.top_p,
        # a slot the product cannot fill would only be thrown away after sampling
        suppress=[*(f"{{{s}}}" for s in SLOTS if s not in values), *suppress],
    )
    out = []
    # a plain-words model that wrote a whole line and went on has still answered (we keep line 1)
    line_done = gen.prompt_format == "instruction"
    for plan, comp in zip(plans, completions, strict=True):
        if not comp.finished and not (line_done and "\n" in comp.text.strip()):
            out.append(Candidate(plan, comp.text, None, reason="unfinished"))
            continue
        try:
            text = clean(fill(comp.text, values))
        except SlotError:
            out.append(Candidate(plan, comp.text, None, reason="unknown_slot"))
            continue
        if not text:
            out.append(Candidate(plan, comp.text, None, reason="empty"))
            continue
        traits = detect_traits(
            text, language=plan.language, channel=plan.channel, brand=product.brand
        )
        out.append(Candidate(plan, comp.text, text, tuple(traits), checker.check(text)))
    return out


def select(candidates: list[Candidate], n: int, language: Language) -> list[Candidate]:
    """Greedy: each pick adds the most traits not yet covered (ties: a trait set not yet seen,
    then sampling order); near-duplicates of a pick are skipped."""
    pool: list[Candidate] = []
    covered: set[str] = set()
    signatures: set[tuple[str, ...]] = set()
    remaining = [c for c in candidates if c.passed and c.text]
    while remaining and len(pool) < n:
        best = max(
            range(len(remaining)),
            key=lambda i: (
                len(set(remaining[i].traits) - covered),
                remaining[i].traits not in signatures,
                -i,
            ),
        )
        pick = remaining.pop(best)
        if any(
            similarity(pick.text or "", c.text or "", language=language) >= NEAR_DUPLICATE_THRESHOLD
            for c in pool
        ):
            continue
        pool.append(pick)
        covered.update(pick.traits)
        signatures.add(pick.traits)
    return pool


def generate(
    gen: CopyModel,
    product: Product,
    channel: Channel,
    n: int,
    *,
    seed: int,
    pool_version: int = 1,
    shopper: Mapping[str, object] | None = None,
    config: SamplingConfig | None = None,
    guardrails: GuardrailConfig | None = None,
) -> Report:
    """The one way to write a pool: sample, check and select; the :class:`Report` holds the pool
    and what was rejected. ``guardrails`` fixes the generation date and the catalog's brands
    (default: today, no catalog); festive lines are conditioned on that date."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    config = config or SamplingConfig()
    started = time.perf_counter()
    language = product.language
    guardrails = guardrails or GuardrailConfig()
    if guardrails.today is None:  # one date for the whole pool, even across midnight
        guardrails = replace(guardrails, today=date.today())
    checker = Checker(product, channel, language=language, shopper=shopper, config=guardrails)
    suppress = seasonal_suppress(gen, product, guardrails)
    values = slot_values(product, language)
    rng = random.Random(seed)  # noqa: S311 (seeded data, not secrets)
    seen: list[Candidate] = []
    report_rounds = 0
    chosen: list[Candidate] = []
    for round_ in range(config.max_rounds):
        report_rounds = round_ + 1
        want = math.ceil(n * config.oversample) if round_ == 0 else 2 * (n - len(chosen)) + n
        plans = plan_candidates(
            product, channel, language, want, rng, getattr(gen, "free_prompt_share", 0.0)
        )
        seen.extend(
            sample_candidates(gen, product, plans, checker, values, seed + round_, config, suppress)
        )
        chosen = select(seen, n, language)
        if len(chosen) >= n:
            break
    if not chosen:
        raise NoVariantsError(
            f"none of {len(seen)} candidates for {product.product_id} passed the guardrails"
        )
    variants = [
        Variant(
            variant_id=variant_id(c.text or "", language, channel),
            text=c.text or "",
            language=language,
            channel=channel,
            traits=list(c.traits),
        )
        for c in chosen
    ]
    pool = VariantPool(
        product_id=product.product_id,
        pool_version=pool_version,
        generator_version=gen.version,
        variants=variants,
    )
    report = Report(pool=pool, sampled=len(seen), rounds=report_rounds)
    for c in seen:
        if c.passed:
            report.passed += 1
        elif c.reason:
            report.rejected[c.reason] += 1
        elif c.result is not None:
            report.rejected.update(c.result.rules_broken())
    seen_texts: list[str] = []
    for v in pool.variants:  # the pool as published, checked as a whole (near-duplicates too)
        result = checker.check(v.text, others=seen_texts)
        if not result.passed:  # selection keeps only passing, distinct texts; this must hold
            raise GeneratorError(f"variant {v.variant_id} failed {sorted(result.rules_broken())}")
        report.checks[v.variant_id] = result
        seen_texts.append(v.text)
    report.seconds = time.perf_counter() - started
    return report

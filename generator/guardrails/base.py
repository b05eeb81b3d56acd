"""What every rule sees (:class:`Context`: the text's views and the product's facts) and what it
returns (:class:`Violation`); :class:`CheckResult` is the verdict on one text."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property
from typing import Any

from generator.guardrails.claims import COMPILED
from generator.guardrails.money import Parsed, parse
from generator.text import SEPARATORS, Views, fold_simple
from streams.schemas import Channel, Language, Product

#: Attribute keys whose values are objective grades (国家标准/行业标准 的等级), which may repeat
#: words such as 顶级/特级 that would otherwise be absolute terms.
GRADE_KEYS = frozenset({"grade", "等级", "级别", "品级", "level"})
_MEDICAL_CATEGORY = re.compile(r"药|医疗|医用|器械|medical|pharma|medicine|drug", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Violation:
    rule: str
    span: tuple[int, int] | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "span": list(self.span) if self.span is not None else None,
            "message": self.message,
        }


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    violations: tuple[Violation, ...] = ()
    rules: tuple[str, ...] = ()

    @classmethod
    def of(cls, violations: Iterable[Violation], rules: Iterable[str]) -> CheckResult:
        found = tuple(violations)
        return cls(passed=not found, violations=found, rules=tuple(rules))

    def rules_broken(self) -> set[str]:
        return {v.rule for v in self.violations}

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "violations": [v.to_json() for v in self.violations]}


@dataclass(frozen=True)
class GuardrailConfig:
    """What some rules need beyond the product: the date the copy is written for (festive copy is
    timely only near its holiday) and the brands of the catalog plus any extra list (copy must
    not name a competitor). Explicit, so that a test or a replay fixes the date."""

    today: date | None = None  # None: the local date at the time of the check
    festive_lead_days: int = 30  # festive copy may run this long before its holiday
    festive_grace_days: int = 3  # and this long after it ends
    brands: tuple[str, ...] = ()  # other brands of the catalog and the configured extra list

    def __post_init__(self) -> None:
        for name in ("festive_lead_days", "festive_grace_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 366:
                raise ValueError(
                    f"`{name}` must be a whole number of days in [0, 366], got {value!r}"
                )
        if self.today is not None and not isinstance(self.today, date):
            raise ValueError(f"`today` must be a date, got {self.today!r}")
        bad = [b for b in self.brands if not isinstance(b, str) or not b.strip()]
        if bad:
            raise ValueError(f"`brands` must be non-empty strings, got {bad!r}")

    def date(self) -> date:
        return self.today if self.today is not None else date.today()

    def with_catalog(self, products: Iterable[Product]) -> GuardrailConfig:
        """The same settings with every brand of ``products`` added to :attr:`brands`."""
        known = dict.fromkeys(self.brands)
        known.update(dict.fromkeys(p.brand for p in products if p.brand.strip()))
        return replace(self, brands=tuple(known))


@dataclass(frozen=True)
class Facts:
    """The product as the rules read it: folded, lower-cased, computed once per product."""

    product: Product
    text: str = field(init=False)
    attr_text: str = field(init=False)
    attr_tight: str = field(init=False)
    grade_text: str = field(init=False)
    brand: str = field(init=False)
    numbers: frozenset[str] = field(init=False)
    medical: bool = field(init=False)

    def __post_init__(self) -> None:
        p = self.product
        attrs = " ".join(f"{k} {v}" for k, v in p.attributes.items())
        grades = " ".join(v for k, v in p.attributes.items() if k.strip().lower() in GRADE_KEYS)
        text = fold_simple(f"{p.title} {p.brand} {p.category} {attrs}")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "attr_text", fold_simple(attrs))
        object.__setattr__(self, "attr_tight", squeeze(self.attr_text))
        object.__setattr__(self, "grade_text", squeeze(fold_simple(grades)))
        object.__setattr__(self, "brand", fold_simple(p.brand).strip())
        object.__setattr__(self, "numbers", frozenset(_canon(n) for n in _NUMBER.findall(text)))
        object.__setattr__(self, "medical", bool(_MEDICAL_CATEGORY.search(p.category)))

    @cached_property
    def absent_claims(self) -> re.Pattern[str] | None:
        """One pattern for every claim of the vocabulary that these facts do not carry."""
        parts = [
            f"(?P<{claim.name}>{pattern.pattern})"
            for claim, pattern in COMPILED
            if not (pattern.search(self.text) or pattern.search(self.attr_tight))
        ]
        return re.compile("|".join(parts), re.IGNORECASE) if parts else None

    @property
    def list_price(self) -> float:
        return self.product.price

    @property
    def sale_price(self) -> float | None:
        return self.product.sale_price

    @property
    def current_price(self) -> float:
        p = self.product
        return p.sale_price if p.sale_price is not None else p.price

    @property
    def saving(self) -> float | None:
        p = self.product
        return None if p.sale_price is None else round(p.price - p.sale_price, 2)


def _canon(number: str) -> str:
    """``"08"``, ``"8.0"`` and ``"8"`` are the same number."""
    try:
        value = float(number)
    except ValueError:
        return number
    return f"{value:g}"


def squeeze(text: str) -> str:
    """Lower-cased, without whitespace or separating punctuation (for substring comparisons)."""
    return "".join(c for c in text.lower() if c not in SEPARATORS)


def canon_number(number: str) -> str:
    return _canon(number.replace(",", ""))


@dataclass(frozen=True)
class Context:
    """One text under check, with everything the rules need."""

    text: str
    facts: Facts
    channel: Channel
    language: Language
    shopper: Mapping[str, object] | None = None
    others: tuple[str, ...] = ()
    config: GuardrailConfig = GuardrailConfig()

    @cached_property
    def views(self) -> Views:
        return Views.of(self.text)

    @cached_property
    def parsed(self) -> Parsed:
        return parse(self.views.plain.text)

    @property
    def product(self) -> Product:
        return self.facts.product


@dataclass(frozen=True)
class Rule:
    """A named guardrail. ``basis`` says what it rests on (the article of law, or the contract)."""

    name: str
    basis: str
    find: Callable[[Context], Iterable[Violation]]

    def __call__(self, ctx: Context) -> list[Violation]:
        return list(self.find(ctx))


def overlaps(span: tuple[int, int], spans: Iterable[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in spans)

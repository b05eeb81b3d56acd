"""The scenario file (CONTRACT.md §6): who the shoppers are and what moves them.

A scenario is a frozen pydantic model that forbids unknown keys, so a typo (``"decisons"``) is
an error naming the key rather than a silent default. :func:`load_scenario` turns every failure
(missing file, bad JSON, a field out of range) into one :class:`ScenarioError` naming the field.
:func:`random_scenario` draws a fresh scenario from a seed, for checking that the loop learns on
tastes nobody tuned it to."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.errors import ScenarioError
from streams.schemas import TRAITS, Channel, Language, Product

Gender = Literal["f", "m", "o", "u"]
Name = Annotated[str, Field(min_length=1, max_length=64)]

#: age bands of ``bandit.features.age_bucket``; random segments take disjoint runs of them
_AGE_BANDS: tuple[tuple[int, int], ...] = (
    (18, 24),
    (25, 29),
    (30, 39),
    (40, 49),
    (50, 59),
    (60, 75),
)
MAX_EFFECT = 5.0
#: channels a random scenario draws from (the short ones: pools of long copy generate slowly)
_RANDOM_CHANNELS: tuple[Channel, ...] = ("ad_headline", "push")
#: the devices a shopper is drawn with (each keeps one)
DEVICES: tuple[str, ...] = ("ios", "android", "web", "mini_program")

#: the default date simulated pools are written for (see ``Scenario.copy_date``)
SIMULATED_DATE = date(2026, 12, 1)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserSpec(_Strict):
    """The shoppers of one segment: an age drawn uniformly from ``age`` (inclusive), and a fixed
    gender and city tier. A field left out is not sent to the bandit at all."""

    age: tuple[int, int] | None = None
    gender: Gender | None = None
    city_tier: int | None = Field(default=None, ge=1, le=6)

    @field_validator("age")
    @classmethod
    def _age_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        lo, hi = value
        if not 0 <= lo <= hi <= 120:
            raise ValueError(f"must be [lo, hi] with 0 <= lo <= hi <= 120, got [{lo}, {hi}]")
        return value


class Segment(_Strict):
    name: Name
    weight: float = Field(gt=0, allow_inf_nan=False)
    user: UserSpec = Field(default_factory=UserSpec)
    #: log-odds added to the click probability for each trait the shown text carries
    trait_effects: dict[str, float] = Field(default_factory=dict)

    @field_validator("trait_effects")
    @classmethod
    def _known_traits(cls, value: dict[str, float]) -> dict[str, float]:
        for trait, effect in value.items():
            if trait not in TRAITS:
                raise ValueError(f"unknown trait {trait!r}; traits are {', '.join(TRAITS)}")
            if not (math.isfinite(effect) and abs(effect) <= MAX_EFFECT):
                raise ValueError(f"effect of {trait!r} must be in [-5, 5], got {effect!r}")
        return value


class Scenario(_Strict):
    name: Name
    seed: int = Field(default=0, ge=0, lt=2**63)
    decisions: int = Field(ge=10, le=10_000_000)
    #: a count (the simulator makes a catalog of that many products) or the products themselves
    products: int | list[Product] = 12
    channel: Channel = "ad_headline"
    language: Language = "zh"
    base_ctr: float = Field(default=0.03, gt=0, lt=1)
    segments: list[Segment] = Field(min_length=1, max_length=64)
    #: decisions between fine-tune rounds (0: never); rounds are not run until fine-tuning lands
    finetune_every: int = Field(default=0, ge=0)
    pool_size: int = Field(default=8, ge=2, le=64)
    #: the date the pools are written for: the guardrails judge festive copy against it, so a
    #: scenario gives the same pools whatever day it runs (optional; a winter default)
    copy_date: date = SIMULATED_DATE

    @field_validator("products")
    @classmethod
    def _products(cls, value: int | list[Product]) -> int | list[Product]:
        if isinstance(value, int):
            if not 1 <= value <= 5000:
                raise ValueError(f"a count of products must be in [1, 5000], got {value}")
            return value
        if not 1 <= len(value) <= 5000:
            raise ValueError(f"must hold 1 to 5000 products, got {len(value)}")
        ids = [p.product_id for p in value]
        if len(set(ids)) != len(ids):
            raise ValueError("products must have unique `product_id`s")
        return value

    @field_validator("segments")
    @classmethod
    def _unique_segments(cls, value: list[Segment]) -> list[Segment]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError("segments must have unique names")
        return value

    @model_validator(mode="after")
    def _language_matches(self) -> Scenario:
        if isinstance(self.products, list):
            for i, p in enumerate(self.products):
                if p.language != self.language:
                    raise ValueError(
                        f"`products.{i}.language` is {p.language!r} but the scenario's "
                        f"`language` is {self.language!r}"
                    )
        return self

    @property
    def weights(self) -> list[float]:
        total = sum(s.weight for s in self.segments)
        return [s.weight / total for s in self.segments]

    @property
    def n_products(self) -> int:
        return self.products if isinstance(self.products, int) else len(self.products)

    def click_probability(self, segment: int, traits: Iterable[str]) -> float:
        """The known chance that a shopper of ``segment`` clicks text carrying ``traits``: the
        base rate's log-odds plus the segment's effect of each trait. The one click model of
        the simulator's world and of the demo's live shoppers, so the two measure alike."""
        effects = self.segments[segment].trait_effects
        z = math.log(self.base_ctr / (1.0 - self.base_ctr)) + sum(
            effects.get(t, 0.0) for t in traits
        )
        return 1.0 / (1.0 + math.exp(-z))

    def draw_user(
        self, segment: int, who: int, *, seed: int, prefix: str = "shopper"
    ) -> tuple[dict[str, object], str]:
        """Shopper ``who`` of ``segment``, as a request carries them, and their device.

        Age and device come from the shopper's own random stream (``seed``, segment, who), so
        a returning shopper keeps them whatever the order of arrivals; gender and city tier are
        the segment's. A field the segment leaves out is not sent at all."""
        spec = self.segments[segment].user
        rng = np.random.default_rng([seed, segment, who])
        user: dict[str, object] = {"user_id": f"{prefix}-{segment}-{who}"}
        if spec.age is not None:
            user["age"] = int(rng.integers(spec.age[0], spec.age[1] + 1))
        device = DEVICES[int(rng.integers(0, len(DEVICES)))]
        if spec.gender is not None:
            user["gender"] = spec.gender
        if spec.city_tier is not None:
            user["city_tier"] = spec.city_tier
        return user, device


_BRANCH_TYPES = frozenset({"int_type", "int_parsing", "list_type", "int_from_float"})


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` per error, with pydantic's union-branch tags taken out of the path
    and the "not an int" complaint about a list of products dropped when the list itself was
    read (the user wrote `products.0.price`, not `products.list[...].0.price`)."""
    found: list[tuple[tuple[str, ...], str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            str(p) for p in err["loc"] if not (isinstance(p, str) and (p == "int" or "[" in p))
        )
        found.append((loc, str(err["type"]), str(err["msg"]).removeprefix("Value error, ")))
    out = []
    for loc, kind, msg in found:
        deeper = any(len(o) > len(loc) and o[: len(loc)] == loc for o, _, _ in found)
        if kind in _BRANCH_TYPES and deeper:
            continue
        out.append((".".join(loc) or "scenario", msg))
    return out


def parse_scenario(data: Any) -> Scenario:
    """Validate a decoded scenario; a failure is a :class:`ScenarioError` naming the field."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario", f"must be a JSON object, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errors = _errors(exc)
        field, first = errors[0]
        more = "; ".join(f"`{f}`: {m}" for f, m in errors[1:4])
        extra = f" (also {more}{'; ...' if len(errors) > 4 else ''})" if more else ""
        raise ScenarioError(field, f"is invalid: {first}{extra}") from None


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError("scenario", f"cannot be read from {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            "scenario",
            f"is not valid JSON ({path}, line {exc.lineno} column {exc.colno}): {exc.msg}",
        ) from None
    return parse_scenario(data)


def random_scenario(
    seed: int,
    *,
    decisions: int = 20_000,
    products: int | None = None,
    language: Language | None = None,
    channel: Channel | None = None,
) -> Scenario:
    """A scenario drawn from ``seed``: 2-4 segments of random weight, user features and trait
    effects. Segments get disjoint age bands, so they differ in a feature the bandit sees;
    shoppers it cannot tell apart would make the oracle unreachable for any policy."""
    rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
    n_seg = rng.randint(2, 4)
    bands = list(range(len(_AGE_BANDS)))
    rng.shuffle(bands)
    segments = []
    for i in range(n_seg):
        lo, hi = _AGE_BANDS[bands[i]]
        chosen = rng.sample(TRAITS, rng.randint(2, 5))
        effects = {}
        for trait in chosen:
            sign = 1.0 if rng.random() < 0.65 else -1.0  # most devices help someone
            effects[trait] = round(sign * rng.uniform(0.3, 1.2), 2)
        segments.append(
            {
                "name": f"seg{i}-{lo}-{hi}",
                "weight": round(rng.uniform(0.5, 2.0), 2),
                "user": {
                    "age": [lo, hi],
                    "gender": rng.choice(["f", "m"]),
                    "city_tier": rng.randint(1, 4),
                },
                "trait_effects": effects,
            }
        )
    return parse_scenario(
        {
            "name": f"random-{seed}",
            "seed": seed,
            "decisions": decisions,
            "products": products if products is not None else rng.randint(6, 16),
            "channel": channel if channel is not None else rng.choice(_RANDOM_CHANNELS),
            "language": language if language is not None else rng.choice(["zh", "en"]),
            "base_ctr": round(rng.uniform(0.02, 0.08), 3),
            "segments": segments,
            "pool_size": 8,
        }
    )

"""The wire contract (CONTRACT.md §2): frozen pydantic models, one per Kafka value.

Every value carries ``schema_version`` 1; unknown fields are ignored on read so that a newer
writer does not break an older reader. Timestamps are timezone-aware and kept in UTC, and
serialise as RFC 3339 strings. Field names follow Open Bandit Pipeline's vocabulary
(``action``, ``pscore``, ``action_dist``, ``context``).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1

Language = Literal["zh", "en"]
Channel = Literal["ad_headline", "product_desc", "push", "social"]
FeedbackKind = Literal["impression", "click", "add_to_cart", "purchase"]
ModelKind = Literal["bandit", "generator"]

CHANNELS: tuple[Channel, ...] = ("ad_headline", "product_desc", "push", "social")
LANGUAGES: tuple[Language, ...] = ("zh", "en")
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("impression", "click", "add_to_cart", "purchase")

#: Channel length limits in characters (CONTRACT.md §5).
CHANNEL_LIMITS: dict[Channel, dict[Language, int]] = {
    "ad_headline": {"zh": 30, "en": 90},
    "product_desc": {"zh": 120, "en": 400},
    "push": {"zh": 40, "en": 120},
    "social": {"zh": 140, "en": 280},
}

#: Trait vocabulary (CONTRACT.md §7).
TRAITS: tuple[str, ...] = (
    "price",
    "discount",
    "urgency",
    "festive",
    "quality",
    "emotion",
    "social_proof",
    "second_person",
    "question",
    "exclaim",
    "short",
    "long",
    "brand",
)


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
#: What an identifier (product, variant, feedback id) may hold, defined once for every reader:
#: the pydantic models here, the HTTP path, the msgspec mirror of ``Decision`` and the policy.
IDENTIFIER_MAX_LENGTH = 128
_IDENTIFIER_CHARS = r"[A-Za-z0-9._:\-]"
#: for pydantic's regex engine, where ``$`` is the end of the text
IDENTIFIER_PATTERN = rf"^{_IDENTIFIER_CHARS}+$"
#: for Python's ``re`` (and msgspec, which uses it), where ``$`` would also match before a final
#: newline that pydantic refuses; the length bound is part of the pattern
IDENTIFIER_RE = re.compile(rf"\A{_IDENTIFIER_CHARS}{{1,{IDENTIFIER_MAX_LENGTH}}}\Z")
Identifier = Annotated[
    str, Field(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)
]
FeatureValue = str | int | float | bool | list[str]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(_Frozen):
    """Base of every top-level Kafka value."""

    schema_version: Literal[1] = SCHEMA_VERSION


class Product(Event):
    product_id: Identifier
    title: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=64)
    brand: str = Field(min_length=1, max_length=64)
    price: float = Field(gt=0, lt=1e9, description="list price")
    sale_price: float | None = Field(default=None, gt=0, lt=1e9)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)
    language: Language = "zh"

    @model_validator(mode="after")
    def _sale_not_above_price(self) -> Product:
        if self.sale_price is not None and self.sale_price > self.price:
            raise ValueError(
                f"`sale_price` must be <= `price`, got {self.sale_price} > {self.price}"
            )
        return self


class Variant(_Frozen):
    variant_id: Identifier
    text: str = Field(min_length=1, max_length=1000)
    language: Language
    channel: Channel
    traits: list[str] = Field(default_factory=list)
    ai_generated: Literal[True] = True


class VariantPool(Event):
    product_id: Identifier
    pool_version: int = Field(ge=1)
    generator_version: str = Field(min_length=1, max_length=128)
    created_at: UtcDatetime = Field(default_factory=utc_now)
    variants: list[Variant] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _unique_variant_ids(self) -> VariantPool:
        ids = [v.variant_id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("`variants` must have unique `variant_id`s")
        return self


class ActionFeatures(_Frozen):
    """One action's features as the policy scored them, so a decision can be learned from and
    replayed without looking anything up."""

    traits: list[str] = Field(default_factory=list)
    language: Language
    length_bucket: str = Field(min_length=1, max_length=32)
    generator_version: str = Field(min_length=1, max_length=128)


class Decision(Event):
    event_id: UUID
    ts: UtcDatetime = Field(default_factory=utc_now)
    product_id: Identifier
    channel: Channel
    pool_version: int = Field(ge=1)
    policy_version: str = Field(min_length=1, max_length=128)
    context: dict[str, FeatureValue] = Field(default_factory=dict, max_length=256)
    actions: list[str] = Field(min_length=1, max_length=256)
    action_features: list[ActionFeatures] = Field(min_length=1, max_length=256)
    action: int = Field(ge=0)
    pscore: float = Field(gt=0, le=1)
    action_dist: list[float] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _consistent(self) -> Decision:
        n = len(self.actions)
        if len(self.action_features) != n:
            raise ValueError(f"`action_features` must have {n} entries, one per action")
        if len(self.action_dist) != n:
            raise ValueError(f"`action_dist` must have {n} entries, one per action")
        if self.action >= n:
            raise ValueError(f"`action` must be < {n}, got {self.action}")
        if any(p < 0 or not math.isfinite(p) for p in self.action_dist):
            raise ValueError("`action_dist` must hold finite probabilities >= 0")
        if abs(sum(self.action_dist) - 1.0) > 1e-4:
            raise ValueError(f"`action_dist` must sum to 1, got {sum(self.action_dist):.6f}")
        if abs(self.action_dist[self.action] - self.pscore) > 1e-6:
            raise ValueError("`pscore` must equal `action_dist[action]`")
        return self


class Feedback(Event):
    feedback_id: Identifier
    event_id: UUID
    ts: UtcDatetime = Field(default_factory=utc_now)
    kind: FeedbackKind
    value: float | None = Field(default=None, ge=0, lt=1e9)


class ModelAnnouncement(Event):
    kind: ModelKind
    version: str = Field(min_length=1, max_length=128)
    uri: str = Field(min_length=1, max_length=2048)
    created_at: UtcDatetime = Field(default_factory=utc_now)
    learned_events: int | None = Field(default=None, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    #: bandit, with sharded learners: the shard (of ``shards``) whose products this model
    #: serves (``streams.shards``); None: one learner serves every product
    shard: int | None = Field(default=None, ge=0)
    shards: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _shard_below_shards(self) -> ModelAnnouncement:
        if self.shard is not None and self.shard >= (self.shards or 1):
            raise ValueError(f"`shard` must be below `shards`, got {self.shard} of {self.shards}")
        return self


class LoopStats(Event):
    """The learner's loop-wide figures on ``copyloop.stats`` (compacted, key ``loop``): what
    every ranker worker shows on its dashboard, so no figure depends on which worker answers.
    ``figures`` is laid out by ``bandit.loop_stats`` (totals, time buckets, per-variant counts,
    segment x trait rewards, versions, the off-policy estimate and its baselines, health)."""

    created_at: UtcDatetime = Field(default_factory=utc_now)
    figures: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(Event):
    source_topic: str
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    reason: str = Field(min_length=1)
    raw: str = Field(description="base64 of the original value bytes (a prefix when long)")
    key: str | None = Field(default=None, description="base64 of the original key bytes")
    raw_size: int | None = Field(default=None, ge=0, description="length of the whole value")
    raw_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 (hex) of the whole value"
    )
    failed_at: UtcDatetime = Field(default_factory=utc_now)

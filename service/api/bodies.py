"""Request and response bodies of the HTTP API (CONTRACT.md §4). Events themselves (``Product``,
``Feedback``) are the wire models from ``streams.schemas``, so the API and the topics agree."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.schemas import Channel, Identifier, Language, Product

#: bounds on the free-form ``user`` and ``context`` objects
MAX_KEYS = 64
MAX_DEPTH = 3
MAX_LIST = 64
MAX_STRING = 256
_SAFE_INT = 2**53


def _check_value(value: Any, where: str, depth: int) -> None:
    """Reject what no feature could use and what would break arithmetic further down."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > _SAFE_INT:
            raise ValueError(f"`{where}` is too large a number")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"`{where}` must be a finite number")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"`{where}` must be at most {MAX_STRING} characters")
    elif isinstance(value, list):
        if len(value) > MAX_LIST or depth >= MAX_DEPTH:
            raise ValueError(f"`{where}` must be a list of at most {MAX_LIST} plain values")
        for i, item in enumerate(value):
            _check_value(item, f"{where}.{i}", depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_KEYS or depth >= MAX_DEPTH:
            raise ValueError(f"`{where}` nests too deep or holds too many keys")
        for key, item in value.items():
            _check_value(item, f"{where}.{key}", depth + 1)


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RankRequest(_Body):
    product_id: Identifier
    channel: Channel
    language: Language | None = Field(
        default=None, description="serve only variants in this language (default: any)"
    )
    user: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS,
        description="shopper fields (user_id, age, gender, city_tier, ...); user_id is hashed",
    )
    context: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_KEYS,
        description="request context (ts, hour, weekday, utc_offset, device, placement, ...); "
        "category and placement are hashed (or mapped onto a vocabulary) before they are stored",
    )
    explain: bool = Field(
        default=False,
        description="also answer why: the features that moved the chosen variant's score most "
        "and every variant's probability (costs time; off by default)",
    )

    @field_validator("user", "context")
    @classmethod
    def _plain(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        for key, item in value.items():
            if len(key) > MAX_STRING:
                raise ValueError(f"`{info.field_name}` keys must be at most {MAX_STRING} chars")
            _check_value(item, f"{info.field_name}.{key}", 1)
        return value


class RankResponse(_Body):
    event_id: UUID
    product_id: str
    variant_id: str
    text: str
    pscore: float
    policy_version: str
    pool_version: int | None = Field(
        default=None, description="the version of the product's pool the variant came from"
    )
    explain: RankExplanation | None = Field(
        default=None, description="only when the request asked for it (`explain: true`)"
    )


class ScoreContribution(_Body):
    namespace: str = Field(description="U shopper, C request context, A the variant's own term")
    feature: str = Field(description="the shopper or context feature (bucketed, never an id)")
    action: str = Field(description="the variant's feature it is crossed with (t=urgency, ...)")
    weight: float = Field(description="its contribution to the chosen variant's score")


class VariantProbability(_Body):
    variant_id: str
    probability: float


class RankExplanation(_Body):
    supported: bool = Field(description="false: the model keeps no named weights (VW)")
    model: str
    policy_version: str
    contributions: list[ScoreContribution]
    probabilities: list[VariantProbability]
    note: str | None = None


class FeedbackAccepted(_Body):
    accepted: int


class JobAccepted(_Body):
    job_id: str
    product_id: str
    status_url: str


class JobView(_Body):
    job_id: str
    product_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    channels: list[str]
    n: int
    created_at: str
    finished_at: str | None = None
    pool_version: int | None = None
    variants: int | None = None
    error: str | None = None


class VariantView(_Body):
    variant_id: str
    text: str
    language: Language
    channel: Channel
    traits: list[str]
    ai_generated: bool
    decisions: int = Field(description="rank answers that chose this variant")
    impressions: int
    clicks: int
    ctr: float
    ci95: tuple[float, float] = Field(description="Wilson 95% interval of the CTR")


class PoolView(_Body):
    product_id: str
    pool_version: int
    generator_version: str
    created_at: datetime
    variants: list[VariantView]


class ReloadResult(_Body):
    policy_version: str
    policy_reloaded: bool
    pools: int
    pid: int


class FinetuneRequest(_Body):
    products: list[Product] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="the catalog whose pools the round gates on and refreshes "
        "(default: the last round's)",
    )


class FinetuneAccepted(_Body):
    job_id: str
    status_url: str


class FinetuneJobView(_Body):
    job_id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    finished_at: str | None = None
    status: Literal["promoted", "rejected", "skipped"] | None = Field(
        default=None, description="the round's outcome, once it succeeded"
    )
    reason: str | None = None
    version: str | None = Field(default=None, description="the candidate's registry version")
    examples: dict[str, int] = Field(default_factory=dict)
    verdict: dict[str, Any] | None = Field(default=None, description="the promotion gate's")
    refresh: list[dict[str, Any]] = Field(
        default_factory=list, description="per product: kept, retired and added variants"
    )
    error: str | None = None


class RollbackResult(_Body):
    from_version: str
    current: str | None = Field(description="the version serving now (null: the base model)")
    generator_version: str
    pools_restored: dict[str, int] = Field(description="product id -> its new pool_version")


class ErrorBody(_Body):
    detail: str
    field: str | None = None

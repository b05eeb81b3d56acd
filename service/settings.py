"""Settings at the edges: environment variables with the prefix ``COPYLOOP_`` (CONTRACT.md §3).

Only ``service`` reads them; everything below takes explicit arguments. Tests build a
``Settings(**values)`` (or pass an environment) instead of patching globals."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COPYLOOP_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers (host:port[,host:port])"
    )
    topic_prefix: str = Field(default="copyloop.", pattern=r"^[A-Za-z0-9._\-]*$")
    topic_partitions: int = Field(default=4, ge=1, le=256)
    data_dir: Path = Field(default=Path("var"), description="models, checkpoints, spool")
    reward_window_s: float = Field(default=1800.0, gt=0)
    snapshot_every_s: float = Field(default=10.0, gt=0)
    admin_key: SecretStr | None = None
    hash_key: SecretStr | None = None
    # keys and their limits (docs/security.md)
    write_key: SecretStr | None = Field(
        default=None,
        description="the key product registration (PUT /v1/products/{id}) needs, as "
        "`Authorization: Bearer <key>`; the admin key counts as one too",
    )
    open_product_writes: bool = Field(
        default=False,
        description="let anyone register products without a key: for a local demo only",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated keys that /v1/rank and /v1/feedback then need (as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>`); unset: both are open",
    )
    jobs_per_minute: int = Field(
        default=30, ge=1, le=10_000, description="generation jobs one key may start per minute"
    )
    jobs_keep: int = Field(default=1000, ge=1, description="job files kept, newest first")
    jobs_max_age_s: float = Field(
        default=7 * 86400.0, gt=0, description="job files older than this are removed"
    )
    multi_host: bool | None = Field(
        default=None,
        description="several hosts serve one deployment, so they must share COPYLOOP_HASH_KEY; "
        "None: assumed when the Kafka bootstrap names a host other than loopback",
    )
    allow_local_hash_key: bool = Field(
        default=False,
        description="in a multi-host deployment, accept a hash key made under data_dir "
        "(each host then hashes one shopper differently)",
    )
    context_text: Literal["hash", "vocabulary"] = Field(
        default="hash",
        description="what the free-text fields (context.category, context.placement, "
        "user.recent_categories) become in a decision: `hash`, a keyed hash of the value; "
        "`vocabulary`, the value when listed in context_vocabulary, else `other`",
    )
    context_vocabulary: str = Field(
        default="",
        max_length=65_536,
        description="comma-separated values kept as they are when context_text=vocabulary",
    )
    generator_model: Path | None = Field(
        default=None, description="a Hugging Face causal LM folder; default the bootstrap model"
    )
    finetune_every: int = Field(
        default=0, ge=0, description="joined rewards between automatic fine-tune rounds; 0: off"
    )
    learner_shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description="model shards (streams.shards): learners each own the products and "
        "partitions of one shard, rankers keep one policy per shard; every learner and ranker "
        "of a deployment must use the same value, at most the topics' partition count",
    )
    learner_shard: int = Field(
        default=0, ge=0, description="the shard a learner learns, in [0, learner_shards)"
    )
    learner_kafka_client: Literal["librdkafka", "kafka-python"] = Field(
        default="librdkafka",
        description="the client the learner reads the topics with (streams.readers): "
        "librdkafka parses and fetches ahead in C threads; kafka-python is pure Python",
    )
    learner_feedback_lead_s: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="while decisions are unread, the learner stops reading feedback that runs "
        "this far (event-time seconds) ahead of them and reads it again when they catch up "
        "(librdkafka only); a lead longer than any backlog (1e9) reads both as delivered",
    )
    learner_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="port of the learner's /metrics on 127.0.0.1 (docs/metrics.md); 0: none",
    )

    # the ranker's spool and acknowledgements (service.ranker.spool)
    spool_max_bytes: int = Field(
        default=1024**3,
        ge=4096,
        description="cap of one worker's spool file; when reached, /readyz turns false and "
        "rank/feedback answer 503 with Retry-After until the spool drains",
    )
    durable_ack: bool = Field(
        default=False,
        description="answer rank (200) and feedback (202) only once their records are "
        "acknowledged by Kafka or fsynced into the spool (group commit); costs latency",
    )
    durable_ack_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="with durable_ack, how long a request waits for its records to be durable "
        "before it is answered 503 with Retry-After (the records may still arrive later)",
    )

    promotion_gate: bool = Field(
        default=True,
        description="judge each bandit snapshot on logged decisions it never learned and hold "
        "back one clearly worse than the serving one (bandit.promotion); false: announce all",
    )
    bandit_preset: str | None = Field(
        default=None,
        description="the bandit's settings by name (bandit.presets; None: its default): what "
        "the learner learns and a ranker serves before its first snapshot",
    )

    @field_validator("bandit_preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        # imported here: the presets load the models (VW, scikit-learn), which commands that
        # never rank or learn need not pay for
        from bandit.presets import PRESETS

        if value is not None and value not in PRESETS:
            raise ValueError(f"must be one of {', '.join(PRESETS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shard_below_shards(self) -> Settings:
        if self.learner_shard >= self.learner_shards:
            raise ValueError(
                f"`learner_shard` (COPYLOOP_LEARNER_SHARD) must be below `learner_shards` "
                f"(COPYLOOP_LEARNER_SHARDS={self.learner_shards}), got {self.learner_shard}"
            )
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def kafka_home(self) -> Path:
        return self.data_dir / "kafka"

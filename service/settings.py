"""Settings at the edges: environment variables with the prefix ``COPYLOOP_`` (CONTRACT.md §3).

Only ``service`` reads them; everything below takes explicit arguments. Tests build a
``Settings(**values)`` (or pass an environment) instead of patching globals."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
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
    generator_model: Path | None = Field(
        default=None, description="a Hugging Face causal LM folder; default the bootstrap model"
    )
    finetune_every: int = Field(
        default=0, ge=0, description="joined rewards between automatic fine-tune rounds; 0: off"
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

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def kafka_home(self) -> Path:
        return self.data_dir / "kafka"

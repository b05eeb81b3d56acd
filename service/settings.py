"""Settings at the edges: environment variables with the prefix ``COPYLOOP_`` (CONTRACT.md §3).

Only ``service`` reads them; everything below takes explicit arguments. Tests build a
``Settings(**values)`` (or pass an environment) instead of patching globals."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def kafka_home(self) -> Path:
        return self.data_dir / "kafka"

"""Topic names (from the configured prefix) and the admin that creates them."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from streams.errors import BrokerUnavailable, StreamsError
from streams.schemas import (
    DeadLetter,
    Decision,
    Event,
    Feedback,
    LoopStats,
    ModelAnnouncement,
    VariantPool,
)


@dataclass(frozen=True)
class Topics:
    """The five topics of CONTRACT.md §1 and the learner's stats under one prefix (default
    ``copyloop.``)."""

    prefix: str = "copyloop."

    @property
    def variants(self) -> str:
        return f"{self.prefix}variants"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def models(self) -> str:
        return f"{self.prefix}models"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def stats(self) -> str:
        """The learner's loop-wide figures (compacted; an addition to the contract's five)."""
        return f"{self.prefix}stats"

    def all(self) -> tuple[str, ...]:
        return (
            self.variants,
            self.decisions,
            self.feedback,
            self.models,
            self.deadletter,
            self.stats,
        )

    def model_of(self, topic: str) -> type[Event]:
        """The event model carried by ``topic``."""
        models: dict[str, type[Event]] = {
            self.variants: VariantPool,
            self.decisions: Decision,
            self.feedback: Feedback,
            self.models: ModelAnnouncement,
            self.deadletter: DeadLetter,
            self.stats: LoopStats,
        }
        try:
            return models[topic]
        except KeyError:
            raise StreamsError(f"`{topic}` is not a copyloop topic") from None

    def configs(self, topic: str) -> dict[str, str]:
        """Per-topic settings: the pools and the stats are compacted (the latest per key survives);
        decisions and feedback carry the broker's log-append time, which no client can set,
        as the clock the learner's watermark is bounded by (see :mod:`bandit.join`)."""
        if topic in (self.variants, self.stats):
            return {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
        if topic in (self.decisions, self.feedback):
            return {"message.timestamp.type": "LogAppendTime"}
        return {}


class TopicAdmin:
    """Creates the project's topics (idempotently). The admin client is made on first use."""

    def __init__(self, bootstrap: str, *, request_timeout_ms: int = 15000) -> None:
        self.bootstrap = bootstrap
        self._timeout_ms = request_timeout_ms
        self._client: KafkaAdminClient | None = None

    def _admin(self) -> KafkaAdminClient:
        if self._client is None:
            try:
                self._client = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="copyloop-admin",
                    request_timeout_ms=self._timeout_ms,
                )
            except KafkaError as exc:
                raise BrokerUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        return self._client

    def existing(self) -> set[str]:
        try:
            return set(self._admin().list_topics())
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot list topics at {self.bootstrap}: {exc}") from exc

    def ensure(self, topics: Topics, *, partitions: int = 4) -> list[str]:
        """Create whichever of ``topics`` are missing; returns the names created."""
        if partitions < 1:
            raise ValueError(f"`partitions` must be >= 1, got {partitions}")
        missing = [t for t in topics.all() if t not in self.existing()]
        if not missing:
            return []
        self.create({name: topics.configs(name) for name in missing}, partitions=partitions)
        return missing

    def create(self, configs: dict[str, dict[str, str]], *, partitions: int) -> None:
        """Create the topics named by ``configs`` (name -> topic settings) and wait for them."""
        spec = {
            name: {"num_partitions": partitions, "replication_factor": 1, "configs": cfg}
            for name, cfg in configs.items()
        }
        try:
            self._admin().create_topics(spec, raise_errors=False, wait_for_metadata=True)
        except TopicAlreadyExistsError:
            pass  # another process won the race; the topic is there either way
        except KafkaError as exc:
            raise StreamsError(f"creating topics {list(configs)} failed: {exc}") from exc
        absent = [t for t in configs if t not in self.existing()]
        if absent:
            raise StreamsError(f"topics {absent} were not created")

    def delete(self, names: list[str]) -> None:
        """Delete the topics ``names`` (those already gone are skipped)."""
        present = [t for t in names if t in self.existing()]
        if not present:
            return
        try:
            self._admin().delete_topics(present, timeout_ms=self._timeout_ms)
        except UnknownTopicOrPartitionError:
            pass  # deleted meanwhile by someone else
        except KafkaError as exc:
            raise StreamsError(f"deleting topics {present} failed: {exc}") from exc

    def describe_configs(self, topic: str) -> dict[str, str]:
        from kafka.admin import ConfigResource, ConfigResourceType

        try:
            result = self._admin().describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        except KafkaError as exc:
            raise StreamsError(f"describing `{topic}` failed: {exc}") from exc
        entries = result.get("topic", {}).get(topic, {})
        return {name: str(entry["value"]) for name, entry in entries.items()}

    def partitions(self, topic: str) -> int:
        try:
            meta = self._admin().describe_topics([topic])
        except KafkaError as exc:
            raise StreamsError(f"describing `{topic}` failed: {exc}") from exc
        return len(meta[0]["partitions"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

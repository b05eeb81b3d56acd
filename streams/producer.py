"""Publishing events. The rest of the code talks to the small :class:`EventSink` protocol
(``add``/``flush``), so pure logic is tested with :class:`MemorySink` and the integration layer
uses :class:`KafkaEventSink` against a real broker."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from streams.errors import BrokerUnavailable, ProduceError, StreamsError
from streams.schemas import Event
from streams.serde import encode

#: The largest record, in bytes, that the project's producers send and its broker accepts: the
#: producer's ``max_request_size`` and the local broker's ``message.max.bytes`` are both set from
#: it, so a record the client lets through is never refused by the broker for its size (nor the
#: other way round: an outside client's largest record can still be dead-lettered, whose
#: letters are bounded far below it, see :mod:`streams.deadletter`).
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class EventSink(Protocol):
    def add(self, topic: str, key: str | None, event: Event) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


@dataclass
class MemorySink:
    """An in-memory sink for unit tests of pure logic (never in place of integration tests)."""

    records: list[tuple[str, str | None, Event]] = field(default_factory=list)

    def add(self, topic: str, key: str | None, event: Event) -> None:
        self.records.append((topic, key, event))

    def flush(self, timeout_s: float | None = None) -> None:
        return None

    def on(self, topic: str) -> list[Event]:
        return [e for t, _, e in self.records if t == topic]


class KafkaEventSink:
    """Typed, idempotent (acks=all) producer; the client is created on first use.

    ``add`` is asynchronous; delivery failures are collected and raised by the next ``flush``,
    so a caller that flushes before committing its own progress never loses a message.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "copyloop",
        linger_ms: int = 5,
        max_block_ms: int = 10000,
        **producer_config: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_block_ms": max_block_ms,
            "max_request_size": MAX_MESSAGE_BYTES,
            **producer_config,
        }
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        # the longest a healthy client can take to settle a record: its delivery timeout plus
        # one request timeout (kafka-python's defaults when not given), and a margin
        self.settle_timeout_s = (
            float(self._config.get("delivery_timeout_ms", 120_000))
            + float(self._config.get("request_timeout_ms", 30_000))
        ) / 1000.0 + 5.0
        self.abandoned = 0  # producers given up on because they stopped settling records

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(**self._config)
            except KafkaError as exc:
                raise BrokerUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        return self._producer

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def add(self, topic: str, key: str | None, event: Event) -> None:
        self.add_raw(topic, key.encode("utf-8") if key is not None else None, encode(event))

    def add_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Send bytes as they are (used by tests that need malformed messages on a topic)."""
        try:
            future = self._client().send(topic, key=key, value=value)
        except KafkaError as exc:
            raise ProduceError(f"cannot send to `{topic}`: {exc}") from exc
        future.add_errback(self._failed)

    def deliver(self, records: list[tuple[str, bytes | None, bytes]]) -> list[BaseException | None]:
        """Send ``(topic, key, value)`` records and wait until each one's outcome is known:
        ``None`` where the broker acknowledged it, the error where it did not. With a bounded
        ``delivery_timeout_ms`` a failed record is no longer retried by the client, so the
        caller may keep it elsewhere (a spool) without risking a second copy."""
        outcomes: list[BaseException | None] = [None] * len(records)
        futures = []
        for i, (topic, key, value) in enumerate(records):
            try:
                futures.append((i, self._client().send(topic, key=key, value=value)))
            except (KafkaError, StreamsError) as exc:
                outcomes[i] = exc
        if futures:
            try:
                self._client().flush(timeout=self.settle_timeout_s)
            except KafkaTimeoutError:
                self._abandon()  # fails the records it still holds, so each outcome is known
            except KafkaError as exc:
                raise ProduceError(f"flush to {self.bootstrap} failed: {exc}") from exc
        for i, future in futures:
            if not future.is_done:
                outcomes[i] = ProduceError("the producer stopped settling records; abandoned")
            elif not future.succeeded():
                outcomes[i] = future.exception or ProduceError("not acknowledged")
        return outcomes

    def _abandon(self) -> None:
        """Drop a producer that no longer settles records, failing everything it holds.

        kafka-python 3.0's idempotent producer can lose its producer id when the broker
        restarts and then neither sends nor expires its batches, so a flush never returns. Its
        sender is closed forcibly (which fails the pending futures) and the next send creates a
        fresh producer with a new producer id."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        self.abandoned += 1
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(10.0)
        with contextlib.suppress(KafkaError):
            producer.close(timeout=0)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every record sent so far; raise :class:`ProduceError` for any not delivered.

        Without ``timeout_s`` the wait is bounded by :attr:`settle_timeout_s`; a producer that
        has not settled its records by then is abandoned and the flush fails."""
        producer = self._client()
        try:
            producer.flush(timeout=self.settle_timeout_s if timeout_s is None else timeout_s)
        except KafkaTimeoutError as exc:
            if timeout_s is None:
                self._abandon()
            raise ProduceError(f"flush to {self.bootstrap} timed out: {exc}") from exc
        except KafkaError as exc:
            raise ProduceError(f"flush to {self.bootstrap} failed: {exc}") from exc
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise ProduceError(f"{len(errors)} message(s) not delivered: {errors[0]}") from errors[
                0
            ]

    def close(self, timeout_s: float = 10.0) -> None:
        if self._producer is None:
            return
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as exc:
            self._abandon()  # close() gives up without stopping the sender when it times out
            raise ProduceError(f"closing the producer for {self.bootstrap}: {exc}") from exc
        self._producer = None

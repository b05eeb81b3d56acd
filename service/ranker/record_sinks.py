"""Where a ranker's records go once the publisher sends them: a Kafka producer when serving,
memory when the HTTP behaviour is tested without a broker. :class:`~service.ranker.runtime.Runtime`
takes one of these instead of building its producer, so the request path, the spool and the
counts of what was published are the same code in both."""

from __future__ import annotations

import threading
from typing import Protocol, TypeVar

from service.ranker.spool import Record
from service.settings import Settings
from streams.producer import KafkaEventSink
from streams.schemas import Event
from streams.serde import decode

E = TypeVar("E", bound=Event)


class RecordSink(Protocol):
    """What the spooling publisher needs of its destination."""

    #: the longest a healthy sink takes to settle a record (bounds a delivery round)
    settle_timeout_s: float

    def deliver(self, records: list[Record]) -> list[BaseException | None]:
        """Send ``records``; one outcome each, ``None`` when delivered."""
        ...

    def close(self, timeout_s: float = 10.0) -> None: ...


def kafka_record_sink(settings: Settings) -> KafkaEventSink:
    """The ranker's producer. Bounded timeouts: a record's fate is known within seconds, so the
    publisher can spool it (see ``service.ranker.spool``). The request timeout is generous on
    purpose: a produce request that times out may still have been written by a slow broker (one
    just restarted, on a loaded machine), and spooling it again would duplicate it."""
    return KafkaEventSink(
        settings.kafka_bootstrap,
        client_id="copyloop-ranker",
        delivery_timeout_ms=15000,
        request_timeout_ms=10000,
        max_block_ms=1500,
        reconnect_backoff_max_ms=500,
    )


class MemoryRecordSink:
    """Keeps every delivered record in order; thread-safe, since the publisher delivers from
    its own thread. ``events`` reads a topic back as the contract's models."""

    settle_timeout_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.closed = False

    def deliver(self, records: list[Record]) -> list[BaseException | None]:
        with self._lock:
            self._records.extend(records)
        return [None] * len(records)

    def close(self, timeout_s: float = 10.0) -> None:
        self.closed = True

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def events(self, topic: str, model: type[E]) -> list[E]:
        """Every record delivered to ``topic``, decoded as ``model``."""
        return [decode(model, value) for t, _, value in self.records if t == topic]

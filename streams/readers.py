"""The Kafka clients an :class:`~streams.consumer.EventConsumer` reads with, behind one small
interface: assign or subscribe, poll raw records, seek, commit, and read end offsets.

- ``kafka-python`` (the default): pure Python, everywhere the service reads.
- ``librdkafka`` (confluent-kafka): fetches and parses record batches in C threads of its own,
  ahead of the caller, so a reader that does real work per record (the learner's decode, join
  and learn) overlaps it with the next fetch. Read alone, a record costs the calling thread about
  1 µs here against about 4.6 µs through kafka-python, which also waits for each fetch.

Both hand records out as :class:`RawRecord` tuples, each partition's in offset order."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from streams.errors import BrokerUnavailable, StreamsError

#: the clients an EventConsumer can read with
KAFKA_CLIENTS: tuple[str, ...] = ("kafka-python", "librdkafka")
PartitionKey = tuple[str, int]
_log = logging.getLogger("streams.librdkafka")


#: one record as a reader hands it out: ``(topic, partition, offset, key, value,
#: timestamp_ms)``, a plain tuple (the consumer unpacks it at once; a named tuple costs ten
#: times more to build, for each of a hundred thousand records a second)
RawRecord = tuple[str, int, int, bytes | None, bytes | None, int]


class Reader(Protocol):
    def subscribe(self, topics: Sequence[str]) -> None: ...
    def subscribed(self) -> bool: ...
    def partitions_for(self, topic: str) -> set[int] | None: ...
    def assign(self, keys: Sequence[PartitionKey], offsets: dict[PartitionKey, int]) -> None: ...
    def assigned(self) -> set[PartitionKey]: ...
    def poll(self, timeout_s: float, max_records: int) -> list[RawRecord]: ...
    def seek(self, targets: dict[PartitionKey, int]) -> None: ...
    def pause(self, keys: Sequence[PartitionKey]) -> None: ...
    def resume(self, keys: Sequence[PartitionKey]) -> None: ...
    def commit(self, offsets: dict[PartitionKey, int]) -> None: ...
    def committed(self, key: PartitionKey) -> int | None: ...
    def end_offsets(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]: ...
    def close(self) -> None: ...


def open_reader(client: str, config: dict[str, Any]) -> Reader:
    """A reader of kind ``client`` built from kafka-python style settings (``bootstrap_servers``,
    ``group_id``, ``client_id``, ``auto_offset_reset``, ``max_partition_fetch_bytes``, ...)."""
    check_client(client)
    return KafkaPythonReader(config) if client == "kafka-python" else RdKafkaReader(config)


def check_client(client: str) -> None:
    """A :class:`ValueError` naming the setting when ``client`` is not one of ours."""
    if client not in KAFKA_CLIENTS:
        raise ValueError(
            f"`kafka_client` must be one of {', '.join(KAFKA_CLIENTS)}, got {client!r}"
        )


class KafkaPythonReader:
    def __init__(self, config: dict[str, Any]) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self._error = KafkaError
        try:
            self._c = KafkaConsumer(**config)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {config.get('bootstrap_servers')}: {exc}"
            ) from exc

    def subscribe(self, topics: Sequence[str]) -> None:
        self._c.subscribe(list(topics))

    def subscribed(self) -> bool:
        return bool(self._c.subscription())

    def partitions_for(self, topic: str) -> set[int] | None:
        parts = self._c.partitions_for_topic(topic)
        return set(parts) if parts else None

    def assign(self, keys: Sequence[PartitionKey], offsets: dict[PartitionKey, int]) -> None:
        from kafka import TopicPartition

        try:
            self._c.assign([TopicPartition(t, p) for t, p in keys])
            for (t, p), off in offsets.items():
                self._c.seek(TopicPartition(t, p), off)
        except self._error as exc:
            raise StreamsError(f"assigning {list(keys)} failed: {exc}") from exc

    def assigned(self) -> set[PartitionKey]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    def poll(self, timeout_s: float, max_records: int) -> list[RawRecord]:
        try:
            batches = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except self._error as exc:
            raise StreamsError(f"poll failed: {exc}") from exc
        out: list[RawRecord] = []
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            out.extend((topic, partition, r.offset, r.key, r.value, r.timestamp) for r in records)
        return out

    def seek(self, targets: dict[PartitionKey, int]) -> None:
        from kafka import TopicPartition

        try:
            for (t, p), off in targets.items():
                self._c.seek(TopicPartition(t, p), off)
        except self._error as exc:
            raise StreamsError(f"seeking back to {targets} failed: {exc}") from exc

    def pause(self, keys: Sequence[PartitionKey]) -> None:
        # kafka-python 3.0, seen here: a partition paused while a fetch for it is in flight is
        # never fetched again after resume(), not even after a seek
        raise StreamsError("the kafka-python reader does not pause partitions; use librdkafka")

    def resume(self, keys: Sequence[PartitionKey]) -> None:
        raise StreamsError("the kafka-python reader does not pause partitions; use librdkafka")

    def commit(self, offsets: dict[PartitionKey, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        payload = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()
        }
        try:
            self._c.commit(payload)
        except self._error as exc:
            raise StreamsError(f"commit failed: {exc}") from exc

    def committed(self, key: PartitionKey) -> int | None:
        from kafka import TopicPartition

        try:
            result: int | None = self._c.committed(TopicPartition(*key))
        except self._error as exc:
            raise StreamsError(f"reading the committed offset of {key} failed: {exc}") from exc
        return result

    def end_offsets(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        from kafka import TopicPartition

        try:
            ends = self._c.end_offsets([TopicPartition(t, p) for t, p in keys])
        except self._error as exc:
            raise StreamsError(f"reading end offsets failed: {exc}") from exc
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}

    def close(self) -> None:
        self._c.close(autocommit=False)


#: librdkafka's first reconnect backoff (see RdKafkaReader)
_RECONNECT_BACKOFF_MS = 20


class RdKafkaReader:
    """confluent-kafka's consumer, assigned by hand (the learner's way of reading; a group
    subscription is left to kafka-python). Metadata and log ends come through an admin client
    of its own: on the consumer's connection each request would wait behind a fetch waiting
    for data. A seek starts a fresh consumer at the given places, so nothing fetched ahead from
    the old places is handed out."""

    #: how long a metadata, offsets or commit request may take
    request_timeout_s = 30.0
    #: how long a topic's partition list is kept before it is asked for again
    metadata_max_age_s = 30.0

    def __init__(self, config: dict[str, Any]) -> None:
        from confluent_kafka import KafkaException

        self._exc = KafkaException
        self._settings: dict[str, Any] = {
            "bootstrap.servers": config["bootstrap_servers"],
            "client.id": config.get("client_id", "copyloop"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": config.get("auto_offset_reset", "earliest"),
            # the client wants a group id even where none is used (assigned, no commits)
            "group.id": config.get("group_id") or f"copyloop-unused-{uuid.uuid4().hex[:12]}",
            "enable.partition.eof": False,
            "isolation.level": "read_uncommitted",  # as kafka-python reads
            "max.partition.fetch.bytes": int(
                config.get("max_partition_fetch_bytes", 4 * 1024 * 1024)
            ),
            # a commit waits behind a fetch that waits for data: keep that wait short
            "fetch.wait.max.ms": 100,
            # a reader slower than the fetches fills the client's queue, and the client then
            # fetches that partition again only after this pause (1 s by default): a reader
            # that had caught up would wait for it
            "fetch.queue.backoff.ms": 10,
            "reconnect.backoff.max.ms": int(config.get("reconnect_backoff_max_ms", 1000)),
            # the client spaces its first connections by half of this (50 ms at the default
            # 100): after the bootstrap connection names the broker, the connection to it, and
            # the first metadata or fetch, waited that long. Backoff still doubles to the max
            "reconnect.backoff.ms": _RECONNECT_BACKOFF_MS,
            "logger": _log,
        }
        self._has_group = bool(config.get("group_id"))
        self._admin: Any = None
        self._assigned: list[PartitionKey] = []
        self._paused: set[PartitionKey] = set()
        self._parts: dict[str, tuple[float, set[int]]] = {}
        self._c = self._consumer()

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        try:
            return Consumer(self._settings)
        except self._exc as exc:
            raise BrokerUnavailable(f"cannot create a Kafka client: {exc}") from exc

    def _admin_client(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(
                {
                    "bootstrap.servers": self._settings["bootstrap.servers"],
                    "client.id": f"{self._settings['client.id']}-admin",
                    "reconnect.backoff.ms": _RECONNECT_BACKOFF_MS,
                    "logger": self._settings["logger"],
                }
            )
        return self._admin

    def subscribe(self, topics: Sequence[str]) -> None:
        raise StreamsError("the librdkafka reader reads assigned partitions only; call assign()")

    def subscribed(self) -> bool:
        return False

    def partitions_for(self, topic: str) -> set[int] | None:
        at, parts = self._parts.get(topic, (-math.inf, set()))
        if parts and time.monotonic() - at < self.metadata_max_age_s:
            return parts
        try:
            meta = self._admin_client().list_topics(topic, timeout=self.request_timeout_s)
        except self._exc as exc:
            raise BrokerUnavailable(f"reading the partitions of `{topic}` failed: {exc}") from exc
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        self._parts[topic] = (time.monotonic(), set(found.partitions))
        return set(found.partitions)

    def _tps(self, offsets: dict[PartitionKey, int]) -> list[Any]:
        """Every assigned partition at its place: ``offsets``, else the group's committed
        offset, else the start or the end of the log (``auto.offset.reset``). Resolved here,
        not left to the client: a new group's coordinator answers "not coordinator" for a
        while, and the client does not ask again for partitions it was told nothing about."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        places = {key: offsets[key] for key in self._assigned if key in offsets}
        unknown = [key for key in self._assigned if key not in places]
        if unknown and self._has_group:
            places.update(self._committed(unknown))
        reset = (
            OFFSET_BEGINNING if self._settings["auto.offset.reset"] == "earliest" else OFFSET_END
        )
        return [TopicPartition(t, p, places.get((t, p), reset)) for t, p in self._assigned]

    def _committed(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The group's committed offsets of ``keys`` (those it has), asked until the
        coordinator answers or ``request_timeout_s`` runs out."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + self.request_timeout_s
        while True:
            try:
                found = self._c.committed(
                    [TopicPartition(t, p) for t, p in keys], timeout=self.request_timeout_s
                )
            except self._exc as exc:
                # "not coordinator" and the like, while a new group's coordinator (or the
                # offsets topic of a new broker) gets ready: the client does not mark them
                # retriable, but they pass
                if time.monotonic() > deadline or exc.args[0].fatal():
                    raise StreamsError(f"reading the committed offsets failed: {exc}") from exc
                time.sleep(0.2)
                continue
            failed = [tp.error for tp in found if tp.error is not None]
            if failed and time.monotonic() <= deadline:
                time.sleep(0.2)
                continue
            if failed:
                raise StreamsError(f"reading the committed offsets failed: {failed[0]}")
            return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _warm(self) -> None:
        """The consumer's own metadata for the assigned topics, asked before it fetches
        anything (left to itself, it learns the partitions' leaders in its own time: 0.5 to
        1 s before the first record)."""
        for topic in sorted({t for t, _ in self._assigned}):
            self._c.list_topics(topic, timeout=self.request_timeout_s)

    def assign(self, keys: Sequence[PartitionKey], offsets: dict[PartitionKey, int]) -> None:
        self._assigned = list(keys)
        try:
            self._warm()
            self._c.assign(self._tps(offsets))
        except self._exc as exc:
            raise StreamsError(f"assigning {list(keys)} failed: {exc}") from exc

    def assigned(self) -> set[PartitionKey]:
        return set(self._assigned)

    def poll(self, timeout_s: float, max_records: int) -> list[RawRecord]:
        try:
            # what the client holds now; when it holds nothing, wait for the first record
            # only (a batch call would wait out its whole timeout for a full batch)
            msgs: list[Any] = self._c.consume(max_records, 0)
            if not msgs:
                first = self._c.poll(timeout_s)
                if first is not None:
                    msgs = [first]
                    if max_records > 1:
                        msgs += self._c.consume(max_records - 1, 0)
        except self._exc as exc:
            raise StreamsError(f"poll failed: {exc}") from exc
        out: list[RawRecord] = []
        append = out.append
        for m in msgs:
            err = m.error()
            if err is not None:
                # an event, not a record: the client retries what it reports (a coordinator
                # moving, a broker down) by itself; only a fatal error ends the reader
                if err.fatal():
                    raise StreamsError(f"poll failed: {err}")
                _log.warning("Kafka client: %s", err)
                continue
            append((m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
        return out

    def seek(self, targets: dict[PartitionKey, int]) -> None:
        """Start a fresh consumer with ``targets`` (partitions not named resume at the
        group's committed offset, else ``auto.offset.reset``; the caller names every partition
        it has read from)."""
        old, self._c = self._c, None
        # the old one's records fetched ahead are dropped with it, closed or not
        with contextlib.suppress(self._exc, RuntimeError):
            old.close()
        self._c = self._consumer()
        try:
            self._warm()
            self._c.assign(self._tps(targets))
            if self._paused:  # the fresh consumer keeps what was paused paused
                self._c.pause(self._tp_list(self._paused))
        except self._exc as exc:
            raise StreamsError(f"seeking back to {targets} failed: {exc}") from exc

    @staticmethod
    def _tp_list(keys: Iterable[PartitionKey]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(t, p) for t, p in sorted(keys)]

    def pause(self, keys: Sequence[PartitionKey]) -> None:
        """Fetch nothing more from ``keys`` until :meth:`resume`. The client drops what it
        fetched ahead for them and, on resuming, fetches from the next record not handed out,
        so nothing is skipped or handed out twice."""
        self._pausing(keys, pause=True)

    def resume(self, keys: Sequence[PartitionKey]) -> None:
        """Fetch from ``keys`` again, each from the next record not handed out."""
        self._pausing(keys, pause=False)

    def _pausing(self, keys: Sequence[PartitionKey], *, pause: bool) -> None:
        try:
            (self._c.pause if pause else self._c.resume)(self._tp_list(keys))
        except self._exc as exc:
            verb = "pausing" if pause else "resuming"
            raise StreamsError(f"{verb} {sorted(keys)} failed: {exc}") from exc
        if pause:
            self._paused.update(keys)
        else:
            self._paused.difference_update(keys)

    def commit(self, offsets: dict[PartitionKey, int]) -> None:
        from confluent_kafka import TopicPartition

        if not self._has_group:
            return
        try:
            self._c.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except self._exc as exc:
            raise StreamsError(f"commit failed: {exc}") from exc

    def committed(self, key: PartitionKey) -> int | None:
        from confluent_kafka import TopicPartition

        try:
            (tp,) = self._c.committed([TopicPartition(*key)], timeout=self.request_timeout_s)
        except self._exc as exc:
            raise StreamsError(f"reading the committed offset of {key} failed: {exc}") from exc
        return int(tp.offset) if tp.offset >= 0 else None

    def end_offsets(self, keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        if not keys:
            return {}
        wanted = {TopicPartition(t, p): OffsetSpec.latest() for t, p in keys}
        try:
            futures = self._admin_client().list_offsets(
                wanted,
                isolation_level=IsolationLevel.READ_UNCOMMITTED,
                request_timeout=self.request_timeout_s,
            )
            return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}
        except self._exc as exc:
            raise StreamsError(f"reading end offsets failed: {exc}") from exc

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
        self._admin = None

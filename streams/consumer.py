"""Typed consumption. Each message is decoded into the event model of its topic; one that fails
validation goes to the dead-letter topic with its reason and is skipped, so a consumer never
stops on bad input. Offsets are committed explicitly (after the dead letters are flushed), and
the client is created on first use.

A stream error never skips a message. The client moves past a whole batch as it hands it over,
so when recording a dead letter fails mid-batch, :meth:`EventConsumer.poll` seeks back to where
the batch began and hands out none of it (the next poll reads it again). When a flush finds
that an earlier dead letter was not delivered, :meth:`EventConsumer.commit` seeks back to the
last committed positions, so the next poll reads (and dead-letters) everything since again: at
least once for the caller, which is why a caller that keeps state (the learner) rewinds its
state to the same point (:meth:`EventConsumer.rewind`).

:meth:`EventConsumer.fetch` reads records back by ``(partition, offset)`` with a second client of
its own, for a caller that keeps where records were rather than the records (the learner's
checkpoint keeps its open decisions that way)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from streams.deadletter import DeadLetterWriter
from streams.errors import BrokerUnavailable, SerdeError, StreamsError
from streams.readers import Reader, check_client, open_reader
from streams.schemas import Event
from streams.serde import decode, invalid

E = TypeVar("E", bound=Event)

#: ``(topic, partition)`` — used instead of kafka's TopicPartition outside this package.
PartitionKey = tuple[str, int]
#: read forward rather than seek when the next wanted record is at most this far ahead
_FETCH_SKIP = 1_000


@dataclass
class _Ahead:
    """Where the fetch client stands on one partition: the next offset it returns, and the
    raw values of the last batch it returned (a later fetch often wants some of them)."""

    pos: int
    start: int
    values: dict[int, bytes | None] = field(default_factory=dict)


class Received(NamedTuple, Generic[E]):
    """One record as handed out: where it was read, and its event (a tuple: the learner makes
    one per record, and a frozen dataclass costs several times more to build)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    event: E


#: builds a named tuple from its values without the Python-level ``__new__`` of each call
#: (half the cost of a ``Received`` made per record)
_new = tuple.__new__


class EventConsumer:
    """Consumes ``topics`` (a map of topic → event model).

    With ``group_id`` and no :meth:`assign` call, partitions are balanced across the group;
    :meth:`assign` takes every partition of the topics by hand instead (for processes that keep
    their own offsets, such as the learner's checkpoint).
    """

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, type[Event]],
        *,
        group_id: str | None,
        deadletter: DeadLetterWriter | None = None,
        auto_offset_reset: str = "earliest",
        client_id: str = "copyloop",
        owns_partition: Callable[[int], bool] | None = None,
        client: str = "kafka-python",
        **consumer_config: Any,
    ) -> None:
        if not topics:
            raise ValueError("`topics` must name at least one topic")
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        #: each topic's decoder, looked up once (a pydantic class's attribute costs ~0.1 µs)
        self._decoders = {topic: model.model_validate_json for topic, model in topics.items()}
        #: which partition numbers :meth:`assign` takes (None: all); a learner shard's own
        #: (``streams.shards``)
        self.owns_partition = owns_partition
        self.group_id = group_id
        self.deadletter = deadletter
        check_client(client)
        #: the client records are read with (``streams.readers``); :meth:`fetch` reads back
        #: with kafka-python either way
        self.client = client
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            **consumer_config,
        }
        self._reader: Reader | None = None
        #: partitions paused by :meth:`pause`
        self.paused: set[PartitionKey] = set()
        #: the second client :meth:`fetch` reads with, and where it stands per partition
        self._fetcher: KafkaConsumer | None = None
        self._ahead: dict[PartitionKey, _Ahead] = {}
        self._assigned = False
        #: next offset to read per partition, for everything handed out or dead-lettered
        self.positions: dict[PartitionKey, int] = {}
        #: where each partition resumes after a failure: the offsets given to :meth:`assign`,
        #: moved by each :meth:`commit`; else where the client began reading the partition
        self.durable: dict[PartitionKey, int] = {}
        self.dead_lettered = 0

    # -- client ---------------------------------------------------------------------------
    def _client(self) -> Reader:
        if self._reader is None:
            self._reader = open_reader(self.client, self._config)
        return self._reader

    def _ensure_subscribed(self) -> Reader:
        reader = self._client()
        if not self._assigned and not reader.subscribed():
            reader.subscribe(list(self.topics))
        return reader

    def partitions(self) -> list[PartitionKey]:
        reader = self._client()
        out: list[PartitionKey] = []
        for topic in self.topics:
            parts = reader.partitions_for(topic)
            if not parts:
                raise StreamsError(f"topic `{topic}` does not exist")
            owns = self.owns_partition
            out.extend((topic, p) for p in sorted(parts) if owns is None or owns(p))
        return out

    def assign(self, offsets: dict[PartitionKey, int] | None = None) -> None:
        """Take every partition (those ``owns_partition`` accepts) by hand and start at
        ``offsets`` where given, else at the group's committed offset, else at
        ``auto_offset_reset``."""
        reader = self._client()
        keys = self.partitions()
        start = {key: offsets[key] for key in keys if offsets and key in offsets}
        reader.assign(keys, start)
        self.positions.update(start)
        self.durable.update(start)
        self._assigned = True

    # -- reading --------------------------------------------------------------------------
    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Received[Event]]:
        """The next records, decoded; bad ones are dead-lettered and left out. When a dead
        letter cannot be recorded, the client seeks back to the start of this batch and the
        error is raised: none of the batch is handed out, none of it is skipped."""
        reader = self._ensure_subscribed()
        records = reader.poll(timeout_s, max_records)
        out: list[Received[Event]] = []
        first: dict[PartitionKey, int] = {}
        moved: dict[PartitionKey, int] = {}
        models, decoders = self.topics, self._decoders
        append = out.append
        # a client hands out runs of one partition's records: the partition's bookkeeping is
        # done when a run ends, not per record
        pkey: PartitionKey | None = None
        end = 0
        try:
            for topic, partition, offset, key, value, ts in records:
                if pkey is None or partition != pkey[1] or topic != pkey[0]:
                    if pkey is not None:
                        moved[pkey] = end
                    pkey = (topic, partition)
                    if pkey not in first:
                        first[pkey] = offset
                        # the client began reading here: nothing before it was read, none
                        # skipped
                        self.durable.setdefault(pkey, offset)
                end = offset + 1
                # what serde.decode does, without its call (a tenth of a feedback's decoding)
                try:
                    if value is None:
                        event = decode(models[topic], value)  # raises: a tombstone
                    else:
                        event = decoders[topic](value)
                except ValidationError as exc:
                    self._dead_letter(
                        topic, partition, offset, key, value, invalid(models[topic], exc)
                    )
                    continue
                except SerdeError as exc:
                    self._dead_letter(topic, partition, offset, key, value, exc)
                    continue
                text = key.decode("utf-8", "replace") if key is not None else None
                append(_new(Received, (topic, partition, offset, text, ts, event)))
        except Exception:
            # any failure (a dead letter refused, a sink's own error): the batch is read again
            self._seek(first)
            raise
        if pkey is not None:
            moved[pkey] = end
        self.positions.update(moved)
        return out

    def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        exc: SerdeError,
    ) -> None:
        self.dead_lettered += 1
        if self.deadletter is None:
            raise StreamsError(
                f"undecodable message at {topic}[{partition}]@{offset} and no dead-letter writer"
            ) from exc
        self.deadletter.send(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=exc.reason,
        )

    # -- progress -------------------------------------------------------------------------
    def commit(self, offsets: dict[PartitionKey, int] | None = None) -> None:
        """Commit ``offsets`` (default: everything handed out so far) for the group. Dead
        letters are flushed first, so a committed offset never skips an unrecorded message;
        when the flush fails, the consumer rewinds to the last committed positions (see
        :meth:`rewind`) before the error is raised."""
        chosen = dict(self.positions if offsets is None else offsets)
        if self.deadletter is not None:
            try:
                self.deadletter.flush()
            except StreamsError:
                self.rewind()
                raise
        if self.group_id is not None and chosen:
            self._client().commit(chosen)
        self.durable.update(chosen)

    def rewind(self, offsets: dict[PartitionKey, int] | None = None) -> None:
        """Seek back to ``offsets`` (default: the last committed positions, :attr:`durable`),
        so the next poll reads again everything after them; partitions not named go back to
        :attr:`durable`. For a caller that keeps state, which it must restore to the same
        point (the learner restores its checkpoint)."""
        self._seek({**self.durable, **(offsets or {})})

    def _seek(self, targets: dict[PartitionKey, int]) -> None:
        if not targets or self._reader is None:
            return
        mine = self._reader.assigned()
        # every partition's place, so a client that starts afresh to seek keeps the others'
        places = {**self.durable, **self.positions, **targets}
        self._reader.seek({key: off for key, off in places.items() if key in mine})
        self.positions.update({key: off for key, off in targets.items() if key in mine})

    def pause(self, keys: Iterable[PartitionKey]) -> None:
        """Read nothing more from ``keys`` (assigned partitions) until :meth:`resume`; their
        places are kept, through a rewind too."""
        todo = sorted(set(keys) - self.paused)
        if todo:
            self._client().pause(todo)
            self.paused.update(todo)

    def resume(self, keys: Iterable[PartitionKey]) -> None:
        todo = sorted(set(keys) & self.paused)
        if todo:
            self._client().resume(todo)
            self.paused.difference_update(todo)

    def committed(self, key: PartitionKey) -> int | None:
        return self._client().committed(key)

    def end_offsets(self) -> dict[PartitionKey, int]:
        return self._client().end_offsets(self.partitions())

    def fetch(
        self, topic: str, refs: Iterable[tuple[int, int]], timeout_s: float = 60.0
    ) -> dict[tuple[int, int], Event]:
        """The records of ``topic`` at ``refs`` (``(partition, offset)``), decoded; a ref with
        no record there (deleted by retention, or never written) is left out. Read by a client
        of its own, so the positions :meth:`poll` reads from do not move. It reads forward from
        where the last fetch ended when the next wanted record is near, so fetches in offset
        order read the topic once. Raises :class:`StreamsError` when the broker fails or the
        records do not come within ``timeout_s``."""
        model = self.topics[topic]
        wanted: dict[int, set[int]] = {}
        for partition, offset in refs:
            wanted.setdefault(partition, set()).add(offset)
        deadline = time.monotonic() + timeout_s
        found: dict[tuple[int, int], Event] = {}
        try:
            for partition, offsets in sorted(wanted.items()):
                for offset, value in self._read_at(topic, partition, offsets, deadline):
                    found[(partition, offset)] = decode(model, value)
        except KafkaError as exc:
            raise StreamsError(f"reading back records of `{topic}` failed: {exc}") from exc
        return found

    def _read_at(
        self, topic: str, partition: int, offsets: set[int], deadline: float
    ) -> list[tuple[int, bytes | None]]:
        """The raw values at ``offsets`` of one partition that the log still holds."""
        fetcher = self._fetcher
        if fetcher is None:
            # a record before the log's start is gone: read on from the start to tell so
            config = {**self._config, "group_id": None, "auto_offset_reset": "earliest"}
            config["client_id"] = f"{config['client_id']}-fetch"
            try:
                fetcher = self._fetcher = KafkaConsumer(**config)
            except KafkaError as exc:
                raise BrokerUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        tp = TopicPartition(topic, partition)
        key = (topic, partition)
        assigned = fetcher.assignment()
        if tp not in assigned:
            fetcher.assign([*assigned, tp])
            self._ahead.pop(key, None)
        others = [p for p in fetcher.assignment() if p != tp]
        if others:
            fetcher.pause(*others)  # a paused partition keeps its position
        fetcher.resume(tp)
        lo, hi = min(offsets), max(offsets)
        ahead = self._ahead.get(key)
        if ahead is None or lo < ahead.start or lo > ahead.pos + _FETCH_SKIP:
            fetcher.seek(tp, lo)
            ahead = self._ahead[key] = _Ahead(pos=lo, start=lo)
        need = set(offsets)
        out = [(o, ahead.values[o]) for o in sorted(need) if o in ahead.values]
        need.difference_update(o for o, _ in out)
        while need and ahead.pos <= hi:
            records = fetcher.poll(timeout_ms=200, max_records=10_000).get(tp, [])
            if not records:
                if ahead.pos >= fetcher.end_offsets([tp])[tp]:
                    break  # the log ends before them
                if time.monotonic() > deadline:
                    raise StreamsError(
                        f"reading back `{topic}`[{partition}] timed out at offset {ahead.pos}"
                    )
                continue
            ahead.values = {r.offset: r.value for r in records}
            ahead.start, ahead.pos = records[0].offset, records[-1].offset + 1
            for rec in records:
                if rec.offset in need:
                    need.discard(rec.offset)
                    out.append((rec.offset, rec.value))
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.paused.clear()
        if self._fetcher is not None:
            self._fetcher.close(autocommit=False)
            self._fetcher = None
            self._ahead.clear()

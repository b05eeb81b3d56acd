"""Background consumers that keep a ranker's state current: pools and model announcements
(``StateFeed``) and per-variant counts from decisions and feedback (``StatsFeed``).

Each runs in a daemon thread and survives its broker: any ``StreamsError`` (broker gone, topic
missing, poll failed) closes the consumer, waits a little and starts again, re-reading from the
position it had reached. The consumers have no group: every ranker reads every pool."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bandit.errors import BanditError
from bandit.snapshot import PolicyHolder, load_snapshot
from bandit.wire import LoggedDecision, LoggedFeedback, WireDecision, WireFeedback
from service.ranker.counts import VariantStats
from service.ranker.pool_cache import PoolCache
from streams.consumer import EventConsumer, PartitionKey, Received
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.schemas import Decision, Event, Feedback, ModelAnnouncement, VariantPool
from streams.topics import Topics

log = logging.getLogger(__name__)

#: how many recent messages per models partition are read at start to find the latest snapshot
MODELS_LOOKBACK = 1000
#: consecutive empty polls (0.5 s each) after which a feed counts as caught up regardless
EMPTY_POLLS_CAUGHT_UP = 8


class _Feed:
    """A poll loop on its own thread with reconnects; subclasses say what to read and do."""

    name = "feed"
    #: extra KafkaConsumer settings of this feed
    consumer_config: dict[str, Any] = {}  # noqa: RUF012 - read only

    def __init__(self, bootstrap: str, deadletter: DeadLetterWriter | None) -> None:
        self.bootstrap = bootstrap
        self.deadletter = deadletter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: EventConsumer | None = None
        self._positions: dict[PartitionKey, int] = {}
        self.errors = 0
        self.last_error: str | None = None

    @property
    def dead_lettered(self) -> int:
        return self._consumer.dead_lettered if self._consumer is not None else 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"copyloop-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _topics(self) -> dict[str, type[Event]]:
        raise NotImplementedError

    def _start_offsets(self, consumer: EventConsumer) -> dict[PartitionKey, int]:
        return {}

    def _handle(self, records: list[Received[Event]], consumer: EventConsumer) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            consumer = EventConsumer(
                self.bootstrap,
                self._topics(),
                group_id=None,
                deadletter=self.deadletter,
                client_id=f"copyloop-{self.name}",
                reconnect_backoff_max_ms=1000,
                **self.consumer_config,
            )
            self._consumer = consumer
            try:
                offsets = {**self._start_offsets(consumer), **self._positions}
                consumer.assign(offsets)
                backoff = 0.2
                while not self._stop.is_set():
                    records = consumer.poll(0.5, max_records=2000)
                    self._handle(records, consumer)
                    self._positions.update(consumer.positions)
            except StreamsError as exc:
                self.errors += 1
                self.last_error = str(exc)
                log.warning("%s: %s; reconnecting in %.1fs", self.name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._positions.update(consumer.positions)
                try:
                    consumer.close()
                except Exception as exc:
                    log.debug("%s: closing the consumer failed: %s", self.name, exc)


#: where the announcement of an unsharded learner is kept in a sharded ranker
_UNSHARDED = -1


class StateFeed(_Feed):
    """Pools into the :class:`PoolCache`, bandit snapshots into the :class:`PolicyHolder`.

    At start it reads to the end of both topics before loading a snapshot, so only the latest
    announced one is loaded; ``caught_up`` turns true then (it is what ``/readyz`` waits for).

    With model shards (``streams.shards``; ``shards`` holds one holder per shard, ``policy``
    being shard 0's) each shard's holder loads the latest snapshot announced for that shard. A
    shard with none yet serves the latest unsharded snapshot, if any (a deployment moving from
    one learner to several keeps the model it had until each shard announces its own); an
    announcement for another shard count is ignored and counted (``mismatched``)."""

    name = "state"

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        pools: PoolCache,
        policy: PolicyHolder,
        *,
        deadletter: DeadLetterWriter | None = None,
        on_generator: Callable[[ModelAnnouncement], None] | None = None,
        shards: Sequence[PolicyHolder] = (),
    ) -> None:
        super().__init__(bootstrap, deadletter)
        self.topics = topics
        self.pools = pools
        self.policy = policy
        #: one holder per model shard; the one ``policy`` without shards
        self.holders: list[PolicyHolder] = list(shards) if len(shards) > 1 else [policy]
        self.on_generator = on_generator
        self.caught_up = False
        #: the latest bandit announcement per shard (``_UNSHARDED``: an unsharded learner's)
        self.latest: dict[int, ModelAnnouncement] = {}
        self.mismatched = 0
        self.load_errors = 0
        self._ends: dict[PartitionKey, int] | None = None
        self._empty_polls = 0

    def _topics(self) -> dict[str, type[Event]]:
        return {self.topics.variants: VariantPool, self.topics.models: ModelAnnouncement}

    def _start_offsets(self, consumer: EventConsumer) -> dict[PartitionKey, int]:
        ends = consumer.end_offsets()
        if self._ends is None:
            self._ends = ends
        return {
            key: max(0, end - MODELS_LOOKBACK)
            for key, end in ends.items()
            if key[0] == self.topics.models
        }

    def _handle(self, records: list[Received[Event]], consumer: EventConsumer) -> None:
        for rec in records:
            event = rec.event
            if isinstance(event, VariantPool):
                self.pools.apply(event)
            elif isinstance(event, ModelAnnouncement):
                self._announced(event)
        if not self.caught_up:
            self._empty_polls = 0 if records else self._empty_polls + 1
            # a partition whose tail was deleted by retention never hands out its end offset,
            # so a few seconds of nothing to read also counts as caught up
            if self._reached_ends(consumer) or self._empty_polls >= EMPTY_POLLS_CAUGHT_UP:
                self.caught_up = True
                self.load_latest()

    def _reached_ends(self, consumer: EventConsumer) -> bool:
        if self._ends is None:
            return False
        return all(
            consumer.positions.get(key, 0) >= end or end == 0 for key, end in self._ends.items()
        )

    def _announced(self, event: ModelAnnouncement) -> None:
        if event.kind == "generator":
            if self.on_generator is not None:
                self.on_generator(event)
            return
        slot = self._slot(event)
        if slot is None:
            return
        latest = self.latest.get(slot)
        if latest is None or event.created_at >= latest.created_at:
            self.latest[slot] = event
        if self.caught_up:
            self.load_latest()

    @property
    def latest_bandit(self) -> ModelAnnouncement | None:
        """The newest bandit announcement of any shard."""
        return max(self.latest.values(), key=lambda a: a.created_at, default=None)

    def _slot(self, event: ModelAnnouncement) -> int | None:
        shards = len(self.holders)
        if event.shard is not None and event.shards == shards:
            return event.shard if shards > 1 else _UNSHARDED
        if event.shards in (None, 1):
            return _UNSHARDED
        self.mismatched += 1
        log.log(
            logging.WARNING if self.mismatched == 1 else logging.DEBUG,
            "ignoring snapshot %s of shard %s of %s: this ranker serves %d shard(s) "
            "(COPYLOOP_LEARNER_SHARDS)",
            event.version,
            event.shard,
            event.shards,
            shards,
        )
        return None

    def load_latest(self, *, force: bool = False) -> bool:
        """Swap each shard to its latest announced snapshot (``force``: even when it is the one
        held); True when any was loaded."""
        unsharded = self.latest.get(_UNSHARDED)
        loaded = False
        for shard, holder in enumerate(self.holders):
            latest = self.latest.get(shard, unsharded) if len(self.holders) > 1 else unsharded
            loaded |= self._load(holder, latest, force=force)
        return loaded

    def _load(self, holder: PolicyHolder, latest: ModelAnnouncement | None, *, force: bool) -> bool:
        if latest is None:
            return False
        if force and latest.version == holder.version:
            # PolicyHolder.load skips the version it holds; a forced reload re-reads the file
            try:
                holder.swap(load_snapshot(latest.uri))
            except BanditError as exc:
                self.load_errors += 1
                log.warning("reloading snapshot %s failed: %s", latest.uri, exc)
                return False
            return True
        try:
            return holder.load(latest)
        except BanditError as exc:
            self.load_errors += 1
            log.warning("loading snapshot %s (%s) failed: %s", latest.version, latest.uri, exc)
            return False


class CountingSink:
    """A sink that only counts: the stats feed skips undecodable decisions and feedback without
    writing dead letters, since the learner, which owns those topics, already does (N rankers
    would write N copies of each)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, topic: str, key: str | None, event: Event) -> None:
        self.count += 1

    def flush(self, timeout_s: float | None = None) -> None:
        return None


class StatsFeed(_Feed):
    """Decisions and feedback into :class:`VariantStats`, from the start of both topics."""

    name = "stats"
    # counts may lag by a second; waiting for fuller fetches costs far less CPU per record
    # (kafka-python spends ~1 ms of CPU per small fetch, measured in benchmarks/bench_http.py)
    consumer_config = {"fetch_min_bytes": 256 * 1024, "fetch_max_wait_ms": 1000}  # noqa: RUF012

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        stats: VariantStats,
    ) -> None:
        super().__init__(bootstrap, DeadLetterWriter(CountingSink(), topics.deadletter))
        self.topics = topics
        self.stats = stats

    def _topics(self) -> dict[str, type[Event]]:
        # the learner's decoders: the same validation as the pydantic models (what they do not
        # accept as is goes through pydantic), at a fraction of the CPU and of the objects
        # left for the garbage collector; this thread shares the GIL with the request path
        return {self.topics.decisions: WireDecision, self.topics.feedback: WireFeedback}

    def _handle(self, records: list[Received[Event]], consumer: EventConsumer) -> None:
        for rec in records:
            event = rec.event
            if isinstance(event, LoggedDecision | Decision):
                self.stats.add_decision(event)
            elif isinstance(event, LoggedFeedback | Feedback):
                self.stats.add_feedback(event)

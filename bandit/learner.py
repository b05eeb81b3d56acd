"""The learner process: consume ``copyloop.decisions`` and ``copyloop.feedback``, join them into
rewards, learn, checkpoint, announce.

Exactly once: partitions are assigned by hand and sought to the checkpoint's offsets; the model,
the joiner state, the learned count and those offsets are written together in one atomic file.
After a crash the learner restores all four and re-reads from the offsets, so everything learned
after the checkpoint is learned again, once, and nothing before it twice. Dead letters are
flushed before a checkpoint moves past them (a restart may send some again: at least once).

A stream error (a dead letter refused, a flush that finds one undelivered) is handled the way a
crash is: the learner restores the last checkpoint's model, joiner and count, and seeks the
consumer back to its offsets, so nothing it read since is skipped and nothing is learned twice.

One learner per data dir: :meth:`Learner.start` takes an exclusive ``flock`` on
``learner.lock`` there and holds it until :meth:`Learner.close` (or the process ends, however
it ends), so a second learner on the same data dir stops with :class:`LearnerLocked` instead
of restoring the same checkpoint and publishing a different model under the same name. Each
start also draws a run id that every snapshot name of that run carries
(``LINEAGE-SEQ-RUN``), so no two runs ever announce different models under one name, even
where the lock cannot hold (a file system without ``flock``).

The checkpoint keeps the open decisions by reference (their partition and offset): after a
restore each is read back from the decisions topic as its window closes (see
:mod:`bandit.join`), so a checkpoint's size and its restore do not grow with the decisions'
payload.

The watermark runs on event times the shoppers' devices cannot push: each record counts at the
earlier of its own ``ts`` and the time the broker logged it plus ``event_time_skew_s`` (see
:func:`bandit.join.bounded_event_time`)."""

from __future__ import annotations

import fcntl
import gc
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bandit.checkpoint import Checkpoint
from bandit.errors import BanditError, CheckpointError, ConfigError
from bandit.join import Joined, Rejected, RewardJoiner, bounded_event_time
from bandit.policy import Policy, PolicyConfig
from bandit.promotion import PromotionConfig, PromotionGate, Serving
from bandit.reward import DEFAULT_REWARD, RewardConfig
from bandit.snapshot import write_snapshot
from bandit.wire import (
    AnyDecision,
    LoggedDecision,
    LoggedFeedback,
    WireDecision,
    WireFeedback,
    as_event,
)
from streams.consumer import EventConsumer, PartitionKey, Received
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.producer import EventSink, KafkaEventSink
from streams.readers import KAFKA_CLIENTS
from streams.schemas import Decision, Event, Feedback, ModelAnnouncement
from streams.serde import encode
from streams.shards import Sharding
from streams.topics import Topics

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "bandit-learner.ckpt"
#: the file in the data dir whose ``flock`` a running learner holds
LOCK_NAME = "learner.lock"
#: how long polls must come back empty before a partition never read from counts as empty
_DRAINED_AFTER_S = 5.0


@dataclass(frozen=True)
class LearnerConfig:
    topics: Topics
    data_dir: Path
    reward: RewardConfig = DEFAULT_REWARD
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    seed: int = 0
    snapshot_every_s: float = 10.0
    #: event-time slack for messages that reach Kafka after later ones (see bandit.join)
    lateness_s: float = 60.0
    #: events stamped further ahead of this clock are dead-lettered (None: no check), so one
    #: bad clock cannot move the watermark past everyone else's events
    max_future_s: float | None = 300.0
    #: how far past the time the broker logged a record its ``ts`` may move the watermark
    #: (None: the event's own time, for logs whose time is simulated); a client's clock can
    #: then close no window before its time
    event_time_skew_s: float | None = 10.0
    #: when a poll finds nothing new, move the watermark to the wall clock, so windows close
    #: while traffic is quiet (off for logs stamped in the past, such as tests and replays)
    idle_close: bool = False
    poll_timeout_s: float = 0.2
    #: records handed over per poll: the client's cost per call is fixed, so larger polls read
    #: faster (and the refit model learns each poll's joined events as one batch)
    poll_max_records: int = 10_000
    #: the most decisions waiting for their reward window at once; past it a decision is
    #: dead-lettered (``overflow``) rather than held, so memory and checkpoints stay bounded.
    #: 1,000 decisions/s over a 30-minute window hold 1.8 million.
    max_open_decisions: int = 3_000_000
    keep_snapshots: int = 10
    group_id: str = "copyloop-learner"
    #: the client the topics are read with (``streams.readers``): librdkafka fetches and
    #: parses ahead of the learner in threads of its own; kafka-python is the pure-Python one
    kafka_client: str = "librdkafka"
    #: pause automatic collections during each step, and after it move what the learner holds
    #: into the collector's permanent generation (``gc.freeze``): open decisions wait a whole
    #: reward window, and collections that walk them, and each step's new records, again and
    #: again cost about a third of the learner's time. They are still freed when released;
    #: only reference cycles wait for the sweep below.
    freeze_gc: bool = True
    #: how often the frozen objects are put back and swept by a full collection
    gc_sweep_every_s: float = 600.0
    #: while decisions are still unread, stop reading feedback once it runs this far (event
    #: time, s) ahead of the latest decision read, and read it again when they catch up (None:
    #: read both as the client delivers). A catch-up then meets each decision before its
    #: feedback, which otherwise waits, held, for its decision (librdkafka hands over the
    #: small feedback records far faster than decisions). With librdkafka only: kafka-python
    #: does not pause partitions reliably.
    feedback_lead_s: float | None = 1.0
    #: judge each snapshot on decisions it never learned before rankers get it (bandit.promotion)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    #: this learner's model shard of ``shards`` (streams.shards): it reads only the partitions
    #: of that shard and keeps its checkpoint, lock and snapshots apart from the other shards'
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        if not (type(self.shards) is int and self.shards >= 1):
            raise ConfigError(f"`shards` must be an integer >= 1, got {self.shards!r}")
        if not (type(self.shard) is int and 0 <= self.shard < self.shards):
            raise ConfigError(f"`shard` must be in [0, {self.shards}), got {self.shard!r}")
        if not self.snapshot_every_s > 0:
            raise ConfigError(f"`snapshot_every_s` must be > 0, got {self.snapshot_every_s}")
        if not 0 <= self.lateness_s < math.inf:
            raise ConfigError(f"`lateness_s` must be >= 0 and finite, got {self.lateness_s}")
        if self.max_future_s is not None and not self.max_future_s > 0:
            raise ConfigError(f"`max_future_s` must be > 0 or None, got {self.max_future_s}")
        if not 1 <= self.poll_max_records <= 100_000:
            raise ConfigError(
                f"`poll_max_records` must be in [1, 100000], got {self.poll_max_records}"
            )
        if self.event_time_skew_s is not None and not 0 <= self.event_time_skew_s < math.inf:
            raise ConfigError(
                f"`event_time_skew_s` must be >= 0 and finite or None, got {self.event_time_skew_s}"
            )
        if self.kafka_client not in KAFKA_CLIENTS:
            raise ConfigError(
                f"`kafka_client` must be one of {', '.join(KAFKA_CLIENTS)}, "
                f"got {self.kafka_client!r}"
            )
        if self.feedback_lead_s is not None and not (
            isinstance(self.feedback_lead_s, int | float) and 0 <= self.feedback_lead_s < math.inf
        ):
            raise ConfigError(
                f"`feedback_lead_s` must be >= 0 and finite, or None, got {self.feedback_lead_s!r}"
            )
        if not self.gc_sweep_every_s > 0:
            raise ConfigError(f"`gc_sweep_every_s` must be > 0, got {self.gc_sweep_every_s}")
        if self.keep_snapshots < 1:
            raise ConfigError(f"`keep_snapshots` must be >= 1, got {self.keep_snapshots}")
        if not (type(self.max_open_decisions) is int and self.max_open_decisions >= 1):
            raise ConfigError(
                f"`max_open_decisions` must be an integer >= 1, got {self.max_open_decisions!r}"
            )

    @property
    def shard_dir(self) -> str | None:
        """The sub-folder of this shard's files (None with one shard: the paths of old)."""
        return f"shard-{self.shard}-of-{self.shards}" if self.shards > 1 else None

    def _sharded(self, folder: Path) -> Path:
        return folder / self.shard_dir if self.shard_dir else folder

    @property
    def checkpoint_path(self) -> Path:
        return self._sharded(self.data_dir / "checkpoints") / CHECKPOINT_NAME

    @property
    def snapshot_dir(self) -> Path:
        return self._sharded(self.data_dir / "models" / "bandit")

    @property
    def lock_path(self) -> Path:
        """The learner lock: one per data dir and shard, so the shards of one host can share a
        data dir while two learners of one shard cannot."""
        if self.shard_dir is None:
            return self.data_dir / LOCK_NAME
        return self.data_dir / f"learner-{self.shard_dir}.lock"


class LearnerObserver(Protocol):
    """Something that follows the learner's reading (``bandit.loop_stats.StatsPublisher``):
    the records each poll read, the rewards that joined (before they are learned), each step's
    end, and each checkpoint just before it is saved (so whatever it keeps is saved no later
    than the offsets that checkpoint records)."""

    def read(self, records: Sequence[Received[Event]]) -> None: ...

    def joined(self, joined: Sequence[Joined]) -> None: ...

    def stepped(self, serving: Serving, health: Callable[[], Mapping[str, Any]]) -> None: ...

    def saving(self) -> None: ...


class LearnerLocked(BanditError):
    """Another learner already runs on this data dir."""


@dataclass
class LearnerStats:
    learned: int = 0
    records: int = 0
    dead_lettered: int = 0
    checkpoints: int = 0
    announcements: int = 0
    errors: int = 0
    #: snapshots the promotion gate kept from the rankers
    held_back: int = 0
    #: the rewards of the joined events, summed (for the metrics: rewards per second)
    rewards: float = 0.0
    #: dead letters this learner sent, by reason (late, unknown_event, overflow, future)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    #: decisions read (and learned) by this shard whose product another shard owns: a ranker
    #: that placed them with a different partition count or shard count (streams.shards)
    misrouted: int = 0


class Learner:
    """One learner over the decisions and feedback topics. Build with :meth:`connect`, then
    :meth:`run` (or :meth:`start` + :meth:`step` + :meth:`checkpoint` + :meth:`close`)."""

    def __init__(
        self,
        config: LearnerConfig,
        consumer: EventConsumer,
        sink: EventSink,
        deadletter: DeadLetterWriter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.sink = sink
        self.deadletter = deadletter
        self.clock = clock
        self.stats = LearnerStats()
        self.policy = Policy(config.policy, config.seed)
        self.joiner = RewardJoiner(
            config.reward,
            lateness_s=config.lateness_s,
            follow_event_time=False,
            max_open=config.max_open_decisions,
            fetch=self._fetch_decisions,
        )
        #: latest event time read per partition, for the watermark
        self._latest: dict[PartitionKey, float] = {}
        #: partitions never read from that idle polls showed to hold nothing to read
        self._drained: set[PartitionKey] = set()
        self._ends: dict[PartitionKey, int] = {}
        self._ends_at = -math.inf
        self._idle_since: float | None = None
        self.sharding = Sharding(config.shards)
        # a shard's snapshot names say whose they are
        shard_tag = f"s{config.shard}of{config.shards}-" if config.shards > 1 else ""
        self.lineage = shard_tag + uuid.uuid4().hex[:8]
        #: this run's part of every snapshot name it cuts (kept from no checkpoint)
        self.run_id = uuid.uuid4().hex[:6]
        self._lock_fd: int | None = None
        self.seq = 0
        self._snapshot_learned = 0
        self._announce_pending = False
        self._last_checkpoint = time.monotonic()
        self._swept_at = time.monotonic()
        self._started = False
        #: the state a stream error rewinds to: the last checkpoint (or the state at start)
        self._rewind_point: Checkpoint | None = None
        #: follows what is read and joined (the loop-wide stats); None: nothing does
        self.observer: LearnerObserver | None = None
        self.gate = PromotionGate(
            config.promotion,
            config.snapshot_dir,
            lambda: Policy(config.policy, config.seed),  # what rankers hold before a snapshot
            keep=config.keep_snapshots,
        )

    @classmethod
    def connect(cls, config: LearnerConfig, bootstrap: str, **kwargs: Any) -> Learner:
        sink = KafkaEventSink(bootstrap, client_id="copyloop-learner")
        deadletter = DeadLetterWriter(sink, config.topics.deadletter)
        models: dict[str, type[Event]] = {
            config.topics.decisions: WireDecision,
            config.topics.feedback: WireFeedback,
        }
        consumer = EventConsumer(
            bootstrap,
            models,
            group_id=config.group_id,
            deadletter=deadletter,
            client_id="copyloop-learner",
            owns_partition=(
                Sharding(config.shards).owned_by(config.shard) if config.shards > 1 else None
            ),
            client=config.kafka_client,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        return cls(config, consumer, sink, deadletter, **kwargs)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Restore the checkpoint (if any), seek to its offsets, re-announce the snapshot the
        rankers serve (see :mod:`bandit.promotion`). Raises :class:`LearnerLocked` when
        another learner runs on the data dir."""
        self._lock()
        self._check_shard_partitions()
        ck = Checkpoint.load(self.config.checkpoint_path)
        offsets = None
        if ck is not None:
            self._restore(ck)
            if self.policy.config != self.config.policy:
                log.warning(
                    "the checkpointed model keeps its own settings (%s); the configured ones "
                    "apply to a fresh data dir only",
                    self.policy.config,
                )
            offsets = self._our_offsets(ck)
            log.info("resuming %s at %d learned events", ck.version, ck.learned)
        self.consumer.assign(offsets)
        self._rewind_point = ck if ck is not None else self._state({})
        self.stats.learned = self._snapshot_learned = self.policy.learned
        self.gate.resume(self.policy if ck is not None else None)
        # the crash may have come between a promotion and its announcement
        self._announce_pending = True
        self._publish_announcement()
        self._last_checkpoint = time.monotonic()
        self._started = True

    def _check_shard_partitions(self) -> None:
        """A shard that owns no partition of a topic would learn nothing and say nothing."""
        if self.config.shards == 1:
            return
        mine = {topic for topic, _ in self.consumer.partitions()}
        for topic in self.consumer.topics:
            if topic not in mine:
                raise ConfigError(
                    f"shard {self.config.shard} of {self.config.shards} owns no partition of "
                    f"`{topic}`: {self.config.shards} shards need at least "
                    f"{self.config.shards} partitions (`shards`: COPYLOOP_LEARNER_SHARDS)"
                )

    def step(self) -> int:
        """Poll once, join, learn what closed; returns the number of records read. On a
        stream error the learner rewinds to its last checkpoint (see :meth:`rewind`) and the
        error is raised."""
        try:
            return self._step()
        except StreamsError:
            self.rewind()
            raise

    def _step(self) -> int:
        if not self.config.freeze_gc:
            return self._read_join_learn()
        # a step allocates a few containers per record (the decoded events, the held
        # decisions): automatic collections, woken every 700 of them, would walk everything the
        # step made again and again (a fifth of the learner's time). Paused for the step, and
        # what it made is frozen after it (see _freeze); the records hold no reference cycles,
        # and any made in a step wait for the sweep.
        paused = gc.isenabled()
        gc.disable()
        try:
            read = self._read_join_learn()
        finally:
            if paused:
                gc.enable()
        if read:
            self._freeze()
        return read

    def _read_join_learn(self) -> int:
        records = self.consumer.poll(self.config.poll_timeout_s, self.config.poll_max_records)
        observer = self.observer
        if observer is not None and records:
            observer.read(records)
        now = self.clock()
        joiner = self.joiner
        latest = self._latest
        limit = None if self.config.max_future_s is None else now + self.config.max_future_s
        skew = self.config.event_time_skew_s
        add_decision, add_feedback = joiner.add_decision, joiner.add_feedback
        sharded, shard = self.config.shards > 1, self.config.shard
        # the latest time seen is kept per run of one partition's records (a client hands
        # them out in runs) and written to ``latest`` when the run ends
        run: PartitionKey | None = None
        run_seen = -math.inf
        for rec in records:
            topic, partition, offset, _, logged_ms, event = rec
            ts = event.ts.timestamp()  # type: ignore[attr-defined]
            if limit is not None and ts > limit:
                self._reject_future(rec, now)
                continue
            seen = ts if skew is None else bounded_event_time(ts, logged_ms, skew)
            if run is None or partition != run[1] or topic != run[0]:
                if run is not None and run_seen > latest.get(run, -math.inf):
                    latest[run] = run_seen
                run, run_seen = (topic, partition), seen
            elif seen > run_seen:
                run_seen = seen
            # the learner's decoders give logged events; the pydantic ones are for a caller's
            # own consumer (tests)
            if isinstance(event, LoggedDecision) or isinstance(event, Decision):  # noqa: SIM101
                if sharded and self.sharding.of_product(event.product_id) != shard:
                    self._misrouted(event)
                rejected = add_decision(event, (partition, offset), ts)
            elif isinstance(event, LoggedFeedback) or isinstance(event, Feedback):  # noqa: SIM101
                rejected = add_feedback(event, (partition, offset), ts)
            else:
                continue
            if rejected:
                self._dead_letter(rejected)
        if run is not None and run_seen > latest.get(run, -math.inf):
            latest[run] = run_seen
        watermark, caught_up = self._watermark(idle=not records)
        if self.config.feedback_lead_s is not None and self.config.kafka_client == "librdkafka":
            self._pace_feedback(self.config.feedback_lead_s)
        if caught_up and not records and self.config.idle_close:
            # nothing unread anywhere: time itself moves the windows on (never during a
            # catch-up, whose old events would close before their feedback is read)
            watermark = now if watermark is None else max(watermark, now)
        joined, rejected = joiner.advance(watermark)
        if joined:
            self.gate.observe(joined)
            if observer is not None:
                observer.joined(joined)
            self.policy.learn_many(joined)  # a Joined is a (decision, reward) pair
            self.stats.rewards += math.fsum([j.reward for j in joined])
        self._dead_letter(rejected)
        self.stats.records += len(records)
        self.stats.learned = self.policy.learned
        if time.monotonic() - self._last_checkpoint >= self.config.snapshot_every_s:
            self.checkpoint()
        if observer is not None:
            observer.stepped(self.gate.serving, self.health)
        return len(records)

    def _freeze(self) -> None:
        """Move what the learner holds to the permanent generation; when a sweep is due, first
        put everything back and collect it all (reference cycles made since are freed then)."""
        if time.monotonic() - self._swept_at >= self.config.gc_sweep_every_s:
            gc.unfreeze()
            gc.collect()
            self._swept_at = time.monotonic()
        gc.freeze()

    def _watermark(self, *, idle: bool) -> tuple[float | None, bool]:
        """Event time up to which every partition has been read: the least latest-time over
        the partitions that still hold unread records (the latest overall once none do), so a
        partition read ahead of another never closes the other's windows. An empty poll is
        not taken to mean "caught up" (a slow fetch returns nothing too): end offsets decide.
        Returns the watermark (None: not known yet) and whether every partition is read."""
        latest = self._latest
        if not idle:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = time.monotonic()
        idle_for = 0.0 if self._idle_since is None else time.monotonic() - self._idle_since
        # end offsets cost a broker round trip, so a copy up to a second old serves; but a
        # partition read past its copied end proves the copy older than records already read,
        # and another partition may then hold unread records written before them (a decision
        # before its feedback): a client that fetches partitions ahead of each other would let
        # the watermark pass them. Such a copy is read again.
        positions = self.consumer.positions
        ends = self._ends
        stale = any(positions.get(key, -1) > end for key, end in ends.items())
        if idle or stale or time.monotonic() - self._ends_at >= 1.0:
            self._ends = self.consumer.end_offsets()
            self._ends_at = time.monotonic()
        behind: list[float] = []
        for key, end in self._ends.items():
            if idle_for >= _DRAINED_AFTER_S and key not in positions:
                self._drained.add(key)
            if self._unread(key, end):
                behind.append(latest.get(key, -math.inf))
        if behind:
            low = min(behind)
            return (None if low == -math.inf else low), False
        return (max(latest.values()) if latest else None), True

    def _unread(self, key: PartitionKey, end: int) -> bool:
        """Whether partition ``key`` (its log ending at ``end``) still holds unread records.
        One never read from counts as holding some (where it starts is the client's secret:
        an empty log may start past 0) until polls have come back empty for a while
        (``_drained``): one slow fetch must not pass for an empty partition."""
        pos = self.consumer.positions.get(key)
        if pos is None:
            return end > 0 and key not in self._drained
        return pos < end

    def _pace_feedback(self, lead_s: float) -> None:
        """Pause the feedback partitions while decisions are unread and every feedback
        partition read so far is more than ``lead_s`` of event time ahead of the latest
        decision read; resume them otherwise. Pausing never closes a window early: a paused
        partition still holds unread records, so the watermark waits for it."""
        topics = self.config.topics
        latest = self._latest
        decisions_behind = False
        decided = -math.inf
        feedback: list[PartitionKey] = []
        fed: list[float] = []
        for key, end in self._ends.items():
            if key[0] == topics.decisions:
                decided = max(decided, latest.get(key, -math.inf))
                decisions_behind = decisions_behind or self._unread(key, end)
            elif key[0] == topics.feedback:
                feedback.append(key)
                if key in latest:
                    fed.append(latest[key])
        ahead = decisions_behind and bool(fed) and min(fed) > decided + lead_s
        if ahead:
            self.consumer.pause(feedback)
        elif self.consumer.paused:
            self.consumer.resume(feedback)

    def checkpoint(self) -> Checkpoint:
        """Save model + offsets + joiner + count atomically; cut a snapshot if the model learned
        anything since the last one, and announce the one the promotion gate serves."""
        try:
            self.deadletter.flush()  # offsets must never move past an undelivered dead letter
        except StreamsError:
            self.rewind()  # and the messages whose letters were lost are read again
            raise
        if self.observer is not None:
            self.observer.saving()
        changed = self.policy.learned != self._snapshot_learned
        if changed:
            self.seq += 1
            self.policy.version = f"{self.lineage}-{self.seq:06d}-{self.run_id}"
            self._snapshot_learned = self.policy.learned
            write_snapshot(self.policy, self.config.snapshot_dir, keep=self.config.keep_snapshots)
        ck = self._state(dict(self.consumer.positions))
        ck.save(self.config.checkpoint_path)
        self._rewind_point = ck
        self.stats.checkpoints += 1
        self._last_checkpoint = time.monotonic()
        try:
            self.consumer.commit(ck.offsets)  # for lag monitoring; the checkpoint is the truth
        except StreamsError as exc:
            log.warning("committing offsets failed: %s", exc)
        if changed and self.policy.learned > 0:
            self._announce_pending |= self.gate.review(self.policy)
            self.stats.held_back = self.gate.held_back
        self._publish_announcement()
        return ck

    def health(self) -> dict[str, Any]:
        """The learner's own state for dashboards: records not read yet (lag), events waiting
        for their reward window, dead letters, errors and the snapshot rankers serve."""
        positions = self.consumer.positions
        lag = sum(max(0, end - positions.get(key, end)) for key, end in self._ends.items())
        return {
            "lag": lag,
            "pending": self.joiner.pending,
            "learned": self.policy.learned,
            "dead_lettered": self.deadletter.count,
            "errors": self.stats.errors,
            "held_back": self.stats.held_back,
            "serving": self.gate.serving.version,
        }

    def partition_lag(self) -> dict[PartitionKey, int]:
        """Records not read yet per partition, against the end offsets last read (at most a
        second old while records flow); a partition never read from is left out (where it
        starts is unknown). Safe to call from another thread (a metrics server's)."""
        positions = dict(self.consumer.positions)
        ends = self._ends  # replaced whole, never changed in place
        return {k: max(0, end - positions[k]) for k, end in ends.items() if k in positions}

    def rewind(self) -> None:
        """Go back to the last checkpoint (or the state at start): its model, joiner and
        count, with the consumer sought to its offsets, as a restart after a crash would."""
        point = self._rewind_point
        if point is None:
            return  # not started: nothing read yet
        self._restore(point)
        self._latest.clear()
        self._drained.clear()
        self._ends_at = -math.inf
        self._idle_since = None
        self.stats.learned = self.policy.learned
        self.consumer.rewind(self._our_offsets(point))
        log.warning("rewound to %s at %d learned events", point.version, point.learned)

    def _restore(self, ck: Checkpoint) -> None:
        self.policy = Policy.from_bytes(ck.policy)
        self.joiner = RewardJoiner.from_state(
            ck.joiner,
            self.config.reward,
            lateness_s=self.config.lateness_s,
            follow_event_time=False,
            max_open=self.config.max_open_decisions,
            fetch=self._fetch_decisions,
        )
        self.lineage, self.seq = ck.lineage, ck.seq

    def _our_offsets(self, ck: Checkpoint) -> dict[PartitionKey, int]:
        ours = set(self.consumer.topics)
        return {k: v for k, v in ck.offsets.items() if k[0] in ours}

    def _state(self, offsets: dict[PartitionKey, int]) -> Checkpoint:
        return Checkpoint(
            policy=self.policy.to_bytes(),
            offsets=offsets,
            joiner=self.joiner.to_state(),
            learned=self.policy.learned,
            seq=self.seq,
            lineage=self.lineage,
            version=self.policy.version,
        )

    def run(
        self,
        should_stop: Callable[[], bool],
        *,
        on_progress: Callable[[Learner], None] | None = None,
        progress_every_s: float = 1.0,
    ) -> LearnerStats:
        """Loop until ``should_stop()``; then checkpoint and close. Broker trouble is logged
        and retried, never fatal."""
        if not self._started:
            self.start()
        last_progress = 0.0
        try:
            while not should_stop():
                try:
                    self.step()
                except StreamsError as exc:
                    self.stats.errors += 1
                    log.warning("learner step failed, retrying: %s", exc)
                    time.sleep(1.0)
                if on_progress is not None and time.monotonic() - last_progress >= progress_every_s:
                    on_progress(self)
                    last_progress = time.monotonic()
            try:
                self.checkpoint()
            except StreamsError as exc:
                # nothing is lost: the next start resumes from the previous checkpoint
                self.stats.errors += 1
                log.warning("the final checkpoint failed: %s", exc)
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        if self.config.freeze_gc:
            gc.unfreeze()  # a process that goes on without the learner collects as before
        self.consumer.close()
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file releases its lock
            self._lock_fd = None

    def _lock(self) -> None:
        """Take the data dir's learner lock for this learner's life (see the module
        docstring); the file names its holder for the error a second learner reports."""
        if self._lock_fd is not None:
            return
        path = self.config.lock_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"opening the learner lock {path} failed: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        except BlockingIOError as exc:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise LearnerLocked(
                f"another learner runs on data dir {self.config.data_dir} ({holder}; lock "
                f"file {path}): one learner per data dir, stop it first or use another "
                "COPYLOOP_DATA_DIR"
            ) from exc
        except OSError as exc:  # a file system without locks: running unfenced is not safe
            os.close(fd)
            raise CheckpointError(f"locking {path} failed: {exc}") from exc
        self._lock_fd = fd

    def _fetch_decisions(self, refs: Sequence[tuple[int, int]]) -> list[AnyDecision]:
        """Read back open decisions a restored checkpoint kept by reference (see
        :mod:`bandit.join`); one the topic no longer holds stops the learner, since it could
        not be learned exactly once."""
        topic = self.config.topics.decisions
        found = self.consumer.fetch(topic, refs)
        out: list[AnyDecision] = []
        for ref in refs:
            d = found.get(ref)
            if not isinstance(d, LoggedDecision | Decision):
                raise CheckpointError(
                    f"the checkpoint's open decision at `{topic}` partition {ref[0]} offset "
                    f"{ref[1]} is no longer in the topic: its retention must cover the reward "
                    "window and the lateness"
                )
            out.append(d)
        return out

    # -- helpers --------------------------------------------------------------------------
    def _publish_announcement(self) -> None:
        serving = self.gate.serving
        if not self._announce_pending or serving.path is None:
            self._announce_pending = False  # the untrained policy rankers hold is not announced
            return
        js = self.joiner.stats
        announcement = ModelAnnouncement(
            kind="bandit",
            version=serving.version,
            uri=serving.path.resolve().as_uri(),
            learned_events=serving.learned,
            metrics={
                "joined": float(js.joined),
                "unseen": float(js.unseen),
                "pending": float(self.joiner.pending),
                "duplicate_feedback": float(js.duplicate_feedback),
                "late_feedback": float(js.late_feedback),
                "unknown_feedback": float(js.unknown_feedback),
                "dead_lettered": float(self.deadletter.count),
                **self.gate.metrics(),
            },
            shard=self.config.shard if self.config.shards > 1 else None,
            shards=self.config.shards if self.config.shards > 1 else None,
        )
        try:
            self.sink.add(self.config.topics.models, "bandit", announcement)
            self.sink.flush()
        except StreamsError as exc:
            log.warning("announcing %s failed, will retry: %s", announcement.version, exc)
            return
        self._announce_pending = False
        self.stats.announcements += 1

    def _dead_letter(self, rejected: list[Rejected]) -> None:
        topics = self.config.topics
        for r in rejected:
            partition, offset = r.ref if r.ref is not None else (-1, -1)
            self.deadletter.send(
                source_topic=topics.decisions if r.reason == "overflow" else topics.feedback,
                partition=partition,
                offset=offset,
                key=str(r.event.event_id).encode("utf-8"),
                value=encode(as_event(r.event)),
                reason=r.detail,
            )
            reasons = self.stats.dead_letter_reasons
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        self.stats.dead_lettered += len(rejected)

    def _misrouted(self, event: AnyDecision) -> None:
        """Learned all the same (its feedback is on this shard's partitions too, so it is
        learned exactly once), but by a model that does not serve its product: counted, and
        said once."""
        if self.stats.misrouted == 0:
            log.warning(
                "shard %d of %d read decision %s of product %s, which shard %d owns: do the "
                "rankers run with COPYLOOP_LEARNER_SHARDS=%d and the same partition count?",
                self.config.shard,
                self.config.shards,
                event.event_id,
                event.product_id,
                self.sharding.of_product(event.product_id),
                self.config.shards,
            )
        self.stats.misrouted += 1

    def _reject_future(self, rec: Received[Event], now: float) -> None:
        ahead = rec.event.ts.timestamp() - now  # type: ignore[attr-defined]
        self.deadletter.send(
            source_topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key.encode("utf-8") if rec.key is not None else None,
            value=encode(as_event(rec.event)),
            reason=f"field `ts`: {ahead:.0f} s ahead of the learner's clock "
            f"(at most {self.config.max_future_s:.0f} s)",
        )
        self.stats.dead_lettered += 1
        reasons = self.stats.dead_letter_reasons
        reasons["future"] = reasons.get("future", 0) + 1

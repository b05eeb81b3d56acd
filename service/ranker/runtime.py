"""The wiring of one service process: the pool cache, the policy holder, the counts, the
publisher with its spool, the background consumers and the generation jobs, started and
stopped together by the app's lifespan.

Nothing here blocks on Kafka at start-up: consumers connect (and reconnect) on their own
threads, and the publisher spools while the broker is away, so the service starts and answers
even when Kafka is down."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bandit.errors import FeatureError
from bandit.features import encode_context
from bandit.policy import Policy
from bandit.presets import DEFAULT_PRESET, preset
from bandit.snapshot import PolicyHolder
from service.errors import BadRequest, ServiceError
from service.ranker.counts import VariantStats
from service.ranker.feeds import StateFeed, StatsFeed
from service.ranker.jobs import GenerateFn, GenerationJobs, JobStore, model_generator
from service.ranker.keys import ContextText, hash_key_for
from service.ranker.metrics import Metrics, RuntimeFigures
from service.ranker.pool_cache import PoolCache
from service.ranker.record_sinks import RecordSink
from service.ranker.spool import Deliver, Record, SpoolFull, SpoolingPublisher, Ticket
from service.settings import Settings
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.schemas import (
    Channel,
    Decision,
    Event,
    Feedback,
    Language,
    ModelAnnouncement,
    VariantPool,
)
from streams.shards import Sharding
from streams.topics import TopicAdmin

log = logging.getLogger(__name__)

_MAX_SPOOL_SLOTS = 64


def claim_spool_dir(base: Path) -> tuple[Path, IO[bytes]]:
    """A spool folder no other live process uses: ``base/slot-<k>`` for the first ``k`` whose
    lock is free. Slots are reused across restarts, so what one worker spooled before it
    stopped is delivered by whichever worker takes its slot next. The returned file holds the
    lock for as long as it is open."""
    base.mkdir(parents=True, exist_ok=True)
    for k in range(_MAX_SPOOL_SLOTS):
        folder = base / f"slot-{k}"
        folder.mkdir(exist_ok=True)
        fh = _try_lock(folder)
        if fh is not None:
            return folder, fh
    raise ServiceError("data_dir", f"all {_MAX_SPOOL_SLOTS} spool slots under {base} are in use")


def _try_lock(folder: Path) -> IO[bytes] | None:
    """The slot's lock, held while the returned file is open; None when another process has
    it."""
    fh = open(folder / ".lock", "ab")  # noqa: SIM115 - held for as long as the caller needs
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def claim_orphan_slots(base: Path, own: Path) -> list[tuple[Path, IO[bytes]]]:
    """Slots under ``base`` that hold spooled records and whose lock is free: spools of
    workers that no longer run (a service restarted with fewer workers never reuses slot 3 of
    4). The caller delivers them and closes each lock file, which frees the slot again."""
    found = []
    for folder in sorted(base.glob("slot-*")):
        if folder == own or not any(f.stat().st_size for f in folder.glob("spool*.jsonl")):
            continue
        fh = _try_lock(folder)
        if fh is not None:
            found.append((folder, fh))
    return found


class _PublisherSink:
    """Dead letters go through the spooling publisher too (they must not be lost either)."""

    def __init__(self, publisher: SpoolingPublisher) -> None:
        self._publisher = publisher

    def add(self, topic: str, key: str | None, event: Event) -> None:
        self._publisher.publish(topic, key, event)

    def flush(self, timeout_s: float | None = None) -> None:
        return None


class PacedDeliver:
    """Calls ``deliver`` at most once per ``min_interval_s``, so records wait a moment and go
    in bigger batches: kafka-python spends about a millisecond of CPU per delivery round (send,
    flush, acks) however few records it carries, which at 1,000 decisions/s in rounds of one
    or two would take most of a core from the request path. Outcomes are passed through
    unchanged, so the publisher's spool and exactly-once accounting are untouched."""

    def __init__(self, deliver: Deliver, min_interval_s: float = 0.05) -> None:
        if min_interval_s < 0:
            raise ValueError(f"`min_interval_s` must be >= 0, got {min_interval_s}")
        self._deliver = deliver
        self._interval = min_interval_s
        self._last = 0.0

    def __call__(self, records: list[Record]) -> list[BaseException | None]:
        wait = self._last + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # on the publisher's thread, never a request's
        self._last = time.monotonic()
        return self._deliver(records)


@dataclass(frozen=True)
class Ranked:
    decision: Decision
    variant_id: str
    text: str
    #: with ``durable_ack``: completes once the decision is on Kafka or on disk
    durable: Ticket | None = None


class Runtime:
    """One ranker's state and its background work.

    ``sink`` is where published records go (``kafka_record_sink(settings)`` when serving, a
    :class:`~service.ranker.record_sinks.MemoryRecordSink` in tests); the runtime owns it from
    then on and closes it. ``feeds=False`` starts no Kafka consumers (and ensures no topics):
    pools then arrive only through :meth:`publish_pool`, no snapshot is announced and counts
    stay empty, and the runtime is ready at once, which is what HTTP tests without a broker
    want."""

    def __init__(
        self,
        settings: Settings,
        sink: RecordSink,
        *,
        seed: int = 0,
        generator: GenerateFn | None = None,
        max_queued_jobs: int = 16,
        metrics: Metrics | None = None,
        feeds: bool = True,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.seed = seed
        self.metrics = metrics if metrics is not None else Metrics()
        self.pools = PoolCache()
        self.stats = VariantStats()
        # the configured preset until the learner's first snapshot arrives
        initial = preset(settings.bandit_preset or DEFAULT_PRESET)
        # one policy per model shard (streams.shards): a product is ranked by the snapshot of
        # the learner shard that owns it; ``policy`` is shard 0's, the only one without shards
        self.sharding = Sharding(settings.learner_shards)
        self.policies = [
            PolicyHolder(Policy(initial, seed), seed=seed) for _ in range(self.sharding.shards)
        ]
        self.policy = self.policies[0]
        #: partitions of the decisions topic, which sharded event ids are drawn for (the
        #: broker's count once the topics are ensured)
        self.partitions = settings.topic_partitions
        self.hash_key = hash_key_for(settings)
        # free-text context fields never reach a decision verbatim (service.ranker.keys)
        self.context_text = ContextText.from_settings(settings, self.hash_key)
        self.sink = sink
        self.feeds = feeds
        spool_base = settings.data_dir / "spool"
        spool_dir, self._spool_lock = claim_spool_dir(spool_base)
        self.durable_ack = settings.durable_ack
        self.publisher = SpoolingPublisher(
            # with durable acks requests wait for their round, so rounds follow each other
            # without a pause: each carries what came in during the one before (group commit;
            # measured: p50 2.6 ms instead of 9 ms with 5 ms pauses, for more CPU per request)
            PacedDeliver(self.sink.deliver, 0.0 if settings.durable_ack else 0.05),
            spool_dir,
            probe_every_s=0.5,
            round_timeout_s=self.sink.settle_timeout_s + 10.0,
            max_spool_bytes=settings.spool_max_bytes,
            orphans=lambda: claim_orphan_slots(spool_base, spool_dir),
        )
        deadletter = DeadLetterWriter(_PublisherSink(self.publisher), self.topics.deadletter)
        self._generator_uri: str | None = None
        self._generator_fn: GenerateFn | None = generator
        self._fixed_generator = generator is not None
        self.state = StateFeed(
            settings.kafka_bootstrap,
            self.topics,
            self.pools,
            self.policy,
            deadletter=deadletter,
            on_generator=self._generator_announced,
            shards=self.policies,
        )
        self.stats_feed = StatsFeed(settings.kafka_bootstrap, self.topics, self.stats)
        self.jobs = GenerationJobs(
            JobStore(
                settings.data_dir / "jobs",
                keep=settings.jobs_keep,
                max_age_s=settings.jobs_max_age_s,
            ),
            self._generator,
            self.publish_pool,
            self.pools.version,
            seed=seed,
            max_queued=max_queued_jobs,
            on_done=lambda state: self.metrics.jobs.labels(state).inc(),
        )
        self.started_at = time.monotonic()
        self.decisions_published = 0
        # event ids from a PRNG seeded once from the OS: uuid4() reads os.urandom on every call,
        # which measured ~0.4 ms a call on these VMs; 122 random bits keep ids unique
        self._ids = random.Random(int.from_bytes(os.urandom(16), "big"))  # noqa: S311
        self.metrics.bind(self.figures)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Runtime:
        self.publisher.start()
        if self.feeds:
            self._ensure_topics()
            self.state.start()
            self.stats_feed.start()
        return self

    def _ensure_topics(self) -> None:
        admin = TopicAdmin(self.settings.kafka_bootstrap, request_timeout_ms=3000)
        try:
            admin.ensure(self.topics, partitions=self.settings.topic_partitions)
            if self.sharding.shards > 1:
                self._read_partitions(admin)
        except StreamsError as exc:  # the feeds retry until the broker (and topics) appear
            log.warning("could not ensure topics (will keep trying to consume): %s", exc)
        finally:
            try:
                admin.close()
            except Exception as exc:
                log.debug("closing the topic admin failed: %s", exc)

    def _read_partitions(self, admin: TopicAdmin) -> None:
        """Sharded event ids are drawn for the decisions topic's real partition count; the
        feedback topic must have the same, or feedback lands on another shard than its
        decision. A count that cannot give every shard a partition stops the service."""
        decisions = admin.partitions(self.topics.decisions)
        feedback = admin.partitions(self.topics.feedback)
        try:
            self.sharding.check_partitions(self.topics.decisions, decisions)
        except StreamsError as exc:
            raise ServiceError("learner_shards", str(exc)) from exc
        if feedback != decisions:
            log.error(
                "`%s` has %d partitions and `%s` %d: feedback and its decision land on "
                "different shards; give both topics the same count",
                self.topics.decisions,
                decisions,
                self.topics.feedback,
                feedback,
            )
        self.partitions = decisions

    def close(self, timeout_s: float = 10.0) -> None:
        self.jobs.close()
        self.state.stop()
        self.stats_feed.stop()
        self.publisher.flush(timeout_s)
        self.publisher.close(timeout_s)  # what is still undelivered stays in the spool
        try:
            self.sink.close(timeout_s=2.0)
        except StreamsError as exc:
            log.warning("closing the producer failed: %s", exc)
        self._spool_lock.close()

    # -- state ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Ready once the pools and the latest announced snapshot are loaded (at once without
        feeds: there is nothing to catch up on), and while the publisher accepts records."""
        return self.not_ready_reason is None

    @property
    def not_ready_reason(self) -> str | None:
        if not (self.state.caught_up or not self.feeds):
            return "catching up on pools and the latest snapshot"
        return self.publisher.health()

    async def durable(self, ticket: Ticket | None) -> None:
        """Wait (without blocking the event loop) until ``ticket``'s records are acknowledged
        by Kafka or on disk; :class:`SpoolFull` (503, ``Retry-After``) when that takes longer
        than ``durable_ack_timeout_s``."""
        if ticket is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(ticket), self.settings.durable_ack_timeout_s)
        except TimeoutError as exc:
            raise SpoolFull(
                f"the records were not durable within {self.settings.durable_ack_timeout_s} s"
            ) from exc

    def figures(self) -> RuntimeFigures:
        s = self.publisher.stats
        return RuntimeFigures(
            decisions_published=self.decisions_published,
            records_delivered=s.delivered,
            records_spooled=s.spooled,
            records_pending=self.publisher.pending,
            broker_ok=self.publisher.broker_ok,
            dead_letters=self.state.dead_lettered,
            pools=len(self.pools),
            policy_version=self.policy.version,
            policy_swaps=self.policy.swaps,
            ready=self.ready,
        )

    # -- rank -----------------------------------------------------------------------------
    def rank(
        self,
        product_id: str,
        channel: Channel,
        user: Mapping[str, Any],
        context: Mapping[str, Any],
        language: Language | None = None,
    ) -> Ranked:
        """Choose a variant, hand the decision to the publisher and return at once (with
        ``durable_ack``, with a ticket to await before answering)."""
        self.publisher.check_accepting()
        indexed = self.pools.get(product_id)
        actions = self.pools.actions(product_id, channel, language)
        user, context = self.context_text(user, context)
        try:
            encoded = encode_context(user, {**context, "channel": channel}, hash_key=self.hash_key)
        except FeatureError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            # e.g. a time so far out that no calendar arithmetic works on it
            raise BadRequest("context", f"could not be encoded: {exc}") from exc
        if self.sharding.shards == 1:
            holder = self.policy
            event_id = uuid.UUID(int=self._ids.getrandbits(128), version=4)
        else:
            # the id places the decision (and its feedback) on the owning shard's partitions
            shard = self.sharding.of_product(product_id)
            holder = self.policies[shard]
            event_id = self.sharding.event_id(shard, self.partitions, self._draw_id)
        # the holder's current policy, read once; Policy.choose takes the prepared ActionSet
        decision = holder.policy.choose(
            encoded,
            actions,
            event_id=event_id,
            product_id=product_id,
            channel=channel,
            pool_version=indexed.pool.pool_version,
        )
        ticket = self.publisher.publish(
            self.topics.decisions, str(decision.event_id), decision, durable=self.durable_ack
        )
        self.decisions_published += 1
        self.metrics.decided(decision)
        chosen = decision.actions[decision.action]
        return Ranked(decision, chosen, indexed.variants[chosen].text, ticket)

    def _draw_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._ids.getrandbits(128), version=4)

    def policy_for(self, product_id: str) -> PolicyHolder:
        """The policy that ranks ``product_id``: its shard's (the one policy without shards)."""
        return self.policies[self.sharding.of_product(product_id)]

    # -- feedback and pools ---------------------------------------------------------------
    def accept_feedback(self, items: list[Feedback]) -> int:
        return self.submit_feedback(items)[0]

    def submit_feedback(self, items: list[Feedback]) -> tuple[int, Ticket | None]:
        """Publish ``items``; their count and, with ``durable_ack``, the ticket to await."""
        self.publisher.check_accepting()
        ticket = self.publisher.publish_many(
            [(self.topics.feedback, str(fb.event_id), fb) for fb in items],
            durable=self.durable_ack,
        )
        self.metrics.accepted(items)
        return len(items), ticket

    def publish_pool(self, pool: VariantPool) -> None:
        self.publisher.publish(self.topics.variants, pool.product_id, pool)
        self.pools.apply(pool)  # serve it here at once; other rankers get it from the topic

    # -- generator ------------------------------------------------------------------------
    def _generator_announced(self, event: ModelAnnouncement) -> None:
        if event.uri != self._generator_uri:
            self._generator_uri = event.uri
            if not self._fixed_generator:
                self._generator_fn = None  # the next job loads the announced model

    def _generator(self) -> GenerateFn:
        if self._generator_fn is None:
            path: str | Path | None = self._generator_uri or self.settings.generator_model
            if isinstance(path, str) and path.startswith("file://"):
                path = path[len("file://") :]
            self._generator_fn = model_generator(path)
        return self._generator_fn

    def reload(self) -> dict[str, Any]:
        """Re-read the latest announced bandit snapshot and forget the loaded generator."""
        loaded = self.state.load_latest(force=True)
        if not self._fixed_generator:
            self._generator_fn = None
        shards = (
            {"policy_versions": [h.version for h in self.policies]}
            if len(self.policies) > 1
            else {}
        )
        return {
            "policy_version": self.policy.version,
            **shards,
            "policy_reloaded": loaded,
            "pools": len(self.pools),
            "pid": os.getpid(),
        }

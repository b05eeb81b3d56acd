"""Each ranker worker follows ``copyloop.stats`` (compacted: the learner's latest record per
key) and keeps the newest record, so every worker's dashboard shows the same loop-wide
figures whichever worker answers."""

from __future__ import annotations

import threading

from service.ranker.feeds import CountingSink, _Feed
from streams.consumer import EventConsumer, Received
from streams.deadletter import DeadLetterWriter
from streams.schemas import Event, LoopStats
from streams.topics import Topics


class LatestStats:
    """The newest :class:`LoopStats` seen (by its ``created_at``); thread-safe. Tests and
    callers without a broker hand records to :meth:`apply` directly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: LoopStats | None = None

    def apply(self, record: LoopStats) -> None:
        with self._lock:
            if self._latest is None or record.created_at >= self._latest.created_at:
                self._latest = record

    @property
    def latest(self) -> LoopStats | None:
        with self._lock:
            return self._latest


class StatsTopicFeed(_Feed):
    """The stats topic from its start into a :class:`LatestStats` (the learner owns the
    topic: undecodable records are skipped and counted, never dead-lettered again)."""

    name = "loop-stats"

    def __init__(self, bootstrap: str, topics: Topics, latest: LatestStats) -> None:
        super().__init__(bootstrap, DeadLetterWriter(CountingSink(), topics.deadletter))
        self.topics = topics
        self.latest = latest

    def _topics(self) -> dict[str, type[Event]]:
        return {self.topics.stats: LoopStats}

    def _handle(self, records: list[Received[Event]], consumer: EventConsumer) -> None:
        for rec in records:
            if isinstance(rec.event, LoopStats):
                self.latest.apply(rec.event)

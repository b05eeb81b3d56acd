"""Automatic rounds: every ``COPYLOOP_FINETUNE_EVERY`` newly joined rewards.

The learner already counts what it learned from (joined decisions with their reward) and says
so in each bandit announcement on the models topic (``learned_events``), so the trigger follows
that topic instead of joining the events a second time. The count at the last round is kept
beside the registry, so a restart neither repeats a round nor waits a whole interval again. A
learner that starts over (its count falls) starts the interval over too."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.consumer import EventConsumer
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.schemas import ModelAnnouncement
from streams.topics import Topics

log = logging.getLogger(__name__)
STATE = "trigger.json"


def learned_of(event: ModelAnnouncement) -> int | None:
    """Joined rewards the learner had learned from when it announced ``event`` (bandit only)."""
    if event.kind != "bandit":
        return None
    if event.learned_events is not None:
        return event.learned_events
    joined = event.metrics.get("joined")
    return int(joined) if joined is not None else None


@dataclass
class Trigger:
    """Due when ``every`` joined rewards arrived since the last round (state in ``path``)."""

    every: int
    path: Path
    last: int = 0  # the learner's count when the last round began
    latest: int = 0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"`every` must be >= 1, got {self.every}")
        try:
            self.last = int(json.loads(self.path.read_text(encoding="utf-8"))["learned_events"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"`{self.path}` is not a trigger state file: {exc}") from exc

    def observe(self, learned: int) -> bool:
        """Take the learner's newest count; whether a round is due."""
        if learned < self.latest or learned < self.last:  # the learner started over
            log.info("the learner's count fell to %d; the interval starts again", learned)
            self.last = learned
            self._save()
        self.latest = learned
        return self.latest - self.last >= self.every

    def mark(self) -> None:
        """A round begins at the newest count (whatever its outcome, the interval restarts)."""
        self.last = self.latest
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"learned_events": self.last}) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def follow(
    bootstrap: str,
    topics: Topics,
    trigger: Trigger,
    run: Callable[[], object],
    stop: threading.Event,
    *,
    poll_s: float = 1.0,
) -> int:
    """Read the models topic from its start until ``stop``; call ``run`` (one round, on this
    thread) whenever the trigger is due after a batch. Returns the rounds run."""
    consumer = EventConsumer(
        bootstrap,
        {topics.models: ModelAnnouncement},
        group_id=None,
        deadletter=DeadLetterWriter(MemorySink(), topics.deadletter),
        client_id="copyloop-finetune-trigger",
    )
    rounds = 0
    try:
        consumer.assign()
        while not stop.is_set():
            batch = consumer.poll(timeout_s=poll_s)
            due = False
            for rec in batch:
                if isinstance(rec.event, ModelAnnouncement):
                    learned = learned_of(rec.event)
                    if learned is not None:
                        due = trigger.observe(learned)
            if due and not stop.is_set():
                log.info("%d joined rewards since the last round: a round starts", trigger.latest)
                trigger.mark()
                run()
                rounds += 1
    finally:
        consumer.close()
    return rounds

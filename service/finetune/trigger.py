"""Automatic rounds: every ``COPYLOOP_FINETUNE_EVERY`` newly joined rewards.

The learner already counts what it learned from (joined decisions with their reward) and says
so in each bandit announcement on the models topic (``learned_events``), so the trigger follows
that topic instead of joining the events a second time. The count at the last round is kept
beside the registry, so a restart neither repeats a round nor waits a whole interval again. A
learner that starts over (its count falls) starts the interval over too.

Every round, however it was started, also appends a line to ``rounds.jsonl`` beside the
registry (:func:`record_round`): its number, outcome and the generator serving after it. A
skipped round leaves no version in the registry, so this history is the one place where every
round shows; the demo's live table reads it (:func:`round_history`)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.consumer import EventConsumer
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.schemas import ModelAnnouncement, utc_now
from streams.topics import Topics

log = logging.getLogger(__name__)
STATE = "trigger.json"
HISTORY = "rounds.jsonl"
#: the file a round holds locked (``service.finetune.kafka_rounds.exclusive``) while it runs
LOCK = ".round.lock"


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


@dataclass(frozen=True)
class RoundRecord:
    """One finished round as the history keeps it."""

    round: int  # 1, 2, ... in the order rounds finished under this registry
    finished_at: str
    status: str  # promoted, rejected (held back by the gate) or skipped (too little evidence)
    reason: str
    version: str | None  # the candidate's registry name (None when skipped)
    generator_version: str  # the generator serving after the round
    examples: int  # examples trained on (0 when skipped)

    @property
    def verdict(self) -> str:
        """``promoted``, ``held back: why`` or ``skipped: why``, for a person to read."""
        if self.status == "promoted":
            return "promoted"
        label = "held back" if self.status == "rejected" else self.status
        return f"{label}: {self.reason}"


def record_round(root: Path, result: dict[str, Any], generator_version: str) -> RoundRecord:
    """Append a round's outcome (``RoundResult.to_dict()``) to the history under ``root`` (the
    registry's folder); the caller holds the round lock, so numbers do not collide."""
    root.mkdir(parents=True, exist_ok=True)
    record = RoundRecord(
        round=len(round_history(root)) + 1,
        finished_at=utc_now().isoformat(),
        status=str(result["status"]),
        reason=str(result["reason"]),
        version=result.get("version"),
        generator_version=generator_version,
        examples=int((result.get("examples") or {}).get("trained_on", 0)),
    )
    with open(root / HISTORY, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    return record


def round_history(root: Path) -> list[RoundRecord]:
    """The rounds recorded under ``root``, oldest first; a line being written (or damaged) is
    left out rather than failing a reader that polls while a round finishes."""
    try:
        lines = (root / HISTORY).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(RoundRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return records


def round_running(root: Path) -> bool:
    """Whether a round holds the round lock under ``root`` now (any process)."""
    path = root / LOCK
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


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

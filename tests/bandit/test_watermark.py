"""The learner's watermark rule, on a stand-in for the consumer's offsets (pure logic)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bandit.learner import Learner, LearnerConfig
from bandit.reward import RewardConfig
from streams.consumer import Received
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.schemas import Decision, Event
from streams.topics import Topics

from .events import at, decision, feedback


@dataclass
class Offsets:
    """What the learner reads from its consumer for the watermark: positions and ends."""

    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    topics: dict[str, object] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.ends)

    def pause(self, keys: list[tuple[str, int]]) -> None:
        self.paused.update(keys)

    def resume(self, keys: list[tuple[str, int]]) -> None:
        self.paused.difference_update(keys)


def _learner(offsets: Offsets, tmp_path: Path) -> Learner:
    sink = MemorySink()
    config = LearnerConfig(topics=Topics("w."), data_dir=tmp_path)
    return Learner(config, offsets, sink, DeadLetterWriter(sink, "w.deadletter"))  # type: ignore[arg-type]


def test_a_partition_behind_holds_the_watermark_back(tmp_path: Path) -> None:
    a, b = ("w.decisions", 0), ("w.feedback", 0)
    offsets = Offsets(positions={a: 10, b: 5}, ends={a: 10, b: 8})
    learner = _learner(offsets, tmp_path)
    learner._latest.update({a: 100.0, b: 50.0})
    assert learner._watermark(idle=False) == (50.0, False)
    offsets.positions[b] = 8
    learner._ends_at = float("-inf")  # take the new ends now
    assert learner._watermark(idle=False) == (100.0, True)


def test_a_partition_never_read_keeps_the_watermark_unknown(tmp_path: Path) -> None:
    a, c = ("w.decisions", 0), ("w.decisions", 1)
    offsets = Offsets(positions={a: 4}, ends={a: 4, c: 3})
    learner = _learner(offsets, tmp_path)
    learner._latest[a] = 70.0
    # one empty poll may just be a slow fetch: c still counts as holding unread records
    assert learner._watermark(idle=True) == (None, False)
    offsets.ends[c] = 0  # an empty partition does not hold anything back
    assert learner._watermark(idle=True) == (70.0, True)


@dataclass
class Stream(Offsets):
    """A stand-in consumer that hands out queued records, each read to the end."""

    queued: list[Received[Event]] = field(default_factory=list)

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Received[Event]]:
        out = [r for r in self.queued if (r.topic, r.partition) not in self.paused]
        self.queued = [r for r in self.queued if (r.topic, r.partition) in self.paused]
        for r in out:
            key = (r.topic, r.partition)
            self.positions[key] = self.ends[key] = r.offset + 1
        return out

    def add(self, event: Event, logged_at: float) -> None:
        topic = "w.decisions" if isinstance(event, Decision) else "w.feedback"
        offset = self.ends.get((topic, 0), 0) + sum(1 for r in self.queued if r.topic == topic)
        self.queued.append(Received(topic, 0, offset, None, int(logged_at * 1000), event))


def test_a_clock_running_ahead_closes_no_window_early(tmp_path: Path) -> None:
    now = at(1000).timestamp()
    stream = Stream()
    sink = MemorySink()
    config = LearnerConfig(
        topics=Topics("w."), data_dir=tmp_path, reward=RewardConfig(window_s=60.0), lateness_s=5.0
    )
    learner = Learner(
        config,
        stream,  # type: ignore[arg-type]
        sink,
        DeadLetterWriter(sink, "w.deadletter"),
        clock=lambda: now,
    )
    shown = decision(990)  # its window closes at 990 + 60 + 5 of event time
    stream.add(shown, logged_at=now - 10)
    stream.add(feedback(shown, "impression", 991), logged_at=now - 9)
    # a device 200 s ahead (within the 300 s let through): logged by the broker now
    stream.add(feedback(uuid.uuid4(), "click", 1200), logged_at=now)
    learner.step()
    assert learner.joiner.watermark <= now + config.event_time_skew_s  # type: ignore[operator]
    assert (learner.stats.learned, learner.joiner.pending) == (0, 1)
    later = decision(1070)  # a record that is really later moves the watermark past the window
    stream.add(later, logged_at=at(1070).timestamp())
    learner.step()
    assert (learner.stats.learned, learner.joiner.pending) == (1, 1)


def test_a_partition_read_past_its_copied_end_makes_the_ends_read_again(tmp_path: Path) -> None:
    """A client that fetches partitions ahead of each other: feedback read past the end the
    learner last copied proves the copy old, and the decisions partition may hold unread
    records written before that feedback. Within the copy's second, the ends are read again,
    so the decisions partition holds the watermark back."""
    d, f = ("w.decisions", 0), ("w.feedback", 0)
    offsets = Offsets(positions={d: 10, f: 8}, ends={d: 10, f: 8})
    learner = _learner(offsets, tmp_path)
    learner._latest.update({d: 100.0, f: 100.0})
    assert learner._watermark(idle=False) == (100.0, True)  # copies the ends: all read
    # new records: two decisions, then their feedback; only the feedback is read yet
    offsets.ends = {d: 12, f: 10}
    offsets.positions[f] = 10
    learner._latest[f] = 160.0
    assert learner._watermark(idle=False) == (100.0, False)  # not 160: d is behind
    # a copy a partition has not passed is kept for its second
    offsets.ends = {d: 13, f: 10}
    assert learner._ends == {d: 12, f: 10}
    offsets.positions[d] = 12
    learner._latest[d] = 150.0
    assert learner._watermark(idle=False) == (160.0, True)


def test_feedback_leading_unread_decisions_is_paused_until_they_catch_up(
    tmp_path: Path,
) -> None:
    """The feedback partitions pause while decisions are unread and all feedback read leads
    the latest decision by more than the lead; they resume once the decisions catch up in
    event time, or once no decision is left unread."""
    d, f0, f1 = ("w.decisions", 0), ("w.feedback", 0), ("w.feedback", 1)
    offsets = Offsets(positions={d: 3, f0: 50, f1: 40}, ends={d: 100, f0: 100, f1: 100})
    learner = _learner(offsets, tmp_path)
    learner._ends = dict(offsets.ends)
    learner._latest.update({d: 10.0, f0: 30.0, f1: 12.0})
    learner._pace_feedback(1.0)
    assert offsets.paused == {f0, f1}  # the least-advanced feedback (12) leads 10 by 2 s
    learner._latest[d] = 11.5  # within the lead of the feedback partition furthest behind
    learner._pace_feedback(1.0)
    assert offsets.paused == set()
    learner._latest[d] = 5.0
    learner._pace_feedback(1.0)
    assert offsets.paused == {f0, f1}
    offsets.positions[d] = 100  # every decision read: feedback is all that is left
    learner._pace_feedback(1.0)
    assert offsets.paused == set()
    learner._pace_feedback(20.0)
    assert offsets.paused == set()

"""The learner's watermark rule, on a stand-in for the consumer's offsets (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bandit.learner import Learner, LearnerConfig
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.topics import Topics


@dataclass
class Offsets:
    """What the learner reads from its consumer for the watermark: positions and ends."""

    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    topics: dict[str, object] = field(default_factory=dict)

    def end_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self.ends)


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

"""Process faults of ``copyloop learn`` against the real broker, each ending with counts that
prove every joined event learned once (see :mod:`tests.faults.counts`):

* the learner SIGKILLed five times, each time mid-learning, while events keep flowing: after
  the last restart the checkpoint holds each joined event once, and its model equals one that
  learned each once, in event-time order;
* two learners started at once on one data dir: one runs, the other exits with status 2 naming
  the holder's pid; the one learns everything once and no snapshot name is announced twice."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bandit.checkpoint import Checkpoint, peek_learned
from bandit.join import RewardJoiner
from bandit.learner import CHECKPOINT_NAME
from bandit.policy import Policy
from streams.schemas import Decision, Event
from streams.topics import Topics
from tests.bandit import synth
from tests.bandit.events import decision, feedback
from tests.bandit.kafka_util import announcements, publish
from tests.faults.counts import report_counts
from tests.service.api.api_helpers import wait_until
from tests.stack import REPO, stack_env, stop

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: a short window, so windows close (and learning starts) early in the stream
WINDOW_S, LATENESS_S = 2.0, 1.0
KILLS = 5


class Stream:
    """Decisions 20 ms apart in event time, most shown, some clicked, and every tenth feedback
    sent twice (the learner must count it once); ``joined`` is what a learner must learn."""

    def __init__(self, seed: int, n: int) -> None:
        rng = random.Random(seed)
        self.batches: list[list[Event]] = []
        self.joined: list[tuple[Decision, float]] = []
        self.decisions = self.feedback = self.copies = 0
        batch: list[Event] = []
        for i in range(n):
            d = decision(
                i * 0.02, action=rng.randrange(4), context=synth.context(synth.shopper(rng, i))
            )
            batch.append(d)
            if rng.random() < 0.85:
                kinds = ["impression", "click"] if rng.random() < 0.3 else ["impression"]
                for j, kind in enumerate(kinds):
                    fb = feedback(d, kind, i * 0.02 + 0.5 + j * 0.5)  # type: ignore[arg-type]
                    twice = rng.random() < 0.1
                    self.copies += twice
                    batch += [fb, fb] if twice else [fb]
                self.joined.append((d, 1.0 if "click" in kinds else 0.0))
            if len(batch) >= 80:
                self.batches.append(batch)
                batch = []
        self.batches.append(batch)
        self.decisions = n
        self.feedback = sum(len(b) for b in self.batches) - n

    def reference(self) -> Policy:
        """The model that learned each joined event once, in event-time order."""
        policy = Policy()
        policy.learn_many(sorted(self.joined, key=lambda j: (j[0].ts, j[0].event_id.int)))
        return policy


def _learner_env(bootstrap: str, topics: Topics, data_dir: Path) -> dict[str, str]:
    return stack_env(
        bootstrap, topics, data_dir, reward_window_s=str(WINDOW_S), snapshot_every_s="0.3"
    )


def _learn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``copyloop learn`` on event time only (no wall-clock closing), with no metrics port and
    no promotion gate (every snapshot announced), its output appended to ``log``."""
    cmd = [sys.executable, "-m", "service", "learn", "--no-idle-close", "--lateness"]
    cmd += [str(LATENESS_S), "--metrics-port", "0", "--no-promotion-gate"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _written_at(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _learned_all(ckpt: Path, proc: subprocess.Popen[bytes], want: int, log: Path) -> None:
    def done() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        return peek_learned(ckpt) == want

    wait_until(done, 120, f"{want} learned events (at {peek_learned(ckpt)})")


def _check_model(ckpt: Path, stream: Stream) -> tuple[Checkpoint, bool]:
    ck = Checkpoint.load(ckpt)
    assert ck is not None
    model, reference = Policy.from_bytes(ck.policy), stream.reference()
    probe = random.Random(5)
    same = True
    for _ in range(10):
        ctx = synth.context(synth.shopper(probe, probe.randrange(1000)))
        got, want = model.pmf(ctx, synth.ACTIONS), reference.pmf(ctx, synth.ACTIONS)
        same = same and got == pytest.approx(want, abs=1e-6)
    return ck, same


def _learning_counts(stream: Stream, ck: Checkpoint, same_model: bool) -> dict[str, int]:
    """What was sent, what a learner must learn and what it learned (none twice, none lost)."""
    want = len(stream.joined)
    return {
        "decisions_sent": stream.decisions,
        "feedback_sent": stream.feedback,
        "joined": want,
        "learned": ck.learned,
        "duplicates": max(0, ck.learned - want),
        "lost": max(0, want - ck.learned),
        "model_matches_once": int(same_model),
    }


def test_learner_sigkilled_five_times_while_events_flow_learns_each_joined_event_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    stream = Stream(20261204, 1600)
    env, log = _learner_env(kafka_bootstrap, topics, tmp_path), tmp_path / "learner.log"
    ckpt = tmp_path / "checkpoints" / CHECKPOINT_NAME
    rng = random.Random(7)
    kills_done = threading.Event()

    def produce() -> None:
        # paced by the kills: before the k-th kill at most k/(KILLS+1) of the stream is out, so
        # events are still flowing at every kill; the rest goes once the kills are done
        n = len(stream.batches)
        for i, batch in enumerate(stream.batches):
            while not kills_done.is_set() and i > (_mid(at_kill) + 1) * n // (KILLS + 1):
                time.sleep(0.05)
            publish(kafka_bootstrap, topics, batch)
            if not kills_done.is_set():
                time.sleep(0.3)

    producer = threading.Thread(target=produce)
    at_kill: list[int | None] = []  # the learned count at each kill

    def _mid(counts: list[int | None]) -> int:
        """Kills that came mid-learning: some events learned, not all."""
        return sum(1 for n in counts if n and n < len(stream.joined))

    flowing_at_kill: list[bool] = []
    proc = _learn(env, log)
    producer.start()
    try:
        # kill only mid-learning (some learned, not all) until five such kills (bounded)
        while _mid(at_kill) < KILLS:
            assert len(at_kill) < 3 * KILLS, f"no mid-learning kills: {at_kill}"
            before = _written_at(ckpt)
            wait_until(lambda: _written_at(ckpt) != before, 60, f"a checkpoint ({log})")  # noqa: B023
            time.sleep(rng.uniform(0.2, 1.5))
            proc.kill()
            proc.wait(10)
            at_kill.append(peek_learned(ckpt))
            flowing_at_kill.append(producer.is_alive())
            proc = _learn(env, log)
        kills_done.set()
        producer.join(120)
        publish(kafka_bootstrap, topics, [decision(10_000)])  # closes every window
        _learned_all(ckpt, proc, len(stream.joined), log)
        assert stop(proc) == 0  # a clean stop on SIGTERM
    finally:
        kills_done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        producer.join(120)

    ck, same_model = _check_model(ckpt, stream)
    stats = RewardJoiner.from_state(ck.joiner).stats
    report_counts(
        "learner-sigkill",
        kills=len(at_kill),
        kills_mid_learning=_mid(at_kill),
        kills_while_events_flowed=sum(flowing_at_kill),
        duplicate_copies_sent=stream.copies,
        duplicates_counted=stats.duplicate_feedback,
        **_learning_counts(stream, ck, same_model),
    )
    print("learned at each kill:", at_kill)
    assert ck.learned == stats.joined == len(stream.joined), at_kill
    assert stats.unseen == stream.decisions - len(stream.joined)
    assert stats.duplicate_feedback == stream.copies
    assert same_model, "the model differs from one that learned each joined event once"
    assert sum(flowing_at_kill) >= KILLS, flowing_at_kill


def test_two_learners_started_at_once_on_one_data_dir_one_runs_and_learns_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    stream = Stream(20261205, 400)
    for batch in stream.batches:
        publish(kafka_bootstrap, topics, batch)
    env = _learner_env(kafka_bootstrap, topics, tmp_path / "data")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_learn(env, logs[0]), _learn(env, logs[1])]
    ckpt = tmp_path / "data" / "checkpoints" / CHECKPOINT_NAME
    try:
        wait_until(lambda: any(p.poll() is not None for p in procs), 120, "one learner to stop")
        time.sleep(1.0)  # had both stopped, the other would be seen now
        [loser] = [i for i, p in enumerate(procs) if p.poll() is not None]
        winner = 1 - loser
        said = " ".join(logs[loser].read_text().split())
        publish(kafka_bootstrap, topics, [decision(10_000)])  # closes every window
        _learned_all(ckpt, procs[winner], len(stream.joined), logs[winner])
        assert stop(procs[winner]) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    ck, same_model = _check_model(ckpt, stream)
    versions = Counter(a.version for a in announcements(kafka_bootstrap, topics, 1))
    report_counts(
        "two-learners",
        started=2,
        refused=sum(1 for p in procs if p.returncode == 2),
        announcements=sum(versions.values()),
        versions_announced_twice=sum(1 for n in versions.values() if n > 1),
        **_learning_counts(stream, ck, same_model),
    )
    assert procs[loser].returncode == 2, said
    assert "another learner runs on data dir" in said and f"pid {procs[winner].pid}" in said, said
    assert ck.learned == len(stream.joined) and same_model
    assert versions and all(n == 1 for n in versions.values()), versions

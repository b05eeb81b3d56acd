"""The learner killed with SIGKILL at random points while events flow: after the last restart it
has learned every joined event exactly once (TARGETS.md, reliability)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bandit.checkpoint import Checkpoint, peek_learned
from bandit.join import RewardJoiner
from bandit.learner import CHECKPOINT_NAME
from bandit.policy import Policy
from streams.schemas import Decision, Event
from streams.topics import Topics

from . import synth
from .events import decision, feedback
from .kafka_util import publish

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _stream(rng: random.Random, n: int) -> tuple[list[Event], list[tuple[Decision, float]]]:
    """``n`` decisions 20 ms apart in event time; 90% shown, 30% of those clicked."""
    events: list[Event] = []
    joined: list[tuple[Decision, float]] = []
    for i in range(n):
        t = i * 0.02
        s = synth.shopper(rng, i)
        d = decision(t, action=rng.randrange(4), context=synth.context(s))
        events.append(d)
        if rng.random() < 0.9:
            events.append(feedback(d, "impression", t + 0.5))
            clicked = rng.random() < 0.3
            if clicked:
                events.append(feedback(d, "click", t + 1.0))
            joined.append((d, 1.0 if clicked else 0.0))
    return events, joined


def test_sigkill_at_random_points_learns_each_joined_event_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    rng = random.Random(20261129)
    events, joined = _stream(rng, 2400)
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_TOPIC_PARTITIONS": "2",
        "COPYLOOP_DATA_DIR": str(tmp_path),
        "COPYLOOP_REWARD_WINDOW_S": "10",
        "COPYLOOP_SNAPSHOT_EVERY_S": "0.3",
    }
    cmd = [sys.executable, "-m", "service.commands.cmd_learn", "--no-idle-close", "--lateness", "5"]
    log = (tmp_path / "learner.log").open("ab")
    ckpt = tmp_path / "checkpoints" / CHECKPOINT_NAME

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)

    def produce() -> None:
        # events keep flowing, in small batches, the whole time the learner is being killed
        for i in range(0, len(events), 60):
            publish(kafka_bootstrap, topics, events[i : i + 60])
            time.sleep(0.15)

    producer = threading.Thread(target=produce)
    learned_at_kill: list[int | None] = []
    proc = start()
    producer.start()
    try:
        while producer.is_alive() or len(learned_at_kill) < 6:
            # once this learner runs (it checkpoints every 0.3 s), kill it at a random point
            last_write = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
            deadline = time.monotonic() + 60
            while (ckpt.stat().st_mtime_ns if ckpt.exists() else 0) == last_write:
                assert time.monotonic() < deadline, (tmp_path / "learner.log").read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 2.0))
            proc.kill()
            proc.wait(10)
            learned_at_kill.append(peek_learned(ckpt))
            proc = start()
        producer.join()
        publish(kafka_bootstrap, topics, [decision(10_000)])  # closes every window
        deadline = time.monotonic() + 180
        while peek_learned(ckpt) != len(joined) and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "learner.log").read_text()[-3000:]
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # a clean stop on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    # killed at least five times in the middle of learning
    assert sum(1 for n in learned_at_kill if n and 0 < n < len(joined)) >= 5, learned_at_kill
    ck = Checkpoint.load(ckpt)
    assert ck is not None
    stats = RewardJoiner.from_state(ck.joiner).stats
    print("learned at each kill:", learned_at_kill)
    assert ck.learned == stats.joined == len(joined), learned_at_kill
    assert stats.unseen == 2400 - len(joined)  # never shown: not learned

    # the model equals one that learned each joined event once, in event-time order
    reference = Policy()
    reference.learn_many(sorted(joined, key=lambda j: (j[0].ts, j[0].event_id.int)))
    model = Policy.from_bytes(ck.policy)
    probe = random.Random(5)
    for _ in range(10):
        ctx = synth.context(synth.shopper(probe, probe.randrange(1000)))
        assert model.pmf(ctx, synth.ACTIONS) == pytest.approx(
            reference.pmf(ctx, synth.ACTIONS), abs=1e-6
        )

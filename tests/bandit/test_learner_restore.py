"""Checkpoints that keep open decisions by reference (their size does not grow with the
decisions' payload; a restore reads each back from the topic as its window closes, and learns
it once), and one learner per data dir (a lock, and snapshot names unique to each run)."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from bandit.checkpoint import Checkpoint
from bandit.errors import CheckpointError
from bandit.join import Joined, RewardJoiner
from bandit.learner import LOCK_NAME, Learner, LearnerConfig, LearnerLocked
from bandit.policy import ActionSet, Policy
from bandit.reward import RewardConfig
from bandit.wire import WireDecision
from streams.consumer import EventConsumer
from streams.schemas import ActionFeatures, Decision, Event
from streams.topics import Topics

from . import synth
from .events import at, decision, feedback
from .kafka_util import drive, publish

WINDOW = RewardConfig(window_s=100)
REPO = Path(__file__).resolve().parents[2]


def _heavy(t: float) -> Decision:
    """A decision ~20 times the usual size: a long context and a pool of 40 variants."""
    features = ActionFeatures(
        traits=["urgency", "discount", "social_proof"],
        language="zh",
        length_bucket="long",
        generator_version="g" * 100,
    )
    pool = ActionSet([(f"variant-{k:03d}-" + "x" * 80, features) for k in range(40)])
    context: dict = {f"c_key_{k}": "v" * 60 for k in range(60)}
    return Decision(
        event_id=uuid.uuid4(),
        ts=at(t),
        product_id="p" * 100,
        channel="ad_headline",
        pool_version=1,
        policy_version="v" * 100,
        context=context,
        actions=pool.ids,
        action_features=pool.features,
        action=3,
        pscore=1 / 40,
        action_dist=[1 / 40] * 40,
    )


def _joiner_with(decisions: list[Decision]) -> RewardJoiner:
    j = RewardJoiner(WINDOW, lateness_s=10.0, follow_event_time=False)
    for i, d in enumerate(decisions):
        j.add_decision(d, (i % 3, 1000 + i))
        j.add_feedback(feedback(d, "impression", i + 1, fid=f"imp-{d.event_id}"))
    return j


def test_a_checkpoint_does_not_grow_with_the_decisions_payload() -> None:
    n = 300
    light = _joiner_with([decision(i) for i in range(n)])
    heavy = _joiner_with([_heavy(i) for i in range(n)])
    assert len(heavy.to_state()) == len(light.to_state())  # the payload is not in it
    per_decision = len(heavy.to_state()) / n
    assert per_decision <= 64, per_decision
    # kept whole (no reference), the heavy decisions would weigh much more
    whole = RewardJoiner(WINDOW, lateness_s=10.0)
    for d in [_heavy(i) for i in range(n)]:
        whole.add_decision(d)
    assert len(whole.to_state()) > 20 * len(heavy.to_state())


class _Topic:
    """The decisions "topic" a restored joiner reads back from, counting what it is asked."""

    def __init__(self, decisions: list[Decision]) -> None:
        self.at = {(i % 3, 1000 + i): d for i, d in enumerate(decisions)}
        self.asked: list[tuple[int, int]] = []
        self.fail = False

    def fetch(self, refs: Sequence[tuple[int, int]]) -> list[Decision]:
        if self.fail:
            raise OSError("the broker went away")
        self.asked += refs
        return [self.at[r] for r in refs]


def test_a_restored_joiner_reads_back_only_what_it_learns_once_and_checks_it() -> None:
    shown = [decision(i) for i in range(30)]
    never_shown = [decision(i + 0.5) for i in range(30)]
    everything = [x for pair in zip(shown, never_shown, strict=True) for x in pair]
    j = RewardJoiner(WINDOW, lateness_s=10.0, follow_event_time=False)
    for i, d in enumerate(everything):
        j.add_decision(d, (i % 3, 1000 + i))
    for i, d in enumerate(shown):
        j.add_feedback(feedback(d, "impression", i + 1, fid=f"imp-{i}"))
    j.add_feedback(feedback(shown[0], "click", 2, fid="click-0"))
    state = j.to_state()
    expected, _ = j.advance(at(500))  # what the joiner that kept them would learn

    topic = _Topic(everything)
    resumed = RewardJoiner.from_state(state, WINDOW, lateness_s=10.0, follow_event_time=False)
    assert resumed.pending == 60 and not resumed.fetch
    with pytest.raises(CheckpointError, match="need `fetch`"):
        resumed.advance(at(500))
    resumed = RewardJoiner.from_state(
        state, WINDOW, lateness_s=10.0, follow_event_time=False, fetch=topic.fetch
    )
    # a repeated feedback id is still told from a new one (kept as its hash)
    assert resumed.add_feedback(feedback(shown[1], "impression", 3, fid="imp-1")) == []
    assert resumed.stats.duplicate_feedback == 1
    topic.fail = True
    with pytest.raises(OSError):
        resumed.advance(at(500))
    assert resumed.pending == 60  # nothing closed: a retry (or a rewind) starts over
    topic.fail = False
    joined, rejected = resumed.advance(at(500))
    assert joined == expected and rejected == [] and resumed.pending == 0
    assert joined[0] == Joined(shown[0], 1.0)
    assert sorted(topic.asked) == sorted((i % 3, 1000 + i) for i in range(0, 60, 2))  # shown only

    # a record that is not the event it stands for (a topic made again) is refused
    wrong = _Topic(list(reversed(everything)))
    again = RewardJoiner.from_state(
        state, WINDOW, lateness_s=10.0, follow_event_time=False, fetch=wrong.fetch
    )
    with pytest.raises(CheckpointError, match="topic recreated"):
        again.advance(at(500))


def _config(topics: Topics, data_dir: Path) -> LearnerConfig:
    return LearnerConfig(
        topics=topics,
        data_dir=data_dir,
        reward=RewardConfig(window_s=10.0),
        snapshot_every_s=3600,  # checkpoints only when asked
        lateness_s=5.0,
        poll_timeout_s=0.2,
    )


def _stream(n: int, seed: int) -> tuple[list[Event], list[tuple[Decision, float]]]:
    rng = random.Random(seed)
    events: list[Event] = []
    joined: list[tuple[Decision, float]] = []
    for i in range(n):
        s = synth.shopper(rng, i)
        d = decision(i * 0.05, action=rng.randrange(4), context=synth.context(s))
        events.append(d)
        if i % 5:  # one in five never shown: never learned, never read back
            events.append(feedback(d, "impression", i * 0.05 + 0.5))
            clicked = rng.random() < 0.3
            if clicked:
                events.append(feedback(d, "click", i * 0.05 + 1))
            joined.append((d, 1.0 if clicked else 0.0))
    return events, joined


def _read_everything(
    bootstrap: str, topics: Topics, data_dir: Path, n: int, seed: int
) -> tuple[Learner, Checkpoint, list[tuple[Decision, float]]]:
    """A learner that read a stream of ``n`` decisions and checkpointed with every window
    still open; then a decision far ahead is published that closes them all."""
    events, joined = _stream(n, seed)
    publish(bootstrap, topics, events)
    learner = Learner.connect(_config(topics, data_dir), bootstrap)
    learner.start()
    drive(learner, lambda: learner.stats.records >= len(events))
    ck = learner.checkpoint()
    assert ck.learned == 0 and learner.joiner.pending == n
    publish(bootstrap, topics, [decision(10_000)])
    return learner, ck, joined


@pytest.mark.kafka
def test_a_restore_after_a_kill_reads_the_open_decisions_back_and_learns_each_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    killed, ck, joined = _read_everything(kafka_bootstrap, topics, tmp_path, 200, seed=3)
    config = killed.config
    assert len(ck.joiner) <= 64 * 200  # by reference, not the decisions themselves
    drive(killed, lambda: killed.stats.learned == len(joined))  # learned, never checkpointed
    killed.close()  # as good as a kill: the checkpoint is all that survives

    resumed = Learner.connect(config, kafka_bootstrap)
    resumed.start()
    assert resumed.stats.learned == 0 and resumed.joiner.pending == 200
    drive(resumed, lambda: resumed.stats.learned >= len(joined))
    for _ in range(5):  # nothing more arrives: the count stays
        resumed.step()
    assert resumed.stats.learned == resumed.joiner.stats.joined == len(joined)
    reference = Policy(config.policy, config.seed)
    reference.learn_many(sorted(joined, key=lambda j: (j[0].ts, j[0].event_id.int)))
    probe = random.Random(5)
    for _ in range(5):
        ctx = synth.context(synth.shopper(probe, probe.randrange(1000)))
        assert resumed.policy.pmf(ctx, synth.ACTIONS) == pytest.approx(
            reference.pmf(ctx, synth.ACTIONS), abs=1e-6
        )
    # a decision the topic no longer holds stops the learner with the reason
    with pytest.raises(CheckpointError, match="retention must cover"):
        resumed._fetch_decisions([(0, 10**9)])
    resumed.close()


@pytest.mark.kafka
def test_a_second_learner_on_the_same_data_dir_is_refused(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    config = _config(topics, tmp_path)
    first = Learner.connect(config, kafka_bootstrap)
    first.start()
    second = Learner.connect(config, kafka_bootstrap)
    with pytest.raises(
        LearnerLocked, match=rf"another learner runs on data dir .*pid {os.getpid()}"
    ):
        second.start()
    second.close()
    first.close()  # its lock goes with it
    third = Learner.connect(config, kafka_bootstrap)
    third.start()
    third.close()


@pytest.mark.kafka
def test_copyloop_learn_exits_non_zero_while_another_learner_runs(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_DATA_DIR": str(tmp_path),
        "COLUMNS": "400",  # one line per message
    }
    with open(tmp_path / LOCK_NAME, "w") as held:
        held.write("pid 4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running learner holds it
        cmd = [sys.executable, "-m", "service.commands.cmd_learn", "--max-seconds", "20"]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "another learner runs on data dir" in done.stderr and "pid 4242" in done.stderr


@pytest.mark.kafka
def test_two_runs_from_one_checkpoint_name_their_snapshots_apart(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    first, ck, joined = _read_everything(kafka_bootstrap, topics, tmp_path, 60, seed=9)
    config = first.config
    saved = ck.to_bytes()
    versions: list[str] = []
    for run in range(2):
        if run:  # a second run restores the checkpoint the first one went on from
            config.checkpoint_path.write_bytes(saved)
            first = Learner.connect(config, kafka_bootstrap)
            first.start()
        drive(first, lambda lr=first: lr.stats.learned >= len(joined))  # type: ignore[misc]
        versions.append(first.checkpoint().version)
        first.close()
    # the same lineage and sequence number, one model each: the names differ
    assert versions[0] != versions[1], versions
    assert versions[0].rsplit("-", 1)[0] == versions[1].rsplit("-", 1)[0], versions


@pytest.mark.kafka
def test_fetch_reads_records_back_by_partition_and_offset(
    kafka_bootstrap: str, topics: Topics
) -> None:
    sent: list[Event] = [decision(i * 0.1) for i in range(400)]
    publish(kafka_bootstrap, topics, sent)
    reader = EventConsumer(kafka_bootstrap, {topics.decisions: WireDecision}, group_id=None)
    reader.assign()
    at_ref: dict[tuple[int, int], Event] = {}
    for _ in range(100):
        at_ref.update({(r.partition, r.offset): r.event for r in reader.poll(0.5)})
        if len(at_ref) == len(sent):
            break
    refs = sorted(at_ref, key=lambda r: (r[1], r[0]))
    read_to = dict(reader.positions)
    got: dict[tuple[int, int], Event] = {}
    for i in range(0, len(refs), 37):  # forward, as windows close
        got.update(reader.fetch(topics.decisions, refs[i : i + 37]))
    back = refs[::-50]  # and backwards, each a seek
    for ref in back:
        got.update(reader.fetch(topics.decisions, [ref]))
    assert got == at_ref
    assert reader.positions == read_to  # where poll reads on did not move
    gone = (0, 10**6)
    assert reader.fetch(topics.decisions, [refs[0], gone]) == {refs[0]: at_ref[refs[0]]}
    reader.close()

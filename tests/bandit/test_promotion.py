"""The promotion gate: a snapshot reaches the rankers only if, on logged decisions it never
learned, it is not clearly worse than the one they serve. The learner runs here on a stand-in for
its consumer (no broker): the exactly-once tests in test_learner.py run with the gate on."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bandit.errors import ConfigError, ModelError
from bandit.join import Joined
from bandit.learner import Learner, LearnerConfig
from bandit.policy import Policy
from bandit.presets import preset
from bandit.promotion import PromotionConfig, PromotionGate, judge
from bandit.reward import RewardConfig
from bandit.snapshot import read_serving, snapshot_path, write_serving, write_snapshot
from service.cli import app
from service.commands import cmd_learn
from streams.consumer import PartitionKey, Received
from streams.deadletter import DeadLetterWriter
from streams.producer import MemorySink
from streams.schemas import Decision, Event, Feedback, ModelAnnouncement
from streams.topics import Topics

from . import synth
from .events import at, decision, feedback

TOPICS = Topics("p.")


def _logged(rng: random.Random, n: int, t0: float = 0.0) -> list[Joined]:
    """``n`` decisions logged by a uniform policy in the synthetic world, with their rewards."""
    out = []
    for i in range(n):
        s = synth.shopper(rng, rng.randrange(600))
        d = decision(t0 + i * 0.1, action=rng.randrange(4), context=synth.context(s))
        out.append(Joined(d, 1.0 if synth.clicked(rng, s, d.actions[d.action]) else 0.0))
    return out


def _trained(rounds: list[Joined], *, inverted: bool = False) -> Policy:
    """The default preset's model learned on ``rounds``; ``inverted``: on the opposite rewards,
    a model that learned something wrong."""
    policy = Policy(preset("refit"), seed=3)
    policy.learn_many((j.decision, 1.0 - j.reward if inverted else j.reward) for j in rounds)
    return policy


# -- the verdict ------------------------------------------------------------------------------
def test_a_model_trained_on_inverted_rewards_is_judged_clearly_worse() -> None:
    rng = random.Random(1)
    train, held_out = _logged(rng, 2000), _logged(rng, 1000, t0=1000)
    good, bad = _trained(train), _trained(train, inverted=True)
    good.version, bad.version = "good", "bad"

    verdict = judge(bad, good, held_out)
    assert not verdict.promote
    assert verdict.candidate_high < verdict.serving_value
    assert (
        verdict.reason.startswith("snapshot bad held back") and "1000 decisions" in verdict.reason
    )
    assert verdict.metrics()["promotion_held_back"] == 1.0

    better = judge(good, Policy(preset("refit")), held_out)  # the untrained policy: uniform
    assert better.promote and better.candidate_value > better.serving_value + 0.2
    assert better.metrics()["promotion_held_back"] == 0.0


def test_an_equal_candidate_is_promoted() -> None:
    rng = random.Random(2)
    policy = _trained(_logged(rng, 1500))
    verdict = judge(policy, policy, _logged(rng, 600))
    assert verdict.promote and verdict.candidate_value == verdict.serving_value


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"min_rounds": 1}, "min_rounds"),
        ({"min_rounds": 100, "capacity": 50}, "capacity"),
        ({"alpha": 0.0}, "alpha"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_settings_name_the_field(values: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"`{name}`"):
        PromotionConfig(**values)


# -- the learner ------------------------------------------------------------------------------
@dataclass
class Log:
    """A stand-in for the learner's consumer: one partition per topic, read in append order."""

    topics: dict[str, object] = field(
        default_factory=lambda: {TOPICS.decisions: Decision, TOPICS.feedback: Feedback}
    )
    records: list[Received[Event]] = field(default_factory=list)
    positions: dict[PartitionKey, int] = field(default_factory=dict)
    paused: set[PartitionKey] = field(default_factory=set)

    def append(self, events: list[Event]) -> None:
        for e in events:
            topic = TOPICS.decisions if isinstance(e, Decision) else TOPICS.feedback
            offset = self.end_offsets().get((topic, 0), 0)
            ms = int(e.ts.timestamp() * 1000)  # type: ignore[attr-defined]
            self.records.append(Received(topic, 0, offset, None, ms, e))

    def assign(self, offsets: dict[PartitionKey, int] | None = None) -> None:
        self.positions = dict(offsets or {})

    rewind = assign

    def poll(self, timeout_s: float, max_records: int) -> list[Received[Event]]:
        unread = [
            r
            for r in self.records
            if r.offset >= self.positions.get((r.topic, 0), 0) and (r.topic, 0) not in self.paused
        ]
        for r in unread[:max_records]:
            self.positions[(r.topic, 0)] = r.offset + 1
        return unread[:max_records]

    def pause(self, keys: list[PartitionKey]) -> None:
        self.paused.update(keys)

    def resume(self, keys: list[PartitionKey]) -> None:
        self.paused.difference_update(keys)

    def end_offsets(self) -> dict[PartitionKey, int]:
        ends: dict[PartitionKey, int] = {(t, 0): 0 for t in self.topics}
        for r in self.records:
            ends[(r.topic, 0)] = r.offset + 1
        return ends

    def commit(self, offsets: dict[PartitionKey, int] | None = None) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class Stream:
    """Shoppers in the synthetic world, shown copy by a uniform logging policy; each phase
    ends with a decision far ahead in event time that closes every window (never shown)."""

    log: Log = field(default_factory=Log)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    t: float = 0.0
    shown: int = 0

    def phase(self, n: int) -> None:
        events: list[Event] = []
        for j in _logged(self.rng, n, self.t):
            d, t = j.decision, j.decision.ts.timestamp() - at(0).timestamp()
            assert isinstance(d, Decision)  # made by `decision` here
            events += [d, feedback(d, "impression", t + 0.5)]
            if j.reward:
                events.append(feedback(d, "click", t + 1.0))
        self.t += n * 0.1 + 100
        events.append(decision(self.t, event_id=uuid.uuid4()))
        self.t += 100
        self.log.append(events)
        self.shown += n


def _learner(stream: Stream, data_dir: Path, *, gate: bool = True) -> tuple[Learner, MemorySink]:
    sink = MemorySink()
    config = LearnerConfig(
        topics=TOPICS,
        data_dir=data_dir,
        reward=RewardConfig(window_s=10.0),
        lateness_s=5.0,
        max_future_s=None,
        snapshot_every_s=3600,  # checkpoints only when asked
        promotion=PromotionConfig(enabled=gate),
    )
    deadletter = DeadLetterWriter(sink, TOPICS.deadletter)
    return Learner(config, stream.log, sink, deadletter), sink  # type: ignore[arg-type]


def _learn_all(learner: Learner, stream: Stream) -> None:
    for _ in range(100):
        if learner.joiner.stats.joined >= stream.shown:
            break
        learner.step()
    assert learner.joiner.stats.joined == stream.shown


def _phase(learner: Learner, stream: Stream, n: int, *, sabotage: bool = False) -> str:
    """``n`` more shoppers, all learned, then a checkpoint (after swapping the live model for a
    bad one, with ``sabotage``); returns the version the checkpoint cut."""
    stream.phase(n)
    _learn_all(learner, stream)
    if sabotage:
        _sabotage(learner, stream)
    return learner.checkpoint().version


def _announced(sink: MemorySink) -> list[ModelAnnouncement]:
    return [e for e in sink.on(TOPICS.models) if isinstance(e, ModelAnnouncement)]


def _sabotage(learner: Learner, stream: Stream) -> None:
    """Swap the live model for one trained on inverted rewards, as a bug in the reward or a
    poisoned stream would leave it; it has learned more, so the next checkpoint cuts it."""
    learner.policy = _trained(_logged(random.Random(9), stream.shown + 1), inverted=True)


def test_a_good_snapshot_is_promoted_and_a_bad_one_held_back(tmp_path: Path) -> None:
    stream = Stream()
    learner, sink = _learner(stream, tmp_path)
    learner.start()
    first = _phase(learner, stream, 1500)
    assert _announced(sink) == []  # the candidate waits for decisions it never learned
    assert learner.gate.candidate == first

    # judged on those 800 against the untrained policy: promoted; the bad one cut is next
    bad = _phase(learner, stream, 800, sabotage=True)
    assert learner.gate.candidate == bad
    [ann] = _announced(sink)
    assert ann.version == first and ann.learned_events == 1500
    assert ann.metrics["promotion_held_back"] == 0.0 and ann.metrics["held_back"] == 0.0
    assert ann.metrics["promotion_candidate_value"] > ann.metrics["promotion_serving_value"]
    assert read_serving(learner.config.snapshot_dir) == first

    _phase(learner, stream, 800)
    versions = [a.version for a in _announced(sink)]
    assert bad not in versions
    assert learner.stats.held_back == 1 and learner.gate.held_back == 1
    # the verdict is announced with the serving snapshot, which rankers already hold
    last = _announced(sink)[-1]
    assert last.version == learner.gate.serving.version != bad
    assert last.metrics["promotion_held_back"] == 1.0 and last.metrics["held_back"] == 1.0
    assert last.metrics["promotion_candidate_high"] < last.metrics["promotion_serving_value"]
    assert read_serving(learner.config.snapshot_dir) == last.version
    learner.close()


def test_without_the_gate_every_snapshot_is_announced(tmp_path: Path) -> None:
    stream = Stream()
    learner, sink = _learner(stream, tmp_path, gate=False)
    learner.start()
    first = _phase(learner, stream, 1500)
    _sabotage(learner, stream)
    bad = learner.checkpoint().version
    assert [a.version for a in _announced(sink)] == [first, bad]
    assert learner.stats.held_back == 0 and "held_back" in _announced(sink)[-1].metrics
    learner.close()


def test_a_restart_announces_the_serving_snapshot_not_the_checkpointed_candidate(
    tmp_path: Path,
) -> None:
    stream = Stream()
    learner, sink = _learner(stream, tmp_path)
    learner.start()
    first = _phase(learner, stream, 1500)
    second = _phase(learner, stream, 800)  # the first promoted, this one the candidate
    learner.close()

    resumed, sink = _learner(stream, tmp_path)
    resumed.start()
    [ann] = _announced(sink)
    assert ann.version == first and second != first
    assert resumed.gate.candidate == second
    # a checkpoint with nothing new learned neither judges nor announces anything
    resumed.checkpoint()
    assert len(_announced(sink)) == 1
    resumed.close()


def test_a_data_dir_from_before_the_gate_serves_its_checkpointed_model(tmp_path: Path) -> None:
    stream = Stream()
    learner, _ = _learner(stream, tmp_path, gate=False)
    learner.start()
    version = _phase(learner, stream, 600)
    learner.close()
    (learner.config.snapshot_dir / "serving.json").unlink()

    resumed, sink = _learner(stream, tmp_path)
    resumed.start()
    assert [a.version for a in _announced(sink)] == [version]
    assert resumed.gate.candidate is None
    resumed.close()


def test_the_gate_counts_a_decision_read_twice_once(tmp_path: Path) -> None:
    rng = random.Random(4)
    rounds = _logged(rng, 600)
    gate = PromotionGate(PromotionConfig(min_rounds=400), tmp_path, lambda: Policy(preset("refit")))
    gate.resume(None)
    live = _trained(_logged(rng, 1000))
    live.version = "v1"
    write_snapshot(live, tmp_path)
    assert gate.review(live) is False and gate.candidate == "v1"
    gate.observe(rounds[:300])
    gate.observe(rounds[:300])  # after a rewind the same events come again
    live.version = "v2"
    assert gate.review(live) is False  # 300 distinct: too few to judge
    gate.observe(rounds[300:])
    assert gate.review(live) is True and gate.serving.version == "v1"
    assert gate.last is not None and gate.last.rounds == 600
    assert gate.candidate == "v2"


def test_pruning_keeps_the_serving_snapshot(tmp_path: Path) -> None:
    policy = Policy()
    policy.version = "serving"
    write_snapshot(policy, tmp_path, keep=2)
    write_serving(tmp_path, "serving")
    for i in range(4):
        policy.version = f"later-{i}"
        write_snapshot(policy, tmp_path, keep=2)
    kept = sorted(p.name for p in tmp_path.glob("*.policy"))
    assert kept == ["later-2.policy", "later-3.policy", "serving.policy"]
    assert snapshot_path(tmp_path, "serving").exists()


# -- the setting and the option ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "args", "enabled"),
    [
        (None, [], True),
        ("false", [], False),
        (None, ["--no-promotion-gate"], False),
        ("false", ["--promotion-gate"], True),
    ],
)
def test_learn_takes_the_gate_from_its_option_else_the_setting(
    env: str | None,
    args: list[str],
    enabled: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COPYLOOP_DATA_DIR", str(tmp_path))
    if env is None:
        monkeypatch.delenv("COPYLOOP_PROMOTION_GATE", raising=False)
    else:
        monkeypatch.setenv("COPYLOOP_PROMOTION_GATE", env)
    seen: list[PromotionConfig] = []

    def config(**values: object) -> LearnerConfig:
        seen.append(values["promotion"])  # type: ignore[arg-type]
        raise ConfigError("stop before any broker is touched")

    monkeypatch.setattr(cmd_learn, "LearnerConfig", config)
    result = CliRunner().invoke(app, ["learn", *args])
    assert result.exit_code == 2, result.output
    assert [c.enabled for c in seen] == [enabled]


def test_a_judgement_that_fails_promotes_the_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = PromotionGate(
        PromotionConfig(min_rounds=2, capacity=10), tmp_path, lambda: Policy(preset("refit"))
    )
    gate.resume(None)
    live = _trained(_logged(random.Random(5), 10))
    live.version = "v1"
    write_snapshot(live, tmp_path)
    gate.review(live)
    gate.observe(_logged(random.Random(6), 5))

    def broken(*args: object) -> list[float]:
        raise ModelError("the model refused to score")

    monkeypatch.setattr(Policy, "pmf", broken)
    live.version = "v2"
    assert gate.review(live) is True  # fails open: the rankers' model is not frozen
    assert gate.serving.version == "v1" and gate.last is None

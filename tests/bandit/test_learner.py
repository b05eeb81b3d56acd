from __future__ import annotations

import base64
import json
import math
import random
import uuid
from pathlib import Path

import pytest

from bandit.checkpoint import Checkpoint
from bandit.errors import ConfigError
from bandit.learner import Learner, LearnerConfig
from bandit.policy import Policy
from bandit.promotion import PromotionConfig
from bandit.reward import RewardConfig
from bandit.snapshot import PolicyHolder
from streams.errors import StreamsError
from streams.schemas import Decision, Event, Feedback, utc_now
from streams.topics import Topics
from tests.streams.faults import FailingSink

from . import synth
from .events import at, decision, feedback
from .kafka_util import announcements, dead_letters, drive, publish

pytestmark = pytest.mark.kafka

WINDOW_S = 10.0
#: for tests of what each checkpoint announces: every snapshot at once (test_promotion.py
#: tests the gate that otherwise judges it first)
NO_GATE = PromotionConfig(enabled=False)


def _config(topics: Topics, data_dir: Path, **kw: object) -> LearnerConfig:
    values: dict = {
        "topics": topics,
        "data_dir": data_dir,
        "reward": RewardConfig(window_s=WINDOW_S),
        "snapshot_every_s": 0.5,
        "lateness_s": 5.0,
        "poll_timeout_s": 0.2,
    }
    values.update(kw)
    return LearnerConfig(**values)


def _tick(t: float) -> Decision:
    """A decision far ahead in event time: moves the watermark so every earlier window closes
    (it is never shown, so it is never learned)."""
    return decision(t)


def test_bad_feedback_is_dead_lettered_and_the_learner_goes_on(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    events: list[Event] = []
    shown = [decision(i) for i in range(20)]
    for i, d in enumerate(shown):
        events.append(d)
        events.append(feedback(d, "impression", i + 1, fid=f"imp-{i}"))
    dup = feedback(shown[0], "click", 2, fid="click-0")
    events += [dup, dup, dup]  # duplicated: counts once
    late = feedback(shown[1], "click", 1 + WINDOW_S + 1, fid="late-1")
    events.append(late)  # after its window
    unknown = feedback(uuid.uuid4(), "click", 5, fid="unknown-1")
    events.append(unknown)
    future = feedback(shown[2], "click", 100 * 365 * 86400, fid="future-2")
    events.append(future)  # stamped a century ahead: must not move the watermark
    events.append(_tick(1000))
    malformed = [b"{not json", json.dumps({"schema_version": 1, "kind": "click"}).encode()]
    publish(kafka_bootstrap, topics, events, raw=malformed)

    learner = Learner.connect(_config(topics, tmp_path, promotion=NO_GATE), kafka_bootstrap)
    learner.start()
    drive(
        learner,
        lambda: (
            learner.stats.learned >= 20
            and learner.stats.records >= len(events)
            and learner.consumer.dead_lettered >= 2
        ),
    )
    learner.checkpoint()
    assert learner.stats.learned == 20  # every shown decision once, duplicates and late not
    js = learner.joiner.stats
    assert (js.duplicate_feedback, js.late_feedback, js.unknown_feedback) == (2, 1, 1)
    learner.close()

    letters = dead_letters(kafka_bootstrap, topics, expect=5)
    reasons = sorted(letter.reason.split(":")[0].split(" ")[0] for letter in letters)
    assert reasons == ["field", "invalid", "invalid", "late", "unknown"], [
        x.reason for x in letters
    ]
    assert any("ahead of the learner's clock" in x.reason for x in letters)
    by_reason = {x.reason.split(":")[0]: x for x in letters}
    late_letter = by_reason["late"]
    assert Feedback.model_validate_json(base64.b64decode(late_letter.raw)).feedback_id == "late-1"
    assert late_letter.partition >= 0 and late_letter.offset >= 0
    assert any("field `event_id`" in x.reason for x in letters)  # malformed names the field

    [ann] = [a for a in announcements(kafka_bootstrap, topics, 1) if a.learned_events == 20]
    assert ann.kind == "bandit" and Path(ann.uri.removeprefix("file://")).exists()
    assert ann.metrics["joined"] == 20.0


def test_restart_after_a_crash_learns_each_event_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    rng = random.Random(4)
    events: list[Event] = []
    for i in range(120):
        d = decision(i * 0.5, action=rng.randrange(4))
        events += [d, feedback(d, "impression", i * 0.5 + 1)]
        if rng.random() < 0.3:
            events.append(feedback(d, "click", i * 0.5 + 2))
    half = len(events) // 2
    first, second = events[:half], [*events[half:], _tick(5000)]
    publish(kafka_bootstrap, topics, first)

    config = _config(topics, tmp_path, snapshot_every_s=3600)  # checkpoints only when asked
    crashed = Learner.connect(config, kafka_bootstrap)
    crashed.start()
    drive(crashed, lambda: crashed.stats.records >= len(first))
    ck = crashed.checkpoint()
    publish(kafka_bootstrap, topics, second)
    drive(crashed, lambda: crashed.stats.learned == 120)  # learned more, never checkpointed
    crashed.close()  # as good as a crash: the last checkpoint is all that survives

    resumed = Learner.connect(config, kafka_bootstrap)
    resumed.start()
    assert resumed.stats.learned == ck.learned < 120
    drive(resumed, lambda: resumed.stats.learned >= 120)
    for _ in range(5):  # nothing more arrives: the count stays
        resumed.step()
    assert resumed.stats.learned == 120
    # the model equals one that learned every joined event once, in the joiner's order
    reference = Policy(config.policy, config.seed)
    joined = sorted(
        (e for e in events if isinstance(e, Decision)), key=lambda d: (d.ts, d.event_id.int)
    )
    clicks = {e.event_id for e in events if isinstance(e, Feedback) and e.kind == "click"}
    reference.learn_many((d, 1.0 if d.event_id in clicks else 0.0) for d in joined)
    ctx = synth.context(synth.shopper(random.Random(1), 1))
    assert resumed.policy.pmf(ctx, synth.ACTIONS) == pytest.approx(
        reference.pmf(ctx, synth.ACTIONS), abs=1e-6
    )
    resumed.checkpoint()
    resumed.close()
    assert Checkpoint.load(config.checkpoint_path).learned == 120  # type: ignore[union-attr]


def test_learned_policy_picks_the_best_variant_per_segment(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """The whole loop on a synthetic stream: rankers choose with the announced model, shoppers
    react, the learner joins and learns over Kafka, rankers hot-swap."""
    rng = random.Random(11)
    holder = PolicyHolder(seed=11)
    config = _config(topics, tmp_path, snapshot_every_s=0.1, promotion=NO_GATE)
    learner = Learner.connect(config, kafka_bootstrap)
    learner.start()
    t = 0.0
    total = 0
    for _round in range(6):
        events: list[Event] = []
        for _ in range(300):
            t += 0.05
            s = synth.shopper(rng, rng.randrange(600))
            d = holder.choose(
                synth.context(s),
                synth.ACTIONS,
                event_id=uuid.UUID(int=rng.getrandbits(128)),
                product_id="p1",
                channel="ad_headline",
                pool_version=1,
                ts=at(t),
            )
            events += [d, feedback(d, "impression", t + 0.5)]
            if synth.clicked(rng, s, d.actions[d.action]):
                events.append(feedback(d, "click", t + 1))
        total += 300
        events.append(_tick(t + 100))  # close this round's windows
        t += 100
        publish(kafka_bootstrap, topics, events)

        def learned_all(n: int = total) -> bool:
            return learner.stats.learned >= n

        drive(learner, learned_all)
        ck = learner.checkpoint()
        [ann] = [a for a in announcements(kafka_bootstrap, topics, 1) if a.version == ck.version]
        assert holder.load(ann)
    learner.close()
    assert holder.policy.learned == total == 1800

    for segment, best in synth.BEST.items():
        k = synth.ACTIONS.ids.index(best)
        probs: list[list[float]] = []
        while len(probs) < 30:
            s = synth.shopper(rng, rng.randrange(600))
            if s.segment == segment:
                probs.append(holder.policy.pmf(synth.context(s), synth.ACTIONS))
        picked = sum(max(range(4), key=p.__getitem__) == k for p in probs)
        assert picked >= 27, (segment, picked)  # chance would be about 7 of 30
        assert sum(p[k] for p in probs) / len(probs) > 0.6  # chance is 0.25


def test_idle_close_lets_the_clock_close_windows_when_traffic_stops(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    now = utc_now()
    d = decision(0).model_copy(update={"ts": now})
    imp = Feedback(feedback_id="imp-now", event_id=d.event_id, ts=now, kind="impression")
    publish(kafka_bootstrap, topics, [d, imp])
    config = _config(
        topics, tmp_path, reward=RewardConfig(window_s=1.0), lateness_s=0.5, idle_close=True
    )
    learner = Learner.connect(config, kafka_bootstrap)
    learner.start()
    drive(learner, lambda: learner.stats.records == 2)
    assert learner.stats.learned == 0  # no later event arrives to move event time on
    drive(learner, lambda: learner.stats.learned == 1, max_steps=100)  # the clock does
    learner.close()


def test_a_stream_error_rewinds_to_the_checkpoint_and_learns_each_event_once(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    rng = random.Random(7)
    events: list[Event] = []
    for i in range(40):
        d = decision(i * 0.5, action=rng.randrange(4))
        events += [d, feedback(d, "impression", i * 0.5 + 1)]
        if rng.random() < 0.3:
            events.append(feedback(d, "click", i * 0.5 + 2))
    events.append(_tick(5000))
    publish(kafka_bootstrap, topics, events, raw=[b"{bad-1", b"{bad-2"])

    config = _config(topics, tmp_path)  # checkpoints every half second, inside step()
    learner = Learner.connect(config, kafka_bootstrap)
    # the first letter is refused mid-batch, the next one is lost on its way to the broker
    learner.deadletter.sink = FailingSink(learner.deadletter.sink, refuse=1, lose=1)
    learner.start()
    errors = 0
    for _ in range(300):
        try:
            learner.step()
        except StreamsError:
            errors += 1
        # both failures seen (the bad messages may come after the others' partitions)
        if learner.stats.learned >= 40 and learner.stats.checkpoints >= 1 and errors >= 2:
            break
    assert errors == 2, learner.stats
    for _ in range(5):  # nothing more arrives: the count stays
        learner.step()
    assert learner.stats.learned == 40
    reference = Policy(config.policy, config.seed)
    joined = sorted(
        (e for e in events if isinstance(e, Decision) and e.ts < at(1000)),
        key=lambda d: (d.ts, d.event_id.int),
    )
    clicks = {e.event_id for e in events if isinstance(e, Feedback) and e.kind == "click"}
    reference.learn_many((d, 1.0 if d.event_id in clicks else 0.0) for d in joined)
    ctx = synth.context(synth.shopper(random.Random(1), 1))
    assert learner.policy.pmf(ctx, synth.ACTIONS) == pytest.approx(
        reference.pmf(ctx, synth.ACTIONS), abs=1e-6
    )
    ck = learner.checkpoint()
    learner.close()
    assert ck.learned == 40
    # each bad message has a letter (at least once: a rewind may record one again)
    letters = dead_letters(kafka_bootstrap, topics, expect=3)
    assert {base64.b64decode(x.raw) for x in letters} == {b"{bad-1", b"{bad-2"}
    assert len({(x.partition, x.offset) for x in letters}) == 2


def test_decisions_past_the_open_cap_are_dead_lettered_with_their_reason(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    shown = [decision(i) for i in range(5)]
    events: list[Event] = [*shown, *(feedback(d, "impression", i + 1) for i, d in enumerate(shown))]
    publish(kafka_bootstrap, topics, events)
    learner = Learner.connect(_config(topics, tmp_path, max_open_decisions=3), kafka_bootstrap)
    learner.start()
    drive(learner, lambda: learner.stats.records >= len(events))
    learner.checkpoint()
    assert learner.joiner.pending == 3 and learner.joiner.stats.overflow_decisions == 2
    learner.close()
    letters = [x for x in dead_letters(kafka_bootstrap, topics, expect=2) if "overflow" in x.reason]
    assert len(letters) == 2 and {x.source_topic for x in letters} == {topics.decisions}
    assert all("at most 3" in x.reason and x.offset >= 0 for x in letters)
    # the letter holds the decision as it was logged, every field
    dropped = [Decision.model_validate_json(base64.b64decode(x.raw)) for x in letters]
    assert len({d.event_id for d in dropped}) == 2 and all(d in shown for d in dropped)


def test_what_the_learner_holds_is_frozen_out_of_collections_and_released_at_close(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """Open decisions go to the collector's permanent generation after each poll that read
    something (full collections do not walk them), a due sweep collects everything, and
    closing the learner gives the process its collector back."""
    import gc

    events: list[Event] = []
    for i in range(30):
        d = decision(i * 0.5, action=i % 4)
        events += [d, feedback(d, "impression", i * 0.5 + 1)]
    publish(kafka_bootstrap, topics, events)
    gc.unfreeze()
    learner = Learner.connect(_config(topics, tmp_path, gc_sweep_every_s=0.01), kafka_bootstrap)
    learner.start()
    drive(learner, lambda: learner.stats.records >= len(events))
    assert gc.get_freeze_count() > 0
    assert learner.joiner.pending > 0  # decisions in their window: held, and frozen
    swept = learner._swept_at
    learner._swept_at -= 1.0  # a sweep is due at the next poll that reads something
    publish(kafka_bootstrap, topics, [decision(20.0, action=1)])
    drive(learner, lambda: learner._swept_at > swept)
    assert gc.get_freeze_count() > 0  # frozen again after the sweep
    learner.close()
    assert gc.get_freeze_count() == 0


def _drive_all(learner: Learner, n: int) -> None:
    drive(learner, lambda: learner.stats.records >= n)


def test_a_step_runs_with_automatic_collections_paused_and_gives_them_back(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """While a step reads, joins and learns, the collector does not wake (what the step makes
    is frozen after it); between steps, and with ``freeze_gc`` off, it runs as usual."""
    import gc

    seen: list[bool] = []

    class Watch:
        def read(self, records: object) -> None:
            seen.append(gc.isenabled())

        def joined(self, joined: object) -> None:
            seen.append(gc.isenabled())

        def stepped(self, serving: object, health: object) -> None: ...

        def saving(self) -> None: ...

    events: list[Event] = []
    for i in range(10):
        d = decision(i * 0.5, action=i % 4)
        events += [d, feedback(d, "impression", i * 0.5 + 1)]
    publish(kafka_bootstrap, topics, events)
    assert gc.isenabled()
    for freeze, expected in ((True, False), (False, True)):
        seen.clear()
        learner = Learner.connect(
            _config(topics, tmp_path / str(freeze), freeze_gc=freeze, group_id=f"g{freeze}"),
            kafka_bootstrap,
        )
        learner.observer = Watch()
        learner.start()
        _drive_all(learner, len(events))
        assert seen and set(seen) == {expected}
        assert gc.isenabled()
        learner.close()


def test_feedback_far_ahead_of_its_decisions_waits_for_them_and_every_event_joins(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """A backlog whose feedback the client delivers before the decisions (the small records
    come many to a fetch): the feedback partitions pause while they lead, resume once the
    decisions catch up, and every event is joined once, as without pausing."""
    shown = [decision(i * 0.02, action=i % 4) for i in range(3000)]
    fb = [feedback(d, "impression", i * 0.02) for i, d in enumerate(shown)]
    clicks = [feedback(d, "click", i * 0.02 + 1) for i, d in enumerate(shown) if i % 7 == 0]
    publish(kafka_bootstrap, topics, [*fb, *clicks])
    publish(kafka_bootstrap, topics, [*shown, _tick(1000.0)])
    results = {}
    for lead in (1.0, None):
        learner = Learner.connect(
            _config(topics, tmp_path / str(lead), feedback_lead_s=lead, group_id=f"g{lead}"),
            kafka_bootstrap,
        )
        pauses = 0
        learner.start()
        for _ in range(600):
            learner.step()
            pauses += bool(learner.consumer.paused)
            if learner.stats.learned >= len(shown):
                break
        assert not learner.consumer.paused or learner.stats.learned < len(shown)
        results[lead] = (learner.stats.learned, learner.joiner.stats.to_dict(), pauses)
        learner.close()
    assert results[1.0][0] == results[None][0] == len(shown)
    assert results[1.0][1] == results[None][1]
    assert results[1.0][1]["joined"] == len(shown) and results[1.0][1]["unknown_feedback"] == 0
    assert results[None][2] == 0


def test_feedback_lead_must_be_finite_and_not_negative(topics: Topics, tmp_path: Path) -> None:
    for bad in (-1.0, math.inf, "1"):
        with pytest.raises(ConfigError, match="feedback_lead_s"):
            _config(topics, tmp_path, feedback_lead_s=bad)


def test_gc_sweep_interval_must_be_positive(topics: Topics, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gc_sweep_every_s"):
        _config(topics, tmp_path, gc_sweep_every_s=0)

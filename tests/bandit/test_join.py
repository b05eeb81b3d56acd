from __future__ import annotations

import heapq
import random
import uuid

import pytest

from bandit.errors import CheckpointError, ConfigError
from bandit.join import Joined, Rejected, RewardJoiner, _pop_due, bounded_event_time
from bandit.reward import RewardConfig
from bandit.wire import as_event
from streams.schemas import Decision, Feedback

from .events import at, decision, feedback

WINDOW = RewardConfig(window_s=100.0)


def _joiner(lateness: float = 10.0) -> RewardJoiner:
    return RewardJoiner(WINDOW, lateness_s=lateness)


def test_joins_within_the_window_once_it_closes() -> None:
    j = _joiner()
    d = decision(0)
    assert j.add_decision(d) == []
    assert j.add_feedback(feedback(d, "impression", 1)) == []
    assert j.add_feedback(feedback(d, "click", 50)) == []
    assert j.advance(at(109)) == ([], [])  # window 100 + lateness 10 not yet passed
    joined, rejected = j.advance(at(110))
    assert joined == [Joined(d, 1.0)] and rejected == []
    assert j.stats.joined == 1 and j.pending == 0


def test_no_impression_is_not_learned_and_impression_alone_earns_default() -> None:
    j = _joiner()
    unseen, seen = decision(0), decision(1)
    j.add_decision(unseen)
    j.add_decision(seen)
    j.add_feedback(feedback(unseen, "click", 2))  # a click without impression: never shown
    j.add_feedback(feedback(seen, "impression", 2))
    joined, _ = j.advance(at(500))
    assert joined == [Joined(seen, 0.0)]
    assert j.stats.unseen == 1


def test_duplicate_feedback_counts_once() -> None:
    j = _joiner()
    d = decision(0)
    j.add_decision(d)
    imp = feedback(d, "impression", 1, fid="f-1")
    buy = feedback(d, "purchase", 5, fid="f-2")
    for fb in (imp, imp, buy, buy, buy):
        assert j.add_feedback(fb) == []
    joined, _ = j.advance(at(500))
    assert joined == [Joined(d, 2.0)]
    assert j.stats.duplicate_feedback == 3


def test_duplicate_decisions_open_one_event() -> None:
    j = _joiner()
    d = decision(0)
    j.add_decision(d)
    j.add_decision(d)
    j.add_feedback(feedback(d, "impression", 1))
    joined, _ = j.advance(at(500))
    assert len(joined) == 1
    j.add_decision(d)  # again after it closed: still remembered
    assert j.advance(at(520)) == ([], [])
    assert j.stats.duplicate_decisions == 2


def test_late_feedback_is_rejected_and_does_not_count() -> None:
    j = _joiner()
    d = decision(0)
    j.add_decision(d)
    j.add_feedback(feedback(d, "impression", 1))
    late = feedback(d, "click", 101)  # after the 100 s window
    [r] = j.add_feedback(late, ref=(1, 42))
    assert (r.reason, r.ref, r.event) == ("late", (1, 42), late)
    joined, _ = j.advance(at(500))
    assert joined == [Joined(d, 0.0)]
    [r2] = j.add_feedback(feedback(d, "purchase", 90, fid="after-close"))  # event closed
    assert r2.reason == "late"
    assert j.stats.late_feedback == 2


def test_feedback_before_its_decision_is_held() -> None:
    j = _joiner()
    d = decision(10)
    assert j.add_feedback(feedback(d, "impression", 11)) == []
    assert j.add_feedback(feedback(d, "click", 12)) == []
    assert j.orphans == 2
    j.add_decision(d)
    assert j.orphans == 0
    joined, _ = j.advance(at(500))
    assert joined == [Joined(d, 1.0)]


def test_unknown_event_feedback_is_rejected_after_the_lateness() -> None:
    j = _joiner(lateness=10)
    stray = feedback(uuid.uuid4(), "click", 5)
    assert j.add_feedback(stray, ref=(0, 7)) == []
    assert j.advance(at(14)) == ([], [])
    _, rejected = j.advance(at(15))
    assert rejected == [Rejected(stray, "unknown_event", rejected[0].detail, (0, 7))]
    # far behind the watermark: rejected at once
    [r] = j.add_feedback(feedback(uuid.uuid4(), "click", 1))
    assert r.reason == "unknown_event"
    assert j.stats.unknown_feedback == 2


def test_output_order_does_not_depend_on_input_interleaving() -> None:
    rng = random.Random(3)
    decisions = [decision(i * 0.5) for i in range(200)]
    stream: list[Decision | Feedback] = []
    for d in decisions:
        stream.append(d)
        stream.append(feedback(d, "impression", d.ts.timestamp() - at(0).timestamp() + 1))
        if rng.random() < 0.3:
            stream.append(feedback(d, "click", d.ts.timestamp() - at(0).timestamp() + 2))

    def run(events: list) -> list[tuple[uuid.UUID, float]]:
        j = _joiner(lateness=30)
        out = []
        for e in events:
            (j.add_feedback if hasattr(e, "kind") else j.add_decision)(e)
            out += [(x.decision.event_id, x.reward) for x in j.advance()[0]]
        return out + [(x.decision.event_id, x.reward) for x in j.flush()[0]]

    baseline = run(stream)
    # a local shuffle, as reading partitions at different paces would give
    shuffled = list(stream)
    for i in range(0, len(shuffled) - 8, 8):
        chunk = shuffled[i : i + 8]
        rng.shuffle(chunk)
        shuffled[i : i + 8] = chunk
    assert run(shuffled) == baseline
    assert len(baseline) == 200


def test_state_round_trip_resumes_exactly() -> None:
    rng = random.Random(7)
    events: list[Decision | Feedback] = []
    for i in range(300):
        d = decision(i)
        events.append(d)
        events.append(feedback(d, "impression", i + 1))
        if rng.random() < 0.4:
            events.append(feedback(d, "click", i + rng.uniform(1, 150)))  # some late
    events.append(feedback(uuid.uuid4(), "click", 150))
    events.sort(key=lambda e: e.ts)

    def feed(j: RewardJoiner, part: list) -> list:
        out: list = []
        for e in part:
            r = j.add_feedback(e) if hasattr(e, "kind") else j.add_decision(e)
            joined, rej = j.advance()
            out += [("r", getattr(x.event, "feedback_id", None), x.reason) for x in r + rej]
            out += [("j", x.decision.event_id, x.reward) for x in joined]
        return out

    whole = _joiner()
    expected = feed(whole, events)
    first = _joiner()
    got = feed(first, events[:333])
    resumed = RewardJoiner.from_state(first.to_state(), WINDOW, lateness_s=10.0)
    assert resumed.pending == first.pending and resumed.orphans == first.orphans
    got += feed(resumed, events[333:])
    assert got == expected
    assert resumed.stats == whole.stats
    assert resumed.watermark == whole.watermark


def test_flush_closes_everything() -> None:
    j = _joiner()
    d = decision(0)
    j.add_decision(d)
    j.add_feedback(feedback(d, "impression", 1))
    stray = feedback(uuid.uuid4(), "click", 2)
    j.add_feedback(stray)
    joined, rejected = j.flush()
    assert joined == [Joined(d, 0.0)] and [r.event for r in rejected] == [stray]


def test_bad_state_and_config() -> None:
    with pytest.raises(CheckpointError):
        RewardJoiner.from_state(b"{not json")
    with pytest.raises(CheckpointError):
        RewardJoiner.from_state(b'{"format": 9}')
    with pytest.raises(ConfigError, match="lateness_s"):
        RewardJoiner(WINDOW, lateness_s=-1)


def test_event_time_is_bounded_by_when_the_broker_logged_it() -> None:
    logged = at(50).timestamp()
    ahead = at(350).timestamp()  # a sender's clock 300 s ahead
    assert bounded_event_time(ahead, int(logged * 1000), 10.0) == pytest.approx(logged + 10.0)
    behind = at(20).timestamp()  # sent late (a spool delivering after an outage): its own time
    assert bounded_event_time(behind, int(logged * 1000), 10.0) == behind
    assert bounded_event_time(ahead, -1, 10.0) == ahead  # no broker time: nothing to bound by


def test_decisions_past_max_open_are_handed_back_as_overflow() -> None:
    j = RewardJoiner(WINDOW, lateness_s=10.0, max_open=2)
    held = [decision(0), decision(1)]
    for d in held:
        assert j.add_decision(d) == []
    extra = decision(2)
    [r] = j.add_decision(extra, (0, 7))
    assert (r.event, r.reason, r.ref) == (extra, "overflow", (0, 7))
    assert "2 decisions open, at most 2" in r.detail
    assert (j.pending, j.stats.decisions, j.stats.overflow_decisions) == (2, 2, 1)
    # once a window closes there is room again
    j.advance(at(110))
    assert j.pending == 1
    assert j.add_decision(decision(3)) == [] and j.pending == 2
    with pytest.raises(ConfigError, match="max_open"):
        RewardJoiner(WINDOW, max_open=0)


def test_state_keeps_each_pool_once_and_restores_shared_lists() -> None:
    j = _joiner()
    shown = [
        decision(i, context={"u_age": "18-24", "c_x": 1.5, "u_cats": ["a"]}) for i in range(50)
    ]
    for i, d in enumerate(shown):
        j.add_decision(d)
        j.add_feedback(feedback(d, "impression", i + 1))
        j.add_feedback(feedback(d, "click", i + 2))
    state = j.to_state()
    assert state.count(b'"generator_version"') <= len(shown[0].actions)  # one pool, written once
    resumed = RewardJoiner.from_state(state, WINDOW, lateness_s=10.0)
    joined, _ = resumed.flush()
    assert [as_event(x.decision) for x in joined] == shown
    assert {x.reward for x in joined} == {1.0}
    assert len({id(x.decision.actions) for x in joined}) == 1  # the pool's lists are shared


def test_state_of_the_first_format_still_loads() -> None:
    d = decision(0)
    old = (
        '{"format":1,"watermark":null,"orphans":[],"closed":[],"stats":{},'
        f'"open":[[{d.model_dump_json()},["impression"],["f1"]]]}}'
    ).encode()
    joiner = RewardJoiner.from_state(old, WINDOW, lateness_s=10.0)
    assert joiner.add_feedback(feedback(d, "impression", 1, fid="f1")) == []  # a duplicate
    joined, _ = joiner.flush()
    assert [(as_event(x.decision), x.reward) for x in joined] == [(d, 0.0)]
    assert joiner.stats.duplicate_feedback == 1


@pytest.mark.parametrize("seed", range(5))
def test_taking_due_entries_matches_a_pop_each_whether_few_or_most_are_due(seed: int) -> None:
    """Few due: popped one by one; most due: found in one pass and sorted. Either way the
    same entries in the same order as popping each, and the rest still a heap."""
    rng = random.Random(seed)
    for size in (0, 1, 17, 400):
        items = [(float(rng.randrange(50)), rng.randrange(1000)) for _ in range(size)]
        for limit in (-1.0, 2.0, 25.0, 48.0, 100.0):
            heap = list(items)
            heapq.heapify(heap)
            expected, ref = [], list(heap)
            while ref and ref[0][0] <= limit:
                expected.append(heapq.heappop(ref))
            assert _pop_due(heap, limit) == expected
            assert sorted(heap) == sorted(ref)
            assert all(
                heap[i] <= heap[c]
                for i in range(len(heap))
                for c in (2 * i + 1, 2 * i + 2)
                if c < len(heap)
            )


def test_many_windows_closing_at_once_join_in_close_order() -> None:
    """A catch-up's end: every window closes in one advance (the one-pass path) and events come
    out in (close time, event id) order, as when they close a few at a time."""
    rng = random.Random(3)
    decisions = [decision(rng.random() * 50) for _ in range(300)]
    bulk, stepwise = _joiner(), _joiner()
    for j in (bulk, stepwise):
        for d in decisions:
            j.add_decision(d)
            j.add_feedback(feedback(d, "impression", d.ts.timestamp() - at(0).timestamp() + 1))
    joined_bulk, _ = bulk.advance(at(1000))
    joined_steps: list[Joined] = []
    for t in range(100, 1001, 2):
        joined_steps += stepwise.advance(at(t))[0]
    assert [j.decision.event_id for j in joined_bulk] == [j.decision.event_id for j in joined_steps]
    assert len(joined_bulk) == 300


def test_held_feedback_entries_are_dropped_once_their_decisions_came() -> None:
    """Feedback read before its decision is held; once every decision has come, the entries
    left in the expiry heap are stale and are dropped at the next advance."""
    j = _joiner()
    ds = [decision(i) for i in range(20)]
    for d in ds:
        j.add_feedback(feedback(d, "impression", 1))
    assert j.orphans == 20
    for d in ds:
        j.add_decision(d)
    assert j.orphans == 0
    joined, rejected = j.advance(at(5))
    assert joined == [] and rejected == [] and j._orphan_heap == []

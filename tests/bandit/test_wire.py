from __future__ import annotations

import json
import random
import uuid

import msgspec
import pytest

from bandit.wire import LoggedDecision, LoggedFeedback, WireDecision, WireFeedback, as_event
from streams.errors import SerdeError
from streams.schemas import Decision, Feedback
from streams.serde import decode, encode

from . import synth
from .events import decision


def _payload(**changes: object) -> bytes:
    data = json.loads(encode(decision(3.5, action=2, context={"u_age": "18-24", "c_x": 1.5})))
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data, ensure_ascii=False).encode()


def _logged(raw: bytes) -> LoggedDecision:
    d = decode(WireDecision, raw)
    assert type(d) is LoggedDecision
    return d


def test_fast_path_equals_pydantic_on_varied_decisions() -> None:
    rng = random.Random(1)
    for i in range(200):
        s = synth.shopper(rng, i)
        ctx = {**synth.context(s), "c_score": rng.random(), "u_cats": ["服装", "美妆"], "c_n": i}
        raw = encode(decision(rng.random() * 1000, action=rng.randrange(4), context=ctx))
        fast, slow = decode(WireDecision, raw), decode(Decision, raw)
        assert type(fast) is LoggedDecision and fast == LoggedDecision.of(slow)
        assert fast.event() == slow
        assert fast.event().model_dump_json() == slow.model_dump_json()


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "1"},  # lax: pydantic coerces, so the slow path must answer
        {"ts": "2026-03-01T20:00:00+08:00"},
        {"pool_version": 1.0},
        {"unknown_field": {"x": 1}},
        {"context": {"a": True, "b": 1, "c": 1.0, "d": ["x"]}},
        {"ts": ...},
    ],
)
def test_accepted_inputs_decode_alike(changes: dict) -> None:
    raw = _payload(**changes)
    fast, slow = decode(WireDecision, raw), decode(Decision, raw)
    assert type(fast) is LoggedDecision
    if "ts" in changes and changes["ts"] is ...:
        assert abs((fast.ts - slow.ts).total_seconds()) < 5  # both "now"
        fast = msgspec.structs.replace(fast, ts=slow.ts)
    assert fast.event() == slow


@pytest.mark.parametrize(
    "changes",
    [
        {"product_id": "p1\n"},
        {"product_id": ""},
        {"product_id": "p 1"},  # after valid ids were seen: the known-id cache holds only those
        {"product_id": "p1/x"},
        {"ts": None},
        {"ts": "2026-03-01T12:00:00"},
        {"pscore": 0.9},
        {"action": 7},
        {"action_dist": [0.5, 0.5, 0.5, 0.5]},
        {"action_dist": [0.25, 0.25, 0.25]},
        {"action_dist": [0.5, -0.25, 0.5, 0.25], "pscore": 0.5, "action": 0},  # sums to 1
        {"action_dist": [0.25, float("nan"), 0.5, 0.25]},
        {"action_dist": [0.25, float("inf"), 0.5, 0.25]},
        {"channel": "tv"},
        {"schema_version": 2},
        {"context": {"a": {"nested": 1}}},
        {"context": None},
        {"event_id": "not-a-uuid"},
        {"actions": []},
    ],
)
def test_rejected_inputs_fail_with_pydantics_message(changes: dict) -> None:
    raw = _payload(**changes)
    with pytest.raises(SerdeError) as slow:
        decode(Decision, raw)
    with pytest.raises(SerdeError) as fast:
        decode(WireDecision, raw)
    assert fast.value.reason == slow.value.reason
    assert "field `" in fast.value.reason


def test_garbage_is_rejected() -> None:
    with pytest.raises(SerdeError):
        decode(WireDecision, b"\xff{")
    with pytest.raises(SerdeError):
        decode(WireDecision, json.dumps({"event_id": str(uuid.uuid4())}).encode())


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "click"},
        {"kind": "purchase", "value": 12},
        {"kind": "impression", "ts": "2026-03-01T20:00:00+08:00"},
        {"kind": "click", "extra": [1]},
        {"kind": "click", "ts": None},
        {"kind": "tap"},
        {"kind": "click", "value": -1},
        {"kind": "click", "feedback_id": "a b"},
        {"kind": "click", "feedback_id": "f-1\n"},
        {"kind": "click", "feedback_id": ""},
        {"kind": "click", "feedback_id": "x" * 129},
        {"kind": "click", "feedback_id": "a.b:c_d-9"},
        {"kind": "click", "event_id": "nope"},
        {"kind": "click", "schema_version": 2},
        {"kind": "click", "value": True},
    ],
)
def test_feedback_fast_path_equals_pydantic(payload: dict) -> None:
    data = {"schema_version": 1, "feedback_id": "f-1", "event_id": str(uuid.uuid4())}
    data["ts"] = "2026-03-01T12:00:00Z"
    raw = json.dumps({**data, **payload}).encode()
    try:
        slow = decode(Feedback, raw)
    except SerdeError as exc:
        with pytest.raises(SerdeError) as fast_exc:
            decode(WireFeedback, raw)
        assert fast_exc.value.reason == exc.reason
        return
    fast = decode(WireFeedback, raw)
    assert type(fast) is LoggedFeedback and fast == LoggedFeedback.of(slow)
    assert fast.event() == slow and fast.event().model_dump_json() == slow.model_dump_json()


def test_a_pool_is_checked_once_and_shared() -> None:
    a, b = decision(1.0), decision(2.0)
    fa, fb = _logged(encode(a)), _logged(encode(b))
    assert fa.event() == a and fb.event() == b
    assert fa.actions is fb.actions and fa.action_features is fb.action_features
    bad = json.loads(encode(a))
    bad["action_features"][0]["language"] = "fr"  # an invalid pool is never cached as valid
    with pytest.raises(SerdeError, match="language"):
        decode(WireDecision, json.dumps(bad).encode())


def test_a_distribution_is_checked_once_and_shared() -> None:
    """Decisions logged with the same probabilities share one list; a distribution found
    invalid is rejected again on every later sight (its verdict is cached, not its text)."""
    a, b = (
        decode(WireDecision, _payload()),
        decode(WireDecision, _payload(event_id=str(uuid.uuid4()))),
    )
    assert a.action_dist == [0.25] * 4 and a.action_dist is b.action_dist
    other = decode(WireDecision, _payload(action_dist=[0.2, 0.3, 0.3, 0.2], pscore=0.3))
    assert other.action_dist == [0.2, 0.3, 0.3, 0.2] and other.action_dist is not a.action_dist
    for _ in range(2):
        with pytest.raises(SerdeError, match="action_dist"):
            decode(WireDecision, _payload(action_dist=[0.5, -0.25, 0.5, 0.25], pscore=0.5))


def test_decoded_events_share_one_fields_set_that_copies_never_change() -> None:
    """Every decision given back as a pydantic event reports all its fields set, from one
    shared set; a copy with an update gets a set of its own, so the shared one, and every other
    decision, is unchanged."""
    a, b = _logged(_payload()).event(), _logged(_payload(action=0)).event()
    assert a.model_fields_set == set(Decision.model_fields) == b.model_fields_set
    copied = a.model_copy(update={"action": 1})
    assert copied.action == 1 and a.action == 2
    assert copied.model_fields_set is not a.model_fields_set
    assert b.model_fields_set == set(Decision.model_fields)
    assert a.model_dump(exclude_unset=True) == a.model_dump()


def test_logged_events_have_the_contracts_fields_in_its_order() -> None:
    """``event()`` and ``of()`` map field to field: a field added to the contract and not here
    (or the other way round) fails here, not in a dead letter."""
    assert LoggedDecision.__struct_fields__ == tuple(Decision.model_fields)
    assert LoggedFeedback.__struct_fields__ == tuple(Feedback.model_fields)
    d = decision(2.0)
    assert LoggedDecision.of(d).event() == d and as_event(d) is d
    assert as_event(LoggedDecision.of(d)) == d

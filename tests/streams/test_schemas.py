"""The wire contract without a broker: validation names the field, JSON round-trips."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from streams.errors import SerdeError
from streams.schemas import IDENTIFIER_MAX_LENGTH, IDENTIFIER_RE, Decision, Feedback, Product
from streams.serde import decode, encode
from tests.streams.samples import sample_decision, sample_events


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_every_model_round_trips_through_json(event):
    data = encode(event)
    assert decode(type(event), data) == event
    assert b'"schema_version":1' in data


def test_timestamps_are_rfc3339_utc():
    fb = Feedback.model_validate(
        {
            "feedback_id": "f",
            "event_id": str(uuid.uuid4()),
            "kind": "click",
            "ts": "2026-11-29T10:00:00+08:00",
        }
    )
    offset = fb.ts.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert b'"ts":"2026-11-29T02:00:00Z"' in encode(fb)


def test_unknown_fields_are_ignored_on_read():
    fb = Feedback(feedback_id="f", event_id=uuid.uuid4(), kind="click")
    raw = encode(fb)[:-1] + b',"added_later":true}'
    assert decode(Feedback, raw) == fb


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"pscore": 0.0}, "pscore"),
        ({"action": 5}, "action"),
        ({"action_dist": [0.2, 0.2]}, "action_dist"),
        ({"pscore": 0.4}, "pscore"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"channel": "billboard"}, "channel"),
        ({"ts": "2026-11-29T10:00:00"}, "ts"),
    ],
)
def test_invalid_decisions_name_the_field(patch, field):
    body = sample_decision().model_dump(mode="json") | patch
    with pytest.raises(SerdeError) as err:
        decode(Decision, __import__("json").dumps(body).encode())
    assert field in err.value.reason


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": 0}, "price"),
        ({"price": 100, "sale_price": 120}, "sale_price"),
        ({"language": "fr"}, "language"),
        ({"product_id": "has space"}, "product_id"),
    ],
)
def test_invalid_products_name_the_field(body, field):
    base = {
        "product_id": "p1",
        "title": "围巾",
        "category": "apparel",
        "brand": "暖洋洋",
        "price": 199.0,
    }
    with pytest.raises(ValueError, match=field):
        Product.model_validate(base | body)


def test_schema_version_other_than_one_is_rejected():
    body = sample_decision().model_dump(mode="json") | {"schema_version": 2}
    with pytest.raises(SerdeError, match="schema_version"):
        decode(Decision, __import__("json").dumps(body).encode())


def test_garbage_and_null_are_serde_errors():
    with pytest.raises(SerdeError, match="Invalid JSON"):
        decode(Feedback, b"\xff\xfe not json")
    with pytest.raises(SerdeError, match="empty value"):
        decode(Feedback, None)


IDS = ["p1", "a.b_c:d-e", "A" * 128, "", "A" * 129, "a b", "a\n", "\na", "围巾", "a/b", "a\x00"]


@pytest.mark.parametrize("value", IDS, ids=repr)
def test_the_identifier_pattern_is_one_rule_for_pydantic_and_python_re(value: str) -> None:
    """The pydantic field (its own regex engine) and the compiled pattern the msgspec mirror and
    the policy use accept exactly the same ids."""
    expected = 1 <= len(value) <= IDENTIFIER_MAX_LENGTH and all(
        c.isascii() and (c.isalnum() or c in "._:-") for c in value
    )
    assert bool(IDENTIFIER_RE.fullmatch(value)) is expected
    assert bool(IDENTIFIER_RE.search(value)) is expected  # anchored: search is a full match
    try:
        Feedback(feedback_id=value, event_id=uuid.uuid4(), kind="click")
        accepted = True
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == ("feedback_id",)
        accepted = False
    assert accepted is expected

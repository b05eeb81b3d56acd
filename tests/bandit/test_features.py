from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bandit.errors import FeatureError
from bandit.features import (
    action_features,
    check_encoded,
    encode_context,
    hash_user,
    length_bucket,
    next_holiday,
)
from streams.schemas import FeatureValue, Variant

KEY = b"test-key"
NOON_UTC = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)  # 12:00 in UTC+8, a Monday


def test_hash_user_is_keyed_and_never_the_raw_id() -> None:
    a = hash_user("u-12345", KEY)
    assert a == hash_user("u-12345", KEY)
    assert a != hash_user("u-12345", b"other-key")
    assert a != hash_user("u-12346", KEY)
    assert "12345" not in a and len(a) == 16


def test_numeric_user_ids_hash_as_text() -> None:
    out = encode_context({"user_id": 12345}, {}, hash_key=KEY, now=NOON_UTC)
    assert out["u_id"] == hash_user("12345", KEY)


def test_encode_buckets_the_shopper_and_drops_unknown_fields() -> None:
    user = {
        "user_id": "u1",
        "age": 23,
        "gender": "F",
        "city_tier": 1,
        "recent_categories": ["服装", "Beauty", "服装"],
        "purchase_frequency": 2.5,
        "phone": "13800000000",
        "name": "张三",
    }
    out = encode_context(user, {"channel": "push", "device": "ios"}, hash_key=KEY, now=NOON_UTC)
    assert out["u_id"] == hash_user("u1", KEY)
    assert out["u_age"] == "18-24"
    assert out["u_gender"] == "f"
    assert out["u_tier"] == "1"
    assert out["u_cats"] == ["beauty", "服装"]
    assert out["u_freq"] == "1-3"
    assert out["c_channel"] == "push"
    assert out["c_hour"] == "12" and out["c_weekday"] == "mon" and out["c_weekend"] is False
    assert out["c_season"] == "summer"
    assert out["c_holiday"] == "618" and out["c_holiday_in"] == "15-30"
    flat = repr(out)
    assert "13800000000" not in flat and "张三" not in flat and "u1'" not in flat


def test_context_time_fields_override_the_clock() -> None:
    out = encode_context({}, {"hour": 21, "weekday": "sat"}, hash_key=KEY, now=NOON_UTC)
    assert out["c_hour"] == "21" and out["c_daypart"] == "evening"
    assert out["c_weekday"] == "sat" and out["c_weekend"] is True
    shifted = encode_context({}, {"utc_offset": 0}, hash_key=KEY, now=NOON_UTC)
    assert shifted["c_hour"] == "4"
    stamped = encode_context({}, {"ts": "2026-11-10T23:30:00+08:00"}, hash_key=KEY)
    assert stamped["c_hour"] == "23" and stamped["c_holiday"] == "1111"
    assert stamped["c_holiday_in"] == "1-3"


@pytest.mark.parametrize(
    ("day", "holiday", "days"),
    [
        (date(2027, 1, 20), "spring_festival", 17),
        (date(2026, 11, 11), "1111", 0),
        (date(2026, 6, 10), "618", 8),
        (date(2026, 12, 26), "spring_festival", 42),
    ],
)
def test_next_holiday(day: date, holiday: str, days: int) -> None:
    assert next_holiday(day) == (holiday, days)


@pytest.mark.parametrize(
    ("user", "context", "field"),
    [
        ({"age": "old"}, {}, "user.age"),
        ({"age": -1}, {}, "user.age"),
        ({"age": True}, {}, "user.age"),
        ({"gender": "robot"}, {}, "user.gender"),
        ({"city_tier": 1.5}, {}, "user.city_tier"),
        ({"city_tier": 9}, {}, "user.city_tier"),
        ({"recent_categories": "服装"}, {}, "user.recent_categories"),
        ({"recent_categories": ["ok", ""]}, {}, "user.recent_categories.1"),
        ({"purchase_frequency": float("nan")}, {}, "user.purchase_frequency"),
        ({"user_id": ""}, {}, "user.user_id"),
        ({"new_user": "yes"}, {}, "user.new_user"),
        ({}, {"channel": "billboard"}, "context.channel"),
        ({}, {"hour": 24}, "context.hour"),
        ({}, {"weekday": "someday"}, "context.weekday"),
        ({}, {"ts": "yesterday"}, "context.ts"),
        ({}, {"utc_offset": 20}, "context.utc_offset"),
    ],
)
def test_bad_input_names_the_field(user: dict, context: dict, field: str) -> None:
    with pytest.raises(FeatureError) as info:
        encode_context(user, context, hash_key=KEY, now=NOON_UTC)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)


def test_hash_key_must_be_given() -> None:
    with pytest.raises(FeatureError, match="hash_key"):
        encode_context({"user_id": "u1"}, {}, hash_key=b"")


def test_inputs_are_not_mutated() -> None:
    user = {"user_id": "u1", "recent_categories": ["B", "a"]}
    context = {"channel": "push"}
    encode_context(user, context, hash_key=KEY, now=NOON_UTC)
    assert user == {"user_id": "u1", "recent_categories": ["B", "a"]}
    assert context == {"channel": "push"}


@pytest.mark.parametrize(
    ("text", "bucket"),
    [("短", "short"), ("一" * 15, "medium"), ("一" * 25, "long"), ("一" * 31, "over")],
)
def test_length_bucket_by_channel_limit(text: str, bucket: str) -> None:
    assert length_bucket(text, "ad_headline", "zh") == bucket  # zh headline limit: 30


def test_action_features_from_a_variant() -> None:
    v = Variant(
        variant_id="v1",
        text="Cozy wool scarf, today only!",
        language="en",
        channel="ad_headline",
        traits=["urgency", "Emotion", "urgency"],
    )
    f = action_features(v, "gen-3")
    assert f.traits == ["emotion", "urgency"]
    assert (f.language, f.length_bucket, f.generator_version) == ("en", "short", "gen-3")
    with pytest.raises(FeatureError, match="generator_version"):
        action_features(v, "")


@pytest.mark.parametrize(
    "bad", [{"k": float("inf")}, {"k": {"nested": 1}}, {"k": [1, 2]}, {3: "x"}, {"k": None}]
)
def test_check_encoded_rejects_what_a_decision_cannot_carry(bad: dict) -> None:
    with pytest.raises(FeatureError):
        check_encoded(bad)


def test_check_encoded_accepts_feature_values() -> None:
    ok: dict[str, FeatureValue] = {"a": "x", "b": 3, "c": 0.5, "d": True, "e": ["p", "q"]}
    assert check_encoded(ok) == ok

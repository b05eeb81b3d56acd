"""Feature encoding: shopper and context features (bucketed, the user id only as a keyed hash) and
each variant's features, given as data so brand-new variants are scored on first sight.

Encoded context keys carry a namespace prefix that ``bandit.vw`` maps to VW namespaces:
``u_`` for the shopper (namespace ``U``), ``c_`` for the request context (namespace ``C``).
Only the fields listed in :data:`USER_FIELDS` and :data:`CONTEXT_FIELDS` are read; anything else
a request carries is dropped, so a name, phone or address can never reach a decision log.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from bandit.errors import FeatureError
from streams.schemas import (
    CHANNEL_LIMITS,
    CHANNELS,
    ActionFeatures,
    FeatureValue,
    Variant,
)

USER_FIELDS = (
    "user_id",
    "age",
    "gender",
    "city_tier",
    "recent_categories",
    "purchase_frequency",
    "member_level",
    "new_user",
)
CONTEXT_FIELDS = (
    "channel",
    "ts",
    "hour",
    "weekday",
    "utc_offset",
    "device",
    "category",
    "placement",
)

#: China Standard Time: the default local clock for hour, weekday and holidays.
DEFAULT_UTC_OFFSET_H = 8.0

_AGE_EDGES = ((18, "<18"), (25, "18-24"), (30, "25-29"), (40, "30-39"), (50, "40-49"))
_GENDERS = {
    "f": "f",
    "female": "f",
    "w": "f",
    "woman": "f",
    "女": "f",
    "m": "m",
    "male": "m",
    "man": "m",
    "男": "m",
    "o": "o",
    "other": "o",
    "x": "o",
    "u": "u",
    "unknown": "u",
}
_DEVICES = ("ios", "android", "web", "mini_program", "other")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SEASONS = (
    *("winter", "winter", "spring", "spring", "spring", "summer"),
    *("summer", "summer", "autumn", "autumn", "autumn", "winter"),
)

#: 春节 (lunar new year) by year; outside this table only the fixed-date holidays count.
_SPRING_FESTIVAL = {
    2023: date(2023, 1, 22),
    2024: date(2024, 2, 10),
    2025: date(2025, 1, 29),
    2026: date(2026, 2, 17),
    2027: date(2027, 2, 6),
    2028: date(2028, 1, 26),
    2029: date(2029, 2, 13),
    2030: date(2030, 2, 3),
    2031: date(2031, 1, 23),
    2032: date(2032, 2, 11),
    2033: date(2033, 1, 31),
    2034: date(2034, 2, 19),
    2035: date(2035, 2, 8),
    2036: date(2036, 1, 28),
}
#: Shopping festivals on fixed dates: 520, 618, 双11, 双12, Christmas.
_FIXED_HOLIDAYS = (
    ("520", 5, 20),
    ("618", 6, 18),
    ("1111", 11, 11),
    ("1212", 12, 12),
    ("christmas", 12, 25),
)
_DAY_EDGES = ((1, "0"), (4, "1-3"), (8, "4-7"), (15, "8-14"), (31, "15-30"))

_MAX_CATEGORIES = 10


def hash_user(user_id: str, key: bytes) -> str:
    """A keyed hash (HMAC-SHA256, 64 bits in hex) of ``user_id``: stable per key, never the id."""
    if not isinstance(key, bytes | bytearray) or not key:
        raise FeatureError("hash_key", "must be non-empty bytes")
    if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
        raise FeatureError("user.user_id", "must be a non-empty string of <= 256 chars")
    return _hmac_hex(user_id, bytes(key))


@lru_cache(maxsize=65536)
def _hmac_hex(user_id: str, key: bytes) -> str:
    # shoppers come back within a session; the cache saves the HMAC on the rank hot path
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    kind = type(value)
    if (kind is int or kind is float) and lo <= value <= hi:  # the common case, cheaply
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeatureError(field, f"must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise FeatureError(field, f"must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _int_in(value: Any, field: str, lo: int, hi: int) -> int:
    number = _number(value, field, lo, hi)
    if number != int(number):
        raise FeatureError(field, f"must be a whole number in [{lo}, {hi}], got {value!r}")
    return int(number)


def _text(value: Any, field: str, max_len: int = 64) -> str:
    if type(value) is str and 0 < len(value) <= max_len and value.isalnum():
        return value.lower()  # the common case: nothing to strip
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise FeatureError(
            field, f"must be a non-empty string of <= {max_len} chars, got {value!r}"
        )
    return value.strip().lower()


def age_bucket(age: int) -> str:
    for edge, name in _AGE_EDGES:
        if age < edge:
            return name
    return "50-59" if age < 60 else "60+"


def _frequency_bucket(per_month: float) -> str:
    if per_month <= 0:
        return "0"
    if per_month < 1:
        return "<1"
    if per_month < 4:
        return "1-3"
    return "4-9" if per_month < 10 else "10+"


def _encode_user(user: Mapping[str, Any], hash_key: bytes) -> dict[str, FeatureValue]:
    out: dict[str, FeatureValue] = {}
    get = user.get
    if (value := get("user_id")) is not None:
        if type(value) is int:  # numeric ids hash as their decimal text
            value = str(value)
        out["u_id"] = hash_user(value, hash_key)
    if (value := get("age")) is not None:
        out["u_age"] = age_bucket(int(_number(value, "user.age", 0, 120)))
    if (value := get("gender")) is not None:
        gender = _GENDERS.get(_text(value, "user.gender", 16))
        if gender is None:
            raise FeatureError("user.gender", f"must be one of f, m, o, u; got {value!r}")
        out["u_gender"] = gender
    if (value := get("city_tier")) is not None:
        out["u_tier"] = str(_int_in(value, "user.city_tier", 1, 6))
    if (value := get("recent_categories")) is not None:
        if type(value) is not list and (isinstance(value, str) or not isinstance(value, Sequence)):
            raise FeatureError("user.recent_categories", "must be a list of strings")
        names = [_text(c, f"user.recent_categories.{i}") for i, c in enumerate(value)]
        out["u_cats"] = sorted(set(names[:_MAX_CATEGORIES]))
    if (value := get("purchase_frequency")) is not None:
        # purchases per month
        freq = _number(value, "user.purchase_frequency", 0, 10_000)
        out["u_freq"] = _frequency_bucket(freq)
    if (value := get("member_level")) is not None:
        out["u_member"] = str(_int_in(value, "user.member_level", 0, 10))
    if (value := get("new_user")) is not None:
        if not isinstance(value, bool):
            raise FeatureError("user.new_user", f"must be true or false, got {value!r}")
        out["u_new"] = value
    return out


@lru_cache(maxsize=64)
def _zone(offset_h: float) -> timezone:
    return UTC if offset_h == 0 else timezone(timedelta(hours=offset_h))


def _local_time(context: Mapping[str, Any], now: datetime | None) -> datetime:
    offset_h = DEFAULT_UTC_OFFSET_H
    if context.get("utc_offset") is not None:
        offset_h = _number(context["utc_offset"], "context.utc_offset", -12, 14)
    tz = _zone(offset_h)
    ts = context.get("ts")
    if ts is not None:
        if isinstance(ts, str):
            try:
                ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            except ValueError:
                raise FeatureError("context.ts", f"must be an RFC 3339 time, got {ts!r}") from None
        if not isinstance(ts, datetime) or ts.tzinfo is None:
            raise FeatureError("context.ts", "must be an RFC 3339 time with an offset")
        # a time given with its own offset already is the shopper's local time
        return ts if context.get("utc_offset") is None else ts.astimezone(tz)
    when = now if now is not None else datetime.now(UTC)
    if when.tzinfo is None:
        raise FeatureError("now", "must be timezone-aware")
    return when.astimezone(tz)


@lru_cache(maxsize=1024)
def next_holiday(day: date) -> tuple[str, int]:
    """The next shopping holiday on or after ``day`` and how many days away it is."""
    best: tuple[str, int] | None = None
    for year in (day.year, day.year + 1):
        candidates = [(name, date(year, m, d)) for name, m, d in _FIXED_HOLIDAYS]
        if year in _SPRING_FESTIVAL:
            candidates.append(("spring_festival", _SPRING_FESTIVAL[year]))
        for name, when in candidates:
            days = (when - day).days
            if days >= 0 and (best is None or days < best[1]):
                best = (name, days)
    if best is None:  # unreachable: a fixed-date holiday always lies within a year
        raise FeatureError("day", f"no holiday found after {day}")
    return best


def _days_bucket(days: int) -> str:
    for edge, name in _DAY_EDGES:
        if days < edge:
            return name
    return "31+"


def _encode_context(context: Mapping[str, Any], now: datetime | None) -> dict[str, FeatureValue]:
    out: dict[str, FeatureValue] = {}
    if context.get("channel") is not None:
        if context["channel"] not in CHANNELS:
            raise FeatureError("context.channel", f"must be one of {', '.join(CHANNELS)}")
        out["c_channel"] = context["channel"]
    local = _local_time(context, now)
    hour = local.hour
    if context.get("hour") is not None:
        hour = _int_in(context["hour"], "context.hour", 0, 23)
    weekday = local.weekday()
    if context.get("weekday") is not None:
        wd = context["weekday"]
        if isinstance(wd, str) and wd.strip().lower()[:3] in _WEEKDAYS:
            weekday = _WEEKDAYS.index(wd.strip().lower()[:3])
        else:
            weekday = _int_in(wd, "context.weekday", 0, 6)
    out["c_hour"] = str(hour)
    out["c_daypart"] = ("night", "morning", "afternoon", "evening")[hour // 6]
    out["c_weekday"] = _WEEKDAYS[weekday]
    out["c_weekend"] = weekday >= 5
    out["c_season"] = _SEASONS[local.month - 1]
    holiday, days = next_holiday(local.date())
    out["c_holiday"] = holiday
    out["c_holiday_in"] = _days_bucket(days)
    if context.get("device") is not None:
        device = _text(context["device"], "context.device", 32)
        out["c_device"] = device if device in _DEVICES else "other"
    for name in ("category", "placement"):
        if context.get(name) is not None:
            out[f"c_{name}"] = _text(context[name], f"context.{name}")
    return out


def encode_context(
    user: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    hash_key: bytes,
    now: datetime | None = None,
) -> dict[str, FeatureValue]:
    """Encode a request's ``user`` and ``context`` objects into bucketed features.

    ``now`` (aware; default the current time) sets hour, weekday, season and days to the next
    holiday in the shopper's local time (``context.utc_offset``, default UTC+8) unless the
    context carries ``ts``, ``hour`` or ``weekday``. Raises :class:`FeatureError` naming the
    field on bad input."""
    if not isinstance(user, Mapping):
        raise FeatureError("user", "must be an object")
    if not isinstance(context, Mapping):
        raise FeatureError("context", "must be an object")
    features = _encode_user(user, hash_key)
    features.update(_encode_context(context, now))
    return features


_SCALARS = (str, int, bool)
MAX_CONTEXT_FEATURES = 256


def check_encoded(context: Mapping[str, FeatureValue]) -> dict[str, FeatureValue]:
    """A copy of an encoded context, checked against ``Decision.context``'s type (str keys;
    str, int, finite float, bool or list-of-str values) so the rank path need not ask pydantic
    to re-validate each value of every decision (the slowest part of building one)."""
    if len(context) > MAX_CONTEXT_FEATURES:
        raise FeatureError("context", f"must hold <= {MAX_CONTEXT_FEATURES} features")
    out = dict(context)
    for key, value in out.items():
        kind = type(value)
        if kind in _SCALARS and type(key) is str:
            continue
        if type(key) is not str:
            raise FeatureError("context", f"keys must be strings, got {key!r}")
        if kind is float and math.isfinite(value):  # type: ignore[arg-type]
            continue
        if kind is list and all(type(v) is str for v in value):  # type: ignore[union-attr]
            continue
        raise FeatureError(
            f"context.{key}",
            f"must be a string, integer, finite number, boolean or list of strings, got {value!r}",
        )
    return out


def length_bucket(text: str, channel: str, language: str) -> str:
    """``short`` under a third of the channel limit, ``long`` over two thirds (CONTRACT.md §7),
    ``medium`` between; ``over`` past the limit (guardrails keep those out of pools)."""
    limit = CHANNEL_LIMITS[channel][language]  # type: ignore[index]
    n = len(text)
    if n > limit:
        return "over"
    if n * 3 < limit:
        return "short"
    return "long" if n * 3 > 2 * limit else "medium"


def action_features(variant: Variant, generator_version: str) -> ActionFeatures:
    """A variant's features as the policy scores them: its traits, language, length bucket and
    the generator version that wrote it."""
    if not isinstance(generator_version, str) or not generator_version:
        raise FeatureError("generator_version", "must be a non-empty string")
    traits = sorted({t.strip().lower() for t in variant.traits if t.strip()})
    return ActionFeatures(
        traits=traits,
        language=variant.language,
        length_bucket=length_bucket(variant.text, variant.channel, variant.language),
        generator_version=generator_version,
    )

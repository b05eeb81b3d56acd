"""``personal_echo``: copy never repeats a shopper's personal attributes (age, exact location,
name, contact) back to them, and pool copy (shown to many) never singles out an age.

Basis: 《个人信息保护法》第六条 (use limited to what the purpose needs; an ad that quotes a
person's age or address back is neither needed nor expected) and 第二十四条 (automated
decisions in marketing must not single a person out by their characteristics)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from generator.guardrails.base import Context, Rule, Violation

NAME = "personal_echo"
BASIS = "《个人信息保护法》第六条、第二十四条"

#: Shopper fields whose values must not appear in the copy.
LOCATION_KEYS = frozenset(
    {
        "city",
        "district",
        "county",
        "province",
        "region",
        "location",
        "address",
        "street",
        "zip",
        "postcode",
        "postal_code",
        "neighborhood",
        "neighbourhood",
        "town",
        "village",
    }
)
IDENTITY_KEYS = frozenset({"name", "first_name", "last_name", "nickname", "phone", "email"})
_AGE_TALK = re.compile(
    r"\d{1,3}\s?(?:周岁|岁)的?(?:你|您)|(?:你|您)(?:今年)?\d{1,3}\s?(?:周岁|岁)|你这个年纪|您这个年纪|"
    r"\b\d{1,3}[- ]year[- ]olds?\s+(?:you|like you)\b|\byou(?:'re| are) \d{1,3}\b|\bat your age\b|"
    r"\bin your \d0s\b",
    re.IGNORECASE,
)


def _age_pattern(age: int) -> re.Pattern[str]:
    return re.compile(
        rf"(?<!\d){age}\s?(?:周岁|岁|年)|(?:年龄|今年)\s?{age}(?!\d)|"
        rf"\b{age}[- ]?(?:years?|yrs?)(?:[- ]old)?\b|\b(?:age|aged)\s?{age}\b",
        re.IGNORECASE,
    )


def _ages(shopper: Mapping[str, object]) -> list[int]:
    out = []
    for key in ("age", "年龄"):
        value = shopper.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and 0 < value < 130:
            out.append(int(value))
        elif isinstance(value, str) and value.strip().isdigit():
            out.append(int(value.strip()))
    return out


def find(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    for m in _AGE_TALK.finditer(plain.text):
        yield Violation(NAME, plain.span(*m.span()), f"`{m.group(0)}` singles out an age")
    if not ctx.shopper:
        return
    for age in _ages(ctx.shopper):
        for m in _age_pattern(age).finditer(plain.text):
            yield Violation(NAME, plain.span(*m.span()), "echoes the shopper's age")
    low = plain.text.lower()
    for key, value in ctx.shopper.items():
        k = key.lower()
        if k not in LOCATION_KEYS and k not in IDENTITY_KEYS:
            continue
        if not isinstance(value, str) or len(value.strip()) < 2:
            continue
        for needle in _spellings(value):
            start = low.find(needle)
            if start >= 0 and needle not in ctx.facts.text:
                what = "location" if k in LOCATION_KEYS else "identity"
                yield Violation(
                    NAME,
                    plain.span(start, start + len(needle)),
                    f"echoes the shopper's {what} `{key}`",
                )
                break


def _spellings(value: str) -> list[str]:
    """``杭州市`` is echoed by ``杭州`` too."""
    v = value.strip().lower()
    short = re.sub(r"(?:市|省|区|县|自治区| city| district)$", "", v)
    return [v, short] if len(short) >= 2 and short != v else [v]


RULE = Rule(NAME, BASIS, find)

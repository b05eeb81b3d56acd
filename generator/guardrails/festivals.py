"""``timeliness``: festive copy runs only near the holiday it names (春节, 元宵, 618, 七夕, 中秋,
国庆, 双11, 双12, Christmas, Black Friday, …), judged against the date the copy is written for
(``GuardrailConfig.today``): from ``festive_lead_days`` before the holiday until
``festive_grace_days`` after it. A mention that the product's own facts carry (a 中秋 gift box)
is a fact, not a timing claim, and passes. Seasons count as holidays of a few months (northern
hemisphere); lunar holidays are placed by a table (2020-2040, from the Chinese calendar): outside
it they cannot be placed and do not pass.

Basis: 《广告法》第四条、第二十八条 (an ad must not mislead; a Mid-Autumn gift line in December
misleads about the occasion) and TARGETS.md (festive copy only near the holiday it names)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from generator.guardrails.base import Context, GuardrailConfig, Rule, Violation

NAME = "timeliness"
BASIS = "《广告法》第四条、第二十八条；TARGETS.md (festive copy only near its holiday)"

Span = tuple[date, date]
#: Gregorian dates (month-day) of 春节, 元宵, 端午, 七夕 and 中秋 per year.
LUNAR: dict[int, tuple[str, str, str, str, str]] = {
    2020: ("01-25", "02-08", "06-25", "08-25", "10-01"),
    2021: ("02-12", "02-26", "06-14", "08-14", "09-21"),
    2022: ("02-01", "02-15", "06-03", "08-04", "09-10"),
    2023: ("01-22", "02-05", "06-22", "08-22", "09-29"),
    2024: ("02-10", "02-24", "06-10", "08-10", "09-17"),
    2025: ("01-29", "02-12", "05-31", "08-29", "10-06"),
    2026: ("02-17", "03-03", "06-19", "08-19", "09-25"),
    2027: ("02-06", "02-20", "06-09", "08-08", "09-15"),
    2028: ("01-26", "02-09", "05-28", "08-26", "10-03"),
    2029: ("02-13", "02-27", "06-16", "08-16", "09-22"),
    2030: ("02-03", "02-17", "06-05", "08-05", "09-12"),
    2031: ("01-23", "02-06", "06-24", "08-24", "10-01"),
    2032: ("02-11", "02-25", "06-12", "08-12", "09-19"),
    2033: ("01-31", "02-14", "06-01", "08-01", "09-08"),
    2034: ("02-19", "03-05", "06-20", "08-20", "09-27"),
    2035: ("02-08", "02-22", "06-10", "08-10", "09-16"),
    2036: ("01-28", "02-11", "05-30", "08-28", "10-04"),
    2037: ("02-15", "03-01", "06-18", "08-17", "09-24"),
    2038: ("02-04", "02-18", "06-07", "08-07", "09-13"),
    2039: ("01-24", "02-07", "05-27", "08-26", "10-02"),
    2040: ("02-12", "02-26", "06-14", "08-14", "09-20"),
}
_SPRING, _LANTERN, _DRAGON_BOAT, _QIXI, _MID_AUTUMN = range(5)


def _lunar(which: int) -> Callable[[int], list[Span]]:
    def spans(year: int) -> list[Span]:
        row = LUNAR.get(year)
        if row is None:
            return []
        day = date.fromisoformat(f"{year}-{row[which]}")
        if which == _SPRING:  # 除夕 to 元宵: the whole new-year season
            end = date.fromisoformat(f"{year}-{row[_LANTERN]}")
            return [(day - timedelta(days=1), end)]
        return [(day, day)]

    return spans


def _fixed(month: int, day: int, days: int = 1) -> Callable[[int], list[Span]]:
    def spans(year: int) -> list[Span]:
        start = date(year, month, day)
        return [(start, start + timedelta(days=days - 1))]

    return spans


def _nth_weekday(month: int, weekday: int, nth: int, shift: int = 0) -> Callable[[int], list[Span]]:
    """The ``nth`` ``weekday`` (0 = Monday) of ``month``, moved by ``shift`` days."""

    def spans(year: int) -> list[Span]:
        first = date(year, month, 1)
        day = first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1) + shift)
        return [(day, day)]

    return spans


def _range(start: tuple[int, int], end: tuple[int, int]) -> Callable[[int], list[Span]]:
    """A season; one that wraps the new year is split at it."""

    def spans(year: int) -> list[Span]:
        a, b = date(year, *start), date(year, *end)
        if a <= b:
            return [(a, b)]
        return [(date(year, 1, 1), b), (a, date(year, 12, 31))]

    return spans


@dataclass(frozen=True)
class Festival:
    name: str
    words: tuple[str, ...]  # literal spellings (zh, and en matched as whole words)
    spans: Callable[[int], list[Span]]

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = [
            rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])" if w.isascii() else re.escape(w)
            for w in sorted(self.words, key=len, reverse=True)
        ]
        return re.compile("|".join(parts), re.IGNORECASE)

    def near(self, day: date, config: GuardrailConfig) -> bool:
        lead = timedelta(days=config.festive_lead_days)
        grace = timedelta(days=config.festive_grace_days)
        return any(
            start - lead <= day <= end + grace
            for year in (day.year - 1, day.year, day.year + 1)
            for start, end in self.spans(year)
        )


FESTIVALS: tuple[Festival, ...] = (
    Festival(
        "spring_festival",
        (
            "春节",
            "新春",
            "过年",
            "年货",
            "除夕",
            "拜年",
            "新年",
            "lunar new year",
            "chinese new year",
            "spring festival",
        ),
        _lunar(_SPRING),
    ),
    Festival("lantern", ("元宵", "lantern festival"), _lunar(_LANTERN)),
    Festival("dragon_boat", ("端午", "dragon boat"), _lunar(_DRAGON_BOAT)),
    Festival("qixi", ("七夕", "中国情人节", "qixi"), _lunar(_QIXI)),
    Festival(
        "mid_autumn", ("中秋", "mid-autumn", "mid autumn", "moon festival"), _lunar(_MID_AUTUMN)
    ),
    Festival(
        "new_year", ("元旦", "新年", "跨年", "new year", "new year's", "nye"), _fixed(12, 31, 2)
    ),
    Festival("valentine", ("情人节", "valentine", "valentine's", "valentines"), _fixed(2, 14)),
    Festival("womens_day", ("妇女节", "女神节", "三八节", "women's day"), _fixed(3, 8)),
    Festival("mothers_day", ("母亲节", "mother's day", "mothers day"), _nth_weekday(5, 6, 2)),
    Festival("fathers_day", ("父亲节", "father's day", "fathers day"), _nth_weekday(6, 6, 3)),
    Festival("618", ("618", "年中大促", "年中"), _fixed(6, 1, 18)),
    Festival("national_day", ("国庆", "黄金周", "十一长假"), _fixed(10, 1, 7)),
    Festival(
        "double_11",
        ("双11", "双 11", "双十一", "11.11", "singles' day", "singles day"),
        _fixed(11, 11),
    ),
    Festival("double_12", ("双12", "双 12", "双十二", "12.12"), _fixed(12, 12)),
    Festival("thanksgiving", ("感恩节", "thanksgiving"), _nth_weekday(11, 3, 4)),
    Festival("black_friday", ("黑色星期五", "黑五", "black friday"), _nth_weekday(11, 3, 4, 1)),
    Festival("cyber_monday", ("cyber monday",), _nth_weekday(11, 3, 4, 4)),
    Festival("christmas", ("圣诞", "平安夜", "christmas", "xmas"), _fixed(12, 24, 2)),
    Festival(
        "holiday_season",
        ("holiday season", "holidays", "holiday", "season's greetings", "festive season"),
        _range((11, 20), (1, 2)),
    ),
    Festival(
        "back_to_school", ("开学季", "back to school", "back-to-school"), _range((8, 10), (9, 10))
    ),
    Festival(
        "winter",
        ("冬季", "冬日", "冬天", "过冬", "入冬", "寒冬", "winter", "wintry"),
        _range((11, 1), (2, 28)),
    ),
    Festival("summer", ("夏日", "夏季", "夏天", "盛夏", "summer"), _range((6, 1), (8, 31))),
)
#: Words of no one holiday (节日, festive): timely when any holiday is near.
ANY_FESTIVAL = re.compile(r"节日|佳节|过节|(?<![a-z])festive(?![a-z])", re.IGNORECASE)
_PATTERNS: tuple[tuple[Festival, re.Pattern[str]], ...] = tuple((f, f.pattern) for f in FESTIVALS)


def off_season(day: date, config: GuardrailConfig) -> list[Festival]:
    """The holidays that copy written on ``day`` must not name."""
    return [f for f in FESTIVALS if not f.near(day, config)]


def find(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    facts_text = ctx.facts.text
    day = ctx.config.date()
    hits: list[tuple[tuple[int, int], Festival, bool]] = []
    for festival, pattern in _PATTERNS:
        if pattern.search(facts_text):
            continue  # the product itself is festive: naming it is a fact
        for m in pattern.finditer(plain.text):
            hits.append((m.span(), festival, festival.near(day, ctx.config)))
    timely = [span for span, _, ok in hits if ok]
    for span, festival, ok in hits:
        # `新年` is both 春节 and 元旦: it is timely when either is
        if ok or any(s[0] < span[1] and span[0] < s[1] for s in timely):
            continue
        yield Violation(
            NAME,
            plain.span(*span),
            f"`{plain.text[span[0] : span[1]]}` ({festival.name}) is off-season on {day}",
        )
    if not ANY_FESTIVAL.search(facts_text) and not any(f.near(day, ctx.config) for f in FESTIVALS):
        for m in ANY_FESTIVAL.finditer(plain.text):
            yield Violation(
                NAME, plain.span(*m.span()), f"`{m.group(0)}`: no holiday is near {day}"
            )


RULE = Rule(NAME, BASIS, find)

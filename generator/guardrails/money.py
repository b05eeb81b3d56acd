"""Reading amounts, 折 and percentages out of copy (on the folded view: full-width digits and ``￥``
are already ASCII). Shared by ``price_truth`` and by ``attribute_truth``, which must know which
numbers are prices before it asks where the other numbers come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["reference", "saving", "current", "none"]

#: Currency spellings by ISO code. ``¥`` is both yuan and yen.
CURRENCY_MARKS: dict[str, frozenset[str]] = {
    "CNY": frozenset({"¥", "rmb", "cny", "元", "块", "块钱", "yuan"}),
    "USD": frozenset({"$", "us$", "usd", "dollar", "dollars", "bucks"}),
    "EUR": frozenset({"€", "eur", "euro", "euros"}),
    "GBP": frozenset({"£", "gbp", "pound", "pounds"}),
    "JPY": frozenset({"¥", "jpy", "円", "yen"}),
    "HKD": frozenset({"hk$", "hkd"}),
}
_NUM = r"\d[\d,]*(?:\.\d+)?"
_PREFIX = r"HK\$|US\$|RMB|CNY|USD|EUR|GBP|JPY|HKD|[¥$€£]"
_SUFFIX = r"块钱|元|块|円|rmb|yuan|dollars?|usd|cny|eur|euros?|hkd|jpy|yen|gbp|pounds?|bucks"
AMOUNT = re.compile(
    rf"(?P<pre>{_PREFIX})\s?(?P<n1>{_NUM})(?:\s?(?P<m1>[万千kK])(?![a-z]))?"
    rf"|(?P<n2>{_NUM})\s?(?P<m2>[万千])?\s?(?P<suf>{_SUFFIX})(?![a-z])",
    re.IGNORECASE,
)
_ZH_DIGIT = {
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
ZHE = re.compile(
    r"(?<![\d.])(?P<d>\d(?:\.\d{1,2})?|\d{2})\s?折(?!叠)|(?P<c>[一二三四五六七八九]{1,2})折(?!叠)|(?P<half>半价|对折)"
)
PERCENT = re.compile(r"(?P<p>\d+(?:\.\d+)?)\s?%")
_PERCENT_OFF_AFTER = re.compile(r"^\s?(?:off\b|折扣|优惠|减|折)", re.IGNORECASE)
_PERCENT_OFF_BEFORE = re.compile(
    r"(?:save|saving|省|减|降|立省|优惠|discount(?: of)?|down|up to|低至)\s*$", re.IGNORECASE
)
_ROLE_CUES: dict[Role, str] = {
    "reference": r"原价|划线价|市场价|专柜价|吊牌价|日常价|指导价|参考价|门市价|官方价|定价|"
    r"\bwas\b|"
    r"\boriginally\b|\bregular(?:ly)?(?: price)?\b|\blist price\b|\bcompare at\b|\brrp\b|"
    r"\bmsrp\b|\bretail price\b|\breg\.?",
    "saving": r"立减|直降|立省|省下|省了|省|减|便宜了?|降了?|\bsave\b|\bsavings?\b|\byou save\b",
    "current": r"仅需|只需|只要|到手价?|现价|活动价|促销价|特价|售价|秒杀价|折后价?|券后价?|"
    r"\bnow\b|\bonly\b|\bjust\b|\bfor\b|\bprice\b|\bat\b",
}
_ROLE = re.compile(
    "|".join(f"(?P<{role}>{cue})" for role, cue in _ROLE_CUES.items()), re.IGNORECASE
)
_OFF_AFTER = re.compile(r"^\s?(?:off\b|优惠)", re.IGNORECASE)


@dataclass(frozen=True)
class Amount:
    value: float
    mark: str  # the currency spelling as written, lower-cased
    role: Role
    span: tuple[int, int]


@dataclass(frozen=True)
class Zhe:
    """A 折 figure as a fraction of the list price (8折 -> 0.8)."""

    ratio: float
    span: tuple[int, int]


@dataclass(frozen=True)
class Percent:
    value: float
    is_discount: bool
    span: tuple[int, int]


@dataclass(frozen=True)
class Parsed:
    amounts: tuple[Amount, ...]
    zhe: tuple[Zhe, ...]
    percents: tuple[Percent, ...]

    def spans(self) -> list[tuple[int, int]]:
        return (
            [a.span for a in self.amounts]
            + [z.span for z in self.zhe]
            + [p.span for p in self.percents]
        )


def _number(text: str, mult: str | None) -> float:
    value = float(text.replace(",", ""))
    factor = {"万": 10000.0, "千": 1000.0, "k": 1000.0}.get((mult or "").lower(), 1.0)
    return value * factor


def _role(text: str, start: int, end: int) -> Role:
    if _OFF_AFTER.match(text[end : end + 8]):
        return "saving"
    window = text[max(0, start - 16) : start]
    last: Role = "none"
    for m in _ROLE.finditer(window):
        # a cue counts only when nothing but spaces and a colon sits between it and the amount
        if re.fullmatch(r"[\s:：]*(?:is|of|at|为|是)?[\s:：]*", window[m.end() :], re.IGNORECASE):
            last = next(r for r in _ROLE_CUES if m.group(r) is not None)
    return last


def _zhe_ratio(m: re.Match[str]) -> float:
    if m.group("half"):
        return 0.5
    if m.group("d"):
        d = m.group("d")
        return float(d) / 100 if len(d) == 2 and "." not in d else float(d) / 10
    digits = [_ZH_DIGIT[c] for c in m.group("c")]
    return digits[0] / 10 if len(digits) == 1 else (digits[0] * 10 + digits[1]) / 100


def parse(text: str) -> Parsed:
    amounts = []
    for m in AMOUNT.finditer(text):
        if m.group("n1") is not None:
            value, mark = _number(m.group("n1"), m.group("m1")), m.group("pre")
        else:
            value, mark = _number(m.group("n2"), m.group("m2")), m.group("suf")
        amounts.append(Amount(value, mark.lower(), _role(text, m.start(), m.end()), m.span()))
    zhe = [Zhe(_zhe_ratio(m), m.span()) for m in ZHE.finditer(text)]
    taken = [a.span for a in amounts] + [z.span for z in zhe]
    percents = []
    for m in PERCENT.finditer(text):
        if any(m.start() < e and s < m.end() for s, e in taken):
            continue
        off = bool(
            _PERCENT_OFF_AFTER.match(text[m.end() : m.end() + 6])
            or _PERCENT_OFF_BEFORE.search(text[max(0, m.start() - 14) : m.start()])
        )
        percents.append(Percent(float(m.group("p")), off, m.span()))
    return Parsed(tuple(amounts), tuple(zhe), tuple(percents))

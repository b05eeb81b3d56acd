"""``price_truth``: every amount, 折 and percentage in the copy must follow from the product's
``price`` (list) and ``sale_price``; no reference price (原价, was) and no discount without a sale
price; no promotion mechanics (满减, 买一送一, coupons) that the product data does not carry.

Basis: 《广告法》第八条 (prices stated in an ad must be accurate, clear and plain) and 第二十八条
第二款第（二）项 (a price that does not match the facts makes an ad false); the rule on
reference prices follows 《明码标价和禁止价格欺诈规定》(2022) on 被比较价格."""

from __future__ import annotations

import re
from collections.abc import Iterator

from generator.guardrails.base import Context, Rule, Violation, overlaps, squeeze
from generator.guardrails.money import CURRENCY_MARKS

NAME = "price_truth"
BASIS = "《广告法》第八条、第二十八条；《明码标价和禁止价格欺诈规定》(2022) 被比较价格"

_AMOUNT_TOL = 0.005
_ZHE_TOL = 0.005 + 1e-9  # 8折 may stand for 7.95–8.05折 (one decimal, rounded)
_PERCENT_TOL = 0.5 + 1e-9  # 20% off may stand for 19.5–20.5% off

_DISCOUNT_WORDS = re.compile(
    r"打折|折扣|降价|直降|立减|减价|特价|特惠|优惠|折后|让利|清仓价|"
    r"\bon sale\b|\bsale price\b|\bdiscount(?:ed)?\b|\bsave\b|\bmarked down\b|\bprice drop\b|"
    r"\breduced\b|\bclearance\b|\bhalf[- ]price\b|\bhalf off\b",
    re.IGNORECASE,
)
_REFERENCE_WORDS = re.compile(
    r"原价|划线价|市场价|专柜价|吊牌价|日常价|指导价|参考价|门市价|\bwas\s+[¥$€£]|\boriginally\b|"
    r"\bregular price\b|\blist price\b|\bcompare at\b|\brrp\b|\bmsrp\b|\bretail price\b",
    re.IGNORECASE,
)
_PROMOTIONS = re.compile(
    r"满\d+(?:元)?减|满减|买[一二两三\d]送[一二两三\d]?|买就送|下单送|加赠|赠品|赠送|第[二2]件|"
    r"券后|优惠券|领券|红包|返现|\bbogo\b|\bbuy one,? get one\b|\b\d for \d\b|\btwo for one\b|"
    r"\bfree gift\b|\bcoupons?\b|\bpromo code\b|\bwith code\b|\bcashback\b",
    re.IGNORECASE,
)


def _money(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _same(a: float, b: float | None) -> bool:
    return b is not None and abs(a - b) <= _AMOUNT_TOL


def find(ctx: Context) -> Iterator[Violation]:
    facts = ctx.facts
    plain = ctx.views.plain
    parsed = ctx.parsed
    product = facts.product
    sale, saving, current = facts.sale_price, facts.saving, facts.current_price
    marks = CURRENCY_MARKS.get(product.currency, frozenset({product.currency.lower()}))

    def said(span: tuple[int, int]) -> str:
        return plain.text[span[0] : span[1]]

    for a in parsed.amounts:
        span = plain.span(*a.span)
        if a.mark not in marks:
            yield Violation(NAME, span, f"`{said(a.span)}` is not in {product.currency}")
            continue
        if a.role == "reference":
            if sale is None:
                yield Violation(
                    NAME, span, f"`{said(a.span)}` claims a reference price but there is no sale"
                )
            elif not _same(a.value, facts.list_price):
                yield Violation(
                    NAME, span, f"reference price must be the list price {_money(product.price)}"
                )
        elif a.role == "saving":
            if saving is None:
                yield Violation(NAME, span, f"`{said(a.span)}` claims a saving with no sale price")
            elif not _same(a.value, saving):
                yield Violation(NAME, span, f"`{said(a.span)}` but the saving is {_money(saving)}")
        elif a.role == "current":
            if not _same(a.value, current):
                yield Violation(
                    NAME, span, f"`{said(a.span)}` but the price now is {_money(current)}"
                )
        elif not any(_same(a.value, v) for v in (product.price, sale, saving)):
            yield Violation(
                NAME, span, f"`{said(a.span)}` is neither the price, the sale price nor the saving"
            )
    for z in parsed.zhe:
        span = plain.span(*z.span)
        if sale is None:
            yield Violation(NAME, span, f"`{said(z.span)}` but the product has no sale price")
        elif abs(z.ratio - sale / product.price) > _ZHE_TOL:
            yield Violation(
                NAME,
                span,
                f"`{said(z.span)}` but {_money(sale)} of {_money(product.price)} is "
                f"{10 * sale / product.price:.2f}折",
            )
    for p in parsed.percents:
        span = plain.span(*p.span)
        if not p.is_discount:
            if squeeze(said(p.span)) not in facts.attr_tight:
                yield Violation(NAME, span, f"`{said(p.span)}` is not in the product data")
        elif sale is None:
            yield Violation(NAME, span, f"`{said(p.span)}` but the product has no sale price")
        elif abs(p.value - 100 * (1 - sale / product.price)) > _PERCENT_TOL:
            actual = 100 * (1 - sale / product.price)
            yield Violation(NAME, span, f"`{said(p.span)}` but the discount is {actual:.1f}% off")
    reported = parsed.spans()
    if sale is None:
        for pattern in (_DISCOUNT_WORDS, _REFERENCE_WORDS):
            for m in pattern.finditer(plain.text):
                if not overlaps(m.span(), reported):
                    reported.append(m.span())
                    yield Violation(
                        NAME, plain.span(*m.span()), f"`{m.group(0)}` but there is no sale price"
                    )
    for m in _PROMOTIONS.finditer(plain.text):
        yield Violation(
            NAME, plain.span(*m.span()), f"promotion `{m.group(0)}` is not in the product data"
        )


RULE = Rule(NAME, BASIS, find)

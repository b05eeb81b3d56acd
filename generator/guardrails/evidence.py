"""``claim_evidence``: ratings, reviews, sales and rank, best-seller/爆款/口碑, awards and
certifications pass only when the product data carries the fact: an attribute under one of the
keys below (docs/guardrails.md), or the same claim in the title or category. Numbers in such a
claim are checked by ``attribute_truth`` (``rating: 4.8`` allows "rated 4.8", not "rated 4.9").
Material and origin claims are ``attribute_truth``'s (``generator.guardrails.claims``).

Basis: 《广告法》第十一条 (data cited must be true and sourced)、第二十八条 (invented sales or
user reviews make an ad false)；FTC Act §5 and 16 CFR Part 465 (fake or unsupported reviews and
ratings)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from generator.guardrails.base import Context, Rule, Violation

NAME = "claim_evidence"
BASIS = "《广告法》第十一条、第二十八条；FTC Act §5, 16 CFR 465"


@dataclass(frozen=True)
class Evidence:
    name: str
    keys: tuple[str, ...]  # attribute keys that carry the fact (compared folded, no separators)
    zh: str  # regex over the plain view
    en: str


KINDS: tuple[Evidence, ...] = (
    Evidence(
        "rating",
        ("rating", "ratings", "stars", "score", "评分", "星级", "评级", "好评率"),
        r"好评率|高分|评分|星级|五星|[1-5](?:\.\d)?\s?(?:分|星)(?!钟)",
        r"\b(?:highly|top|well|best|five[- ]star|5[- ]star)[- ]rated\b|\brated\b|\bratings?\b|"
        r"\b[1-5](?:\.\d)?[- ]?stars?\b|\bfive[- ]stars?\b",
    ),
    Evidence(
        "reviews",
        ("reviews", "review", "reviewcount", "评价", "评论", "评价数", "好评", "好评数"),
        r"好评|口碑|评价|晒单|买家秀|回头客",
        r"\breview(?:s|ed)?\b|\brave\b|\bloved by\b|\btestimonials?\b|"
        r"\b(?:customer|shopper|fan|crowd)s?'? favou?rites?\b|\bcustomers? (?:love|say)\b",
    ),
    Evidence(
        "sales",
        ("sales", "salesrank", "rank", "bestseller", "sold", "销量", "月销", "排名", "销售"),
        r"爆款|热销|热卖|畅销|销量|卖爆|卖断货|断货王|抢疯|抢光|回购|复购|大家都在买|人气|销冠|"
        r"月销|已售|网红款?",
        r"\bbest[- ]?sell(?:er|ers|ing)\b|\btop[- ]?sell(?:er|ers|ing)\b|\bsold out\b|"
        r"\bselling fast\b|\bflying off\b|\btrending\b|\bpopular\b|\bmost[- ]wanted\b|"
        r"#\s?\d+\s+in\b|\bsales? rank\b|\beveryone'?s (?:buying|talking)\b|\bin demand\b|"
        r"\bunits sold\b|\bhot seller\b",
    ),
    Evidence(
        "awards",
        ("awards", "award", "prize", "奖项", "获奖", "荣誉"),
        r"获奖|金奖|银奖|大奖|得奖|奖项|荣获",
        r"\baward(?:s|ed)?\b|\baward[- ]winning\b|\bprize[- ]?winning\b|\bmedals?\b|"
        r"\bwinner\b",
    ),
    Evidence(
        "certifications",
        ("certifications", "certification", "certified", "certificate", "认证", "证书", "检测"),
        r"认证|证书|检测报告|质检报告",
        r"\bcertifi(?:ed|cations?|cates?)\b|\blab[- ]tested\b|\bapproved\b",
    ),
)
_COMPILED = tuple((kind, re.compile(f"{kind.zh}|{kind.en}", re.IGNORECASE)) for kind in KINDS)


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


def find(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    facts = ctx.facts
    keys = {_key(k) for k, v in facts.product.attributes.items() if v.strip()}
    for kind, pattern in _COMPILED:
        if keys.intersection(kind.keys) or pattern.search(facts.text):
            continue
        m = pattern.search(plain.text)
        if m is not None:
            yield Violation(
                NAME,
                plain.span(*m.span()),
                f"`{m.group(0)}` claims {kind.name}, which the product data does not carry "
                f"(attribute `{kind.keys[0]}`)",
            )


RULE = Rule(NAME, BASIS, find)

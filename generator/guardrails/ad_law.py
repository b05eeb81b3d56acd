"""``ad_law_absolute``: the project's list of absolute terms (绝对化用语).

Basis: 《中华人民共和国广告法》第九条第（三）项 — an advertisement may not use "国家级"、"最高级"、
"最佳" or similar terms (penalty: 第五十七条); 第十四条 adds 驰名商标. The exemptions follow
市场监管总局《广告绝对化用语执法指南》(2023): terms that only state the seller's service attitude or
aims (顾客第一, 追求完美), that describe use rather than merit (最佳赏味期, 最高时速), that
compare the brand with itself (最新款), or that repeat an objective grade from the product's data
(等级: 顶级).

Matching runs on the folded, squeezed view, so ``最 佳``, ``最*佳``, ``ＮＯ．１``, ``頂級`` and
``b e s t`` are caught as the terms they spell."""

from __future__ import annotations

import re
from collections.abc import Iterator

from generator.guardrails.base import Context, Rule, Violation, overlaps, squeeze

NAME = "ad_law_absolute"
BASIS = "《广告法》第九条第（三）项、第十四条；例外依《广告绝对化用语执法指南》(2023)"

#: zh absolute terms, matched on the squeezed view (no spaces or punctuation left inside).
ABSOLUTE_ZH: tuple[str, ...] = (
    "国家级",
    "世界级",
    "全球级",
    "宇宙级",
    "国际级",
    "最高级",
    "最佳",
    "最好",
    "最优",
    "最强",
    "最高档",
    "最先进",
    "最便宜",
    "最低价",
    "最实惠",
    "最受欢迎",
    "顶级",
    "顶尖",
    "尖端",
    "极品",
    "极致",
    "第一",
    "首选",
    "首个",
    "首家",
    "首款",
    "全球首发",
    "全国首发",
    "全网首发",
    "唯一",
    "独一无二",
    "独家",
    "绝无仅有",
    "史无前例",
    "前所未有",
    "万能",
    "百分百",
    "100%",
    "全网最低",
    "销量冠军",
    "冠军",
    "no1",
    "top1",
    "王牌",
    "领袖品牌",
    "领导品牌",
    "领先",
    "至尊",
    "巅峰",
    "无敌",
    "完美",
    "永久",
    "绝对",
    "无与伦比",
    "驰名商标",
    "特供",
    "专供",
    "国家免检",
    # pinyin and homophone spellings used to slip past filters
    "醉佳",
    "zui佳",
    "最jia",
    "第yi",
    "di一",
    "顶ji",
    "ding级",
)
#: "最" + any character is a superlative; these continuations are not claims of merit.
_ZUI = re.compile(r"最(?![近后初终少多新])[\u4e00-\u9fff]")
_EXEMPT_ZH = re.compile(
    r"顾客第一|客户第一|用户第一|服务第一|安全第一|顾客至上|客户至上|用户至上|"
    r"(?:追求|力求|做到|致力于做到?)(?:最好|完美|极致)|"
    r"第一(?:次|步|时间|眼|口|天|批|站|代|季|印象|层|杯|颗|件)|"
    r"最(?:高|低|大|小|长|快)(?:可达|功率|时速|速度|温度|容量|承重|载重|负荷|转速|亮度|"
    r"分辨率|存储|续航|风速|压力|电压|电流|水温|档位|支持)|"
    r"最佳(?:赏味|食用|饮用|使用|保存|佩戴|冲泡)(?:期|时间|温度|方法)?",
)
_ABSOLUTE_EN = re.compile(
    r"\bbest\b(?![- ]?sell)(?!\s+before)|\bno\.?\s?1\b|\bnumber[- ]one\b|#\s?1\b|\btop[- ]?1\b|"
    r"\bworld[- ]class\b|\bworld'?s (?:first|only|leading|finest|most)\b|\bfirst[- ]ever\b|"
    r"\bfirst of its kind\b|\btop[- ](?:rated|notch|tier|quality|grade)\b|\bultimate\b|"
    r"\bperfect(?:ion|ly)?\b|\bunbeatable\b|\bunrivall?ed\b|\bunmatched\b|\bunparalleled\b|"
    r"\bflawless\b|\bincomparable\b|\bsupreme\b|\bpeerless\b|\blowest prices?\b|\bthe most\b|"
    r"\bmost (?:advanced|popular|powerful|comfortable|effective|luxurious|reliable|trusted|"
    r"loved|affordable|stylish|innovative|beautiful)\b|\b(?:finest|softest|warmest|lightest|"
    r"strongest|greatest|purest|smartest|fastest|highest|lowest|cheapest|healthiest|safest|"
    r"freshest|smoothest|coziest|cosiest)\b|\b100\s?%|\bone hundred per ?cent\b|"
    r"\b(?:national|state)[- ]level\b|\b(?:leading|top) brand\b|\b(?:industry|market)[- ]leading\b|"
    r"\bexclusive(?:ly)?\b|\bthe only\b|\bwell[- ]known trademark\b",
    re.IGNORECASE,
)
_EXEMPT_EN = re.compile(
    r"\bbest before\b|\bdo (?:our|my) best\b|\bcustomers? first\b|\bservice first\b",
    re.IGNORECASE,
)
_ZH_TERMS = re.compile(
    "|".join(re.escape(t) for t in sorted(ABSOLUTE_ZH, key=len, reverse=True)), re.IGNORECASE
)


def _message(term: str) -> str:
    return f"`{term}` is an absolute term (广告法 第九条第三项)"


def _allowed_by_facts(ctx: Context, term: str, after: str) -> bool:
    """An attribute value may state a composition or grade (``100%羊毛``, ``等级: 顶级``)."""
    facts = ctx.facts
    if squeeze(term) in facts.grade_text:
        return True
    return bool(after) and squeeze(term + after) in facts.attr_tight


def find(ctx: Context) -> Iterator[Violation]:
    tight = ctx.views.tight
    exempt = [m.span() for m in _EXEMPT_ZH.finditer(tight.text)]
    seen: list[tuple[int, int]] = []
    for pattern in (_ZH_TERMS, _ZUI):
        for m in pattern.finditer(tight.text):
            if overlaps(m.span(), exempt) or overlaps(m.span(), seen):
                continue
            after = tight.text[m.end() : m.end() + 2]
            if _allowed_by_facts(ctx, m.group(0), after):
                continue
            seen.append(m.span())
            yield Violation(NAME, tight.span(*m.span()), _message(tight.text[m.start() : m.end()]))
    plain = ctx.views.plain
    exempt_en = [m.span() for m in _EXEMPT_EN.finditer(plain.text)]
    for m in _ABSOLUTE_EN.finditer(plain.text):
        if overlaps(m.span(), exempt_en):
            continue
        span = plain.span(*m.span())
        if any(overlaps(span, [tight.span(*s)]) for s in seen):
            continue  # already reported from the squeezed view (e.g. `100%`)
        after = squeeze(plain.text[m.end() : m.end() + 4])[:2]
        if _allowed_by_facts(ctx, m.group(0), after):
            continue
        yield Violation(NAME, span, _message(m.group(0)))


RULE = Rule(NAME, BASIS, find)

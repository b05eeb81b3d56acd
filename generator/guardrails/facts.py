"""``brand_truth`` and ``attribute_truth``: the copy names only the product's own brand and claims
only what the product's facts carry.

Basis: 《广告法》第二十八条 (an ad whose claims about a product's maker, origin, material,
performance or certification do not match the facts is false), 第十一条 (data and certifications
cited must be true and sourced) and 第十三条 (no disparaging other makers' goods); brand names
and comparisons also raise 《反不正当竞争法》第六条 (confusion with another's mark)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from generator.guardrails.base import Context, Rule, Violation, canon_number, overlaps, squeeze
from generator.text import fold_simple

BRAND = "brand_truth"
ATTRIBUTE = "attribute_truth"
BRAND_BASIS = "《广告法》第十三条、第二十八条；《反不正当竞争法》第六条"
ATTRIBUTE_BASIS = "《广告法》第十一条、第二十八条"

#: Well-known marks that copy for another brand must not name (a floor, not a registry; words
#: that are also common nouns, such as Apple or Dove, are left out to keep false alarms down).
KNOWN_BRANDS: tuple[str, ...] = (
    "耐克",
    "阿迪达斯",
    "彪马",
    "安踏",
    "李宁",
    "特步",
    "优衣库",
    "无印良品",
    "宜家",
    "飒拉",
    "华为",
    "小米",
    "苹果手机",
    "三星",
    "索尼",
    "戴森",
    "美的",
    "格力",
    "海尔",
    "九阳",
    "苏泊尔",
    "兰蔻",
    "雅诗兰黛",
    "迪奥",
    "香奈儿",
    "资生堂",
    "欧莱雅",
    "海蓝之谜",
    "sk-ii",
    "完美日记",
    "花西子",
    "路易威登",
    "古驰",
    "爱马仕",
    "普拉达",
    "蔻驰",
    "星巴克",
    "雀巢",
    "三只松鼠",
    "良品铺子",
    "伊利",
    "蒙牛",
    "茅台",
    "五粮液",
    "鄂尔多斯",
    "恒源祥",
    "波司登",
    "加拿大鹅",
    "nike",
    "adidas",
    "puma",
    "uniqlo",
    "muji",
    "ikea",
    "zara",
    "h&m",
    "huawei",
    "xiaomi",
    "samsung",
    "sony",
    "dyson",
    "iphone",
    "ipad",
    "macbook",
    "airpods",
    "lancome",
    "lancôme",
    "estee lauder",
    "estée lauder",
    "dior",
    "chanel",
    "shiseido",
    "l'oreal",
    "l'oréal",
    "la mer",
    "louis vuitton",
    "gucci",
    "hermes",
    "hermès",
    "prada",
    "starbucks",
    "nestle",
    "nestlé",
    "canada goose",
    "patagonia",
    "lululemon",
    "north face",
    "levi's",
    "rolex",
    "象印",
    "膳魔师",
    "虎牌",
    "哈尔斯",
    "富光",
    "乐扣乐扣",
    "萨洛蒙",
    "亚瑟士",
    "新百伦",
    "斯凯奇",
    "北面",
    "始祖鸟",
    "迪卡侬",
    "瑞士莲",
    "歌帝梵",
    "费列罗",
    "德芙",
    "好时",
    "博士音响",
    "漫步者",
    "zojirushi",
    "thermos",
    "yeti",
    "hydro flask",
    "contigo",
    "salomon",
    "hoka",
    "asics",
    "new balance",
    "skechers",
    "arc'teryx",
    "decathlon",
    "lindt",
    "godiva",
    "ferrero",
    "hershey's",
    "ghirardelli",
    "bose",
    "jbl",
    "sennheiser",
    "airpods",
)


@lru_cache(maxsize=64)
def brand_pattern(brands: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for ``brands``, folded (full-width and case) as the text is; latin names
    must stand as words."""
    folded = {fold_simple(b).strip() for b in brands}
    parts = [
        rf"(?<![a-z0-9]){re.escape(b)}(?![a-z0-9])" if b.isascii() else re.escape(b)
        for b in sorted(folded - {""}, key=len, reverse=True)
    ]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


_BRANDS = brand_pattern(KNOWN_BRANDS)
_COMPARISONS = re.compile(
    r"平替|(?<!男女)(?<!情侣)(?<!亲子)(?<!母女)(?<!父子)(?<!姐妹)(?<!闺蜜)(?<!男士)(?<!女士)同款|"
    r"媲美|吊打|大牌|联名|代工|原单|尾单|贴牌|\bdupes?\b|\balternative to\b|\bbetter than\b|"
    r"\binspired by\b|\bcompared (?:to|with)\b|\bvs\.?(?=\s)|\bcollab(?:oration)?\b|\bsame as\b|"
    r"\bknock-?off\b|\blook-?alike\b",
    re.IGNORECASE,
)
_MARK = re.compile(r"([A-Za-z0-9\u4e00-\u9fff'&.\- ]{1,24})\s?[®™]")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&'\-]*[A-Za-z0-9]")
#: Latin words that zh copy uses as ordinary words, not names.
_ZH_LATIN_OK = frozenset(
    {
        "new",
        "sale",
        "vip",
        "ok",
        "diy",
        "app",
        "logo",
        "led",
        "usb",
        "wifi",
        "hd",
        "pro",
        "max",
        "mini",
        "plus",
        "ins",
        "style",
        "look",
        "get",
        "in",
        "ml",
        "kg",
        "cm",
        "mm",
        "g",
        "l",
        "no",
        "top",
    }
)
_FESTIVAL_NUMBERS = re.compile(r"双\s?1[12]|(?<![\d.])(?:11\.11|12\.12|618|520|3\.8)(?![\d.])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def find_brand(ctx: Context) -> Iterator[Violation]:
    plain = ctx.views.plain
    facts = ctx.facts
    own = squeeze(facts.text)
    named: list[tuple[int, int]] = []
    for pattern in (_BRANDS, brand_pattern(ctx.config.brands)):
        for m in pattern.finditer(plain.text) if pattern is not None else ():
            if squeeze(m.group(0)) in own or overlaps(m.span(), named):
                continue
            named.append(m.span())
            yield Violation(
                BRAND, plain.span(*m.span()), f"`{m.group(0)}` is not the product's brand"
            )
    for m in _COMPARISONS.finditer(plain.text):
        yield Violation(
            BRAND, plain.span(*m.span()), f"`{m.group(0)}` invokes another brand or a comparison"
        )
    for m in _MARK.finditer(plain.text):
        if not squeeze(m.group(1)).endswith(squeeze(facts.brand)):
            yield Violation(BRAND, plain.span(*m.span()), "® or ™ on a name that is not the brand")
    if ctx.language == "zh":
        for m in _LATIN_WORD.finditer(plain.text):
            word = m.group(0).lower()
            if word in _ZH_LATIN_OK or any(overlaps(m.span(), [n]) for n in named):
                continue
            if not re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", facts.text):
                yield Violation(
                    BRAND, plain.span(*m.span()), f"`{m.group(0)}` is not a name in the product"
                )


def find_attribute(ctx: Context) -> Iterator[Violation]:
    plain, tight = ctx.views.plain, ctx.views.tight
    facts = ctx.facts
    absent = facts.absent_claims
    if absent is not None:
        reported: set[str] = set()
        for view in (tight, plain):  # zh terms survive squeezing; en phrases need their spaces
            for m in absent.finditer(view.text):
                name = m.lastgroup or ""
                if name in reported:
                    continue
                reported.add(name)
                yield Violation(
                    ATTRIBUTE,
                    view.span(*m.span()),
                    f"`{m.group(0)}` ({name}) is not in the product facts",
                )
    taken = ctx.parsed.spans() + [m.span() for m in _FESTIVAL_NUMBERS.finditer(plain.text)]
    for m in _NUMBER.finditer(plain.text):
        if overlaps(m.span(), taken):
            continue
        if canon_number(m.group(0)) not in facts.numbers and m.group(0) not in facts.text:
            yield Violation(
                ATTRIBUTE, plain.span(*m.span()), f"`{m.group(0)}` is not in the product facts"
            )


BRAND_RULE = Rule(BRAND, BRAND_BASIS, find_brand)
ATTRIBUTE_RULE = Rule(ATTRIBUTE, ATTRIBUTE_BASIS, find_attribute)

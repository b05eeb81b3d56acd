"""Trait detection (CONTRACT.md §7): which selling devices a text uses, from zh and en cues.

The simulator calls this on every text it shows, so the cues are compiled once and the text is
folded with C-level NFKC only (full-width ``！？％￥`` become ``!?%¥``)."""

from __future__ import annotations

import re
import unicodedata

from streams.schemas import CHANNEL_LIMITS, TRAITS, Channel, Language

_CURRENCY = r"(?:[¥$€£]|RMB|CNY|USD|EUR|GBP|HK\$|US\$)"
_AMOUNT = rf"(?:{_CURRENCY}\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s?(?:元|块钱|块|円))"
_AMOUNT_EN = (
    rf"(?:{_CURRENCY}\s?\d[\d,]*(?:\.\d+)?"
    r"|\b\d[\d,]*(?:\.\d+)?\s?(?:dollars?|yuan|euros?|USD|CNY|RMB)\b)"
)

_CUES: dict[str, dict[str, str]] = {
    "price": {"zh": _AMOUNT, "en": _AMOUNT_EN},
    "discount": {
        "zh": r"(?:\d(?:\.\d)?|[一二三四五六七八九]{1,2})折(?!叠)|打折|折扣|立减|直降|减价|降价|"
        r"特惠|优惠|半价|原价|折后|省\s?(?:[¥$€£]|\d)|\d+(?:\.\d+)?\s?%\s?(?:off|折扣|优惠)",
        "en": r"\d+(?:\.\d+)?\s?%\s?off\b|\bsave\b|\bsavings?\b|\bdiscount(?:ed)?\b|"
        r"\bhalf[- ]price\b|\bmarked down\b|\bon sale\b|\bsale price\b|\bprice drop\b|"
        r"\bwas\s+[¥$€£]",
    },
    "urgency": {
        "zh": r"限时|仅剩|马上|立即|赶紧|抓紧|速抢|快抢|抢购|手慢无|今日限定|今天下单|倒计时|"
        r"先到先得|最后一天|别错过|错过|就在今天|即刻",
        "en": r"\btoday only\b|\bhurry\b|\blimited[- ]time\b|\bends (?:soon|today|tonight)\b|"
        r"\blast chance\b|\bdon'?t miss\b|\bact (?:now|fast)\b|\bbefore it'?s gone\b|"
        r"\b(?:order|shop|buy|grab)\b[^.!?]{0,20}\bnow\b|\bright now\b|"
        r"\bwhile (?:it|they|stocks?) lasts?\b",
    },
    "festive": {
        "zh": r"春节|新年|过年|年货|元旦|除夕|元宵|双\s?11|双十一|双\s?12|双十二|618|年中|圣诞|"
        r"中秋|端午|七夕|情人节|母亲节|父亲节|国庆|冬季|冬日|过冬|入冬|寒冬|夏日|夏季|盛夏|"
        r"开学季|节日|佳节|新春",
        "en": r"\bchristmas\b|\bxmas\b|\bholiday|\bnew year\b|\bsingles'? day\b|\b11\.11\b|"
        r"\bblack friday\b|\bcyber monday\b|\bvalentine|\bmother'?s day\b|\bfather'?s day\b|"
        r"\bwinter\b|\bsummer\b|\bspring festival\b|\blunar new year\b|\bfestive\b|"
        r"\bback to school\b|\bseason'?s\b|\bthanksgiving\b",
    },
    "quality": {
        "zh": r"品质|面料|做工|用料|匠心|质感|精工|精选|甄选|优选|细节|工艺|耐用|精致|讲究",
        "en": r"\bpremium\b|\bquality\b|\bcraft(?:ed|smanship)?\b|\bfine\b|\bmade to last\b|"
        r"\bdurable\b|\bin every detail\b|\bwell[- ]made\b|\brefined\b|\bmaterials?\b",
    },
    "emotion": {
        "zh": r"温暖|宠爱|暖心|幸福|心动|贴心|犒劳|犒赏|陪伴|小确幸|美好|安心|惬意|舒心|温柔|"
        r"喜欢|爱上|好心情|治愈系",
        "en": r"\bcozy\b|\bcosy\b|\btreat yourself\b|\bwarmth\b|\blove\b|\bjoy\b|\bdelight|"
        r"\bcomfort\b|\bhappy\b|\bhappiness\b|\bpamper|\bsmile\b|\bfeel good\b|\bcherish",
    },
    "social_proof": {
        "zh": r"爆款|热销|热卖|好评|口碑|人气|回购|大家都在|抢疯|网红|推荐|种草|断货王",
        "en": r"\bbest[- ]?sell(?:er|ers|ing)\b|\bcustomer favou?rite\b|\bshopper favou?rite\b|"
        r"\bloved by\b|\btrending\b|\bhighly rated\b|\bpopular\b|\bfan favou?rite\b|"
        r"\beveryone'?s (?:buying|talking)\b|\breviews?\b|\brave reviews\b|\bsold out\b",
    },
    "second_person": {
        "zh": r"您|(?<!迷)你|亲(?=[们,，!！~、\s]|$)",
        "en": r"\byou\b|\byour\b|\byou'(?:ll|re|ve|d)\b|\byours\b|\byourself\b",
    },
    "question": {"zh": r"\?|吗[。.!]?$|呢[。.!]?$", "en": r"\?"},
    "exclaim": {"zh": r"!", "en": r"!"},
}

_COMPILED: dict[str, dict[str, re.Pattern[str]]] = {
    lang: {
        trait: re.compile(cues[lang], re.IGNORECASE | re.MULTILINE) for trait, cues in _CUES.items()
    }
    for lang in ("zh", "en")
}


def length_trait(length: int, *, language: Language, channel: Channel) -> str | None:
    """``short`` under a third of the channel limit, ``long`` over two thirds, else None."""
    limit = CHANNEL_LIMITS[channel][language]
    if length < limit / 3:
        return "short"
    if length > 2 * limit / 3:
        return "long"
    return None


def detect_traits(
    text: str, *, language: Language, channel: Channel, brand: str | None = None
) -> list[str]:
    """The §7 traits of ``text``, in the order of ``streams.schemas.TRAITS``."""
    if language not in _COMPILED:
        raise ValueError(f"`language` must be one of zh, en; got {language!r}")
    if channel not in CHANNEL_LIMITS:
        raise ValueError(f"`channel` must be one of {sorted(CHANNEL_LIMITS)}; got {channel!r}")
    norm = unicodedata.normalize("NFKC", text)
    found = {trait for trait, pattern in _COMPILED[language].items() if pattern.search(norm)}
    size = length_trait(len(text), language=language, channel=channel)
    if size:
        found.add(size)
    if brand and _names_brand(norm, brand):
        found.add("brand")
    return [t for t in TRAITS if t in found]


def _names_brand(norm: str, brand: str) -> bool:
    b = unicodedata.normalize("NFKC", brand).strip().lower()
    if not b:
        return False
    low = norm.lower()
    if b.isascii():  # a latin brand must stand as a word: `Ora` is not in `Aurora`
        return re.search(rf"(?<![a-z0-9]){re.escape(b)}(?![a-z0-9])", low) is not None
    return b in low

"""The project's vocabulary of checkable claims: words that assert a material, origin,
certification, service or function. Copy may use one only when the product's facts (title,
category, attributes) carry the same claim, in either language: a zh product whose attributes say
``材质: 羊毛`` may be sold as "wool" in English."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    name: str
    zh: tuple[str, ...]  # substrings of the squeezed zh text
    en: str = ""  # a regex over the folded text (word boundaries where they matter)

    def pattern(self) -> re.Pattern[str]:
        parts = [re.escape(t) for t in self.zh]
        if self.en:
            parts.append(self.en)
        return re.compile("|".join(parts), re.IGNORECASE)


CLAIMS: tuple[Claim, ...] = (
    Claim("wool", ("羊毛", "美利奴"), r"\bwool(?:len)?\b|\bmerino\b"),
    Claim("cashmere", ("羊绒", "开司米"), r"\bcashmere\b"),
    Claim("silk", ("真丝", "桑蚕丝", "丝绸"), r"\bsilk\b"),
    Claim("cotton", ("纯棉", "全棉", "长绒棉", "新疆棉", "棉质", "棉麻"), r"\bcotton\b"),
    Claim("linen", ("亚麻",), r"\blinen\b"),
    Claim("leather", ("真皮", "头层牛皮", "牛皮", "羊皮", "皮革"), r"\bleather\b"),
    Claim(
        "down",
        ("羽绒", "鹅绒", "鸭绒"),
        r"\b(?:goose|duck) down\b|\bdown[- ](?:filled|jacket|coat)\b",
    ),
    Claim("stainless", ("不锈钢",), r"\bstainless\b"),
    Claim("titanium", ("钛合金", "纯钛"), r"\btitanium\b"),
    Claim("gold", ("足金", "黄金", "18k金", "k金"), r"\b(?:solid|pure|18k|14k) gold\b"),
    Claim("silver", ("纯银", "925银", "足银"), r"\bsterling silver\b|\bsolid silver\b"),
    Claim("solid_wood", ("实木",), r"\bsolid wood\b|\bhardwood\b"),
    Claim("organic", ("有机",), r"\borganic\b"),
    Claim("imported", ("进口",), r"\bimported\b"),
    Claim("handmade", ("手工", "手作"), r"\bhand[- ]?made\b|\bhand[- ]?crafted\b"),
    Claim("waterproof", ("防水",), r"\bwater ?proof\b|\bwater[- ]resistant\b"),
    Claim("wireless", ("无线", "蓝牙"), r"\bwireless\b|\bbluetooth\b"),
    Claim("natural", ("纯天然", "天然"), r"\ball[- ]natural\b|\b100% natural\b"),
    Claim("sugar_free", ("无糖", "零糖", "0糖"), r"\bsugar[- ]free\b|\bno sugar\b"),
    Claim("fat_free", ("零脂", "无脂", "0脂"), r"\bfat[- ]free\b"),
    Claim(
        "no_additives",
        ("无添加", "零添加", "0添加", "无防腐剂"),
        r"\bno additives\b|\bpreservative[- ]free\b",
    ),
    Claim("hypoallergenic", ("低敏", "无敏", "防过敏"), r"\bhypoallergenic\b"),
    Claim(
        "eco",
        ("环保", "可降解", "可持续"),
        r"\beco[- ]friendly\b|\bbiodegradable\b|\bsustainabl[ey]\b",
    ),
    # certifications (认证, certified, lab-tested) are ``claim_evidence``'s
    Claim("patent", ("专利",), r"\bpatent(?:ed)?\b"),
    Claim(
        "official",
        ("官方", "旗舰", "授权", "正品"),
        r"\bofficial\b|\bauthori[sz]ed\b|\bauthentic\b|\bgenuine\b",
    ),
    Claim(
        "shipping",
        ("包邮", "顺丰", "次日达", "当日达", "免运费"),
        r"\bfree shipping\b|\bnext[- ]day\b|\bsame[- ]day\b",
    ),
    Claim(
        "warranty",
        ("保修", "质保", "包换", "退换"),
        r"\bwarranty\b|\bmoney[- ]back\b|\bfree returns?\b",
    ),
    Claim("new_zealand", ("新西兰",), r"\bnew zealand\b"),
    Claim("australia", ("澳洲", "澳大利亚"), r"\baustralian?\b"),
    Claim("italy", ("意大利",), r"\bital(?:y|ian)\b"),
    Claim("france", ("法国",), r"\bfrance\b|\bfrench\b"),
    Claim("japan", ("日本",), r"\bjapan(?:ese)?\b"),
    Claim("germany", ("德国",), r"\bgerman(?:y)?\b"),
    Claim("usa", ("美国",), r"\bamerican?\b|\busa\b|\bmade in the us\b"),
    Claim("uk", ("英国",), r"\bbritish\b|\bengland\b|\bunited kingdom\b"),
    Claim("korea", ("韩国",), r"\bkorean?\b"),
    Claim("inner_mongolia", ("内蒙古", "内蒙"), r"\binner mongolia\b"),
    Claim("xinjiang", ("新疆",), r"\bxinjiang\b"),
    Claim("yunnan", ("云南",), r"\byunnan\b"),
)

COMPILED: tuple[tuple[Claim, re.Pattern[str]], ...] = tuple((c, c.pattern()) for c in CLAIMS)

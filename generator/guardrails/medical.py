"""``medical_claim``: no disease, treatment or efficacy claims for goods that are not medical.

Basis: 《广告法》第十七条 — apart from ads for medical treatment, drugs and medical devices, no
ad may claim to treat disease or use medical terms or wording that confuses the goods with drugs
or devices; 第十八条 for health food. Functional claims that are facts of the product (an
attribute reading ``功能: 抑菌`` with its test report) may be repeated; disease and treatment words
never, outside the medical categories (those ads need their own review, out of this scope)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from generator.guardrails.base import Context, Rule, Violation, overlaps, squeeze

NAME = "medical_claim"
BASIS = "《广告法》第十七条、第十八条"

#: Words that make a medical claim whatever the product data say.
_MEDICAL = re.compile(
    r"治疗|治愈|根治|主治|医治|防治|疗效|疗程|理疗|食疗|药效|药用|药物|中药|草药|灵药|药妆|处方|"
    r"临床|医学|医用|医生推荐|专家推荐|消炎|抗炎|抗癌|防癌|癌症|肿瘤|降血压|降血糖|降血脂|降三高|"
    r"糖尿病|高血压|关节炎|失眠|壮阳|补肾|护肝|排毒|包治|无副作用|康复|止痛|镇痛|抗病毒|"
    r"\bcures?\b|\bcured\b|\bheals?\b|\bhealing\b|\btreatment\b|\btreats? (?:acne|pain|disease|"
    r"illness|insomnia|eczema|arthritis)|\btherapeutic\b|\bmedicinal\b|\bmedical[- ]grade\b|"
    r"\bclinically\b|\bdoctor[- ]recommended\b|\bprescription\b|\banti-?inflammatory\b|"
    r"\bantiviral\b|\bcancer\b|\bdiabetes\b|\barthritis\b|\binsomnia\b|\bpain relief\b|"
    r"\brelieves? pain\b|\bprevents? (?:\w+ )?(?:disease|illness|infection|cancer)\b|\bdetox\w*\b",
    re.IGNORECASE,
)
#: Efficacy words: allowed only when the product's own facts state the same function.
_EFFICACY = re.compile(
    r"减肥|瘦身|燃脂|抗衰老|延缓衰老|抗皱|祛斑|祛痘|美白|生发|防脱|增强免疫|提高免疫|免疫力|助眠|"
    r"改善睡眠|杀菌|抗菌|抑菌|除菌|除螨|降压|养胃|补血|\bweight loss\b|\blose weight\b|"
    r"\bfat[- ]burning\b|\bslimming\b|\banti-?aging\b|\banti-?wrinkle\b|\bwhitening\b|"
    r"\bhair growth\b|\bimmun\w*\b|\bsleep aid\b|\bantibacterial\b|\bantimicrobial\b|"
    r"\bkills? (?:\d+% of )?(?:germs|bacteria)\b|\bdisinfect\w*\b",
    re.IGNORECASE,
)


def find(ctx: Context) -> Iterator[Violation]:
    if ctx.facts.medical:
        return
    facts = squeeze(ctx.facts.text)
    reported: list[tuple[int, int]] = []
    for view in (ctx.views.tight, ctx.views.plain):  # zh words survive squeezing, en need spaces
        for pattern, kind in ((_MEDICAL, "a medical claim"), (_EFFICACY, "an efficacy claim")):
            for m in pattern.finditer(view.text):
                span = view.span(*m.span())
                if overlaps(span, reported):
                    continue
                if pattern is _EFFICACY and squeeze(m.group(0)) in facts:
                    continue
                reported.append(span)
                yield Violation(NAME, span, f"`{m.group(0)}` is {kind}")


RULE = Rule(NAME, BASIS, find)

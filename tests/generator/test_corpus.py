"""The synthetic corpus: lawful by construction, its styles detectable, reproducible."""

from __future__ import annotations

import random
from datetime import date

import pytest

from generator.bootstrap.corpus import compose, estimated_length, examples, sample_plan
from generator.bootstrap.phrases import ATTRIBUTES, FILLERS, HOOKS, MENTIONS
from generator.guardrails import GuardrailConfig, check
from generator.guardrails.festivals import FESTIVALS
from generator.prompts import STYLES, Plan, length_bucket
from generator.slots import SLOT_RE, fill, slot_values
from generator.traits import detect_traits
from streams.schemas import CHANNEL_LIMITS, TRAITS, Product

FULL = {
    "zh": Product(
        product_id="full-zh",
        title="羊毛围巾 冬季加厚",
        category="围巾",
        brand="暖阳",
        price=500,
        sale_price=400,
        attributes={
            "材质": "羊毛",
            "颜色": "燕麦色",
            "产地": "内蒙古",
            "尺寸": "180x30cm",
            "容量": "1L",
            "口味": "原味",
            "净含量": "250g",
            "评分": "4.9",
            "评价": "2万+",
            "销量": "月销1万",
        },
    ),
    "en": Product(
        product_id="full-en",
        title="Merino Wool Scarf",
        category="apparel",
        brand="Fjordline",
        price=120,
        sale_price=90,
        currency="USD",
        language="en",
        attributes={
            "material": "merino wool",
            "color": "navy",
            "origin": "New Zealand",
            "size": "M",
            "capacity": "1 L",
            "flavor": "plain",
            "weight": "250 g",
            "rating": "4.8",
            "reviews": "1200",
            "sales": "10,000 sold",
        },
    ),
}


def _phrases() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for lang, banks in HOOKS.items():
        for style, phrases in banks.items():
            out.extend((lang, style, p) for p in phrases)
    return out


def _near_its_holiday(text: str) -> GuardrailConfig:
    """Copy is checked on the first day of the holiday it names (generic lines near Christmas)."""
    day = next((f.spans(2027)[0][0] for f in FESTIVALS if f.pattern.search(text)), None)
    return GuardrailConfig(today=day or date(2027, 12, 20))


@pytest.mark.parametrize(("language", "style", "phrase"), _phrases())
def test_every_hook_is_lawful_and_shows_its_style(language: str, style: str, phrase: str) -> None:
    """Every hook passes for a product that can fill its slots and carries the evidence that
    social proof needs, on a date near the holiday it names."""
    product = FULL[language]
    text = fill(phrase, slot_values(product))
    result = check(text, product, "product_desc", config=_near_its_holiday(text))
    assert result.passed, [v.message for v in result.violations]
    traits = detect_traits(text, language=language, channel="product_desc", brand=product.brand)  # type: ignore[arg-type]
    assert style in traits


@pytest.mark.parametrize("language", ["zh", "en"])
def test_fillers_attributes_and_mentions_are_lawful_and_neutral(language: str) -> None:
    product = FULL[language]
    values = slot_values(product)
    neutral = [*FILLERS[language], *MENTIONS[language]["plain"]]
    for phrases in ATTRIBUTES[language].values():
        neutral.extend(phrases)
    for phrase in neutral:
        text = fill(phrase, values)
        result = check(
            text, product, "product_desc", config=GuardrailConfig(today=date(2027, 7, 1))
        )
        assert result.passed, (text, [v.message for v in result.violations])
        traits = detect_traits(text, language=language, channel="product_desc")  # type: ignore[arg-type]
        assert not set(traits) & (set(STYLES) - {"quality"}), (text, traits)


def test_composed_copy_fits_the_channel_and_carries_the_styles() -> None:
    rng = random.Random(5)
    for _ in range(300):
        plan, target = sample_plan(rng)
        copy = compose(rng, plan, target)
        assert set(SLOT_RE.findall(copy)) <= {"brand", "name", "price", *plan.slots}
        assert estimated_length(copy, plan.language) <= CHANNEL_LIMITS[plan.channel][plan.language]
        product = FULL[plan.language]
        text = fill(copy, slot_values(product))
        traits = set(
            detect_traits(text, language=plan.language, channel=plan.channel, brand=product.brand)
        )
        assert set(plan.styles) <= traits, (copy, plan.styles, traits)


def test_corpus_shows_every_trait_of_the_contract() -> None:
    seen: set[str] = set()
    for e in examples(600, seed=0):
        product = FULL[e.plan.language]
        text = fill(e.copy, slot_values(product))
        seen.update(
            detect_traits(
                text, language=e.plan.language, channel=e.plan.channel, brand=product.brand
            )
        )
    assert seen == set(TRAITS)


def test_examples_are_reproducible_and_labelled_with_their_length() -> None:
    a = list(examples(200, seed=3))
    assert a == list(examples(200, seed=3))
    assert a != list(examples(200, seed=4))
    for e in a:
        assert e.plan.length == length_bucket(
            estimated_length(e.copy, e.plan.language), e.plan.language, e.plan.channel
        )
        assert e.text().startswith("<s><lang:") and e.text().endswith("</s>")
    with pytest.raises(ValueError, match="`n`"):
        next(examples(0, seed=0))


def test_plan_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="`styles`"):
        Plan("zh", "push", "short", ("shouting",))
    with pytest.raises(ValueError, match="`length`"):
        Plan("zh", "push", "huge", ())  # type: ignore[arg-type]

"""Tables of bad copy, each failing with the right rule, and good copy that passes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pytest

from generator.errors import GeneratorError
from generator.guardrails import RULE_NAMES, Checker, CheckResult, GuardrailConfig, check_pool
from generator.guardrails import check as check_on
from streams.schemas import Channel, Product, Variant, VariantPool

#: The date every check here is made for (near 双11 and in winter), never the day the tests run.
ON = GuardrailConfig(today=date(2027, 11, 5))


def check(
    text: str,
    product: Product,
    channel: Channel,
    *,
    shopper: dict[str, object] | None = None,
    others: Sequence[str] = (),
) -> CheckResult:
    return check_on(text, product, channel, shopper=shopper, others=others, config=ON)


SCARF = Product(
    product_id="scarf-1",
    title="羊毛围巾 男女同款 冬季加厚",
    category="围巾",
    brand="暖阳",
    price=500,
    sale_price=400,
    attributes={"材质": "100%羊毛", "颜色": "燕麦色"},
)
TEA = Product(
    product_id="tea-1",
    title="西湖龙井 250g",
    category="茶叶",
    brand="青山",
    price=268,
    attributes={"等级": "顶级", "产地": "浙江杭州"},
)
MUG = Product(
    product_id="mug-1",
    title="Insulated Travel Mug",
    category="kitchen",
    brand="Northwind",
    price=32,
    sale_price=24,
    currency="USD",
    language="en",
    attributes={"material": "stainless steel", "capacity": "450 ml"},
)
PILLS = Product(product_id="med-1", title="布洛芬缓释胶囊", category="药品", brand="康宁", price=20)


def rules_of(text: str, product: Product, channel: str = "ad_headline", **kw: object) -> set[str]:
    return check(text, product, channel, **kw).rules_broken()  # type: ignore[arg-type]


GOOD = [
    ("限时8折 羊毛围巾仅需¥400", SCARF),
    ("暖阳羊毛围巾 原价¥500 现价¥400", SCARF),
    ("双11 暖阳围巾 立减¥100！", SCARF),
    ("100%羊毛，冬季暖心好物", SCARF),
    ("送给你的燕麦色围巾，宠爱自己", SCARF),
    ("还在犹豫吗？暖阳围巾到手价¥400", SCARF),
    ("顾客第一，暖阳围巾温暖每一天", SCARF),
    ("顶级龙井 青山出品 ¥268", TEA),
    ("明前新茶 最佳冲泡温度80度", TEA.model_copy(update={"attributes": {"冲泡": "80度"}})),
    ("Northwind Travel Mug, now $24. Save $8 today!", MUG),
    ("Was $32, now $24 - 25% off the stainless steel mug", MUG),
    (
        "Bestseller: the Northwind mug holds 450 ml",
        MUG.model_copy(
            update={"attributes": {"capacity": "450 ml", "sales_rank": "#3 in travel mugs"}}
        ),
    ),
    ("Treat yourself to a cozy winter coffee break", MUG),
    ("布洛芬缓释胶囊 缓解疼痛 ¥20", PILLS),
]


@pytest.mark.parametrize(("text", "product"), GOOD)
def test_good_copy_passes(text: str, product: Product) -> None:
    result = check(text, product, "ad_headline" if len(text) <= 30 else "push")
    assert result.passed, [v.message for v in result.violations]
    assert result.rules == RULE_NAMES


BAD: list[tuple[str, Product, str]] = [
    # price_truth: amounts, 折, percentages, reference prices, promotions
    ("限时7折 羊毛围巾", SCARF, "price_truth"),  # 400 of 500 is 8折
    ("羊毛围巾仅需¥350", SCARF, "price_truth"),
    ("羊毛围巾 立减¥150", SCARF, "price_truth"),  # the saving is 100
    ("原价¥699 现价¥400", SCARF, "price_truth"),  # reference price must be the list price
    ("八五折 羊毛围巾", SCARF, "price_truth"),
    ("半价 羊毛围巾", SCARF, "price_truth"),
    ("羊毛围巾 30%折扣", SCARF, "price_truth"),
    ("满300减50 羊毛围巾", SCARF, "price_truth"),
    ("买一送一 羊毛围巾", SCARF, "price_truth"),
    ("龙井 原价¥300", TEA, "price_truth"),  # no sale price: no reference price
    ("龙井 8折优惠", TEA, "price_truth"),  # no sale price: no discount
    ("龙井 限时特惠", TEA, "price_truth"),
    ("Northwind mug, 40% off", MUG, "price_truth"),  # it is 25% off
    ("Only $20 for the Northwind mug", MUG, "price_truth"),
    ("Northwind mug ¥24", MUG, "price_truth"),  # wrong currency
    ("Use coupon code for the Northwind mug", MUG, "price_truth"),
    # ad_law_absolute and its evasions
    ("最佳羊毛围巾", SCARF, "ad_law_absolute"),
    ("最 佳羊毛围巾", SCARF, "ad_law_absolute"),
    ("最*佳羊毛围巾", SCARF, "ad_law_absolute"),
    ("最\u200b佳羊毛围巾", SCARF, "ad_law_absolute"),
    ("頂級羊毛圍巾", SCARF, "ad_law_absolute"),
    ("国家级羊毛围巾", SCARF, "ad_law_absolute"),
    ("全网第一 羊毛围巾", SCARF, "ad_law_absolute"),
    ("ＮＯ．１羊毛围巾", SCARF, "ad_law_absolute"),
    ("100%满意 羊毛围巾", SCARF, "ad_law_absolute"),
    ("最舒服的羊毛围巾", SCARF, "ad_law_absolute"),
    ("醉佳羊毛围巾", SCARF, "ad_law_absolute"),
    ("The best travel mug", MUG, "ad_law_absolute"),
    ("The b e s t travel mug", MUG, "ad_law_absolute"),
    ("The ＢＥＳＴ travel mug", MUG, "ad_law_absolute"),
    ("The bést travel mug", MUG, "ad_law_absolute"),
    ("No. 1 travel mug", MUG, "ad_law_absolute"),
    ("World-class stainless steel mug", MUG, "ad_law_absolute"),
    ("The warmest mug you will ever own", MUG, "ad_law_absolute"),
    # brand_truth
    ("耐克同款羊毛围巾", SCARF, "brand_truth"),
    ("优衣库平替 羊毛围巾", SCARF, "brand_truth"),
    ("媲美大牌的羊毛围巾", SCARF, "brand_truth"),
    ("Gucci风羊毛围巾", SCARF, "brand_truth"),
    ("A Starbucks-style travel mug", MUG, "brand_truth"),
    ("Better than a Yeti mug", MUG, "brand_truth"),
    ("Acme® travel mug", MUG, "brand_truth"),
    # attribute_truth
    ("羊绒围巾 暖阳出品", SCARF, "attribute_truth"),
    ("意大利进口羊毛围巾", SCARF, "attribute_truth"),
    ("仅剩3件 羊毛围巾", SCARF, "attribute_truth"),
    ("包邮 羊毛围巾", SCARF, "attribute_truth"),
    ("Handmade in Japan travel mug", MUG, "attribute_truth"),
    ("Waterproof Northwind mug with free shipping", MUG, "attribute_truth"),
    # medical_claim
    ("羊毛围巾 治疗颈椎病", SCARF, "medical_claim"),
    ("喝龙井 降血压 抗癌", TEA, "medical_claim"),
    ("龙井助眠又减肥", TEA, "medical_claim"),
    ("This mug cures headaches", MUG, "medical_claim"),
    ("Detox tea in an anti-inflammatory mug", MUG, "medical_claim"),
    # personal_echo (pool copy must not single out an age)
    ("30岁的你值得这条围巾", SCARF, "personal_echo"),
    ("A mug for 40-year-olds like you", MUG, "personal_echo"),
    # length_limit
    ("暖阳羊毛围巾" * 6, SCARF, "length_limit"),
    ("Northwind travel mug " * 5, MUG, "length_limit"),
    ("  ", SCARF, "length_limit"),
    # ai_label
    ("纯人工撰写：暖阳羊毛围巾", SCARF, "ai_label"),
    ("Human-written copy for a mug", MUG, "ai_label"),
]


@pytest.mark.parametrize(("text", "product", "rule"), BAD)
def test_bad_copy_fails_with_the_right_rule(text: str, product: Product, rule: str) -> None:
    result = check(text, product, "ad_headline")
    assert not result.passed
    assert rule in result.rules_broken(), [v.message for v in result.violations]
    for v in result.violations:
        assert v.rule in RULE_NAMES
        assert v.message
        if v.span is not None:
            start, end = v.span
            assert 0 <= start <= end <= len(text)


def test_spans_point_at_the_original_text() -> None:
    text = "冬季 頂 級 围巾"
    (v,) = check(text, SCARF, "ad_headline").violations
    assert v.rule == "ad_law_absolute"
    assert text[v.span[0] : v.span[1]] == "頂 級"  # type: ignore[index]


def test_percentage_tolerance_and_rounding() -> None:
    odd = SCARF.model_copy(update={"price": 299.0, "sale_price": 239.0})  # 7.99折, 20.07% off
    assert check("8折 羊毛围巾", odd, "ad_headline").passed
    assert "price_truth" in rules_of("7.9折 羊毛围巾", odd)
    en = MUG.model_copy(update={"price": 299.0, "sale_price": 239.0})
    assert check("20% off the Northwind mug", en, "ad_headline").passed
    assert "price_truth" in rules_of("21% off the Northwind mug", en)


def test_personal_echo_with_a_shopper() -> None:
    shopper = {"age": 27, "city": "杭州市", "gender": "f"}
    assert "personal_echo" in rules_of("27岁就要宠爱自己 暖阳围巾", SCARF, shopper=shopper)
    assert "personal_echo" in rules_of("杭州的冬天需要暖阳围巾", SCARF, shopper=shopper)
    assert check("暖阳围巾 宠爱自己", SCARF, "ad_headline", shopper=shopper).passed
    # a city named in the product's own facts is a fact, not an echo
    assert check("浙江杭州龙井 青山出品", TEA, "ad_headline", shopper=shopper).passed


def test_near_duplicates_against_the_pool() -> None:
    others = ["限时8折 羊毛围巾仅需¥400"]
    assert "near_duplicate" in rules_of("限时8折！羊毛围巾仅需¥400", SCARF, others=others)
    assert check("冬季暖心好物 暖阳羊毛围巾", SCARF, "ad_headline", others=others).passed


def test_medical_categories_are_out_of_scope_and_facts_allow_efficacy() -> None:
    assert check("布洛芬 止痛", PILLS, "ad_headline").passed
    washer = SCARF.model_copy(update={"attributes": {"功能": "抑菌"}})
    assert check("抑菌羊毛围巾", washer, "ad_headline").passed
    assert "medical_claim" in rules_of("抑菌羊毛围巾", SCARF)


def test_check_pool_flags_duplicates_and_checks_each_variant() -> None:
    pool = VariantPool(
        product_id="scarf-1",
        pool_version=1,
        generator_version="test",
        variants=[
            Variant(variant_id="a", text="限时8折 羊毛围巾", language="zh", channel="ad_headline"),
            Variant(variant_id="b", text="限时8折！羊毛围巾", language="zh", channel="ad_headline"),
            Variant(variant_id="c", text="最佳羊毛围巾", language="zh", channel="ad_headline"),
        ],
    )
    results = check_pool(pool, SCARF)
    assert results["a"].passed
    assert results["b"].rules_broken() == {"near_duplicate"}
    assert "ad_law_absolute" in results["c"].rules_broken()
    with pytest.raises(GeneratorError, match="product_id"):
        check_pool(pool, MUG)


def test_bad_channel_is_named() -> None:
    with pytest.raises(GeneratorError, match="`channel`"):
        Checker(SCARF, "billboard")  # type: ignore[arg-type]

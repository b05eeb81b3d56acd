"""Copy a brand manager would sign: fluency, claims that need evidence, competitors and timely
festive copy. Every rule is shown catching bad copy in Chinese and English, and not catching the
nearby copy that is fine. Every check names its date: none depends on the day the tests run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date

import pytest

from generator.guardrails import RULE_NAMES, GuardrailConfig, check
from generator.guardrails.festivals import off_season
from generator.interface import Completion
from generator.prompts import Plan, PromptFormat
from generator.sampling import fill, generate, seasonal_suppress
from streams.schemas import Product

SCARF = Product(
    product_id="scarf-1",
    title="羊毛围巾 男女同款",
    category="围巾",
    brand="暖阳",
    price=199,
    sale_price=159,
    attributes={"材质": "羊毛", "颜色": "燕麦色"},
)
CUP = Product(
    product_id="cup-1",
    title="不锈钢保温杯",
    category="水杯",
    brand="象印",
    price=199,
    sale_price=159,
    attributes={"材质": "不锈钢"},
)
SHOES = Product(
    product_id="shoes-1",
    title="Trail running shoes",
    category="footwear",
    brand="Salomon",
    price=140,
    sale_price=112,
    currency="USD",
    language="en",
)
MUG = Product(
    product_id="mug-1",
    title="Insulated Travel Mug",
    category="kitchen",
    brand="Northwind",
    price=32,
    currency="USD",
    language="en",
    attributes={"material": "stainless steel"},
)
RATED_MUG = MUG.model_copy(
    update={
        "attributes": {
            "material": "stainless steel",
            "rating": "4.8",
            "reviews": "1,250",
            "sales_rank": "#3 in travel mugs",
            "awards": "Red Dot 2024",
            "certifications": "FDA food contact",
        }
    }
)
RATED_TEA = Product(
    product_id="tea-1",
    title="西湖龙井",
    category="茶叶",
    brand="青山茶舍",
    price=268,
    attributes={
        "评分": "4.9",
        "销量": "月销2000",
        "评价": "好评3万",
        "奖项": "金奖",
        "认证": "有机认证",
    },
)
DECEMBER = GuardrailConfig(today=date(2027, 12, 10))
SEPTEMBER = GuardrailConfig(today=date(2027, 9, 1))


def broken(
    text: str, product: Product, config: GuardrailConfig = DECEMBER, **kw: object
) -> set[str]:
    channel = "push" if len(text) > 30 else "ad_headline"
    return check(text, product, channel, config=config, **kw).rules_broken()  # type: ignore[arg-type]


CAUGHT = [
    # fluency
    ("The Trail running shoes, Was $140, now $112, now $112, now $112", SHOES, "repetition"),
    ("Save $28 today, save $28 today", SHOES, "repetition"),
    ("Trail running shoes for trail running shoes fans", SHOES, "repetition"),
    ("马上抢马上抢 羊毛围巾", SCARF, "repetition"),
    ("羊毛围巾｜限时抢购｜到手价¥159｜限时抢购", SCARF, "repetition"),
    ("不锈钢保温杯 心动好物，", CUP, "punctuation"),
    ("Trail running shoes - now $112,", SHOES, "punctuation"),
    ("羊毛围巾，，到手价¥159", SCARF, "punctuation"),
    ("Trail running shoes!, now $112", SHOES, "punctuation"),
    ("，羊毛围巾到手价¥159", SCARF, "punctuation"),
    ("【限时抢购 羊毛围巾", SCARF, "brackets"),
    ("Trail running shoes (now $112", SHOES, "brackets"),
    ('Trail running shoes "built for trails', SHOES, "brackets"),
    ("羊毛围巾 到手价{price}", SCARF, "slot_fill"),
    ("Trail running shoes, now $ today", SHOES, "slot_fill"),
    ("Trail running shoes in null", SHOES, "slot_fill"),
    ("羊毛围巾 <unk> 到手价¥159", SCARF, "slot_fill"),
    ("Trail running shoes 超值好物", SHOES, "mixed_script"),
    ("羊毛围巾 かわいい", SCARF, "mixed_script"),
    ("羊毛围巾 warm and soft", SCARF, "mixed_script"),
    # claims need evidence
    ("Highly rated - Trail running shoes", SHOES, "claim_evidence"),
    ("Rated 4.8 stars: Trail running shoes", SHOES, "claim_evidence"),
    ("Rave reviews for Trail running shoes", SHOES, "claim_evidence"),
    ("Bestseller: Trail running shoes", SHOES, "claim_evidence"),
    ("Award-winning Trail running shoes", SHOES, "claim_evidence"),
    ("Lab-tested Trail running shoes", SHOES, "claim_evidence"),
    ("好物不锈钢保温杯·口碑爆款", CUP, "claim_evidence"),
    ("不锈钢保温杯 好评如潮", CUP, "claim_evidence"),
    ("热销不锈钢保温杯", CUP, "claim_evidence"),
    ("评分4.9 不锈钢保温杯", CUP, "claim_evidence"),
    ("金奖不锈钢保温杯", CUP, "claim_evidence"),
    ("权威认证 不锈钢保温杯", CUP, "claim_evidence"),
    ("Rated 4.9 by shoppers", RATED_MUG, "attribute_truth"),  # the rating on file is 4.8
    ("Made in Japan: Trail running shoes", SHOES, "attribute_truth"),  # origin
    ("新疆长绒棉 羊毛围巾", SCARF, "attribute_truth"),  # material
    # competitors: the static floor, the catalog and the extra list; case and width folded
    ("Lighter than Hoka: Trail running shoes", SHOES, "brand_truth"),
    ("Trail running shoes, not ＡＳＩＣＳ", SHOES, "brand_truth"),
    ("膳魔师同级 不锈钢保温杯", CUP, "brand_truth"),
    ("Trail running shoes, as good as TrailPeak", SHOES, "brand_truth"),  # from the catalog
    ("不锈钢保温杯 胜过山野", CUP, "brand_truth"),  # from the extra list
    # timeliness (the date is 2027-12-10)
    ("马上下单 好物不锈钢保温杯 中秋送礼 先到先得", CUP, "timeliness"),
    ("618年中好物 羊毛围巾", SCARF, "timeliness"),
    ("七夕礼物 羊毛围巾", SCARF, "timeliness"),
    ("国庆特惠 羊毛围巾", SCARF, "timeliness"),
    ("双11狂欢 羊毛围巾", SCARF, "timeliness"),
    ("Black Friday pick: Trail running shoes", SHOES, "timeliness"),
    ("Summer ready: Trail running shoes", SHOES, "timeliness"),
    ("Valentine's Day gift: Trail running shoes", SHOES, "timeliness"),
]
EXTRA = ("山野",)
CATALOG = [SHOES.model_copy(update={"product_id": "x", "brand": "TrailPeak"}), SCARF, CUP, SHOES]


@pytest.mark.parametrize(("text", "product", "rule"), CAUGHT)
def test_caught_with_its_rule(text: str, product: Product, rule: str) -> None:
    config = GuardrailConfig(today=DECEMBER.today, brands=EXTRA).with_catalog(CATALOG)
    result = check(text, product, "push", config=config)
    assert rule in result.rules_broken(), (text, [v.message for v in result.violations])
    assert rule in RULE_NAMES
    for v in result.violations:
        assert v.rule in RULE_NAMES and v.message
        if v.span is not None:
            assert 0 <= v.span[0] <= v.span[1] <= len(text)


NOT_CAUGHT = [
    # fluency: reduplication, emphasis, ellipses and a product's own name are fine
    ("暖暖的羊毛围巾 买买买！", SCARF),
    ("羊毛围巾，到手价¥159……", SCARF),
    ("Trail running shoes!! Now $112", SHOES),
    ("Trail running shoes - so so light", SHOES),
    ("【限时】羊毛围巾「燕麦色」", SCARF),
    ('Trail running shoes, "built for trails"', SHOES),
    ("双11.11 暖阳羊毛围巾", SCARF.model_copy(update={"title": "羊毛围巾 11.11"})),
    ("Salomon Trail running shoes, now $112", SHOES),
    ("羊毛围巾 new款 到手价¥159", SCARF),
    ("Trail running shoes by 声屿", SHOES.model_copy(update={"brand": "声屿"})),
    # evidence on file allows the claim (and its number)
    ("Rated 4.8 by 1,250 reviews", RATED_MUG),
    ("Highly rated travel mug", RATED_MUG),
    ("Bestseller: Insulated Travel Mug", RATED_MUG),
    ("Award-winning Insulated Travel Mug", RATED_MUG),
    ("Certified Insulated Travel Mug", RATED_MUG),
    ("评分4.9 好评如潮 西湖龙井", RATED_TEA),
    ("热销爆款 西湖龙井", RATED_TEA),
    ("金奖西湖龙井 有机认证", RATED_TEA),
    # social copy with no claim
    ("种草好物 羊毛围巾", SCARF),
    ("Made for you: Trail running shoes", SHOES),
    # the product's own brand, and its catalog peers when they are the product
    ("象印不锈钢保温杯 到手价¥159", CUP),
    ("SALOMON Trail running shoes", SHOES),
    # festive copy in season (2027-12-10), or named by the product itself
    ("圣诞礼物 羊毛围巾", SCARF),
    ("双12好价 羊毛围巾", SCARF),
    ("冬日必备 羊毛围巾", SCARF),
    ("Christmas gift idea: Trail running shoes", SHOES),
    ("Holiday season pick: Trail running shoes", SHOES),
    ("Ring in the New Year with Trail running shoes", SHOES),
    ("中秋送礼 月饼礼盒", SCARF.model_copy(update={"title": "中秋月饼礼盒", "attributes": {}})),
]


@pytest.mark.parametrize(("text", "product"), NOT_CAUGHT)
def test_not_over_caught(text: str, product: Product) -> None:
    config = GuardrailConfig(today=DECEMBER.today, brands=EXTRA).with_catalog(CATALOG)
    result = check(text, product, "push", config=config)
    assert result.passed, (text, [v.message for v in result.violations])


@pytest.mark.parametrize(
    ("text", "product", "day", "timely"),
    [
        ("中秋送礼 不锈钢保温杯", CUP, date(2027, 9, 1), True),  # 中秋 2027-09-15
        ("中秋送礼 不锈钢保温杯", CUP, date(2027, 9, 19), False),  # 4 days after
        ("春节好礼 不锈钢保温杯", CUP, date(2028, 1, 10), True),  # 春节 2028-01-26
        ("春节好礼 不锈钢保温杯", CUP, date(2028, 2, 9), True),  # 元宵 ends the season
        ("春节好礼 不锈钢保温杯", CUP, date(2028, 4, 1), False),
        ("元宵快乐 不锈钢保温杯", CUP, date(2027, 2, 20), True),
        ("618年中好物 不锈钢保温杯", CUP, date(2027, 6, 10), True),
        ("双11狂欢 不锈钢保温杯", CUP, date(2027, 10, 20), True),
        ("双11狂欢 不锈钢保温杯", CUP, date(2027, 9, 20), False),
        ("Black Friday pick: Trail running shoes", SHOES, date(2027, 11, 26), True),
        ("Black Friday pick: Trail running shoes", SHOES, date(2027, 12, 10), False),
        ("Winter essential: Trail running shoes", SHOES, date(2027, 7, 1), False),
        ("Christmas gift: Trail running shoes", SHOES, date(2040, 12, 1), True),
        ("中秋送礼 不锈钢保温杯", CUP, date(2050, 9, 20), False),  # beyond the lunar table
    ],
)
def test_festive_copy_only_near_its_holiday(
    text: str, product: Product, day: date, timely: bool
) -> None:
    result = check(text, product, "ad_headline", config=GuardrailConfig(today=day))
    assert ("timeliness" not in result.rules_broken()) is timely, result.violations


def test_festive_window_is_configurable() -> None:
    text = "双11狂欢 不锈钢保温杯"
    day = date(2027, 9, 20)  # 52 days before 双11
    assert "timeliness" in broken(text, CUP, GuardrailConfig(today=day))
    assert not broken(text, CUP, GuardrailConfig(today=day, festive_lead_days=60))
    late = GuardrailConfig(today=date(2027, 11, 20), festive_grace_days=10)
    assert not broken(text, CUP, late)


def test_generic_festive_words_need_some_holiday() -> None:
    # 节日/festive: fine in December; every holiday far away in early April with a short window
    assert not broken("节日好礼 羊毛围巾", SCARF)
    quiet = GuardrailConfig(today=date(2027, 4, 1), festive_lead_days=0, festive_grace_days=0)
    assert "timeliness" in broken("节日好礼 羊毛围巾", SCARF, quiet)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="`festive_lead_days`"):
        GuardrailConfig(festive_lead_days=-1)
    with pytest.raises(ValueError, match="`brands`"):
        GuardrailConfig(brands=("",))
    with pytest.raises(ValueError, match="`today`"):
        GuardrailConfig(today="2027-01-01")  # type: ignore[arg-type]


def test_catalog_brands_exclude_the_products_own() -> None:
    config = GuardrailConfig(today=DECEMBER.today).with_catalog(CATALOG)
    assert "TrailPeak" in config.brands and "Salomon" in config.brands
    assert not broken("Salomon Trail running shoes", SHOES, config)
    assert "brand_truth" in broken("Salomon Trail running shoes", MUG, config)


# -- the sampler ---------------------------------------------------------------------------


def test_no_article_before_a_capitalised_title() -> None:
    values = {"name": "Trail Running Shoes", "price": "$112"}
    assert fill("The {name} - now {price}", values) == "Trail Running Shoes - now $112"
    assert fill("Looking for a {name}?", values) == "Looking for Trail Running Shoes?"
    assert fill("The {name}", {"name": "trail shoes"}) == "The trail shoes"


class _Vocab:
    """A stand-in model: the sampler needs only the small interface, not a torch model."""

    version = "fake-0"
    prompt_format: PromptFormat = "slots-v1"

    def __init__(self, answers: Sequence[str] = ()) -> None:
        self.answers = list(answers)
        self.suppressed: list[str] = []

    def prompt(self, product: Product, plan: Plan) -> str:
        return f"{plan.styles}"

    def vocabulary(self) -> Collection[str]:
        return ["中秋送礼", "圣诞礼物", "▁Christmas", "▁Summer", "618年中", "冬日", "好物"]

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        seed: int,
        temperature: float = 1.0,
        top_p: float = 0.95,
        suppress: Sequence[str] = (),
    ) -> list[Completion]:
        self.suppressed = list(suppress)
        return [Completion(self.answers[i % len(self.answers)], True) for i in range(len(prompts))]


def test_the_bootstrap_sampler_suppresses_off_season_tokens() -> None:
    december = seasonal_suppress(_Vocab(), SCARF, DECEMBER)
    assert {"中秋送礼", "▁Summer", "618年中"} <= set(december)
    assert not {"圣诞礼物", "▁Christmas", "冬日", "好物"} & set(december)
    september = seasonal_suppress(_Vocab(), SCARF, SEPTEMBER)
    assert "中秋送礼" not in september and "圣诞礼物" in september
    # a festive product keeps its holiday; an instruction model is left alone
    mooncake = SCARF.model_copy(update={"title": "中秋月饼礼盒"})
    assert "中秋送礼" not in seasonal_suppress(_Vocab(), mooncake, DECEMBER)
    chat = _Vocab()
    chat.prompt_format = "instruction"
    assert seasonal_suppress(chat, SCARF, DECEMBER) == []
    assert {f.name for f in off_season(date(2027, 12, 10), DECEMBER)} >= {"mid_autumn", "summer"}


def test_generate_uses_any_copy_model_and_the_given_date() -> None:
    answers = ["{name} 到手价{price}", "中秋送礼 {name}", "圣诞礼物 {name}", "{name}，，好物"]
    model = _Vocab(answers)
    report = generate(model, SCARF, "ad_headline", 2, seed=0, guardrails=DECEMBER)
    texts = [v.text for v in report.pool.variants]
    assert texts and all("中秋" not in t and "，，" not in t for t in texts)
    assert report.pool.generator_version == "fake-0"
    assert "中秋送礼" in model.suppressed
    assert report.rejected["timeliness"] >= 1 and report.rejected["punctuation"] >= 1


@pytest.mark.parametrize(
    ("text", "product"),
    [
        (
            "Looking for Trail running shoes? Our Trail running shoes grip on every slope, "
            "now $112.",
            SHOES,
        ),
        ("羊毛围巾男女同款，柔软亲肤。冬天就选这条羊毛围巾男女同款，到手价¥159。", SCARF),
    ],
)
def test_a_description_may_name_its_product_twice(text: str, product: Product) -> None:
    """Long channels name what they describe again; a headline or push saying it twice is
    still repetition."""
    assert "repetition" not in broken_in(text, product, "product_desc")
    assert "repetition" not in broken_in(text, product, "social")
    assert "repetition" in broken_in(text, product, "push")


def broken_in(text: str, product: Product, channel: str) -> set[str]:
    return check(text, product, channel, config=DECEMBER).rules_broken()  # type: ignore[arg-type]

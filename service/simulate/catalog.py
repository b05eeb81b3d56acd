"""A synthetic catalog: products across categories, with brand, list and sale price and the
attributes the copy may cite, in the scenario's language. Brands are invented, so no generated
text can name a real one."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streams.schemas import Language, Product


@dataclass(frozen=True)
class _Kind:
    category: dict[str, str]
    nouns: dict[str, tuple[str, ...]]
    brands: dict[str, tuple[str, ...]]
    #: attribute name -> choices, per language
    attributes: dict[str, dict[str, tuple[str, ...]]]
    price: tuple[int, int]


_KINDS: tuple[_Kind, ...] = (
    _Kind(
        {"zh": "服饰", "en": "apparel"},
        {
            "zh": ("羊毛围巾", "羽绒服", "针织开衫", "保暖内衣"),
            "en": ("wool scarf", "down jacket", "knit cardigan", "thermal top"),
        },
        {"zh": ("暖织", "北岸"), "en": ("Warmloom", "Northbank")},
        {
            "zh": {"面料": ("羊毛", "羊绒", "棉"), "颜色": ("燕麦色", "黑色", "酒红")},
            "en": {
                "material": ("wool", "cashmere", "cotton"),
                "color": ("oat", "black", "burgundy"),
            },
        },
        (99, 899),
    ),
    _Kind(
        {"zh": "美妆", "en": "beauty"},
        {
            "zh": ("保湿面霜", "护手霜", "润唇膏", "洁面乳"),
            "en": ("moisturizing cream", "hand cream", "lip balm", "face cleanser"),
        },
        {"zh": ("青禾", "露溪"), "en": ("Greenreed", "Dewbrook")},
        {
            "zh": {"规格": ("50ml", "100ml"), "肤质": ("干性", "混合性", "敏感肌")},
            "en": {"size": ("50 ml", "100 ml"), "skin type": ("dry", "combination", "sensitive")},
        },
        (39, 399),
    ),
    _Kind(
        {"zh": "食品", "en": "food"},
        {
            "zh": ("坚果礼盒", "红枣", "手工曲奇", "挂耳咖啡"),
            "en": ("nut gift box", "dried dates", "butter cookies", "drip coffee"),
        },
        {"zh": ("山禾", "麦香村"), "en": ("Hillgrain", "Oakmill")},
        {
            "zh": {"净含量": ("500g", "1kg"), "产地": ("新疆", "云南")},
            "en": {"weight": ("500 g", "1 kg"), "origin": ("Xinjiang", "Yunnan")},
        },
        (29, 259),
    ),
    _Kind(
        {"zh": "家居", "en": "home"},
        {
            "zh": ("保温杯", "珊瑚绒毯", "香薰蜡烛", "乳胶枕"),
            "en": ("insulated bottle", "fleece blanket", "scented candle", "latex pillow"),
        },
        {"zh": ("栖木", "安眠坊"), "en": ("Perchwood", "Restfield")},
        {
            "zh": {"材质": ("不锈钢", "珊瑚绒", "天然乳胶"), "尺寸": ("中号", "大号")},
            "en": {
                "material": ("stainless steel", "fleece", "natural latex"),
                "size": ("medium", "large"),
            },
        },
        (49, 599),
    ),
    _Kind(
        {"zh": "数码", "en": "electronics"},
        {
            "zh": ("蓝牙耳机", "充电宝", "智能手环", "机械键盘"),
            "en": ("wireless earbuds", "power bank", "fitness band", "mechanical keyboard"),
        },
        {"zh": ("声谷", "极光芯"), "en": ("Soundvale", "Lumacore")},
        {
            "zh": {"续航": ("20小时", "30小时"), "颜色": ("白色", "曜石黑")},
            "en": {"battery": ("20 hours", "30 hours"), "color": ("white", "obsidian")},
        },
        (129, 999),
    ),
    _Kind(
        {"zh": "运动", "en": "sports"},
        {
            "zh": ("跑步鞋", "瑜伽垫", "运动水壶", "速干T恤"),
            "en": ("running shoes", "yoga mat", "sports bottle", "quick-dry tee"),
        },
        {"zh": ("疾风", "山野行"), "en": ("Swiftgale", "Trailwise")},
        {
            "zh": {"材质": ("网面", "TPE", "速干面料"), "适用": ("跑步", "健身", "徒步")},
            "en": {
                "material": ("mesh", "TPE", "quick-dry fabric"),
                "use": ("running", "gym", "hiking"),
            },
        },
        (59, 699),
    ),
)


def _evidence(rng: random.Random, language: Language) -> dict[str, str]:
    """The facts a real listing carries and copy may cite (docs/guardrails.md): a rating for
    most products, a review count and monthly sales for many; without them the guardrails
    reject ratings, reviews and best-seller claims, as they must."""
    out: dict[str, str] = {}
    if rng.random() < 0.8:
        out["评分" if language == "zh" else "rating"] = f"{rng.choice((4.5, 4.6, 4.7, 4.8, 4.9))}"
    if rng.random() < 0.6:
        count = rng.choice((320, 860, 1200, 2500, 5400))
        out["评价数" if language == "zh" else "reviews"] = f"{count:,}"
    if rng.random() < 0.5:
        sold = rng.choice((500, 1000, 2000, 5000))
        out["销量" if language == "zh" else "sales"] = (
            f"月销{sold}+" if language == "zh" else f"{sold:,}+ sold a month"
        )
    return out


def make_catalog(n: int, language: Language, seed: int) -> list[Product]:
    """``n`` products spread over the categories (round robin, so a small catalog still spans
    several), each with a list price, a sale price for about half of them, attributes, and for
    most of them a rating, reviews or sales figures."""
    if not 1 <= n <= 5000:
        raise ValueError(f"`n` must be in [1, 5000], got {n}")
    if language not in ("zh", "en"):
        raise ValueError(f"`language` must be zh or en, got {language!r}")
    rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
    # a stream of its own, so that the products' other draws do not move with it
    facts = random.Random(f"{seed}-evidence")  # noqa: S311
    order = list(range(len(_KINDS)))
    rng.shuffle(order)
    products = []
    for i in range(n):
        kind = _KINDS[order[i % len(order)]]
        noun = rng.choice(kind.nouns[language])
        brand = rng.choice(kind.brands[language])
        price = float(rng.randrange(kind.price[0], kind.price[1]))
        sale = None
        if rng.random() < 0.5:
            sale = float(round(price * rng.choice((0.7, 0.8, 0.85, 0.9))))
        attributes = {k: rng.choice(v) for k, v in kind.attributes[language].items()}
        attributes.update(_evidence(facts, language))
        title = f"{brand}{noun}" if language == "zh" else f"{brand} {noun}"
        products.append(
            Product(
                product_id=f"sim-{i:04d}",
                title=title,
                category=kind.category[language],
                brand=brand,
                price=price,
                sale_price=sale,
                currency="CNY",
                attributes=attributes,
                language=language,
            )
        )
    return products

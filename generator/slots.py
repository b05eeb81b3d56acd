"""Slots: placeholders such as ``{brand}`` or ``{price}`` that the bootstrap model writes instead of
facts, filled from the product after sampling so that a small model cannot get a fact wrong.
Models that write facts directly pass through :func:`fill` unchanged (they name no slot).

:func:`unfill` goes the other way, turning shown copy back into slot form, so that copy which
did well can become training text for the same model (see ``generator.prompts``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from generator.errors import SlotError
from streams.schemas import Language, Product

#: Every slot the bootstrap vocabulary knows, in the order they are listed in prompts.
SLOTS: tuple[str, ...] = (
    "brand",
    "name",
    "price",
    "list_price",
    "discount",
    "saving",
    "material",
    "color",
    "origin",
    "size",
    "capacity",
    "flavor",
    "weight",
)
#: Slots that only some products can fill (the prompt says which ones this product has).
OPTIONAL_SLOTS: tuple[str, ...] = SLOTS[3:]
SALE_SLOTS: tuple[str, ...] = ("list_price", "discount", "saving")
#: Attribute keys (zh and en spellings) read for each attribute slot.
ATTRIBUTE_KEYS: dict[str, tuple[str, ...]] = {
    "material": ("material", "材质", "面料", "材料", "fabric"),
    "color": ("color", "colour", "颜色", "颜色分类"),
    "origin": ("origin", "产地", "made_in", "country_of_origin"),
    "size": ("size", "尺码", "尺寸", "规格"),
    "capacity": ("capacity", "容量", "volume"),
    "flavor": ("flavor", "flavour", "口味", "taste"),
    "weight": ("weight", "重量", "净含量", "net_weight"),
}
SLOT_RE = re.compile(r"\{([a-z_]+)\}")
_CURRENCY_SIGN = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"}
#: zh titles list selling points after spaces; en titles only after punctuation.
_NAME_SPLIT = {
    "zh": re.compile(r"[\s,，、|/｜·•（(【\[\]】)）:：;；]+"),
    "en": re.compile(r"\s*[,，|/｜·•（(【\[\]】)）:：;；]\s*|\s+-\s+"),
}
_NAME_MAX = {"zh": 12, "en": 40}
#: Below this much off, a "discount" is rounding noise and is not advertised.
MIN_DISCOUNT = 0.01


def format_money(value: float, currency: str) -> str:
    amount = f"{value:,.0f}" if abs(value - round(value)) < 0.005 else f"{value:,.2f}"
    sign = _CURRENCY_SIGN.get(currency)
    return f"{sign}{amount}" if sign else f"{currency} {amount}"


def format_discount(price: float, sale_price: float, language: Language) -> str:
    """The discount as shoppers read it: ``8折`` (zh, tenths of the list price) or ``20% off``."""
    ratio = sale_price / price
    if language == "zh":
        return f"{round(10 * ratio, 1):g}折"
    return f"{round(100 * (1 - ratio)):d}% off"


def short_name(product: Product) -> str:
    """A name short enough for a headline: the title without the brand, cut at its first
    separator; the category when that is still too long."""
    limit = _NAME_MAX[product.language]
    title = product.title.replace(product.brand, " ").strip() or product.title
    title = re.sub(r"\s{2,}", " ", title)
    first = next(
        (p.strip() for p in _NAME_SPLIT[product.language].split(title) if p.strip()), title
    )
    if len(first) <= limit:
        return first
    if len(product.category) <= limit:
        return product.category
    return first[:limit]


def attribute(product: Product, slot: str) -> str | None:
    lowered = {k.strip().lower(): v.strip() for k, v in product.attributes.items()}
    for key in ATTRIBUTE_KEYS[slot]:
        value = lowered.get(key)
        if value:
            return value
    return None


def slot_values(product: Product, language: Language | None = None) -> dict[str, str]:
    """Every slot this product can fill, with its text."""
    lang = language or product.language
    values = {
        "brand": product.brand,
        "name": short_name(product),
        "price": format_money(
            product.sale_price if product.sale_price is not None else product.price,
            product.currency,
        ),
    }
    sale = product.sale_price
    if sale is not None and 1 - sale / product.price >= MIN_DISCOUNT:
        values["list_price"] = format_money(product.price, product.currency)
        values["saving"] = format_money(product.price - sale, product.currency)
        values["discount"] = format_discount(product.price, sale, lang)
    for slot in ATTRIBUTE_KEYS:
        value = attribute(product, slot)
        if value:
            values[slot] = value
    return values


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace each ``{slot}``; a slot the product cannot fill is a :class:`SlotError`."""

    def sub(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise SlotError(f"slot `{{{m.group(1)}}}` has no value for this product") from None

    return SLOT_RE.sub(sub, text)


def unfill(text: str, values: Mapping[str, str]) -> str:
    """Put slots back where the values stand (longest value first, so ``{list_price}`` is not
    read as part of a longer amount)."""
    out = text
    for slot, value in sorted(values.items(), key=lambda kv: len(kv[1]), reverse=True):
        if value and len(value) >= 2:
            out = out.replace(value, f"{{{slot}}}")
    return out

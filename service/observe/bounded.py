"""Label values a metric may take, bounded: a product or variant id is a label only for the
first ``cap`` distinct ids seen; later ones are counted under ``other``. Every label set stays
small whatever the catalog's size, and no value a shopper controls (a user id) is ever a
label: only ids from pools the service itself published."""

from __future__ import annotations

import threading

OTHER = "other"
#: products named in labels; more are folded into ``other``
MAX_PRODUCTS = 50
#: variants named per product; a pool holds at most 256, refreshed pools keep a few dozen
MAX_VARIANTS = 64


class BoundedLabels:
    """``label(value)`` is ``value`` for the first ``cap`` distinct values, ``other`` after."""

    def __init__(self, cap: int) -> None:
        if cap < 0:
            raise ValueError(f"`cap` must be >= 0, got {cap}")
        self.cap = cap
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def label(self, value: str) -> str:
        if value in self._named:  # the common case, without the lock
            return value
        with self._lock:
            if len(self._named) < self.cap:
                self._named.add(value)
                return value
        return OTHER


class ProductVariantLabels:
    """Product labels capped at ``max_products``, variant labels at ``max_variants`` per product
    (a product folded into ``other`` has its variants folded too)."""

    def __init__(self, max_products: int = MAX_PRODUCTS, max_variants: int = MAX_VARIANTS) -> None:
        self.products = BoundedLabels(max_products)
        self._max_variants = max_variants
        self._variants: dict[str, BoundedLabels] = {}

    def labels(self, product_id: str, variant_id: str) -> tuple[str, str]:
        product = self.products.label(product_id)
        if product == OTHER:
            return OTHER, OTHER
        variants = self._variants.get(product)
        if variants is None:
            variants = self._variants.setdefault(product, BoundedLabels(self._max_variants))
        return product, variants.label(variant_id)

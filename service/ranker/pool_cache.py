"""The ranker's local copy of the current pools (fed by the compacted ``copyloop.variants``).

Each pool is indexed once when it arrives: per channel (and per channel and language) the
``(variant_id, ActionFeatures)`` list the policy scores, so a rank request does no feature work
for the actions. A pool replaces the cached one only when its ``pool_version`` is newer, so a
replayed or reordered older pool never rolls a product back."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bandit.features import action_features
from bandit.policy import ActionSet
from service.errors import Conflict, NotFound
from streams.schemas import ActionFeatures, Variant, VariantPool


@dataclass(frozen=True)
class IndexedPool:
    pool: VariantPool
    variants: dict[str, Variant]
    #: (channel, language or None for any) -> actions in pool order, their VW text cached
    actions: dict[tuple[str, str | None], ActionSet]

    @classmethod
    def build(cls, pool: VariantPool) -> IndexedPool:
        groups: dict[tuple[str, str | None], list[tuple[str, ActionFeatures]]] = {}
        for v in pool.variants:
            item = (v.variant_id, action_features(v, pool.generator_version))
            groups.setdefault((v.channel, None), []).append(item)
            groups.setdefault((v.channel, v.language), []).append(item)
        return cls(
            pool=pool,
            variants={v.variant_id: v for v in pool.variants},
            actions={k: ActionSet(items) for k, items in groups.items()},
        )


class PoolCache:
    def __init__(self) -> None:
        self._pools: dict[str, IndexedPool] = {}
        self._lock = threading.Lock()
        self.updates = 0
        self.stale_ignored = 0

    def apply(self, pool: VariantPool) -> bool:
        """Cache ``pool`` if it is newer than the one held; returns whether it was taken."""
        current = self._pools.get(pool.product_id)
        if current is not None and current.pool.pool_version >= pool.pool_version:
            self.stale_ignored += 1
            return False
        indexed = IndexedPool.build(pool)  # outside the lock: readers never wait on it
        with self._lock:
            current = self._pools.get(pool.product_id)
            if current is not None and current.pool.pool_version >= pool.pool_version:
                self.stale_ignored += 1
                return False
            self._pools[pool.product_id] = indexed
            self.updates += 1
        return True

    def get(self, product_id: str) -> IndexedPool:
        found = self._pools.get(product_id)  # one dict read: safe without the lock
        if found is None:
            raise NotFound("product_id", f"has no variant pool: {product_id!r}")
        return found

    def actions(self, product_id: str, channel: str, language: str | None = None) -> ActionSet:
        """The scored actions of ``product_id`` on ``channel`` (optionally in ``language``)."""
        indexed = self.get(product_id)
        found = indexed.actions.get((channel, language))
        if found is not None:
            return found
        if (channel, None) not in indexed.actions:
            raise Conflict(
                "channel",
                f"product {product_id!r} has no variants for channel {channel!r} "
                f"(pool {indexed.pool.pool_version} has "
                f"{sorted({c for c, _ in indexed.actions})})",
            )
        raise Conflict(
            "language",
            f"product {product_id!r} has no {language!r} variants for channel {channel!r}",
        )

    def version(self, product_id: str) -> int | None:
        found = self._pools.get(product_id)
        return None if found is None else found.pool.pool_version

    def product_ids(self) -> list[str]:
        return sorted(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

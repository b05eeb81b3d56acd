"""Announcing a generator and undoing a promotion. Rolling back serves the current version's
parent again (the base model after the first version) and restores the pools that the
promotion's refresh replaced, which the round saved in the version's folder. Nothing here loads
a model, so a ranker answers the rollback endpoint without importing torch."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import Conflict
from service.finetune.refresh import POOLS_BEFORE, load_pools, restored
from service.finetune.registry import Registry, Version
from streams.producer import EventSink
from streams.schemas import ModelAnnouncement, VariantPool

log = logging.getLogger(__name__)
#: metadata key of a version: the ``model_version`` of the generator it was trained from
PARENT_MODEL_VERSION = "parent_model_version"


def announce(
    sink: EventSink,
    topic: str,
    version: str,
    folder: Path,
    metrics: dict[str, float] | None = None,
) -> None:
    """Tell rankers which generator writes pools from now on (their next generation job loads
    it)."""
    event = ModelAnnouncement(
        kind="generator", version=version, uri=str(folder), metrics=metrics or {}
    )
    sink.add(topic, "generator", event)
    sink.flush()


def publish_pools(sink: EventSink, topic: str, pools: Iterable[VariantPool]) -> None:
    for pool in pools:
        sink.add(topic, pool.product_id, pool)
    sink.flush()


@dataclass(frozen=True)
class RolledBack:
    """What :func:`roll_back` did: the version that served, the one that serves now (``None``:
    the base model) and the pools it published again."""

    from_version: str
    current: str | None
    model_version: str
    pools: list[VariantPool]

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "current": self.current,
            "generator_version": self.model_version,
            "pools_restored": {p.product_id: p.pool_version for p in self.pools},
        }


def roll_back(
    registry: Registry,
    base_model: Path,
    versions: Mapping[str, int],
    *,
    sink: EventSink | None = None,
    models_topic: str = "copyloop.models",
    variants_topic: str = "copyloop.variants",
) -> RolledBack:
    """Serve the current version's parent again and restore the pools its promotion replaced
    (saved in the version's folder), numbered past ``versions`` (each product's newest pool
    version); announce both on ``sink``. Raises ``Conflict`` when nothing was promoted."""
    current = registry.current()
    if current is None:
        raise Conflict("version", "no promoted generator to roll back from")
    back: Version | None = registry.get(current.parent) if current.parent else None
    pools = restored(load_pools(current.path / POOLS_BEFORE), versions)
    folder = back.path if back is not None else base_model
    version = (back.metadata if back is not None else current.metadata).get(
        "model_version" if back is not None else PARENT_MODEL_VERSION
    )
    if not isinstance(version, str):  # a record from before the field existed
        from generator.model import model_version  # loads torch

        version = model_version(folder)
    if sink is not None:  # first: a broker that is away leaves the registry as it was
        announce(sink, models_topic, version, folder, {"rolled_back": 1.0})
        publish_pools(sink, variants_topic, pools)
    registry.rollback()
    log.info("rolled back from %s to %s", current.name, back.name if back else base_model)
    return RolledBack(current.name, back.name if back else None, version, pools)

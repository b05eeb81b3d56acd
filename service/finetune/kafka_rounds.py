"""Rounds and rollbacks on the live topics, as the command line, the admin endpoints and the
automatic trigger run them: the log and the pools read from Kafka, the generator's registry under
``DATA_DIR``, one round at a time across processes (a file lock beside the registry), so the
admin endpoint of any worker and a running ``copyloop finetune`` never train two candidates
from the same parent at once.

The service keeps no product catalog on a topic, so a round is given its products; each round
stores them beside the registry and a round given none uses the last ones. Each round's outcome
is added to the rounds' history beside the registry (``service.finetune.trigger``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from service.errors import BadRequest, Conflict
from service.finetune.refresh import latest_pools
from service.finetune.registry import Registry
from service.finetune.rollback import RolledBack, roll_back
from service.finetune.sources import read_pools
from service.finetune.trigger import LOCK, record_round
from service.replay.replay_log import read_kafka
from service.settings import Settings
from streams.producer import EventSink
from streams.schemas import Product

if TYPE_CHECKING:  # the round loads torch and TRL; a rollback needs neither
    from service.finetune.rounds import RoundConfig, RoundResult

CATALOG = "catalog.json"
_CATALOG = TypeAdapter(list[Product])


def base_model(settings: Settings) -> Path:
    """The generator that serves before any promotion."""
    if settings.generator_model is not None:
        return settings.generator_model
    from generator.model import default_model_path  # loads torch

    return default_model_path(settings.data_dir / "cache")


@contextmanager
def exclusive(registry: Registry, *, wait: bool = True) -> Iterator[None]:
    """Hold the registry's round lock; ``wait=False`` raises ``Conflict`` when it is taken."""
    registry.root.mkdir(parents=True, exist_ok=True)
    with open(registry.root / LOCK, "ab") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Conflict("finetune", "a fine-tune round is running; retry when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def catalog(
    registry: Registry, given: Sequence[Product] | None, *, field: str = "products"
) -> list[Product]:
    """``given`` (then stored for the next round), else the last round's products; ``field``
    names the input that gives them, for the error when there are none."""
    path = registry.root / CATALOG
    if given:
        registry.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CATALOG}.{os.getpid()}.tmp")
        tmp.write_bytes(_CATALOG.dump_json(list(given)))
        os.replace(tmp, path)
        return list(given)
    try:
        return _CATALOG.validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BadRequest(
            field, "is required: no earlier round stored a catalog to fall back on"
        ) from None
    except ValidationError as exc:
        raise BadRequest(
            field, f"is required: the stored catalog {path} is invalid: {exc}"
        ) from exc


def live_round(
    settings: Settings,
    products: Sequence[Product] | None,
    *,
    sink: EventSink | None,
    config: RoundConfig | None = None,
) -> RoundResult:
    """One round on everything the decisions and feedback topics hold now."""
    from service.finetune.rounds import run_round

    registry = Registry.under(settings.data_dir)
    with exclusive(registry):
        chosen = catalog(registry, products)
        log = read_kafka(settings.kafka_bootstrap, settings.topics)
        pools = read_pools(settings.kafka_bootstrap, settings.topics)
        base = base_model(settings)
        result = run_round(
            log,
            pools,
            chosen,
            registry,
            base,
            config,
            sink=sink,
            models_topic=settings.topics.models,
            variants_topic=settings.topics.variants,
        )
        record_round(registry.root, result.to_dict(), serving_version(registry, base))
        return result


def serving_version(registry: Registry, base: Path) -> str:
    """The ``model_version`` of the generator that serves now (the current version's, as its
    promotion recorded it, else the base model's weights hashed)."""
    current = registry.current()
    if current is not None and isinstance(current.metadata.get("model_version"), str):
        return str(current.metadata["model_version"])
    from generator.model import model_version  # loads torch

    return model_version(registry.model_path(base))


def live_rollback(
    settings: Settings, *, sink: EventSink | None, versions: Mapping[str, int] | None = None
) -> RolledBack:
    """Roll back the last promotion (refused while a round runs). ``versions``: each product's
    newest pool version, when the caller holds them (a ranker does); else read from the topic."""
    registry = Registry.under(settings.data_dir)
    with exclusive(registry, wait=False):
        if versions is None:
            pools = latest_pools(read_pools(settings.kafka_bootstrap, settings.topics))
            versions = {pid: p.pool_version for pid, p in pools.items()}
        return roll_back(
            registry,
            base_model(settings),
            versions,
            sink=sink,
            models_topic=settings.topics.models,
            variants_topic=settings.topics.variants,
        )

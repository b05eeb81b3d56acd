"""One fine-tune round end to end: training data from the log → a LoRA adapter trained on the
serving generator → the promotion gate → promote (refresh the pools, announce) or discard.
Every outcome, including "too little evidence", is a :class:`RoundResult`, so callers (the
command line, an admin job, the simulator) report it the same way. :func:`roll_back` undoes the
last promotion: the previous generator serves again and the pools it replaced come back."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from generator.finetune import FinetuneConfig, finetune
from generator.model import CopyGenerator, read_format
from service.errors import NotFound
from service.finetune.gate import GateConfig, TraitRewards, gate
from service.finetune.refresh import (
    POOLS_AFTER,
    POOLS_BEFORE,
    RefreshConfig,
    Refreshed,
    refresh_pools,
    save_pools,
)
from service.finetune.registry import Registry
from service.finetune.rollback import PARENT_MODEL_VERSION, announce, publish_pools
from service.finetune.training_data import (
    KTO_FILE,
    DataConfig,
    NotEnoughEvidence,
    build_training_data,
    pool_rows,
)
from service.observe.work_metrics import record_round
from service.replay.replay_log import ReplayLog
from streams.producer import EventSink
from streams.schemas import Product, VariantPool

log = logging.getLogger(__name__)
Status = Literal["promoted", "rejected", "skipped"]


@dataclass(frozen=True)
class RoundConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(progress=False))
    gate: GateConfig = field(default_factory=GateConfig)
    device: str | None = None  # for the gate's sampling; default as the generator picks
    #: how a promotion refreshes the pools of the products trained for (None: it does not)
    refresh: RefreshConfig | None = field(default_factory=RefreshConfig)
    #: 0 (off): a round trains on its own KTO rows. N > 0: also on the still-valid rows of the
    #: last N rounds in the registry (``training_data.pool_rows``). Off by default: on the
    #: choosing worlds no pooling variant raised training's lift over the refresh control
    #: (docs/experiments/2026-finetune-rounds.md, "Pooling examples across rounds")
    pool_rounds: int = 0
    #: with pooling, train the base generator ("base + all evidence", nothing counted twice)
    #: rather than the serving one; measured worse (a promoted model trained on again did better)
    pool_from_base: bool = False
    #: with pooling, keep an earlier row whose variant this round judged but left unlabelled
    #: (without it a cumulative log leaves almost nothing to pool)
    pool_keep_rejudged: bool = True

    def __post_init__(self) -> None:
        if self.pool_rounds < 0:
            raise ValueError(f"`pool_rounds` must be >= 0, got {self.pool_rounds}")


@dataclass(frozen=True)
class RoundResult:
    status: Status
    reason: str
    version: str | None  # the candidate's registry name (None when skipped)
    parent: str  # the version or model folder it was trained from
    examples: dict[str, int]
    verdict: dict[str, Any] | None
    timings: dict[str, float]
    stats: dict[str, Any] = field(default_factory=dict)
    #: the pools a promotion published (each product's refreshed pool)
    pools: list[VariantPool] = field(default_factory=list)
    refresh: list[dict[str, Any]] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "promoted": self.promoted,
            "reason": self.reason,
            "version": self.version,
            "parent": self.parent,
            "examples": self.examples,
            "verdict": self.verdict,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "stats": self.stats,
            "refresh": self.refresh,
        }


def earlier_rows(registry: Registry, last: int) -> list[list[dict[str, Any]]]:
    """The KTO rows of the last ``last`` rounds that trained (promoted or rejected: the registry
    keeps a rejected candidate's data), newest first; a version without readable data is
    skipped and does not count."""
    out: list[list[dict[str, Any]]] = []
    for name in reversed(registry.versions()):
        if len(out) >= last:
            break
        try:
            version = registry.get(name)
        except NotFound:  # a round still running, or one that failed half-way
            continue
        folder = (version.metadata.get("data") or {}).get("folder", "data")
        path = version.path / str(folder) / KTO_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            out.append([json.loads(line) for line in lines if line.strip()])
        except (OSError, ValueError):
            continue
    return out


def run_round(
    events: ReplayLog,
    pools: Iterable[VariantPool],
    products: Iterable[Product],
    registry: Registry,
    base_model: Path,
    config: RoundConfig | None = None,
    *,
    sink: EventSink | None = None,
    models_topic: str = "copyloop.models",
    variants_topic: str = "copyloop.variants",
) -> RoundResult:
    """Run one round on ``events`` (joined decisions and feedback) for the generator that serves
    now (the registry's current version, else ``base_model``). ``pools`` are every pool version
    the decisions may have been made on; a promotion refreshes the newest of each product
    trained for and publishes them with the announcement on ``sink``."""
    config = config or RoundConfig()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    current = registry.current()
    parent_path = registry.model_path(base_model)
    parent = current.name if current is not None else str(parent_path)
    catalog = {p.product_id: p for p in products}
    data = build_training_data(
        events, pools, catalog.values(), prompt_format=read_format(parent_path), config=config.data
    )
    timings["data_s"] = time.perf_counter() - started
    if isinstance(data, NotEnoughEvidence):
        timings["total_s"] = time.perf_counter() - started
        log.info("fine-tune round skipped: %s", data.reason)
        record_round("skipped")
        return RoundResult("skipped", data.reason, None, parent, {}, None, timings, data.stats)
    rows = data.dpo if config.train.method == "dpo" else data.kto
    pooled: dict[str, int] = {}
    train_from = parent_path
    if config.pool_rounds > 0 and config.train.method == "kto":
        earlier = earlier_rows(registry, config.pool_rounds)
        rows, pooled = pool_rows(
            data,
            earlier,
            catalog.values(),
            prompt_format=read_format(parent_path),
            keep_rejudged=config.pool_keep_rejudged,
        )
        train_from = base_model if config.pool_from_base else parent_path
    examples = {
        "kto": len(data.kto),
        "desirable": sum(1 for r in data.kto if r["label"]),
        "undesirable": sum(1 for r in data.kto if not r["label"]),
        "dpo_pairs": len(data.dpo),
        "trained_on": len(rows),
        **({"pooled": pooled["pooled"]} if pooled else {}),
    }
    if not rows:
        timings["total_s"] = time.perf_counter() - started
        reason = f"no {config.train.method} examples (no confident pair)"
        record_round("skipped")
        return RoundResult("skipped", reason, None, parent, examples, None, timings, data.stats)
    name, folder = registry.new_version()
    try:
        data.write(folder / "data")
        t = time.perf_counter()
        trained = finetune(train_from, rows, folder, config.train, meta={"version": name})
        timings["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        rewards = TraitRewards.fit(events, ridge=config.gate.ridge, reward=config.data.reward)
        by_evidence = Counter(r["product_id"] for r in data.kto)
        targets = [(catalog[pid], data.products[pid]) for pid, _ in by_evidence.most_common()]
        candidate = CopyGenerator.from_path(folder, device=config.device)
        serving = CopyGenerator.from_path(parent_path, device=config.device)
        verdict = gate(candidate, serving, targets, rewards, config.gate)
        timings["gate_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - started  # data, training and gate
        refreshed: list[Refreshed] = []
        if verdict.promote and config.refresh is not None:
            t = time.perf_counter()
            refreshed = refresh_pools(
                pools, data.values, catalog, data.products, candidate, config.refresh
            )
            changed = [r for r in refreshed if r.after is not None]
            save_pools(folder / POOLS_BEFORE, (r.before for r in changed))
            save_pools(folder / POOLS_AFTER, (r.after for r in changed if r.after is not None))
            timings["refresh_s"] = time.perf_counter() - t
    except BaseException:
        registry.remove(name)
        raise
    status: Status = "promoted" if verdict.promote else "rejected"
    new_pools = [r.after for r in refreshed if r.after is not None]
    registry.record(
        name,
        {
            "version": name,
            "model_version": candidate.version,
            "parent": parent,
            PARENT_MODEL_VERSION: serving.version,
            "status": status,
            "data": {"folder": "data", **examples, "stats": data.stats, "pooling": pooled},
            "trained_from": str(train_from) if train_from != parent_path else parent,
            "training": {
                "method": trained.method,
                "steps": trained.steps,
                "final_loss": trained.final_loss,
                "device": trained.device,
                "dtype": trained.dtype,
                "seconds": round(trained.seconds, 3),
            },
            "metrics": verdict.candidate.to_dict(),
            "gate": verdict.to_dict(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "refresh": [r.to_dict() for r in refreshed],
        },
    )
    if verdict.promote:
        registry.promote(name)
        if sink is not None:
            metrics = {f"candidate_{k}": v for k, v in verdict.candidate.to_dict().items()}
            announce(sink, models_topic, candidate.version, folder, metrics)
            publish_pools(sink, variants_topic, new_pools)
    else:
        registry.discard(name)
    log.info("fine-tune round %s: %s", name, verdict.reason)
    record_round(status)
    return RoundResult(
        status,
        verdict.reason,
        name,
        parent,
        examples,
        verdict.to_dict(),
        timings,
        data.stats,
        new_pools,
        [r.to_dict() for r in refreshed],
    )

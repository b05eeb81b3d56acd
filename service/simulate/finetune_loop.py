"""Fine-tune rounds inside the simulator (CONTRACT.md §6: ``bandit_finetune`` and
``finetune_rounds``). Every ``finetune_every`` decisions the bandit's own log so far (its
decisions with their propensities, and the shoppers' clicks) goes through the same round the
service runs (``service.finetune.rounds``: IPS estimates → KTO rows → a LoRA adapter → the
gate → pool refresh on promotion); the refreshed pools replace the world's, and the bandit goes
on over them.

A control beside it refreshes pools by the same retire/fill rules but writes the new copy with
the *untrained* generator, so the lift that training brings is told apart from the lift of
refreshing pools at all. Each round reports the pools' true CTR before and after: the expected
CTR of the best variant per segment (what a perfect bandit earns on the pool) and of the
average variant (what a uniform choice earns), over the segment mix and the products."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from generator.guardrails import GuardrailConfig
from generator.model import CopyGenerator, read_format
from service.finetune.refresh import RefreshConfig, refresh_pools
from service.finetune.registry import Registry
from service.finetune.rounds import RoundConfig, run_round
from service.finetune.training_data import NotEnoughEvidence, build_training_data
from service.replay.replay_log import from_events
from service.simulate.scenario import Scenario
from service.simulate.world import World
from streams.schemas import Decision, Feedback, Product, VariantPool


@dataclass(frozen=True)
class FinetuneOptions:
    #: the generator the pools were written with (the rounds' first parent)
    base_model: Path
    #: where the rounds' registry, data and candidates go
    work_dir: Path
    #: the date refreshed copy is written for (the scenario's ``copy_date``)
    today: date
    #: False: the control, which refreshes from the untrained generator
    train: bool = True
    round: RoundConfig = field(default_factory=RoundConfig)
    device: str | None = "cpu"


def pool_true_ctr(world: World, weights: Sequence[float]) -> dict[str, float]:
    """The world's pools as a perfect bandit (``best``) and a uniform choice (``mean``) would
    earn on them: the segment mix's expected CTR, averaged over products."""
    w = np.asarray(weights, dtype=np.float64)
    prob = world.prob  # (segments, products, variants), NaN past a pool's end
    best = np.einsum("s,sj->j", w, np.nanmax(prob, axis=2))
    mean = np.einsum("s,sj->j", w, np.nanmean(prob, axis=2))
    return {"best": round(float(best.mean()), 6), "mean": round(float(mean.mean()), 6)}


def _log(decisions: Sequence[Decision], clicks: NDArray[np.bool_]) -> Any:
    feedback: list[Feedback] = []
    for d, clicked in zip(decisions, clicks, strict=True):
        feedback.append(
            Feedback(feedback_id=f"i-{d.event_id}", event_id=d.event_id, ts=d.ts, kind="impression")
        )
        if clicked:
            feedback.append(
                Feedback(feedback_id=f"c-{d.event_id}", event_id=d.event_id, ts=d.ts, kind="click")
            )
    return from_events(decisions, feedback)


class SimulatedRounds:
    """The ``between`` hook of ``policies.run_bandit_inprocess``: one fine-tune (or control
    refresh) round per call; :attr:`rounds` records each for ``summary.json``."""

    def __init__(
        self, scenario: Scenario, products: Sequence[Product], options: FinetuneOptions
    ) -> None:
        self.scenario = scenario
        self.products = list(products)
        self.catalog = {p.product_id: p for p in products}
        self.options = options
        rules = GuardrailConfig(today=options.today)
        refresh = replace(options.round.refresh or RefreshConfig(), guardrails=rules)
        self.config = replace(options.round, refresh=refresh, device=options.device)
        kind = "trained" if options.train else "control"
        self.registry = Registry(options.work_dir / kind / "models" / "generator")
        self.rounds: list[dict[str, Any]] = []
        self._models: dict[Path, CopyGenerator] = {}

    def _model(self, folder: Path) -> CopyGenerator:
        if folder not in self._models:
            self._models[folder] = CopyGenerator.from_path(folder, device=self.options.device)
        return self._models[folder]

    def __call__(
        self, t: int, world: World, decisions: Sequence[Decision], clicks: NDArray[np.bool_]
    ) -> World | None:
        began = time.perf_counter()
        log = _log(decisions, clicks)
        pools = list(world.pools)
        before = pool_true_ctr(world, self.scenario.weights)
        entry: dict[str, Any] = {"round": len(self.rounds) + 1, "at_decision": t}
        new_pools: list[VariantPool]
        if self.options.train:
            result = run_round(
                log, pools, self.products, self.registry, self.options.base_model, self.config
            )
            entry |= {
                "status": result.status,
                "promoted": result.promoted,
                "reason": result.reason,
                "examples": result.examples,
                "guardrail_pass_rate": _pass_rate(result.verdict),
            }
            new_pools = result.pools
            if not result.promoted:
                # the loop still retires losers: refilled by the generator that serves now
                serving = self.registry.model_path(self.options.base_model)
                new_pools, _ = self._refresh(log, pools, entry, self._model(serving))
        else:
            new_pools, more = self._refresh(log, pools, entry, self._model(self.options.base_model))
            entry |= more
        after_world = world
        if new_pools:
            by_id = {p.product_id: p for p in new_pools}
            merged = [by_id.get(p.product_id, p) for p in pools]
            after_world = World.build(self.scenario, self.products, merged)
        after = pool_true_ctr(after_world, self.scenario.weights)
        entry |= {
            "pool_true_ctr_before": before["best"],
            "pool_true_ctr_after": after["best"],
            "pool_mean_ctr_before": before["mean"],
            "pool_mean_ctr_after": after["mean"],
            "pools_refreshed": len(new_pools),
            "seconds": round(time.perf_counter() - began, 2),
        }
        self.rounds.append(entry)
        return after_world if new_pools else None

    def _refresh(
        self, log: Any, pools: list[VariantPool], entry: dict[str, Any], model: CopyGenerator
    ) -> tuple[list[VariantPool], dict[str, Any]]:
        """Retire losers and refill from ``model`` by the round's own estimates (no training)."""
        data = build_training_data(
            log,
            pools,
            self.products,
            prompt_format=read_format(self.options.base_model),
            config=self.config.data,
        )
        if isinstance(data, NotEnoughEvidence):
            return [], {"status": "skipped", "promoted": False, "reason": data.reason}
        refreshed = refresh_pools(
            pools, data.values, self.catalog, data.products, model, self.config.refresh
        )
        new = [r.after for r in refreshed if r.after is not None]
        reason = "control: the same refresh from the untrained generator"
        return new, {"status": "refreshed", "promoted": False, "reason": reason}


def _pass_rate(verdict: dict[str, Any] | None) -> float | None:
    if not verdict:
        return None
    candidate = verdict.get("candidate") or {}
    rate = candidate.get("pass_rate")
    return None if rate is None else float(rate)

"""The promotion gate: a candidate generator replaces the current one only if, on the products it
was trained for, it writes copy that passes the guardrails as often, pools as diverse, and an
expected reward higher by a margin.

Expected reward comes from a reward model fitted on the same logs: a ridge regression of the
reward on the shown variant's traits, crossed with the shopper's segment, so that it says what
each segment answers to. A pool is worth, for a segment, its best variant's predicted reward
(what a learning bandit converges to showing), weighted by how often each segment was seen."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from generator.guardrails import NEAR_DUPLICATE_THRESHOLD, Checker, similarity
from generator.guardrails.pool import shingles
from generator.sampling import SamplingConfig, plan_candidates, sample_candidates, select
from generator.slots import slot_values
from service.finetune.training_data import segment_of
from service.replay.replay_eval import join
from service.replay.replay_log import ReplayLog
from streams.schemas import TRAITS, Channel, Product

if TYPE_CHECKING:
    from generator.model import CopyGenerator

_TRAIT_INDEX = {t: i for i, t in enumerate(TRAITS)}


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.01  # relative lift of expected reward the candidate must show
    tolerance: float = 0.02  # how much worse pass rate and diversity may be (sampling noise)
    pool_size: int = 8
    oversample: float = 3.0
    max_products: int = 6  # products the gate writes pools for (the most evidenced first)
    seed: int = 0
    ridge: float = 1.0

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"`margin` must be >= 0, got {self.margin}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"`tolerance` must be in [0, 1), got {self.tolerance}")
        for name in ("pool_size", "max_products"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.oversample < 1:
            raise ValueError(f"`oversample` must be >= 1, got {self.oversample}")


# -- the reward model --------------------------------------------------------------------------
@dataclass(frozen=True)
class TraitRewards:
    """Predicted reward of a text's traits per segment: ``bias + trait + segment × trait``."""

    segments: dict[str, float]  # segment -> share of the joined decisions
    weights: NDArray[np.float64]
    index: dict[str, int]

    def predict(self, segment: str, traits: Sequence[str]) -> float:
        cols = [0, *(self.index[f"t={t}"] for t in traits if f"t={t}" in self.index)]
        cols += [self.index[k] for t in traits if (k := f"{segment}&t={t}") in self.index]
        return float(self.weights[cols].sum())

    def pool_value(self, pools_traits: Sequence[Sequence[str]]) -> float:
        """The segment-weighted reward of each segment's best variant (0 for an empty pool)."""
        if not pools_traits:
            return 0.0
        return sum(
            share * max(self.predict(seg, ts) for ts in pools_traits)
            for seg, share in self.segments.items()
        )

    @classmethod
    def fit(cls, log: ReplayLog, *, ridge: float = 1.0, reward: Any = None) -> TraitRewards:
        joined = join(log) if reward is None else join(log, reward)
        decisions = list(log.decisions.full(joined.rows.tolist()))
        index: dict[str, int] = {"bias": 0}
        for t in TRAITS:
            index[f"t={t}"] = len(index)
        rows: list[list[int]] = []
        counts: dict[str, int] = {}
        for d in decisions:
            seg = segment_of(d.context)
            counts[seg] = counts.get(seg, 0) + 1
            traits = d.action_features[d.action].traits
            cols = [0, *(index[f"t={t}"] for t in traits if t in _TRAIT_INDEX)]
            for t in traits:
                if t in _TRAIT_INDEX:
                    cols.append(index.setdefault(f"{seg}&t={t}", len(index)))
            rows.append(cols)
        x = np.zeros((len(rows), len(index)))
        for i, cols in enumerate(rows):
            x[i, cols] = 1.0
        penalty = np.full(len(index), ridge)
        penalty[0] = 0.0  # the mean is not shrunk
        y = joined.reward
        w: NDArray[np.float64] = np.zeros(1)
        if rows:
            w = np.asarray(np.linalg.solve(x.T @ x + np.diag(penalty + 1e-9), x.T @ y), np.float64)
        total = max(1, len(decisions))
        return cls({s: c / total for s, c in counts.items()}, w, index)


# -- pool metrics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolMetrics:
    """What one model writes: averaged over the gate's products."""

    pass_rate: float
    distinct_ngrams: float  # distinct character n-grams / all, over the passing candidates
    near_duplicate_share: float  # pairs of passing candidates at or over the pool threshold
    expected_reward: float
    pool_size: float
    products: int

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in asdict(self).items()}


def diversity(texts: Sequence[str], language: str) -> tuple[float, float]:
    """``(distinct n-gram ratio, near-duplicate pair share)`` of ``texts`` (bigrams for zh,
    trigrams for en, as the near-duplicate rule)."""
    size = 2 if language == "zh" else 3
    grams = [shingles(t, size) for t in texts]
    total = sum(len(g) for g in grams)
    distinct = len(frozenset().union(*grams)) / total if total else 0.0
    pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :]]
    near = sum(similarity(a, b, language=language) >= NEAR_DUPLICATE_THRESHOLD for a, b in pairs)
    return distinct, near / len(pairs) if pairs else 0.0


def measure(
    gen: CopyGenerator,
    products: Sequence[tuple[Product, Channel]],
    rewards: TraitRewards,
    config: GateConfig,
) -> PoolMetrics:
    """Sample ``pool_size × oversample`` candidates per product with the same plans and seeds for
    every model, check them, and select a pool as the generator does."""
    sampling = SamplingConfig(oversample=config.oversample, max_rounds=1)
    rows = []
    for i, (product, channel) in enumerate(products):
        rng = random.Random(config.seed * 1_000_003 + i)  # noqa: S311 (seeded data, not secrets)
        want = math.ceil(config.pool_size * config.oversample)
        # asked as the pool refresh asks it (``generate``): with its share of free prompts
        share = getattr(gen, "free_prompt_share", 0.0)
        plans = plan_candidates(product, channel, product.language, want, rng, share)
        checker = Checker(product, channel, language=product.language)
        values = slot_values(product, product.language)
        cands = sample_candidates(gen, product, plans, checker, values, config.seed + i, sampling)
        passing = [c.text for c in cands if c.passed and c.text]
        distinct, near = diversity(passing, product.language)
        pool = select(cands, config.pool_size, product.language)
        value = rewards.pool_value([c.traits for c in pool])
        rows.append((len(passing) / len(cands), distinct, near, value, len(pool)))
    mean = [float(x) for x in (np.asarray(rows).mean(axis=0) if rows else np.zeros(5))]
    return PoolMetrics(mean[0], mean[1], mean[2], mean[3], mean[4], products=len(rows))


# -- the verdict -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    candidate: PoolMetrics
    current: PoolMetrics
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "checks": self.checks,
            "candidate": self.candidate.to_dict(),
            "current": self.current.to_dict(),
        }


def decide(candidate: PoolMetrics, current: PoolMetrics, config: GateConfig) -> Verdict:
    """Promote only if no check fails; the reason names every failed check with its figures."""
    tol = config.tolerance
    need = current.expected_reward + config.margin * abs(current.expected_reward)
    checks = {
        "pass_rate": candidate.pass_rate >= current.pass_rate - tol,
        "distinct_ngrams": candidate.distinct_ngrams >= current.distinct_ngrams - tol,
        "near_duplicate_share": candidate.near_duplicate_share
        <= current.near_duplicate_share + tol,
        "expected_reward": candidate.expected_reward > need,
    }
    figures = {
        "pass_rate": f"{candidate.pass_rate:.3f} vs {current.pass_rate:.3f}",
        "distinct_ngrams": f"{candidate.distinct_ngrams:.3f} vs {current.distinct_ngrams:.3f}",
        "near_duplicate_share": (
            f"{candidate.near_duplicate_share:.3f} vs {current.near_duplicate_share:.3f}"
        ),
        "expected_reward": (
            f"{candidate.expected_reward:.5f} vs {current.expected_reward:.5f} "
            f"(needs > {need:.5f}, margin {config.margin:.0%})"
        ),
    }
    failed = [f"{name} {figures[name]}" for name, ok in checks.items() if not ok]
    if failed:
        return Verdict(False, "not promoted: " + "; ".join(failed), candidate, current, checks)
    reason = "promoted: " + "; ".join(f"{k} {v}" for k, v in figures.items())
    return Verdict(True, reason, candidate, current, checks)


def gate(
    candidate: CopyGenerator,
    current: CopyGenerator,
    products: Sequence[tuple[Product, Channel]],
    rewards: TraitRewards,
    config: GateConfig | None = None,
) -> Verdict:
    config = config or GateConfig()
    chosen = list(products)[: config.max_products]
    return decide(
        measure(candidate, chosen, rewards, config),
        measure(current, chosen, rewards, config),
        config,
    )


def product_channels(
    catalog: Mapping[str, Product], channels: Mapping[str, Channel]
) -> list[tuple[Product, Channel]]:
    return [(catalog[pid], ch) for pid, ch in channels.items() if pid in catalog]

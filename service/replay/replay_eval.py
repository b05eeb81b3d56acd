"""Offline replay: logged decisions ⨝ feedback → rewards → the value of the logging policy and of
candidate policies by IPS, SNIPS and DR (``bandit.ope``), with intervals and diagnostics.

The join follows the learner's rules (``bandit.join.RewardJoiner``, ``bandit.reward``): the first
decision of an event id counts, a repeated feedback id counts once, feedback after its event's
reward window does not count, a decision without an impression was never seen and is left out,
and the reward of what remains is :meth:`RewardConfig.reward` of the kinds seen. Replay holds the
whole log, so it needs no watermark: feedback counts whatever order it was read in. The join is
done on arrays: at ~10 µs a decision the joiner object would take most of the time budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bandit import ope
from bandit.errors import BanditError
from bandit.policy import Policy
from bandit.reward import DEFAULT_REWARD, RewardConfig
from service.replay.replay_log import KIND_BITS, DecisionLog, ReplayError, ReplayLog
from streams.serde import no_gc

PolicyKind = Literal["logging", "uniform", "greedy", "vw"]
#: pseudo-count pulling each variant's mean reward toward the fold's mean in the DR model
_SHRINK = 1.0


@dataclass(frozen=True)
class PolicySpec:
    """A candidate policy: ``logging``, ``uniform``, ``greedy:PATH`` (the saved model's best
    action) or ``vw:PATH`` (the saved model's exploration distribution)."""

    kind: PolicyKind
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    @classmethod
    def parse(cls, spec: str) -> PolicySpec:
        kind, _, rest = spec.strip().partition(":")
        if kind in ("logging", "uniform") and not rest:
            return cls(kind)  # type: ignore[arg-type]
        if kind in ("greedy", "vw") and rest:
            path = Path(rest)
            if not path.is_file():
                raise ReplayError(f"saved model {path} of `{spec}` is not a file", "--policy")
            return cls(kind, path)  # type: ignore[arg-type]
        raise ReplayError(
            f"`{spec}` is not a policy: use logging, uniform, greedy:PATH or vw:PATH", "--policy"
        )


@dataclass(frozen=True)
class JoinedLog:
    """The decisions that were seen (row indices into the log) and their rewards."""

    rows: NDArray[np.intp]
    reward: NDArray[np.float64]
    stats: dict[str, int]


def reward_table(config: RewardConfig) -> NDArray[np.float64]:
    """The reward of every feedback-kind mask (NaN: no impression), from the learner's own
    reward function so the two can never disagree."""
    table = np.empty(1 << len(KIND_BITS))
    for mask in range(table.shape[0]):
        kinds = [k for k, bit in KIND_BITS.items() if mask & bit]
        value = config.reward(kinds)
        table[mask] = np.nan if value is None else value
    return table


def join(log: ReplayLog, config: RewardConfig = DEFAULT_REWARD) -> JoinedLog:
    d, f = log.decisions, log.feedback
    n, m = len(d), len(f)
    # reversed so that the first occurrence of an id is the one the dict keeps
    first = dict(zip(reversed(d.event_ids), range(n - 1, -1, -1), strict=True))
    idx = (
        np.fromiter(map(first.get, f.event_ids, [-1] * m), np.intp, m)
        if m
        else np.zeros(0, np.intp)
    )
    known = idx >= 0
    late = np.zeros(m, dtype=bool)
    late[known] = f.ts[known] > d.ts[idx[known]] + config.window_s
    candidate = np.flatnonzero(known & ~late)
    keys = [(f.event_ids[i], f.feedback_ids[i]) for i in candidate.tolist()]
    first_fb = dict(zip(reversed(keys), reversed(candidate.tolist()), strict=True))
    counted = np.fromiter(first_fb.values(), np.intp, len(first_fb))
    mask = np.zeros(n, dtype=np.uint8)
    np.bitwise_or.at(mask, idx[counted], f.kind_bits[counted])
    value = reward_table(config)[mask]
    is_first = np.zeros(n, dtype=bool)
    is_first[np.fromiter(first.values(), np.intp, len(first))] = True
    seen = is_first & ~np.isnan(value)
    rows = np.flatnonzero(seen)
    stats = {
        "decisions": len(first),
        "duplicate_decisions": n - len(first),
        "feedback": m,
        "duplicate_feedback": len(candidate) - len(counted),
        "late_feedback": int(late.sum()),
        "unknown_feedback": int((~known).sum()),
        "joined": len(rows),
        "unseen": len(first) - len(rows),
    }
    return JoinedLog(rows, value[rows], stats)


# -- candidate policies ------------------------------------------------------------------------
def _load(spec: PolicySpec) -> Policy:
    if spec.path is None:
        raise ReplayError(f"`{spec.name}` names no saved model", "--policy")
    try:
        return Policy.from_bytes(spec.path.read_bytes())
    except (OSError, BanditError) as exc:
        raise ReplayError(f"cannot load `{spec.name}`: {exc}", "--policy") from exc


def target_dist(
    spec: PolicySpec,
    log: DecisionLog,
    rows: NDArray[np.intp],
    step: Callable[[int], None] | None = None,
) -> NDArray[np.float64]:
    """The candidate's action distribution on each row, ``(len(rows), widest pool)``."""
    if spec.kind == "logging":
        out: NDArray[np.float64] = log.action_dist[rows]
        return out
    n_actions = log.n_actions[rows]
    width = log.action_dist.shape[1]
    if spec.kind == "uniform":
        valid = np.arange(width) < n_actions[:, None]
        return valid / n_actions[:, None]
    policy = _load(spec)
    out = np.zeros((rows.shape[0], width))
    try:
        for j, dec in enumerate(log.full(rows.tolist())):
            pmf = policy.pmf(dec.context, list(zip(dec.actions, dec.action_features, strict=True)))
            if spec.kind == "greedy":
                out[j, int(np.argmax(pmf))] = 1.0  # ties go to the first
            else:
                out[j, : len(pmf)] = pmf
            if step is not None and j % 1000 == 999:
                step(1000)
        if step is not None:
            step(rows.shape[0] % 1000)
    except BanditError as exc:
        raise ReplayError(f"`{spec.name}` cannot score the log: {exc}", "--policy") from exc
    finally:
        policy.close()
    return out


def mean_reward_model(
    codes: NDArray[np.int32],
    action: NDArray[np.intp],
    reward: NDArray[np.float64],
    *,
    folds: int = 2,
    seed: int = 0,
) -> NDArray[np.float64]:
    """DR's ``estimated_rewards_by_reg_model``: each variant's mean reward, shrunk toward the
    mean, cross-fitted over ``folds`` so no round's own reward enters its own estimate (which
    would bias DR toward the logged action). ``codes`` are variant codes per action (-1: pad)."""
    n = codes.shape[0]
    n_codes = int(codes.max()) + 1
    chosen = codes[np.arange(n), action]
    fold = np.random.default_rng(seed).integers(0, folds, size=n)
    q = np.zeros(codes.shape)
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any():
            continue
        prior = float(reward[train].mean()) if train.any() else float(reward.mean())
        sums = np.bincount(chosen[train], weights=reward[train], minlength=n_codes)
        counts = np.bincount(chosen[train], minlength=n_codes)
        table = np.append((sums + _SHRINK * prior) / (counts + _SHRINK), 0.0)  # [-1] → pad 0
        q[test] = table[codes[test]]
    return q


# -- the whole replay --------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayConfig:
    policies: tuple[PolicySpec, ...] = (PolicySpec("logging"), PolicySpec("uniform"))
    reward: RewardConfig = DEFAULT_REWARD
    alpha: float = 0.05
    interval: ope.IntervalMethod = "normal"
    n_bootstrap_samples: int = 2000
    seed: int = 0
    tiny_pscore: float = 1e-3

    def __post_init__(self) -> None:
        if not self.policies:
            raise ReplayError("at least one policy is needed", "--policy")
        if not 0.0 < self.alpha < 1.0:
            raise ReplayError(f"must be in (0, 1), got {self.alpha}", "--alpha")
        if self.interval not in ("normal", "bootstrap"):
            raise ReplayError(f"must be normal or bootstrap, got {self.interval!r}", "--interval")


@dataclass
class ReplayResult:
    origin: dict[str, Any]
    join: dict[str, int]
    policies: dict[str, dict[str, Any]]
    config: ReplayConfig
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        r = self.config.reward
        return {
            "log": self.origin,
            "join": self.join,
            "reward": {
                "click": r.click,
                "add_to_cart": r.add_to_cart,
                "purchase": r.purchase,
                "default": r.default,
                "window_s": r.window_s,
            },
            "alpha": self.config.alpha,
            "interval": self.config.interval,
            "reward_model": "per-variant mean reward, shrunk to the mean, 2-fold cross-fitted",
            "policies": self.policies,
            "warnings": self.warnings,
            "events": self.events,
            "elapsed_s": round(self.elapsed_s, 4),
            "events_per_s": round(self.events / self.elapsed_s) if self.elapsed_s > 0 else None,
        }


def evaluate_replay(
    log: ReplayLog,
    config: ReplayConfig,
    *,
    started: float | None = None,
    step: Callable[[str, int], None] | None = None,
) -> ReplayResult:
    """Join ``log`` and estimate every policy of ``config``; ``step(policy, rows_done)`` reports
    progress of the slow model-scored policies."""
    t0 = time.perf_counter() if started is None else started
    with no_gc():
        joined = join(log, config.reward)
    warnings = [f"skipped undecodable message: {why}" for why in log.skipped[:20]]
    if joined.rows.shape[0] == 0:
        raise ReplayError(
            f"no decision was seen: none of {joined.stats['decisions']} decisions has an "
            "impression in the feedback logs, so there is nothing to evaluate"
        )
    d = log.decisions
    rows = joined.rows
    action, pscore, reward = d.action[rows], d.pscore[rows], joined.reward
    q = mean_reward_model(d.action_codes[rows], action, reward, seed=config.seed)
    if d.missing_pscore:
        warnings.append(
            f"{d.missing_pscore} decisions had no `pscore`; it was taken from `action_dist[action]`"
        )
    results: dict[str, dict[str, Any]] = {}
    for spec in config.policies:
        callback = None if step is None else (lambda k, s=spec.name: step(s, k))
        dist = target_dist(spec, d, rows, callback)
        estimates = ope.estimate(
            reward,
            action,
            pscore,
            dist,
            q,
            alpha=config.alpha,
            interval=config.interval,
            n_bootstrap_samples=config.n_bootstrap_samples,
            seed=config.seed,
        )
        weights = ope.importance_weights(action, pscore, dist)
        diag = ope.diagnose(pscore, weights, tiny_pscore=config.tiny_pscore)
        entry: dict[str, Any] = {"spec": spec.name}
        entry.update({name: est.to_dict() for name, est in estimates.items()})
        entry["dm"] = _finite(ope.dm(dist, q))
        entry["diagnostics"] = diag.to_dict()
        results[spec.name] = entry
        warnings.extend(f"{spec.name}: {w}" for w in diag.warnings)
    return ReplayResult(
        origin=log.origin,
        join={**joined.stats, "missing_pscore": d.missing_pscore},
        policies=results,
        config=config,
        warnings=_unique(warnings),
        events=log.events,
        elapsed_s=time.perf_counter() - t0,
    )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))

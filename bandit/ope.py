"""Off-policy estimators on logged bandit feedback, as pure numpy functions.

The vocabulary is Open Bandit Pipeline's (``obp/ope/estimators.py``): ``reward``, ``action``,
``pscore`` (the logging policy's probability of the logged action), ``action_dist`` (the
evaluation policy's probabilities, shape ``(n_rounds, n_actions, len_list)``; a 2-D
``(n_rounds, n_actions)`` array is read as ``len_list == 1``), ``position`` and
``estimated_rewards_by_reg_model`` (same shape as ``action_dist``) for DR. Inputs are checked
once at the entry and a bad one raises ``ValueError`` naming the parameter, as obp does.

Intervals are the normal approximation by default (one pass, fine at the sample sizes a log
holds) or a seeded nonparametric bootstrap; for IPS and DR the bootstrap draws the same
resamples as obp's ``estimate_confidence_interval_by_bootstrap`` for the same seed, so the two can
be compared number for number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bandit.ope_stats import (
    Diagnostics,
    FloatArray,
    IntArray,
    Interval,
    IntervalMethod,
    bootstrap_interval,
    check_alpha,
    diagnose,
    dot,
    effective_sample_size,
    float_array,
    int_array,
    json_float,
    normal_interval,
)

__all__ = [
    "ESTIMATORS",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "Interval",
    "IntervalMethod",
    "bootstrap_interval",
    "check_inputs",
    "diagnose",
    "dm",
    "dr",
    "effective_sample_size",
    "estimate",
    "importance_weights",
    "ips",
    "normal_interval",
    "snips",
]

Estimator = Literal["ips", "snips", "dr"]

ESTIMATORS: tuple[Estimator, ...] = ("ips", "snips", "dr")
#: how far each row of ``action_dist`` may be from summing to 1 (float32 logs round)
SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class LoggedData:
    """Checked arrays of one log: what every estimator reads. Build it with :func:`check_inputs`."""

    reward: FloatArray
    action: IntArray
    pscore: FloatArray
    action_dist: NDArray[np.float64]  # (n_rounds, n_actions, len_list)
    position: IntArray | None
    estimated_rewards_by_reg_model: NDArray[np.float64] | None

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])


def check_inputs(
    reward: Any,
    action: Any,
    pscore: Any,
    action_dist: Any,
    estimated_rewards_by_reg_model: Any = None,
    position: Any = None,
) -> LoggedData:
    """Validate the arrays once (shapes, ranges, probabilities) and return them as numpy."""
    r = float_array("reward", reward, 1)
    n = r.shape[0]
    if n == 0:
        raise ValueError("`reward` must hold at least one round, got 0")
    a = int_array("action", action)
    p = float_array("pscore", pscore, 1)
    dist = float_array("action_dist", action_dist, (2, 3))
    if dist.ndim == 2:
        dist = dist[:, :, np.newaxis]
    for name, arr in (("action", a), ("pscore", p)):
        if arr.shape[0] != n:
            raise ValueError(f"`{name}` must have {n} rounds like `reward`, got {arr.shape[0]}")
    if dist.shape[0] != n:
        raise ValueError(f"`action_dist` must have {n} rounds like `reward`, got {dist.shape[0]}")
    n_actions, len_list = dist.shape[1], dist.shape[2]
    if n_actions == 0 or len_list == 0:
        raise ValueError(f"`action_dist` must have >= 1 action and position, got {dist.shape}")
    if a.min() < 0 or a.max() >= n_actions:
        raise ValueError(f"`action` must be in [0, {n_actions}), got [{a.min()}, {a.max()}]")
    # `not (x > 0)` rather than `x <= 0` so that NaN fails too
    if not (p.min() > 0.0 and p.max() <= 1.0):
        raise ValueError(f"`pscore` must be in (0, 1], got [{p.min()}, {p.max()}]")
    if not (dist.min() >= 0.0):
        raise ValueError("`action_dist` must hold probabilities >= 0")
    sums = _row_sums(dist)
    low, high = float(sums.min()), float(sums.max())
    if not (low >= 1.0 - SUM_TOLERANCE and high <= 1.0 + SUM_TOLERANCE):
        raise ValueError(
            "`action_dist` must sum to 1 over actions for every round and position, "
            f"got sums in [{low:.6g}, {high:.6g}]"
        )
    pos: IntArray | None = None
    if position is not None:
        pos = int_array("position", position)
        if pos.shape[0] != n:
            raise ValueError(f"`position` must have {n} rounds like `reward`, got {pos.shape[0]}")
        if pos.min() < 0 or pos.max() >= len_list:
            raise ValueError(
                f"`position` must be in [0, {len_list}), got [{pos.min()}, {pos.max()}]"
            )
    elif len_list > 1:
        raise ValueError(f"`position` is required when `action_dist` has len_list {len_list} > 1")
    q: NDArray[np.float64] | None = None
    if estimated_rewards_by_reg_model is not None:
        q = float_array("estimated_rewards_by_reg_model", estimated_rewards_by_reg_model, (2, 3))
        if q.ndim == 2:
            q = q[:, :, np.newaxis]
        if q.shape != dist.shape:
            raise ValueError(
                f"`estimated_rewards_by_reg_model` must have the shape of `action_dist` "
                f"{dist.shape}, got {q.shape}"
            )
    return LoggedData(r, a, p, dist, pos, q)


#: rows per einsum call: a block that stays in cache
_BLOCK_ROWS = 1 << 16


def _blocked_einsum(spec: str, *arrays: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.einsum(spec, *arrays)`` over blocks of rows, for reductions that keep the first axis.

    numpy's ``sum`` over a middle axis is several times slower, and BLAS (``@``, ``np.dot``)
    wakes its thread pool, which on a small shared machine costs milliseconds per call; blocked
    single-threaded einsum is as fast as either at a million rows and steady at any size."""
    n = arrays[0].shape[0]
    first = np.einsum(spec, *(a[:_BLOCK_ROWS] for a in arrays))
    if n <= _BLOCK_ROWS:
        return first
    out = np.empty((n, *first.shape[1:]))
    out[:_BLOCK_ROWS] = first
    for start in range(_BLOCK_ROWS, n, _BLOCK_ROWS):
        stop = start + _BLOCK_ROWS
        np.einsum(spec, *(a[start:stop] for a in arrays), out=out[start:stop])
    return out


def _row_sums(dist: NDArray[np.float64]) -> NDArray[np.float64]:
    """``dist.sum(axis=1)``, shape ``(n_rounds, len_list)``."""
    n, n_actions, len_list = dist.shape
    if len_list == 1:
        return _blocked_einsum("ij->i", dist.reshape(n, n_actions))
    return _blocked_einsum("ijk->ik", dist)


def _ensure_finite(value: float, data: LoggedData) -> float:
    """NaN or inf in ``reward`` or the reward model shows up in the result; finding the culprit
    only then keeps the happy path to one pass over each array."""
    if math.isfinite(value):
        return value
    if not np.isfinite(data.reward).all():
        raise ValueError("`reward` must be finite")
    q = data.estimated_rewards_by_reg_model
    if q is not None and not np.isfinite(q).all():
        raise ValueError("`estimated_rewards_by_reg_model` must be finite")
    raise ValueError("the estimate is not finite (importance weights overflow)")


def _rows(data: LoggedData) -> IntArray:
    return np.arange(data.n_rounds)


def _at_position(arr: NDArray[np.float64], data: LoggedData) -> FloatArray:
    """``arr[:, :, position]`` as ``(n_rounds, n_actions)``; a view when ``len_list`` is 1."""
    if data.position is None:
        return arr[:, :, 0]
    out: FloatArray = arr[_rows(data), :, data.position]
    return out


def _chosen(arr: NDArray[np.float64], data: LoggedData) -> FloatArray:
    """``arr[t, action_t, position_t]`` for every round ``t``. On a C-contiguous array a flat
    ``take`` does what the three-array fancy index does at a fraction of the cost."""
    n, n_actions, len_list = arr.shape
    if not arr.flags.c_contiguous:
        pos = np.zeros(n, dtype=np.intp) if data.position is None else data.position
        out: FloatArray = arr[_rows(data), data.action, pos]
        return out
    stride = n_actions * len_list
    flat = np.arange(0, n * stride, stride, dtype=np.intp)
    flat += data.action * len_list if len_list > 1 else data.action
    if data.position is not None:
        flat += data.position
    out = arr.reshape(-1).take(flat)
    return out


def _weights(data: LoggedData) -> FloatArray:
    return _chosen(data.action_dist, data) / data.pscore


# -- per-round terms (their mean is the estimate) ---------------------------------------------
def importance_weights(
    action: Any, pscore: Any, action_dist: Any, position: Any = None
) -> FloatArray:
    """``w_t = action_dist[t, action_t, position_t] / pscore_t``."""
    p = float_array("pscore", pscore, 1)
    data = check_inputs(np.zeros(p.shape[0]), action, p, action_dist, position=position)
    return _weights(data)


def _ips_rounds(data: LoggedData, w: FloatArray) -> FloatArray:
    return data.reward * w


def _dr_rounds(data: LoggedData, w: FloatArray) -> FloatArray:
    q_model = data.estimated_rewards_by_reg_model
    if q_model is None:
        raise ValueError("`estimated_rewards_by_reg_model` is required for DR")
    q = _at_position(q_model, data)
    dist = _at_position(data.action_dist, data)
    baseline = _blocked_einsum("ij,ij->i", q, dist)
    q_factual = _chosen(q_model, data)
    with np.errstate(invalid="ignore", over="ignore"):  # _ensure_finite names the culprit
        return baseline + w * (data.reward - q_factual)


# -- point estimates --------------------------------------------------------------------------
def ips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None) -> float:
    """Inverse propensity scoring: mean of ``w_t r_t``."""
    data = check_inputs(reward, action, pscore, action_dist, position=position)
    return _ensure_finite(float(_ips_rounds(data, _weights(data)).mean()), data)


def snips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None) -> float:
    """Self-normalised IPS: ``sum(w r) / sum(w)`` (0 when no logged action has weight)."""
    data = check_inputs(reward, action, pscore, action_dist, position=position)
    return _snips_value(data, _weights(data))


def _snips_value(data: LoggedData, w: FloatArray) -> float:
    total = float(w.sum())
    if total == 0.0:
        return 0.0
    return _ensure_finite(dot(w, data.reward) / total, data)


def dm(action_dist: Any, estimated_rewards_by_reg_model: Any, position: Any = None) -> float:
    """Direct method: the reward model's value of the evaluation policy."""
    dist = float_array("action_dist", action_dist, (2, 3))
    n = dist.shape[0]
    data = check_inputs(
        np.zeros(n),
        np.zeros(n, dtype=np.intp),
        np.ones(n),
        dist,
        estimated_rewards_by_reg_model,
        position,
    )
    q = _at_position(data.estimated_rewards_by_reg_model, data)  # type: ignore[arg-type]
    value = float(_blocked_einsum("ij,ij->i", q, _at_position(data.action_dist, data)).mean())
    return _ensure_finite(value, data)


def dr(
    reward: Any,
    action: Any,
    pscore: Any,
    action_dist: Any,
    estimated_rewards_by_reg_model: Any,
    position: Any = None,
) -> float:
    """Doubly robust: DM baseline plus the importance-weighted residual of the logged action."""
    data = check_inputs(
        reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position
    )
    return _ensure_finite(float(_dr_rounds(data, _weights(data)).mean()), data)


# -- everything at once -----------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    estimator: Estimator
    value: float
    ci: Interval
    n_rounds: int
    ess: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "value": json_float(self.value),
            # "ci95" for alpha 0.05, as in the simulator's summary.json
            f"ci{round(100 * (1 - self.ci.alpha)):d}": [
                json_float(self.ci.low),
                json_float(self.ci.high),
            ],
            "alpha": self.ci.alpha,
            "interval": self.ci.method,
            "n_rounds": self.n_rounds,
            "ess": json_float(self.ess),
        }


def estimate(
    reward: Any,
    action: Any,
    pscore: Any,
    action_dist: Any,
    estimated_rewards_by_reg_model: Any = None,
    position: Any = None,
    *,
    estimators: Iterable[Estimator] = ESTIMATORS,
    alpha: float = 0.05,
    interval: IntervalMethod = "normal",
    n_bootstrap_samples: int = 10000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each of ``estimators`` with its interval, from one validation of the arrays. DR needs
    ``estimated_rewards_by_reg_model``; without it DR is skipped."""
    check_alpha(alpha)
    if interval not in ("normal", "bootstrap"):
        raise ValueError(f"`interval` must be 'normal' or 'bootstrap', got {interval!r}")
    chosen = list(estimators)
    for name in chosen:
        if name not in ESTIMATORS:
            raise ValueError(f"`estimators` must be among {ESTIMATORS}, got {name!r}")
    data = check_inputs(
        reward, action, pscore, action_dist, estimated_rewards_by_reg_model, position
    )
    w = _weights(data)
    ess = effective_sample_size(w)
    out: dict[str, Estimate] = {}
    for name in chosen:
        if name == "dr" and data.estimated_rewards_by_reg_model is None:
            continue
        value, ci = _with_interval(name, data, w, alpha, interval, n_bootstrap_samples, seed)
        out[name] = Estimate(name, value, ci, data.n_rounds, ess)
    return out


def _with_interval(
    name: Estimator,
    data: LoggedData,
    w: FloatArray,
    alpha: float,
    interval: IntervalMethod,
    n_bootstrap_samples: int,
    seed: int,
) -> tuple[float, Interval]:
    if name == "snips":
        value = _snips_value(data, w)
        if interval == "bootstrap":
            rw = data.reward * w
            ci = bootstrap_interval(
                rw, alpha, n_bootstrap_samples=n_bootstrap_samples, seed=seed, weights=w
            )
            return value, ci
        # delta method: the influence of round t on sum(w r)/sum(w)
        mean_w = float(w.mean())
        influence = w * (data.reward - value) / (mean_w if mean_w > 0 else 1.0)
        return value, _shift(normal_interval(influence, alpha), value)
    rounds = _ips_rounds(data, w) if name == "ips" else _dr_rounds(data, w)
    value = _ensure_finite(float(rounds.mean()), data)
    if interval == "bootstrap":
        ci = bootstrap_interval(rounds, alpha, n_bootstrap_samples=n_bootstrap_samples, seed=seed)
        return value, ci
    return value, normal_interval(rounds, alpha, center=value)


def _shift(ci: Interval, center: float) -> Interval:
    """An interval computed around a zero-mean influence sample, moved to ``center``."""
    half = (ci.high - ci.low) / 2.0
    return Interval(center - half, center + half, ci.alpha, ci.method)

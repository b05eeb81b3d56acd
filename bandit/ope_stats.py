"""The statistics around the off-policy estimates (``bandit.ope``): the effective sample size,
normal and bootstrap intervals, and diagnostics that say in words when an estimate cannot be
trusted; and the Wilson interval of a click rate, which the rankers' counts and the simulator's
summary share so that the two never disagree. Pure numpy; inputs are checked at the entry and a
bad one raises ``ValueError`` naming the parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
IntervalMethod = Literal["normal", "bootstrap"]
#: bootstrap resamples are drawn in blocks of about this many indices to bound memory
_BOOTSTRAP_BLOCK = 1 << 21


def float_array(name: str, value: Any, ndim: int | tuple[int, ...]) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be an array of numbers: {exc}") from None
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"`{name}` must be {want}, got shape {arr.shape}")
    return arr


def int_array(name: str, value: Any) -> IntArray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.intp, copy=False)


def dot(a: FloatArray, b: FloatArray) -> float:
    """``a @ b`` without BLAS's thread pool, which on a small shared machine costs milliseconds
    per call to wake."""
    return float(np.einsum("i,i->", a, b))


def json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def effective_sample_size(weights: Any) -> float:
    """Kish's ESS ``(sum w)^2 / sum w^2``: how many rounds the weighted estimate is worth."""
    w = float_array("weights", weights, 1)
    if not (w.size and w.min() >= 0 and np.isfinite(w).all()):
        raise ValueError("`weights` must be a non-empty array of finite values >= 0")
    sq = dot(w, w)
    return 0.0 if sq == 0.0 else float(w.sum()) ** 2 / sq


# -- intervals --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    alpha: float
    method: IntervalMethod


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha}")


def normal_interval(samples: Any, alpha: float = 0.05, *, center: float | None = None) -> Interval:
    """``center ± z * sd(samples) / sqrt(n)``; ``center`` defaults to the samples' mean.

    ``samples`` are per-round terms whose mean is the estimate (or, for SNIPS, its influence
    terms); with fewer than two rounds the bounds are NaN rather than a false zero width."""
    check_alpha(alpha)
    s = float_array("samples", samples, 1)
    mid = float(s.mean()) if center is None else center
    if s.shape[0] < 2:
        return Interval(math.nan, math.nan, alpha, "normal")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    half = z * float(s.std(ddof=1)) / math.sqrt(s.shape[0])
    return Interval(mid - half, mid + half, alpha, "normal")


def wilson_interval(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; ``(0, 1)`` with no trials, since
    nothing is known of a rate never tried (a zero-width interval would claim certainty).

    Wilson rather than the normal approximation: it stays inside [0, 1] and is sensible at the
    small click counts of a fresh variant or a low CTR, where the normal interval reaches
    below zero."""
    check_alpha(alpha)
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"`successes` must be in [0, trials], got {successes} of {trials}")
    if trials == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    samples: Any,
    alpha: float = 0.05,
    *,
    n_bootstrap_samples: int = 10000,
    seed: int = 0,
    weights: Any = None,
) -> Interval:
    """Percentile bootstrap of the mean of ``samples`` (or, with ``weights``, of the ratio
    ``sum(samples) / sum(weights)`` recomputed per resample, which is how SNIPS resamples).

    The legacy ``RandomState`` stream is used on purpose: its resamples are the ones obp's
    ``estimate_confidence_interval_by_bootstrap`` draws for the same ``seed``."""
    check_alpha(alpha)
    if n_bootstrap_samples < 1:
        raise ValueError(f"`n_bootstrap_samples` must be >= 1, got {n_bootstrap_samples}")
    s = float_array("samples", samples, 1)
    n = s.shape[0]
    if n == 0:
        raise ValueError("`samples` must not be empty")
    w = None if weights is None else float_array("weights", weights, 1)
    if w is not None and w.shape != s.shape:
        raise ValueError(f"`weights` must have the shape of `samples` {s.shape}, got {w.shape}")
    rng = np.random.RandomState(seed)
    means = np.empty(n_bootstrap_samples)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, n_bootstrap_samples, block):
        stop = min(start + block, n_bootstrap_samples)
        idx = rng.randint(0, n, size=(stop - start, n))
        if w is None:
            means[start:stop] = s[idx].mean(axis=1)
        else:
            den = w[idx].sum(axis=1)
            num = s[idx].sum(axis=1)
            means[start:stop] = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(float(low), float(high), alpha, "bootstrap")


# -- diagnostics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Diagnostics:
    n_rounds: int
    ess: float
    min_pscore: float
    n_tiny_pscore: int
    max_weight: float
    mean_weight: float
    n_missing_pscore: int = 0
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rounds": self.n_rounds,
            "ess": json_float(self.ess),
            "ess_ratio": json_float(self.ess / self.n_rounds) if self.n_rounds else None,
            "min_pscore": json_float(self.min_pscore),
            "n_tiny_pscore": self.n_tiny_pscore,
            "max_weight": json_float(self.max_weight),
            "mean_weight": json_float(self.mean_weight),
            "n_missing_pscore": self.n_missing_pscore,
            "warnings": list(self.warnings),
        }


def diagnose(
    pscore: Any,
    weights: Any,
    *,
    n_missing_pscore: int = 0,
    tiny_pscore: float = 1e-3,
    min_ess_ratio: float = 0.01,
) -> Diagnostics:
    """The numbers that say whether an estimate can be trusted, and warnings in words: tiny or
    missing propensities, a collapsed effective sample size, a mean weight far from 1 (for a
    correct log and a proper target policy ``E[w] = 1``, so a drift means wrong propensities)."""
    p = float_array("pscore", pscore, 1)
    w = float_array("weights", weights, 1)
    if p.shape != w.shape or p.size == 0:
        raise ValueError(
            f"`pscore` and `weights` must be non-empty and alike, got {p.shape}, {w.shape}"
        )
    if not 0.0 < tiny_pscore < 1.0:
        raise ValueError(f"`tiny_pscore` must be in (0, 1), got {tiny_pscore}")
    n = p.shape[0]
    ess = effective_sample_size(w)
    n_tiny = int((p < tiny_pscore).sum())
    mean_w = float(w.mean())
    se_w = float(w.std()) / math.sqrt(n)
    warnings: list[str] = []
    if n_missing_pscore:
        warnings.append(
            f"{n_missing_pscore} decisions had no `pscore`; it was taken from `action_dist[action]`"
        )
    if n_tiny:
        warnings.append(
            f"{n_tiny} of {n} rounds have `pscore` < {tiny_pscore:g} (min {p.min():.3g}): "
            "their weights dominate IPS and widen every interval"
        )
    if ess < min_ess_ratio * n:
        warnings.append(
            f"effective sample size {ess:.1f} is under {min_ess_ratio:.0%} of {n} rounds: "
            "the target policy rarely agrees with the logged actions"
        )
    if n >= 100 and abs(mean_w - 1.0) > max(0.05, 4.0 * se_w):
        warnings.append(
            f"mean importance weight is {mean_w:.3f}, not about 1: the logged propensities "
            "may be wrong"
        )
    return Diagnostics(
        n_rounds=n,
        ess=ess,
        min_pscore=float(p.min()),
        n_tiny_pscore=n_tiny,
        max_weight=float(w.max()),
        mean_weight=mean_w,
        n_missing_pscore=n_missing_pscore,
        warnings=tuple(warnings),
    )

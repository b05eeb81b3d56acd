"""An informed reference learner, to tell a world that is hard from a bandit that is weak.

The bandit must find each shopper's tastes from user features and its own clicks. Whether
``>= 0.9 x oracle`` over the last half is reachable at all depends on the world: with a base CTR
of 2 % and trait effects of 0.3 log-odds, 20,000 decisions hold too few clicks for *any* learner
to tell the best variant from the next. This learner is given what the bandit is not - each
shopper's segment and the true form of the click model (CONTRACT.md §6: log-odds additive in the
shown text's traits) - and learns only the effects, by Thompson sampling on a Bayesian logistic
regression per segment (``bandit.logistic``'s fit and its Laplace approximation, refitted every
``refit_every`` decisions). Where it misses the bar, the world is hard at that size; where it
meets the bar and the bandit does not, the bandit is the one to improve.

It reads the same shoppers and click uniforms as every policy (common random numbers). It is a
yardstick - in every simulation's summary (``reference``) and in the sweeps - not a policy to
serve: it needs the segment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bandit.logistic import fit_logistic, laplace_precision
from service.errors import SimulationError
from service.simulate.policies import Trace
from service.simulate.world import FloatArray, Shoppers, World
from streams.schemas import TRAITS


@dataclass(frozen=True)
class ReferenceConfig:
    #: decisions between refits of every segment's posterior
    refit_every: int = 250
    #: prior precision of each trait effect (a N(0, 1) prior: effects of a few log-odds at most)
    prior_precision: float = 1.0
    #: prior precision of each segment's intercept in the posterior's spread (nearly flat; the
    #: mode's intercept is not penalised)
    intercept_precision: float = 0.01

    def __post_init__(self) -> None:
        if self.refit_every < 1:
            raise SimulationError("refit_every", f"must be >= 1, got {self.refit_every}")
        if not (self.prior_precision > 0 and self.intercept_precision > 0):
            raise SimulationError("prior_precision", "precisions must be > 0")


def trait_matrix(world: World) -> list[FloatArray]:
    """Per product, ``(variants, 1 + len(TRAITS))``: an intercept and one 0/1 column per trait
    of the shown text."""
    index = {t: i + 1 for i, t in enumerate(TRAITS)}
    out = []
    for traits in world.shown_traits:
        x = np.zeros((len(traits), len(TRAITS) + 1))
        x[:, 0] = 1.0
        for k, shown in enumerate(traits):
            for t in shown:
                if t in index:
                    x[k, index[t]] = 1.0
        out.append(x)
    return out


def _posterior(
    x: FloatArray, y: FloatArray, cfg: ReferenceConfig
) -> tuple[FloatArray, FloatArray] | None:
    """The posterior mean and covariance (Laplace) of one segment's effects, in ``x``'s layout
    (intercept first), from the project's logistic fit (``bandit.logistic``); None while the
    segment has seen a single outcome. Shown texts repeat, so identical rows are fitted once,
    weighted by their count."""
    rows, which = np.unique(x[:, 1:], axis=0, return_inverse=True)
    which = which.ravel()
    clicks = np.bincount(which, weights=y, minlength=len(rows))
    shown = np.bincount(which, minlength=len(rows)).astype(np.float64)
    # each distinct row twice: once as the clicks' (label 1), once as the rest's (label 0)
    labels: FloatArray = np.repeat([1.0, 0.0], len(rows))
    counts = np.concatenate([clicks, shown - clicks])
    keep = counts > 0
    design = np.vstack([rows, rows])[keep]
    labels, counts = labels[keep], counts[keep]
    fit = fit_logistic(design, labels, l2=cfg.prior_precision, weights=counts)
    if fit is None:
        return None
    precision = laplace_precision(
        design,
        fit,
        l2=cfg.prior_precision,
        intercept_precision=cfg.intercept_precision,
        weights=counts,
    )
    order = np.roll(np.arange(x.shape[1]), 1)  # the fit puts the intercept last
    cov: FloatArray = np.linalg.inv(precision[np.ix_(order, order)]).astype(np.float64)
    return np.append(fit.intercept, fit.coef), cov


def run_reference(
    world: World,
    shoppers: Shoppers,
    *,
    seed: int,
    config: ReferenceConfig | None = None,
    advance: Callable[[int], None] | None = None,
) -> Trace:
    """Thompson sampling per segment on the traits of the initial pools (see the module)."""
    cfg = config if config is not None else ReferenceConfig()
    rng = np.random.default_rng([seed, 7])
    feats = trait_matrix(world)
    n_seg = int(world.prob.shape[0])
    dim = len(TRAITS) + 1
    precision = np.full(dim, cfg.prior_precision)
    precision[0] = cfg.intercept_precision
    mean = np.zeros((n_seg, dim))
    chol = np.stack([np.diag(1.0 / np.sqrt(precision))] * n_seg)
    seen_x: list[list[FloatArray]] = [[] for _ in range(n_seg)]
    seen_y: list[list[float]] = [[] for _ in range(n_seg)]
    n = shoppers.n
    action = np.zeros(n, dtype=np.int64)
    prob = np.zeros(n)
    noise = rng.standard_normal((n, dim))
    for t in range(n):
        s, j = int(shoppers.segment[t]), int(shoppers.product[t])
        w = mean[s] + chol[s] @ noise[t]
        a = int(np.argmax(feats[j] @ w))
        p = float(world.prob[s, j, a])
        action[t], prob[t] = a, p
        seen_x[s].append(feats[j][a])
        seen_y[s].append(1.0 if shoppers.u[t] < p else 0.0)
        if (t + 1) % cfg.refit_every == 0:
            for q in range(n_seg):
                found = (
                    _posterior(np.asarray(seen_x[q]), np.asarray(seen_y[q]), cfg)
                    if seen_x[q]
                    else None
                )
                if found is not None:
                    mean[q] = found[0]
                    chol[q] = np.linalg.cholesky(found[1] + 1e-12 * np.eye(dim))
            if advance is not None:
                advance(cfg.refit_every)
    if advance is not None and n % cfg.refit_every:
        advance(n % cfg.refit_every)
    click = shoppers.u < prob
    # the choice is greedy on a posterior sample: ``expected`` is the shown variant's own
    # probability (unbiased for the policy's, noisier) and ``pscore`` 1
    return Trace(action, click, prob, prob.copy(), np.ones(n))


def reference_figures(trace: Trace, oracle: Trace, bar: float = 0.9) -> dict[str, object]:
    """The summary's ``reference`` entry: the reference's last-half CTR, its ratio to the
    oracle's (clicks, as the bandit's bar) and whether it reaches ``bar``."""
    half = trace.n // 2
    ctr = float(trace.click[half:].mean()) if trace.n > half else 0.0
    best = float(oracle.click[half:].mean()) if oracle.n > half else 0.0
    ratio = round(ctr / best, 4) if best > 0 else None
    return {
        "what": "Thompson sampling told each shopper's segment and the click model's form",
        "ctr_last_half": round(ctr, 6),
        "vs_oracle_last_half": ratio,
        "reaches_bar": ratio is not None and ratio >= bar,
    }

"""Off-policy evaluation inside the simulator: what would the final bandit have earned, estimated
from the uniform policy's log with ``bandit.ope`` (IPS, SNIPS, DR), beside the true value that
only a simulator knows (the bandit's expected CTR on the same shoppers, from the known click
probabilities).

The log's clicks come from click draws of their own, not the common ones the policies share:
the bandit learned from the common draws, and judged on them it looks better than it is (DR
above the true value in 11 of 14 runs when the draws were shared).

DR needs a reward model. Here it is a small L2-regularised logistic regression on what a log
holds (the shopper's encoded features crossed with the shown variant's traits and length),
cross-fitted over two folds so that no round's prediction was fitted on that round's reward."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandit import ope
from bandit.logistic import fit_logistic
from bandit.policy import Policy
from service.simulate.policies import Trace
from service.simulate.world import FloatArray, Shoppers, World
from streams.schemas import ActionFeatures, FeatureValue

#: encoded shopper keys the reward model reads (the hashed id is one-off noise to it)
_USER_KEYS = ("u_age", "u_gender", "u_tier")


def _tokens(ctx: dict[str, FeatureValue], feats: ActionFeatures) -> list[str]:
    """A bias, each action token, and each shopper token crossed with each action token."""
    user = [f"{k}={ctx[k]}" for k in _USER_KEYS if k in ctx]
    action = [f"t={t}" for t in feats.traits] + [f"len={feats.length_bucket}"]
    return ["bias", *action, *(f"{u}&{a}" for u in user for a in action)]


def logistic_reward_model(
    world: World, shoppers: Shoppers, log: Trace, folds: int = 2, seed: int = 0
) -> FloatArray:
    """``q[t, k]``: the predicted click probability of variant ``k`` for shopper ``t``
    (``(n, n_max)``, zero past a shorter pool), cross-fitted over ``folds`` folds.

    Shoppers repeat in a few feature combinations, so each distinct (shopper features, product,
    variant) row is built once and the rounds index into it."""
    n, n_max = shoppers.n, world.n_max
    rows: dict[tuple[tuple[str, ...], int, int], int] = {}
    tokens: list[list[str]] = []
    which = np.full((n, n_max), -1, dtype=np.int64)
    for t in range(n):
        ctx = shoppers.contexts[t]
        user = tuple(f"{k}={ctx[k]}" for k in _USER_KEYS if k in ctx)
        j = int(shoppers.product[t])
        for k, (_, feats) in enumerate(world.actions[j]):
            key = (user, j, k)
            r = rows.get(key)
            if r is None:
                r = rows[key] = len(tokens)
                tokens.append(_tokens(ctx, feats))
            which[t, k] = r
    vocab: dict[str, int] = {}
    for toks in tokens:
        for tok in toks:
            vocab.setdefault(tok, len(vocab))
    design = np.zeros((len(tokens), len(vocab)))
    for r, toks in enumerate(tokens):
        design[r, [vocab[tok] for tok in toks]] = 1.0
    logged = which[np.arange(n), log.action]
    y = log.click.astype(np.float64)
    fold = np.random.default_rng(seed).integers(0, folds, size=n)
    q = np.zeros((n, n_max))
    valid = which >= 0
    for f in range(folds):
        train = fold != f
        # column 0 is the bias: the fit's own (unpenalised) intercept
        fit = fit_logistic(design[logged[train]][:, 1:], y[train], l2=1.0)
        p_rows = (
            fit.predict(design[:, 1:]) if fit is not None else np.full(len(design), y[train].mean())
        )
        test = (fold == f)[:, None] & valid
        q[test] = p_rows[which[test]]
    return q


def target_distribution(
    policy: Policy,
    world: World,
    shoppers: Shoppers,
    advance: Callable[[int], None] | None = None,
) -> FloatArray:
    """The final policy's probability of each variant for every shopper (``(n, n_max)``)."""
    out = np.zeros((shoppers.n, world.n_max))
    for t in range(shoppers.n):
        acts = world.action_sets[int(shoppers.product[t])]
        out[t, : len(acts)] = policy.pmf(shoppers.contexts[t], acts)
        if advance is not None and (t + 1) % 500 == 0:
            advance(500)
    return out


@dataclass(frozen=True)
class OffPolicy:
    ips: ope.Estimate
    snips: ope.Estimate
    dr: ope.Estimate
    true_value: float

    def to_dict(self) -> dict[str, Any]:
        def ci(e: ope.Estimate) -> list[float]:
            return [round(e.ci.low, 6), round(e.ci.high, 6)]

        return {
            "target": "bandit",
            "logging_policy": "uniform",
            "ips": round(self.ips.value, 6),
            "snips": round(self.snips.value, 6),
            "dr": round(self.dr.value, 6),
            "true_value": round(self.true_value, 6),
            "ips_ci95": ci(self.ips),
            "snips_ci95": ci(self.snips),
            "dr_ci95": ci(self.dr),
            "dr_covers_true": bool(self.dr.ci.low <= self.true_value <= self.dr.ci.high),
            "dr_rel_error": round(abs(self.dr.value - self.true_value) / self.true_value, 6)
            if self.true_value > 0
            else None,
            "n_rounds": self.dr.n_rounds,
            "ess": round(self.dr.ess, 1),
        }


def evaluate_off_policy(
    policy: Policy,
    world: World,
    shoppers: Shoppers,
    log: Trace,
    *,
    seed: int = 0,
    advance: Callable[[int], None] | None = None,
) -> OffPolicy:
    """IPS/SNIPS/DR of ``policy`` from the uniform ``log``, and its true value."""
    dist = target_distribution(policy, world, shoppers, advance)
    rows = world.prob[shoppers.segment, shoppers.product]
    true_value = float(np.mean(np.nansum(dist * np.nan_to_num(rows), axis=1)))
    q = logistic_reward_model(world, shoppers, log, seed=seed)
    found = ope.estimate(log.click.astype(np.float64), log.action, log.pscore, dist, q, alpha=0.05)
    return OffPolicy(found["ips"], found["snips"], found["dr"], true_value)

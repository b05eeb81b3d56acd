"""The simulator's baselines (CONTRACT.md §6) and its bandit runner, on the same shoppers. The three
that do not learn are whole-array numpy; the bandit runs decision by decision (in-process here,
through Kafka in ``service.simulate.kafka_loop``) with a named preset's settings
(``bandit.presets``).

Every policy yields a :class:`Trace`: the variant shown, whether the shopper clicked (``u[t] <
p``), the click probability of the shown variant, and the expected CTR of the policy's whole
distribution at ``t`` (equal to that probability for a deterministic policy). The last one is
what regret is measured on: it carries no click noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bandit.policy import Policy, PolicyConfig
from service.simulate.world import FloatArray, IntArray, Shoppers, World
from streams.schemas import Channel, Decision

POLICIES: tuple[str, ...] = ("uniform", "best_fixed", "bandit", "oracle")


@dataclass(frozen=True)
class Trace:
    action: IntArray
    click: NDArray[np.bool_]
    prob: FloatArray
    expected: FloatArray
    #: probability the policy gave the shown action (uniform: 1/n; deterministic: 1)
    pscore: FloatArray

    @property
    def n(self) -> int:
        return int(self.action.shape[0])


def _trace(
    world: World,
    shoppers: Shoppers,
    action: IntArray,
    expected: FloatArray,
    pscore: FloatArray,
    u: FloatArray | None = None,
) -> Trace:
    prob = world.prob[shoppers.segment, shoppers.product, action]
    return Trace(action, (shoppers.u if u is None else u) < prob, prob, expected, pscore)


def uniform(world: World, shoppers: Shoppers, u: FloatArray | None = None) -> Trace:
    """A variant at random from the pool (pscore ``1/n``), drawn from the shopper's own ``v``;
    clicks decided by ``u`` (default the common ``shoppers.u``)."""
    sizes = world.sizes[shoppers.product]
    action = np.minimum((shoppers.v * sizes).astype(np.int64), sizes - 1)
    rows = world.prob[shoppers.segment, shoppers.product]
    expected = np.nanmean(rows, axis=1)
    return _trace(world, shoppers, action, expected, 1.0 / sizes, u)


def best_fixed(world: World, shoppers: Shoppers, weights: list[float]) -> Trace:
    """The single variant per product with the best true CTR over the segment mix."""
    best = np.argmax(world.mix_ctr(weights), axis=1)
    action = best[shoppers.product].astype(np.int64)
    prob = world.prob[shoppers.segment, shoppers.product, action]
    return _trace(world, shoppers, action, prob, np.ones(shoppers.n))


def oracle(world: World, shoppers: Shoppers) -> Trace:
    """The best variant of the initial pool for this shopper's segment."""
    rows = world.prob[shoppers.segment, shoppers.product]
    action = np.argmax(np.where(np.isnan(rows), -np.inf, rows), axis=1).astype(np.int64)
    prob = world.prob[shoppers.segment, shoppers.product, action]
    return _trace(world, shoppers, action, prob, np.ones(shoppers.n))


#: called between decisions ``t - 1`` and ``t`` every ``every`` decisions with the world so far,
#: the decisions made and whether each was clicked; answers a new world (refreshed pools) or None
RoundHook = Callable[[int, World, Sequence[Decision], NDArray[np.bool_]], "World | None"]


@dataclass
class BanditRun:
    trace: Trace
    policy: Policy
    #: how the bandit learned, for the summary
    learning: dict[str, object]


def run_bandit_inprocess(
    world: World,
    shoppers: Shoppers,
    *,
    config: PolicyConfig,
    seed: int,
    channel: Channel,
    advance: Callable[[int], None] | None = None,
    every: int = 0,
    between: RoundHook | None = None,
) -> BanditRun:
    """The policy's own verbs, decision by decision: ``choose``, then ``learn`` the shopper's
    reward (click 1.0, impression only 0.0: the reward join's semantics) right away, with no
    delay between a decision and its reward. With ``between``, every ``every`` decisions the
    hook may swap the world for one with refreshed pools (fine-tuning); the bandit then scores
    the new variants from their features on first sight."""
    policy = Policy(config, seed, version="sim-0")
    n = shoppers.n
    made: list[Decision] = []
    action = np.zeros(n, dtype=np.int64)
    click = np.zeros(n, dtype=bool)
    prob = np.zeros(n)
    expected = np.zeros(n)
    pscore = np.zeros(n)
    for t in range(n):
        if between is not None and every > 0 and t > 0 and t % every == 0:
            world = between(t, world, made, click[:t]) or world
        s, j = int(shoppers.segment[t]), int(shoppers.product[t])
        pool = world.pools[j]
        decision = policy.choose(
            shoppers.contexts[t], world.action_sets[j], event_id=shoppers.event_ids[t],
            product_id=pool.product_id, channel=channel, pool_version=pool.pool_version,
            ts=shoppers.ts[t],
        )  # fmt: skip
        if between is not None:
            made.append(decision)
        a = decision.action
        p_row = world.prob[s, j, : world.sizes[j]]
        clicked = bool(shoppers.u[t] < p_row[a])
        policy.learn(decision, 1.0 if clicked else 0.0)
        action[t], click[t], prob[t], pscore[t] = a, clicked, p_row[a], decision.pscore
        expected[t] = float(np.dot(decision.action_dist, p_row))
        if advance is not None and (t + 1) % 200 == 0:
            advance(200)
    if advance is not None and n % 200:
        advance(n % 200)
    learning: dict[str, object] = {
        "transport": "inprocess",
        "delay": "none: each decision is learned right after it",
    }
    return BanditRun(Trace(action, click, prob, expected, pscore), policy, learning)

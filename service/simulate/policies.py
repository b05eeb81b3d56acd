"""The policies of CONTRACT.md §6 on the same shoppers. The three that do not learn are whole-array
numpy; the bandit runs decision by decision (in-process here, through Kafka in
``service.simulate.kafka_loop``).

Every policy yields a :class:`Trace`: the variant shown, whether the shopper clicked (``u[t] <
p``), the click probability of the shown variant, and the expected CTR of the policy's whole
distribution at ``t`` (equal to that probability for a deterministic policy). The last one is
what regret is measured on: it carries no click noise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bandit.policy import Policy, PolicyConfig
from service.simulate.world import FloatArray, IntArray, Shoppers, World
from streams.schemas import Channel

POLICIES: tuple[str, ...] = ("uniform", "best_fixed", "bandit", "oracle")

#: The simulator's bandit settings, chosen on randomly drawn scenarios (never on a shipped one)
#: and written into every summary. They differ from the policy's defaults in three ways:
#: - ``bag`` exploration (5 bootstrap members, no epsilon): a shown variant's propensity stays
#:   >= 1/5. VW's regression weights each update by 1/propensity, so SquareCB and epsilon, which
#:   explore at propensities of 1-2%, let one unclicked exploratory impression swing the model;
#: - plain normalised SGD at a constant rate (``power_t`` 0, ``learning_rate`` 0.1)
#:   instead of per-feature adaptive rates, which give every rarely seen feature (a shopper's
#:   hashed id crossed with the variant) a large step and so the largest share of each update;
#: - only shopper x variant crosses (``UA``): a scenario's click probability depends on the
#:   shopper and the text alone (CONTRACT.md §6), so context x variant crosses (hour, device,
#:   category) can only fit noise.
#: Chosen on random scenarios of 20,000 decisions with generated pools (seeds 301-316 for the
#: three choices above, 500-531 for the rate), by last-half clicked CTR x oracle:
#: - rate on seeds 500-515: 0.02 -> 0.917 mean, 0.05 -> 0.935, 0.07 -> 0.935, 0.1 -> 0.942,
#:   0.2 -> 0.923; on all 32 seeds 500-531, 0.1 against 0.02: 0.933 against 0.915, every bar
#:   met in 27 against 21;
#: - not taken (seeds 500-515): ``cb_type`` dr (0.930 at rate 0.02, 0.846 at 0.1), dm (0.712),
#:   3, 4 or 8 bag members at 0.1 (0.932, 0.928, 0.933), an epsilon floor of 0.01 at 0.1
#:   (0.902), 22 bits (0.915), decaying rates (0.3 with ``power_t`` 0.1: 0.919; 0.5 with 0.2:
#:   0.904).
#: Held out (seeds 1-12, ``bench_simulate.py --sweep 12``, and the three shipped scenarios): all
#: bars met in 14 of 15 against 11 of 15 at rate 0.02, mean 0.94 x oracle against 0.93. What
#: got worse: seed 8, which missed the oracle bar at either rate
#: (0.86 -> 0.82 x), also fell below 1.3 x uniform (1.35 -> 1.28), and standard went 0.95 -> 0.93.
#: A wider held-out sweep (seeds 1-24) meets every bar in 19 of 24 (mean 0.929 x oracle; misses
#: 8, 13, 15, 17, 22 at 0.82-0.90 x oracle, all >= 1.28 x uniform). On the worst three the final
#: model's greedy choice is itself 0.80-0.90 x oracle, so the shortfall is misranking, not the
#: cost of exploring.
#: How hard the worlds are: ``service.simulate.reference`` is a learner told each shopper's
#: segment and the true form of the click model (Thompson sampling on a per-segment logistic
#: model). On seeds 1-24 and 500-531, three draws each (168 runs), it meets the oracle bar in
#: 157 (mean 0.954 x); these settings in 145 (mean 0.931). Seeds 8, 17, 514 and 519 are hard at
#: 20,000 decisions: the reference misses there in 2 or 3 draws of 3, and so does a uniform first
#: half followed by greedy on the true model fitted to it (0.82-0.89 x on 8, 514, 519). Where
#: the reference meets the bar (52 seeds; there it misses in 1 run of 156), these settings meet
#: every bar in 143 of 156 runs; seed 516 misses in all three (0.84 x, reference 0.91-0.95).
#: Fresh seeds 1000-1039 (``bench_simulate.py --sweep 20 --first 1000`` and ``--first 1020``),
#: one draw: every bar met in 29 of 40 (mean 0.924 x oracle, every one >= 1.36 x uniform, the DR
#: interval covering in 39); the reference reaches the bar in 36 (mean 0.952), and the bandit
#: meets every bar in 28 of those 36. Its clearest shortfalls: 1038 (0.84 x, reference 0.98),
#: 1009 (0.85, 0.94), 1005 (0.88, 0.96); 1004 (0.72 x) is hard too (reference 0.89).
#: Tried and not taken, all on those 168 runs unless said (passes, mean x oracle):
#: - no variant-id feature: 142, 0.928; shopper id left out: 141, 0.928;
#: - shopper x shopper x variant crosses (``UUA``): 147, 0.934 - within the run-to-run noise;
#: - bag ``greedify`` (one member learns every example): 136, 0.930;
#: - logistic loss (``loss="logistic"``, the truth's own form), one draw of 56: rate 0.1 24/56
#:   (0.876), 0.5 44/56 (0.926), 1.0 44/56 (0.925), 2.0 46/56 (0.930) against 46/56 (0.932);
#: - a global rate decaying over examples (``adaptive=False``), one draw: 0.5 with ``power_t``
#:   0.25 46/56 (0.934), 1.0 with 0.5 32/56 (0.890);
#: - logistic loss with that decaying rate (2.0, ``power_t`` 0.25: 0.89 x offline, below), on
#:   the 168 runs: 121, 0.917; logistic at 0.5 without linear action terms (VW's
#:   ``--ignore_linear A``, so every trait effect is per shopper feature; 0.90 x offline, below):
#:   139, 0.934;
#: - earlier, on seeds 500-531: RegCB-opt elimination (about uniform: 0.51 x), online cover
#:   (0.55 x).
#: Where the shortfall comes from (seeds 1004, 1038, 1009, 516, 22, 13, 1, 500): trained on the
#: same 10,000 uniformly explored decisions (the first half), the greedy choice of this VW model
#: reaches 0.83 x oracle on average over the last half, and a logistic model of the true form
#: fitted in one batch (the reference's fit, segment known) 0.955 x. The features are not the
#: cause: VW with the age bucket as the only shopper feature and no variant ids reaches 0.87 x,
#: logistic loss 0.89 x, three passes over the data 0.90 x, five with a decaying rate 0.905 x,
#: FTRL or coin betting 0.87 x. Single-pass SGD's noise is. First try of a batch refit: every
#: 4,000 decisions a fresh model learns the whole log so far in three passes, then goes on
#: online (one draw of 56): these settings 44/56 (0.932), logistic with the decaying rate
#: above 44/56 (0.935) - no more passes. Next: a refit that converges (a logistic model fitted
#: in one batch, as the reference's, that the policy starts from or is judged against).
SIM_POLICY = PolicyConfig(
    exploration="bag",
    bag_size=5,
    epsilon=0.0,
    learning_rate=0.1,
    power_t=0.0,
    interactions=("UA",),
)


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
) -> BanditRun:
    """The policy's own verbs, decision by decision: ``choose``, then ``learn`` the shopper's
    reward (click 1.0, impression only 0.0: the reward join's semantics) right away, with no
    delay between a decision and its reward."""
    policy = Policy(config, seed, version="sim-0")
    n = shoppers.n
    action = np.zeros(n, dtype=np.int64)
    click = np.zeros(n, dtype=bool)
    prob = np.zeros(n)
    expected = np.zeros(n)
    pscore = np.zeros(n)
    for t in range(n):
        s, j = int(shoppers.segment[t]), int(shoppers.product[t])
        pool = world.pools[j]
        decision = policy.choose(
            shoppers.contexts[t], world.action_sets[j], event_id=shoppers.event_ids[t],
            product_id=pool.product_id, channel=channel, pool_version=pool.pool_version,
            ts=shoppers.ts[t],
        )  # fmt: skip
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

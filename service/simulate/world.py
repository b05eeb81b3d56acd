"""The simulated world: the known click probabilities (:class:`World`) and the shoppers who
arrive (:class:`Shoppers`), drawn once so that every policy meets the same people.

Common random numbers: decision ``t`` has one shopper, one product and one uniform ``u[t]``;
whichever variant a policy shows, the shopper clicks iff ``u[t] < p(shown variant)``. The
differences between policies are then differences of choice, not of luck."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from bandit.features import action_features, encode_context
from bandit.policy import ActionSet
from generator.traits import detect_traits
from service.errors import SimulationError
from service.simulate.scenario import Scenario
from streams.schemas import ActionFeatures, FeatureValue, Product, VariantPool

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class World:
    """Products, their initial pools and the true click probability of every
    (segment, product, variant): ``prob[s, j, k]``, NaN past the end of a shorter pool."""

    products: tuple[Product, ...]
    pools: tuple[VariantPool, ...]
    #: per product, per variant: the traits a shopper reacts to (detected from the text)
    shown_traits: tuple[tuple[tuple[str, ...], ...], ...]
    #: per product: ``(variant_id, features)`` as the bandit scores them
    actions: tuple[tuple[tuple[str, ActionFeatures], ...], ...]
    #: the same, prepared once per pool for scoring (as a ranker does)
    action_sets: tuple[ActionSet, ...]
    sizes: IntArray
    prob: FloatArray

    @classmethod
    def build(
        cls, scenario: Scenario, products: Sequence[Product], pools: Sequence[VariantPool]
    ) -> World:
        if len(products) != len(pools) or not products:
            raise SimulationError("pools", "must hold one pool per product")
        shown = []
        actions = []
        for product, pool in zip(products, pools, strict=True):
            if pool.product_id != product.product_id:
                raise SimulationError(
                    "pools", f"pool of {pool.product_id} is not {product.product_id}"
                )
            shown.append(
                tuple(
                    tuple(
                        detect_traits(
                            v.text, language=v.language, channel=v.channel, brand=product.brand
                        )
                    )
                    for v in pool.variants
                )
            )
            actions.append(
                tuple(
                    (v.variant_id, action_features(v, pool.generator_version))
                    for v in pool.variants
                )
            )
        sizes = np.array([len(p.variants) for p in pools], dtype=np.int64)
        n_max = int(sizes.max())
        prob = np.full((len(scenario.segments), len(products), n_max), np.nan)
        for s in range(len(scenario.segments)):
            for j, traits in enumerate(shown):
                for k, ts in enumerate(traits):
                    prob[s, j, k] = scenario.click_probability(s, ts)
        sets = tuple(ActionSet(a) for a in actions)
        return cls(tuple(products), tuple(pools), tuple(shown), tuple(actions), sets, sizes, prob)

    @property
    def n_max(self) -> int:
        return int(self.prob.shape[2])

    def mix_ctr(self, weights: Sequence[float]) -> FloatArray:
        """``(J, n_max)``: each variant's true CTR over the segment mix (−inf past the pool)."""
        mixed = np.tensordot(np.asarray(weights), self.prob, axes=1)
        return np.where(np.isnan(mixed), -np.inf, mixed)


@dataclass(frozen=True)
class Shoppers:
    """``n`` arrivals: segment, product, the user as a request would carry it, its encoded
    context, the click uniform ``u``, the uniform policy's own draw ``v``, the click uniform of
    the off-policy log ``u_log``, event ids and times."""

    segment: IntArray
    product: IntArray
    u: FloatArray
    v: FloatArray
    #: the click uniforms of the uniform log that off-policy evaluation reads: independent of
    #: ``u``, so the final bandit is never judged on the very click noise it learned from
    u_log: FloatArray
    users: tuple[dict[str, object], ...]
    contexts: tuple[dict[str, FeatureValue], ...]
    event_ids: tuple[uuid.UUID, ...]
    ts: tuple[datetime, ...]

    @property
    def n(self) -> int:
        return int(self.segment.shape[0])

    @classmethod
    def draw(
        cls,
        scenario: Scenario,
        world: World,
        *,
        hash_key: bytes,
        start: datetime,
        step_s: float,
        population: int,
        seed: int,
    ) -> Shoppers:
        """Draw ``scenario.decisions`` shoppers. Each segment has ``population`` returning users
        whose age and device are fixed per user; the bandit sees them through
        ``encode_context`` (hashed id, age bucket, gender, tier), never the segment."""
        if population < 1:
            raise SimulationError("population", f"must be >= 1, got {population}")
        n = scenario.decisions
        rng = np.random.default_rng(seed)
        segment = rng.choice(len(scenario.segments), size=n, p=np.asarray(scenario.weights))
        product = rng.integers(0, len(world.products), size=n)
        who = rng.integers(0, population, size=n)
        u = rng.random(n)
        v = rng.random(n)
        u_log = np.random.default_rng([seed, 1]).random(n)
        id_bits = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        # a user's fixed traits come from their own stream, so they do not depend on arrival order
        people: dict[tuple[int, int], tuple[dict[str, object], str]] = {}
        users: list[dict[str, object]] = []
        contexts: list[dict[str, FeatureValue]] = []
        event_ids: list[uuid.UUID] = []
        times: list[datetime] = []
        for t in range(n):
            key = (int(segment[t]), int(who[t]))
            if key not in people:
                people[key] = scenario.draw_user(*key, seed=seed)
            person, device = people[key]
            user = dict(person)
            when = start + timedelta(seconds=step_s * t)
            request = {
                "channel": scenario.channel,
                "category": world.products[int(product[t])].category,
                "device": device,
            }
            users.append(user)
            contexts.append(encode_context(user, request, hash_key=hash_key, now=when))
            hi, lo = int(id_bits[t, 0]), int(id_bits[t, 1])
            event_ids.append(uuid.UUID(int=(hi << 64) | lo, version=4))
            times.append(when)
        return cls(
            segment.astype(np.int64),
            product.astype(np.int64),
            u,
            v,
            u_log,
            tuple(users),
            tuple(contexts),
            tuple(event_ids),
            tuple(times),
        )

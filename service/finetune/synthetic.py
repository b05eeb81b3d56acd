"""A logged interaction history from the simulator's world: the uniform policy's decisions and
the shoppers' feedback as the contract's events, for exercising a fine-tune round (tests, the
benchmark) on a log whose true click rates are known."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from service.replay.replay_log import ReplayLog, from_events
from service.simulate.policies import uniform
from service.simulate.scenario import Scenario
from service.simulate.world import Shoppers, World
from streams.schemas import Decision, Feedback, Product, VariantPool


def uniform_log(
    scenario: Scenario,
    products: Sequence[Product],
    pools: Sequence[VariantPool],
    *,
    seed: int = 0,
    population: int = 200,
) -> tuple[World, ReplayLog]:
    """``scenario.decisions`` uniform-random decisions over ``pools`` with an impression each and
    a click where the shopper's known click probability says so."""
    world = World.build(scenario, products, pools)
    shoppers = Shoppers.draw(
        scenario,
        world,
        hash_key=b"copyloop-finetune",
        start=datetime(2026, 1, 8, 4, 0, tzinfo=UTC),
        step_s=1.0,
        population=population,
        seed=seed,
    )
    trace = uniform(world, shoppers)
    decisions: list[Decision] = []
    feedback: list[Feedback] = []
    for t in range(shoppers.n):
        j, k = int(shoppers.product[t]), int(trace.action[t])
        pool = world.pools[j]
        n = len(pool.variants)
        decisions.append(
            Decision(
                event_id=shoppers.event_ids[t],
                ts=shoppers.ts[t],
                product_id=pool.product_id,
                channel=scenario.channel,
                pool_version=pool.pool_version,
                policy_version="uniform",
                context=shoppers.contexts[t],
                actions=[v.variant_id for v in pool.variants],
                action_features=[f for _, f in world.actions[j]],
                action=k,
                pscore=1.0 / n,
                action_dist=[1.0 / n] * n,
            )
        )
        eid, ts = shoppers.event_ids[t], shoppers.ts[t]
        feedback.append(Feedback(feedback_id=f"i-{eid}", event_id=eid, ts=ts, kind="impression"))
        if trace.click[t]:
            feedback.append(
                Feedback(
                    feedback_id=f"c-{eid}",
                    event_id=eid,
                    ts=ts + timedelta(seconds=5),
                    kind="click",
                )
            )
    return world, from_events(decisions, feedback)

"""A trained refit policy and a simulated stretch of traffic for the dashboard tests: young
shoppers click urgent copy, older ones festive copy, so the model's weights and the observed
figures have a clear shape to check."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from bandit.features import action_features, encode_context
from bandit.join import Joined
from bandit.loop_stats import LoopCounts
from bandit.policy import ActionSet, Policy, PolicyConfig
from bandit.refit import RefitConfig
from streams.consumer import Received
from streams.schemas import Decision, Event, Feedback, LoopStats, VariantPool
from tests.service.api.api_helpers import make_pool

HASH_KEY = b"k" * 32
AGES = (20, 45)
#: who likes what: age -> the trait whose copy they click most
TASTE = {20: "urgency", 45: "festive"}


def pool(product_id: str = "scarf-1") -> VariantPool:
    return make_pool(product_id)


def actions_of(p: VariantPool) -> ActionSet:
    return ActionSet([(v.variant_id, action_features(v, p.generator_version)) for v in p.variants])


def shopper(rng: random.Random) -> tuple[int, dict]:
    age = rng.choice(AGES)
    user = {"user_id": f"secret-user-{rng.randrange(50)}", "age": age, "gender": "f"}
    return age, user


def click_probability(age: int, traits: list[str]) -> float:
    return 0.6 if TASTE[age] in traits else 0.05


def traffic(
    policy: Policy,
    p: VariantPool,
    n: int,
    *,
    seed: int = 0,
    start: datetime | None = None,
    step_s: float = 1.0,
) -> Iterator[tuple[Decision, list[Feedback], float]]:
    """``n`` decisions by ``policy`` ``step_s`` apart, each with its feedback and reward."""
    rng = random.Random(seed)
    acts = actions_of(p)
    t0 = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    for i in range(n):
        age, user = shopper(rng)
        ts = t0 + timedelta(seconds=i * step_s)
        ctx = encode_context(user, {"ts": ts.isoformat()}, hash_key=HASH_KEY)
        d = policy.choose(
            ctx,
            acts,
            event_id=uuid.uuid4(),
            product_id=p.product_id,
            channel="ad_headline",
            pool_version=p.pool_version,
            ts=ts,
        )
        fb = [
            Feedback(feedback_id=f"i-{d.event_id}", event_id=d.event_id, kind="impression", ts=ts)
        ]
        clicked = rng.random() < click_probability(age, d.action_features[d.action].traits)
        if clicked:
            fb.append(
                Feedback(feedback_id=f"c-{d.event_id}", event_id=d.event_id, kind="click", ts=ts)
            )
            if rng.random() < 0.3:
                fb.append(
                    Feedback(
                        feedback_id=f"p-{d.event_id}", event_id=d.event_id, kind="purchase", ts=ts
                    )
                )
        yield d, fb, 1.0 if clicked else 0.0


def trained_policy(p: VariantPool, n: int = 1500, seed: int = 0) -> Policy:
    """A refit policy that learned ``n`` events of the tastes above."""
    policy = Policy(PolicyConfig(RefitConfig(every=100)), seed=seed, version="trained-1")
    events = list(traffic(Policy(PolicyConfig(RefitConfig()), seed=seed), p, n, seed=seed))
    policy.learn_many((d, r) for d, _, r in events)
    return policy


def as_records(
    events: list[tuple[Decision, list[Feedback], float]], topics_prefix: str = "t."
) -> list[Received[Event]]:
    """The decisions and feedback as a learner reads them (one partition each, in order)."""
    out: list[Received[Event]] = []
    offsets = {"decisions": 0, "feedback": 0}

    def rec(kind: str, event: Event) -> Received[Event]:
        offset = offsets[kind]
        offsets[kind] += 1
        return Received(f"{topics_prefix}{kind}", 0, offset, None, 0, event)

    for d, fb, _ in events:
        out.append(rec("decisions", d))
        out += [rec("feedback", f) for f in fb]
    return out


def joined_of(events: list[tuple[Decision, list[Feedback], float]]) -> list[Joined]:
    return [Joined(d, r) for d, _, r in events]


def stats_record(
    events: list[tuple[Decision, list[Feedback], float]], policy: Policy, health: dict | None = None
) -> LoopStats:
    """The record a learner would publish after reading and joining ``events``."""
    counts = LoopCounts()
    counts.read(as_records(events))
    counts.joined(joined_of(events))
    counts.score(policy)
    return LoopStats(figures=counts.figures(health or {"lag": 0, "pending": 0}))

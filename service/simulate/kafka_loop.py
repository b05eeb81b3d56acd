"""The bandit through the real loop: decisions and feedback go to Kafka topics, the real learner
(``bandit.learner.Learner``) joins them into rewards inside the reward window, learns,
checkpoints and announces a snapshot on the models topic, and the simulated ranker hot-swaps to
it through ``bandit.snapshot.PolicyHolder``.

It runs in rounds of ``batch`` decisions: publish the round, let the learner read everything
published so far, checkpoint (which announces), then load the announcement. A decision is learned
once its window closes in event time (window + lateness after it), so the ranker's model trails
the shoppers by a few hundred decisions, as a deployed one trails its traffic."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from bandit.learner import Learner, LearnerConfig
from bandit.policy import Policy, PolicyConfig
from bandit.promotion import PromotionConfig
from bandit.reward import RewardConfig
from bandit.snapshot import PolicyHolder
from service.errors import SimulationError
from service.simulate.policies import BanditRun, Trace
from service.simulate.world import Shoppers, World
from streams.consumer import EventConsumer
from streams.producer import KafkaEventSink
from streams.schemas import Channel, Feedback, ModelAnnouncement
from streams.topics import Topics


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap: str
    #: topics of this run alone (the caller creates them): a shared prefix would feed the
    #: learner other runs' decisions
    topics: Topics
    #: the learner's checkpoints and snapshots; emptied at the start of a run
    data_dir: Path
    #: decisions per round trip (publish → learn → announce → hot swap)
    batch: int = 250
    #: reward window in simulated seconds
    reward_window_s: float = 60.0
    #: how long one round may wait for the learner or an announcement
    round_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 100_000:
            raise SimulationError("batch", f"must be in [1, 100000], got {self.batch}")
        if not self.reward_window_s > 0:
            raise SimulationError("reward_window_s", f"must be > 0, got {self.reward_window_s}")


def _caught_up(learner: Learner, ends: dict[tuple[str, int], int]) -> bool:
    pos = learner.consumer.positions
    return all(pos.get(k, 0) >= end for k, end in ends.items() if end > 0)


def _learn_round(learner: Learner, deadline: float) -> None:
    ends = learner.consumer.end_offsets()
    while not _caught_up(learner, ends):
        if time.monotonic() > deadline:
            raise SimulationError("kafka", "the learner did not read the round in time")
        learner.step()


def _await_announcement(
    models: EventConsumer, holder: PolicyHolder, version: str, deadline: float
) -> None:
    while holder.version != version:
        if time.monotonic() > deadline:
            raise SimulationError("kafka", f"announcement of {version} did not arrive in time")
        for rec in models.poll(0.2, 100):
            event = rec.event
            if isinstance(event, ModelAnnouncement):
                holder.load(event)


def run_bandit_kafka(
    world: World,
    shoppers: Shoppers,
    *,
    config: PolicyConfig,
    seed: int,
    channel: Channel,
    options: KafkaOptions,
    advance: Callable[[int], None] | None = None,
) -> BanditRun:
    """Run the bandit over the real topics and learner; see the module docstring."""
    if options.data_dir.exists():
        shutil.rmtree(options.data_dir)  # a stale checkpoint would resume another run
    topics = options.topics
    step_s = (shoppers.ts[1] - shoppers.ts[0]).total_seconds() if shoppers.n > 1 else 1.0
    learner_config = LearnerConfig(
        topics=topics,
        data_dir=options.data_dir,
        reward=RewardConfig(window_s=options.reward_window_s),
        policy=config,
        seed=seed,
        snapshot_every_s=1e9,  # checkpoints are taken once per round, below
        # partitions of a round are read in any order: the slack must span a round
        lateness_s=2.0 * options.batch * step_s,
        max_future_s=None,  # simulated time need not be near the wall clock
        group_id=f"copyloop-sim-{uuid.uuid4().hex[:8]}",
        # each round's snapshot is served at once, as the rounds above assume; the gate that
        # would first judge it on the next round's decisions is tested in test_promotion.py
        promotion=PromotionConfig(enabled=False),
    )
    learner = Learner.connect(learner_config, options.bootstrap)
    sink = KafkaEventSink(options.bootstrap, client_id="copyloop-sim")
    models = EventConsumer(
        options.bootstrap,
        {topics.models: ModelAnnouncement},
        group_id=None,
        client_id="copyloop-sim",
    )
    holder = PolicyHolder(Policy(config, seed, version="init"), seed=seed)
    n = shoppers.n
    action = np.zeros(n, dtype=np.int64)
    click = np.zeros(n, dtype=bool)
    prob = np.zeros(n)
    expected = np.zeros(n)
    pscore = np.zeros(n)
    try:
        learner.start()
        models.assign()
        for lo in range(0, n, options.batch):
            hi = min(n, lo + options.batch)
            for t in range(lo, hi):
                s, j = int(shoppers.segment[t]), int(shoppers.product[t])
                acts = world.actions[j]
                pool = world.pools[j]
                eid, ts = shoppers.event_ids[t], shoppers.ts[t]
                decision = holder.choose(
                    shoppers.contexts[t], acts, event_id=eid, product_id=pool.product_id,
                    channel=channel, pool_version=pool.pool_version, ts=ts,
                )  # fmt: skip
                p_row = world.prob[s, j, : len(acts)]
                a = decision.action
                clicked = bool(shoppers.u[t] < p_row[a])
                sink.add(topics.decisions, str(eid), decision)
                seen = Feedback(
                    feedback_id=f"{eid}-imp", event_id=eid, ts=ts + timedelta(seconds=0.5),
                    kind="impression",
                )  # fmt: skip
                sink.add(topics.feedback, str(eid), seen)
                if clicked:
                    hit = Feedback(
                        feedback_id=f"{eid}-clk", event_id=eid, ts=ts + timedelta(seconds=1.0),
                        kind="click",
                    )  # fmt: skip
                    sink.add(topics.feedback, str(eid), hit)
                action[t], click[t], prob[t], pscore[t] = a, clicked, p_row[a], decision.pscore
                expected[t] = float(np.dot(decision.action_dist, p_row))
            sink.flush(30)
            deadline = time.monotonic() + options.round_timeout_s
            _learn_round(learner, deadline)
            learner.checkpoint()
            if learner.policy.learned > 0:
                _await_announcement(models, holder, learner.policy.version, deadline)
            if advance is not None:
                advance(hi - lo)
        learning = {
            "transport": "kafka",
            "delay": (
                f"rounds of {options.batch} decisions; a decision is learned once its reward "
                f"window ({options.reward_window_s:g} s) and lateness close in event time"
            ),
            "learned": learner.stats.learned,
            "swaps": holder.swaps,
            "dead_lettered": learner.stats.dead_lettered,
            "topic_prefix": topics.prefix,
        }
    finally:
        learner.close()
        models.close()
        sink.close()
    return BanditRun(Trace(action, click, prob, expected, pscore), holder.policy, learning)

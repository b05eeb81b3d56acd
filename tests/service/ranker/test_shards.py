"""Model shards (``streams.shards``) on the real broker: two learner shards and one ranker.
The ranker places each decision on a partition of the shard that owns its product, feedback
keyed by the decision's event id follows it there, each shard learns exactly its own
products' decisions once, and the ranker ranks each product with its own shard's snapshot."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka.partitioner.default import DefaultPartitioner

from bandit.checkpoint import peek_learned
from bandit.errors import ConfigError
from bandit.join import Joined
from bandit.learner import Learner, LearnerConfig
from bandit.promotion import PromotionConfig, Serving
from bandit.reward import RewardConfig
from service.ranker.record_sinks import kafka_record_sink
from service.ranker.runtime import Runtime
from service.settings import Settings
from streams.consumer import Received
from streams.errors import StreamsError
from streams.schemas import Decision, Event, Feedback
from streams.shards import Sharding, key_partition
from streams.topics import Topics
from tests.conftest import scoped_topics
from tests.service.api.api_helpers import make_pool, wait_until

SHARDS = 2
PARTITIONS = 4


class _JoinedIds:
    """Records the event id of every reward a learner joins (and so learns)."""

    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []

    def read(self, records: Sequence[Received[Event]]) -> None:
        return None

    def joined(self, joined: Sequence[Joined]) -> None:
        self.ids.extend(j.decision.event_id for j in joined)

    def stepped(self, serving: Serving, health: Callable[[], Mapping[str, Any]]) -> None:
        return None

    def saving(self) -> None:
        return None


def _products() -> dict[int, list[str]]:
    by_shard: dict[int, list[str]] = {}
    for k in range(12):
        pid = f"sku-{k}"
        by_shard.setdefault(Sharding(SHARDS).of_product(pid), []).append(pid)
    assert set(by_shard) == {0, 1}
    return by_shard


def test_each_shard_learns_its_own_products_decisions_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    by_shard = _products()
    shard_of = {pid: k for k, pids in by_shard.items() for pid in pids}
    with scoped_topics(kafka_bootstrap, partitions=PARTITIONS) as topics:
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=topics.prefix,
            topic_partitions=PARTITIONS,
            data_dir=tmp_path / "ranker",
            learner_shards=SHARDS,
        )
        runtime = Runtime(settings, kafka_record_sink(settings)).start()
        learners: list[Learner] = []
        try:
            assert runtime.partitions == PARTITIONS
            for pid in shard_of:
                runtime.publish_pool(make_pool(pid))
            decisions: list[Decision] = []
            for i in range(120):
                pid = f"sku-{i % 12}"
                decisions.append(
                    runtime.rank(pid, "ad_headline", {"age": 20 + i % 40}, {}).decision
                )
            # every third decision is never shown: not learned by anyone
            seen = [d for i, d in enumerate(decisions) if i % 3]
            feedback = [
                Feedback(feedback_id=f"imp-{d.event_id}", event_id=d.event_id, kind="impression")
                for d in seen
            ] + [
                Feedback(feedback_id=f"clk-{d.event_id}", event_id=d.event_id, kind="click")
                for d in seen[::4]
            ]
            runtime.submit_feedback(feedback)
            runtime.publisher.flush(30.0)

            # both shards share one data dir: their checkpoints, locks and snapshots are apart
            observers = [_JoinedIds() for _ in range(SHARDS)]
            for k in range(SHARDS):
                config = LearnerConfig(
                    topics=topics,
                    data_dir=tmp_path / "learners",
                    reward=RewardConfig(window_s=1.0),
                    lateness_s=0.0,
                    idle_close=True,
                    snapshot_every_s=3600.0,
                    promotion=PromotionConfig(enabled=False),
                    shard=k,
                    shards=SHARDS,
                )
                learner = Learner.connect(config, kafka_bootstrap)
                learner.observer = observers[k]
                learners.append(learner)
                learner.start()
            expected = {
                k: {d.event_id for d in seen if shard_of[d.product_id] == k} for k in (0, 1)
            }
            assert all(expected.values())
            shown = len(seen)
            for _ in range(150):  # bounded: each step polls for at most 0.2 s
                for learner in learners:
                    learner.step()
                if sum(learner.stats.learned for learner in learners) >= shown:
                    break
            for _ in range(10):  # a few more polls: anything learned twice would show
                for learner in learners:
                    learner.step()

            for k, learner in enumerate(learners):
                counts = Counter(observers[k].ids)
                assert set(counts) == expected[k], f"shard {k} learned another shard's events"
                assert max(counts.values()) == 1, f"shard {k} learned an event twice"
                assert learner.stats.learned == len(expected[k])
                assert learner.stats.misrouted == 0
                learner.checkpoint()  # cuts and announces the shard's snapshot
                assert peek_learned(learner.config.checkpoint_path) == len(expected[k])
            paths = {lr.config.checkpoint_path for lr in learners}
            assert len(paths) == SHARDS

            # the ranker serves each product from the snapshot of the shard that owns it
            versions = [lr.policy.version for lr in learners]
            assert versions[0] != versions[1]
            wait_until(
                lambda: [h.version for h in runtime.policies] == versions,
                timeout_s=30.0,
                what=f"the ranker to load both shards' snapshots {versions}",
            )
            for k, pids in by_shard.items():
                ranked = runtime.rank(pids[0], "ad_headline", {"age": 30}, {})
                assert ranked.decision.policy_version == versions[k]
        finally:
            for learner in learners:
                learner.close()
            runtime.close()


def test_a_shard_event_id_lands_on_a_partition_the_shard_owns() -> None:
    sharding = Sharding(3)
    cluster = _Cluster(6)
    for shard in range(3):
        for _ in range(50):
            eid = sharding.event_id(shard, 6, uuid.uuid4)
            key = str(eid).encode("ascii")
            # the producer's own partitioner agrees with ours
            placed = DefaultPartitioner().partition("t", key, key, None, None, cluster)
            assert placed == key_partition(key, 6)
            assert sharding.of_partition(placed) == shard
    assert Sharding(1).of_product("anything") == 0
    with pytest.raises(StreamsError, match="at least 3"):
        sharding.event_id(0, 2, uuid.uuid4)


def test_a_learner_shard_needs_a_shard_in_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`shard`"):
        LearnerConfig(topics=Topics(), data_dir=tmp_path, shard=2, shards=2)
    one, two = (
        LearnerConfig(topics=Topics(), data_dir=tmp_path, shard=k, shards=2) for k in (0, 1)
    )
    assert one.lock_path != two.lock_path and one.snapshot_dir != two.snapshot_dir
    # one shard keeps the paths of old
    single = LearnerConfig(topics=Topics(), data_dir=tmp_path)
    assert single.checkpoint_path == tmp_path / "checkpoints" / "bandit-learner.ckpt"


class _Cluster:
    """The cluster metadata the default partitioner asks for: one topic of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

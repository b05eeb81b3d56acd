"""Pool refresh on promotion and rollback: winners stay, losers and unlawful copy retire, the
promoted generator fills the pool; a promotion announces itself and publishes the refreshed
pool on the topics; rolling back restores the previous generator and the pools as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generator.finetune import FinetuneConfig
from generator.guardrails import check
from generator.model import CopyGenerator
from service.finetune import rounds
from service.finetune.gate import PoolMetrics, Verdict
from service.finetune.kafka_rounds import live_rollback
from service.finetune.refresh import POOLS_BEFORE, judge, load_pools, refresh_pool, refresh_pools
from service.finetune.registry import Registry
from service.finetune.rounds import RoundConfig, run_round
from service.finetune.training_data import TrainingSet, build_training_data
from service.settings import Settings
from streams.producer import KafkaEventSink
from streams.schemas import ModelAnnouncement, VariantPool
from streams.topics import Topics
from tests.service.api.api_helpers import read_topic
from tests.service.finetune.finetune_world import PRODUCT, TEXTS, UNLAWFUL, world_log

WINNER, LOSER = f"限时抢购{PRODUCT.title}", f"温暖上新{PRODUCT.title}"


def _ids(pool: VariantPool) -> dict[str, str]:
    return {v.text: v.variant_id for v in pool.variants}


def test_winners_stay_losers_retire_and_the_promoted_generator_fills(
    bootstrap: CopyGenerator,
) -> None:
    products, pools, log = world_log(4000)
    data = build_training_data(log, pools, products)
    assert isinstance(data, TrainingSet)
    fates = judge(data.values)
    ids = _ids(pools[0])
    assert fates[(PRODUCT.product_id, ids[WINNER])][0] == "winner"
    # the unlawful favourite lifts the cell's mean above every other lawful variant
    assert fates[(PRODUCT.product_id, ids[LOSER])][0] == "loser"
    assert fates[(PRODUCT.product_id, ids[UNLAWFUL])][0] == "unlawful"  # however often clicked
    catalog = {PRODUCT.product_id: PRODUCT}
    (done,) = refresh_pools(pools, data.values, catalog, data.products, bootstrap)
    assert done.after is not None and done.before == pools[0]
    assert set(done.retired) == {ids[t] for t in TEXTS if t != WINNER}
    assert done.kept == {ids[WINNER]: "winner"}
    after = done.after
    assert after.pool_version == pools[0].pool_version + 1
    assert after.generator_version == bootstrap.version
    assert len(after.variants) == len(TEXTS), done.note  # filled back to its size
    new = [v for v in after.variants if v.variant_id in done.added]
    assert len(new) == len(TEXTS) - 1 and not {v.text for v in new} & set(TEXTS)
    texts = [v.text for v in after.variants]
    for i, v in enumerate(after.variants):  # every text passes, near-duplicates included
        assert check(v.text, PRODUCT, "ad_headline", others=texts[:i]).passed, v.text


def test_a_pool_with_nothing_to_retire_is_left_as_it_is(bootstrap: CopyGenerator) -> None:
    pools = world_log(10)[1]
    lawful = pools[0].model_copy(
        update={"variants": [v for v in pools[0].variants if v.text != UNLAWFUL]}
    )
    done = refresh_pool(lawful, PRODUCT, "ad_headline", {}, bootstrap)
    assert done.after is None and done.note == "nothing retired" and not done.added
    assert set(done.kept.values()) == {"undecided"}


def _forced_promotion(*args: Any, **kwargs: Any) -> Verdict:
    metrics = PoolMetrics(0.5, 0.5, 0.0, 0.05, 4.0, 1)
    return Verdict(True, "promoted: forced by the test", metrics, metrics, {})


@pytest.mark.kafka
def test_promotion_refreshes_announces_and_rollback_restores(
    tmp_path: Path,
    tiny_slots_model: Path,
    kafka_bootstrap: str,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round on a tiny model (its copy is noise, so nothing fills the retired places), the
    gate forced to promote: what the topics carry is the point."""
    products, pools, log = world_log(4000)
    monkeypatch.setattr(rounds, "gate", _forced_promotion)
    registry = Registry.under(tmp_path)
    sink = KafkaEventSink(kafka_bootstrap, client_id="test-finetune")
    sink.add(topics.variants, PRODUCT.product_id, pools[0])
    config = RoundConfig(
        train=FinetuneConfig(max_steps=1, batch_size=4, progress=False, device="cpu"),
        device="cpu",
    )
    try:
        result = run_round(
            log,
            pools,
            products,
            registry,
            tiny_slots_model,
            config,
            sink=sink,
            models_topic=topics.models,
            variants_topic=topics.variants,
        )
    finally:
        sink.close()
    assert result.promoted and result.version is not None
    current = registry.current()
    assert current is not None and current.name == result.version
    assert load_pools(current.path / POOLS_BEFORE) == pools  # kept for the rollback
    (refreshed,) = result.pools
    ids = _ids(pools[0])
    kept = {v.variant_id for v in refreshed.variants}
    assert refreshed.pool_version == 2 and ids[WINNER] in kept
    assert not {ids[LOSER], ids[UNLAWFUL]} & kept
    (announced,) = read_topic(kafka_bootstrap, topics.models, ModelAnnouncement, 1)
    assert announced.kind == "generator" and announced.uri == str(current.path)
    on_topic = read_topic(kafka_bootstrap, topics.variants, VariantPool, 2)
    assert [p.pool_version for p in on_topic] == [1, 2]

    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topics.prefix,
        data_dir=tmp_path,
        generator_model=tiny_slots_model,
    )
    back_sink = KafkaEventSink(kafka_bootstrap, client_id="test-finetune-rollback")
    try:
        done = live_rollback(settings, sink=back_sink)
    finally:
        back_sink.close()
    assert done.current is None and registry.current() is None  # the base model serves again
    (restored,) = done.pools
    assert restored.pool_version == 3 and restored.variants == pools[0].variants
    models = read_topic(kafka_bootstrap, topics.models, ModelAnnouncement, 2)
    assert models[-1].kind == "generator" and models[-1].uri == str(tiny_slots_model)
    assert models[-1].version == current.metadata["parent_model_version"]
    on_topic = read_topic(kafka_bootstrap, topics.variants, VariantPool, 3)
    assert on_topic[-1].pool_version == 3 and on_topic[-1].variants == pools[0].variants

"""The promotion gate: a candidate that is worse on any count is not promoted, and says why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generator.model import CopyGenerator
from service.finetune.gate import GateConfig, PoolMetrics, TraitRewards, decide, diversity, gate
from tests.generator.conftest import tiny_model_folder
from tests.service.finetune.finetune_world import PRODUCT, world_log

CURRENT = PoolMetrics(
    pass_rate=0.6,
    distinct_ngrams=0.7,
    near_duplicate_share=0.01,
    expected_reward=0.05,
    pool_size=8,
    products=3,
)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"pass_rate": 0.4, "expected_reward": 0.06}, "pass_rate"),
        ({"distinct_ngrams": 0.5, "expected_reward": 0.06}, "distinct_ngrams"),
        ({"near_duplicate_share": 0.2, "expected_reward": 0.06}, "near_duplicate_share"),
        ({"expected_reward": 0.0502}, "expected_reward"),  # higher, but not by the margin
        ({"expected_reward": 0.04}, "expected_reward"),
    ],
)
def test_a_worse_candidate_is_not_promoted(change: dict[str, Any], check: str) -> None:
    verdict = decide(replace(CURRENT, **change), CURRENT, GateConfig(margin=0.01))
    assert not verdict.promote
    assert not verdict.checks[check]
    assert verdict.reason.startswith("not promoted") and check in verdict.reason


def test_a_better_candidate_is_promoted() -> None:
    verdict = decide(replace(CURRENT, expected_reward=0.06), CURRENT, GateConfig())
    assert verdict.promote and all(verdict.checks.values())


def test_diversity_counts_distinct_ngrams_and_near_duplicates() -> None:
    distinct, near = diversity(["限时抢购羊毛围巾", "限时抢购羊毛围巾", "温暖上新"], "zh")
    assert near == pytest.approx(1 / 3)
    assert 0 < distinct < 1
    assert diversity(["abc def", "xyz uvw"], "en") == (1.0, 0.0)


def test_trait_rewards_learn_what_the_segment_clicks() -> None:
    _, _, log = world_log(4000)
    rewards = TraitRewards.fit(log)
    (segment,) = rewards.segments
    assert rewards.predict(segment, ["urgency"]) > rewards.predict(segment, ["emotion"])
    assert rewards.pool_value([["urgency"], ["emotion"]]) == pytest.approx(
        rewards.predict(segment, ["urgency"])
    )


def test_a_random_model_is_not_promoted_over_the_bootstrap(
    tmp_path: Path, bootstrap: CopyGenerator
) -> None:
    _, _, log = world_log(1000)
    random_weights = CopyGenerator.from_path(
        tiny_model_folder(tmp_path / "tiny", slots_format=True), device="cpu"
    )
    config = GateConfig(pool_size=4, oversample=2)
    verdict = gate(
        random_weights, bootstrap, [(PRODUCT, "ad_headline")], TraitRewards.fit(log), config
    )
    assert not verdict.promote
    assert verdict.candidate.pass_rate < verdict.current.pass_rate
    assert "pass_rate" in verdict.reason

"""The whole simulated loop with the real generator, guardrails and bandit: the learning bars of
TARGETS.md on the standard scenario and on a scenario drawn at random from a seed (tastes nobody
tuned to), the off-policy check against the true value, the written artifacts, and the Kafka
transport through real topics, the real learner and hot-swapped snapshots.

Pools are cached under ``var/cache/simulate`` (keyed by catalog, channel, size, seed and model
digest), so only the first run pays for generation."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.simulate.kafka_loop import KafkaOptions
from service.simulate.pool_source import GeneratorPools
from service.simulate.run import SimulationConfig, simulate
from service.simulate.scenario import load_scenario, parse_scenario, random_scenario
from streams.consumer import EventConsumer
from streams.schemas import Decision
from streams.topics import Topics

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / "var" / "cache" / "simulate"
#: chosen before any run of it, and kept: a seed that fails is a finding, not a seed to swap
RANDOM_SEED = 4242


@pytest.fixture(scope="module")
def source() -> GeneratorPools:
    return GeneratorPools()


#: z of a 99 % over a 95 % normal interval
_WIDER = 2.5758 / 1.9600


def _bars(summary: dict[str, Any]) -> None:
    """TARGETS.md's bars. A 95 % interval misses the truth in one world out of twenty, so a
    test of one fixed world would fail whenever a change to the pools happens to draw such a
    world; here DR must cover the truth at 99 %, and the 95 % coverage rate is what the sweep
    (``benchmarks/bench_simulate.py``) counts over many worlds."""
    ratios, ope = summary["ratios"], summary["ope"]
    assert ratios["bandit_vs_oracle_last_half"] >= 0.9, ratios
    assert ratios["bandit_vs_uniform_last_half"] >= 1.3, ratios
    lo, hi = ope["dr_ci95"]
    half = (hi - lo) / 2 * _WIDER
    assert abs(ope["dr"] - ope["true_value"]) <= half, ope


@pytest.mark.slow
def test_standard_scenario_meets_the_bars(tmp_path: Path, source: GeneratorPools) -> None:
    scenario = load_scenario(REPO / "scenarios" / "standard.json")
    result = simulate(scenario, tmp_path, source=source, config=SimulationConfig(cache_dir=CACHE))
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    assert summary == json.loads(json.dumps(result.summary))
    _bars(summary)
    pol = summary["policies"]
    assert pol["oracle"]["ctr"] >= pol["best_fixed"]["ctr"] >= pol["uniform"]["ctr"]
    # fine-tune rounds every finetune_every decisions, with their control beside them
    rounds = summary["finetune_rounds"]
    assert len(rounds) == (scenario.decisions - 1) // scenario.finetune_every
    assert len(summary["refresh_rounds"]) == len(rounds)
    assert {"bandit_finetune", "bandit_refresh"} <= set(pol)
    for r in rounds:  # TARGETS.md: each promoted round raises the pool's true CTR
        if r["promoted"]:
            assert r["pool_true_ctr_after"] > r["pool_true_ctr_before"], r
    # the loop that refreshes its pools earns more than the bandit on the first pools
    assert summary["ratios"]["true_finetune_vs_bandit_last_half"] > 1.0, summary["ratios"]
    # the informed reference ran on the same shoppers and is reported beside the bandit
    ref = summary["reference"]
    assert summary["ratios"]["reference_vs_oracle_last_half"] == ref["vs_oracle_last_half"]
    assert ref["reaches_bar"] == (ref["vs_oracle_last_half"] >= 0.9)
    assert ref["vs_oracle_last_half"] > 0.8  # the standard scenario is within reach
    assert any("informed reference" in n for n in summary["notes"])
    for name in ("ctr_curve.png", "regret.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 1000
    # every variant shown came from a generated, checked pool of the scenario's size
    assert all(len(p.variants) == scenario.pool_size for p in result.world.pools)
    assert all(v.ai_generated for p in result.world.pools for v in p.variants)


@pytest.mark.slow
def test_unseen_random_scenario_meets_the_bars(tmp_path: Path, source: GeneratorPools) -> None:
    scenario = random_scenario(RANDOM_SEED)
    result = simulate(scenario, tmp_path, source=source, config=SimulationConfig(cache_dir=CACHE))
    _bars(result.summary)


SMALL: dict[str, Any] = {
    "name": "kafka-small",
    "seed": 5,
    "decisions": 600,
    "products": 2,
    "base_ctr": 0.2,
    "pool_size": 4,
    "segments": [
        {"name": "a", "weight": 1, "user": {"age": [20, 24]}, "trait_effects": {"urgency": 1}},
        {"name": "b", "weight": 1, "user": {"age": [50, 59]}, "trait_effects": {"quality": 1}},
    ],
}


@pytest.mark.slow
@pytest.mark.kafka
def test_kafka_transport(
    tmp_path: Path, source: GeneratorPools, kafka_bootstrap: str, topics: Topics
) -> None:
    scenario = parse_scenario(SMALL)
    options = KafkaOptions(
        bootstrap=kafka_bootstrap,
        topics=topics,
        data_dir=tmp_path / "learner",
        batch=100,
        reward_window_s=20.0,
    )
    config = SimulationConfig(transport="kafka", kafka=options, cache_dir=CACHE)
    result = simulate(scenario, tmp_path / "out", source=source, config=config)
    learning = result.bandit.learning
    assert learning["transport"] == "kafka"
    # the learner joined and learned what closed, and the ranker swapped to its snapshots
    assert 300 <= int(learning["learned"]) <= 600  # type: ignore[call-overload]
    assert int(learning["swaps"]) >= 3  # type: ignore[call-overload]
    assert learning["dead_lettered"] == 0
    assert result.bandit.policy.version != "init"
    trace = result.traces["bandit"]
    assert np.array_equal(trace.click, result.shoppers.u < trace.prob)
    assert (tmp_path / "out" / "summary.json").exists()
    # every decision went through the decisions topic, as the policy logged it
    consumer = EventConsumer(kafka_bootstrap, {topics.decisions: Decision}, group_id=None)
    try:
        consumer.assign()
        assert sum(consumer.end_offsets().values()) == scenario.decisions
        seen: dict[str, Decision] = {}
        for _ in range(50):
            for rec in consumer.poll(1.0, 1000):
                assert isinstance(rec.event, Decision)
                seen[str(rec.event.event_id)] = rec.event
            if len(seen) == scenario.decisions:
                break
    finally:
        consumer.close()
    assert len(seen) == scenario.decisions
    first = seen[str(result.shoppers.event_ids[0])]
    assert first.action == trace.action[0] and first.policy_version == "init"
    assert "u_age" in first.context and "segment" not in json.dumps(first.context)


@pytest.mark.slow
@pytest.mark.kafka
def test_cli_kafka_transport(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COPYLOOP_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("COPYLOOP_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}.")
    monkeypatch.setenv("COPYLOOP_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL), encoding="utf-8")
    out = tmp_path / "out"
    args = ["simulate", "--scenario", str(path), "--out", str(out), "--transport", "kafka"]
    args += ["--decisions", "400", "--batch", "100", "--cache", str(CACHE)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["transport"] == "kafka" and summary["decisions"] == 400
    assert summary["bandit"]["learned"] > 0 and summary["bandit"]["swaps"] >= 1
    assert summary["bandit"]["topic_prefix"].startswith(os.environ["COPYLOOP_TOPIC_PREFIX"])
    assert (out / "report.html").exists() and (out / "learner").is_dir()

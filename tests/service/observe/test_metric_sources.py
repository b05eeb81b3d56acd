"""The metrics each process exposes, without a broker: bounded labels, the service's counters
and runtime figures, the learner's collector over real loop-wide counts, and the figures of
generation and fine-tune rounds."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client import generate_latest

from bandit.join import Joined, JoinStats
from bandit.learner import Learner, LearnerStats
from bandit.loop_stats import LoopCounts
from bandit.promotion import Serving
from service.commands.cmd_serve import multiprocess_metrics
from service.observe import scrape, work_metrics
from service.observe.bounded import OTHER, BoundedLabels, ProductVariantLabels
from service.observe.learner_metrics import learner_registry
from service.ranker.metrics import Metrics, RuntimeFigures
from streams.consumer import Received
from streams.schemas import Decision, Event
from tests.bandit.events import decision, feedback
from tests.service.observe.promtext import sample_sum


def test_labels_past_the_cap_fold_into_other() -> None:
    labels = BoundedLabels(2)
    assert [labels.label(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER, "a", OTHER]
    pv = ProductVariantLabels(max_products=1, max_variants=1)
    assert pv.labels("p1", "v1") == ("p1", "v1")
    assert pv.labels("p1", "v2") == ("p1", OTHER)
    assert pv.labels("p2", "v1") == (OTHER, OTHER)


def runtime_figures(published: int, *, version: str = "v1", ready: bool = True) -> RuntimeFigures:
    return RuntimeFigures(published, published, 0, 3, True, 1, 2, version, 1, ready)


def test_service_counts_decisions_feedback_and_copies_runtimeruntime_figures() -> None:
    metrics = Metrics()
    uniform = decision(0.0)
    greedy = decision(1.0).model_copy(
        update={"action_dist": [0.9] + [0.1 / 3] * 3, "pscore": 0.9, "action": 0}
    )
    for d in (uniform, uniform, greedy):
        metrics.decided(d)
    metrics.accepted([feedback(uniform, "impression", 1), feedback(uniform, "click", 2)])
    state = {"figures": runtime_figures(5)}
    metrics.bind(lambda: state["figures"])
    text = metrics.render().decode()
    assert sample_sum(text, "copyloop_decisions_total", product="p1", explored="true") == 2
    assert sample_sum(text, "copyloop_decisions_total", explored="false") == 1
    assert sample_sum(text, "copyloop_feedback_total", kind="click") == 1
    assert sample_sum(text, "copyloop_feedback_accepted_total") == 2
    assert sample_sum(text, "copyloop_decisions_published_total") == 5
    assert sample_sum(text, "copyloop_records_pending") == 3
    assert sample_sum(text, "copyloop_policy_info", version="v1") == 1
    # counters grow by the figures' increase, however often they are copied
    state["figures"] = runtime_figures(8, version="v2")
    metrics.sync()
    text = metrics.render().decode()
    assert sample_sum(text, "copyloop_decisions_published_total") == 8
    assert sample_sum(text, "copyloop_policy_info", version="v1") == 0
    assert sample_sum(text, "copyloop_policy_info", version="v2") == 1
    # a new runtime counts from zero again: its figures add to the totals
    metrics.bind(lambda: runtime_figures(2))
    assert sample_sum(metrics.render().decode(), "copyloop_decisions_published_total") == 10


def test_products_past_the_cap_are_one_label() -> None:
    metrics = Metrics(max_products=1)
    for product in ("p1", "p2", "p3"):
        metrics.decided(decision(0.0).model_copy(update={"product_id": product}))
    text = metrics.render().decode()
    assert sample_sum(text, "copyloop_decisions_total", product="p1") == 1
    assert sample_sum(text, "copyloop_decisions_total", product=OTHER) == 2


def fake_learner(tmp_path: Path) -> SimpleNamespace:
    snapshot = tmp_path / "v7.policy"
    snapshot.write_bytes(b"x")
    stats = LearnerStats(records=12, rewards=2.5, dead_letter_reasons={"late": 2, "future": 1})
    return SimpleNamespace(
        policy=SimpleNamespace(learned=40),
        stats=stats,
        consumer=SimpleNamespace(dead_lettered=3),
        partition_lag=lambda: {("t.decisions", 0): 5, ("t.feedback", 1): 0},
        joiner=SimpleNamespace(stats=JoinStats(joined=9, late_feedback=2), pending=4),
        gate=SimpleNamespace(serving=Serving("v7", snapshot, 40)),
    )


def filled_counts() -> tuple[LoopCounts, Decision, Decision]:
    """Loop-wide counts of two decisions: the first shown and clicked, the second shown."""
    counts = LoopCounts()
    shown, other = decision(0.0), decision(1.0, action=1)
    events: list[Event] = [
        shown,
        other,
        feedback(shown, "impression", 1),
        feedback(shown, "click", 2),
        feedback(other, "impression", 2),
    ]
    counts.read([Received("t.x", 0, i, None, 0, e) for i, e in enumerate(events)])
    counts.joined([Joined(shown, 1.0), Joined(other, 0.0)])
    return counts, shown, other


def test_learner_collector_reads_the_learner_and_the_loop_counts(tmp_path: Path) -> None:
    counts, shown, _ = filled_counts()
    learner = cast(Learner, fake_learner(tmp_path))
    text = generate_latest(learner_registry(learner, counts)).decode()
    assert sample_sum(text, "copyloop_learned_events") == 40
    assert sample_sum(text, "copyloop_rewards_total") == 2.5
    assert sample_sum(text, "copyloop_dead_letters_total", reason="invalid") == 3
    assert sample_sum(text, "copyloop_dead_letters_total", reason="late") == 2
    assert sample_sum(text, "copyloop_consumer_lag", topic="t.decisions", partition="0") == 5
    assert sample_sum(text, "copyloop_join_outcomes_total", outcome="joined") == 9
    assert sample_sum(text, "copyloop_join_pending") == 4
    assert sample_sum(text, "copyloop_model_info", kind="bandit", version="v7") == 1
    assert sample_sum(text, "copyloop_model_snapshot_age_seconds", kind="bandit") >= 0
    assert sample_sum(text, "copyloop_loop_events_total", kind="decisions") == 2
    assert sample_sum(text, "copyloop_loop_events_total", kind="clicks") == 1
    v_shown, v_other = shown.actions[0], shown.actions[1]
    assert sample_sum(text, "copyloop_variant_impressions_total", variant=v_shown) == 1
    assert sample_sum(text, "copyloop_variant_clicks_total", product="p1", variant=v_shown) == 1
    assert sample_sum(text, "copyloop_variant_clicks_total", variant=v_other) == 0
    assert sample_sum(text, "copyloop_segment_trait_shown_total") >= 2
    assert sample_sum(text, "copyloop_segment_trait_clicks_total", segment="18-24|?") >= 1


def test_generation_and_rounds_are_counted_in_the_process_registry() -> None:
    def text() -> str:
        return Metrics().render().decode()

    before = text()
    work_metrics.record_generation(10, 6, 1.5, {"ad_law": 3, "prices": 1, "none": 0})
    work_metrics.record_round("promoted")
    after = text()

    def grew(name: str, **labels: str) -> float:
        return sample_sum(after, name, **labels) - sample_sum(before, name, **labels)

    assert grew("copyloop_generated_candidates_total") == 10
    assert grew("copyloop_generated_variants_total") == 6
    assert grew("copyloop_generation_seconds_total") == 1.5
    assert grew("copyloop_guardrail_rejections_total", rule="ad_law") == 3
    assert grew("copyloop_guardrail_rejections_total", rule="none") == 0
    assert grew("copyloop_finetune_rounds_total", status="promoted") == 1


def test_several_workers_get_an_empty_multiprocess_folder_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(scrape.MULTIPROC_ENV, "unset below; restored after the test")
    monkeypatch.delenv(scrape.MULTIPROC_ENV)
    default = tmp_path / "metrics" / "serve-8000"
    # one worker serves from the command's own process: its registry, no files
    assert multiprocess_metrics(1, None, default) is None
    assert scrape.MULTIPROC_ENV not in os.environ
    default.mkdir(parents=True)
    (default / "counter_123.db").write_bytes(b"a previous run's counts")
    (default / "notes.txt").write_text("not ours")
    assert multiprocess_metrics(2, None, default) == default
    assert os.environ[scrape.MULTIPROC_ENV] == str(default)
    assert [p.name for p in default.iterdir()] == ["notes.txt"]
    chosen = tmp_path / "chosen"
    assert multiprocess_metrics(2, chosen, default) == chosen and chosen.is_dir()

"""The ranker's per-variant counts and their Wilson interval (the one the simulator's summary
uses too)."""

from __future__ import annotations

import gc
import uuid

import pytest

from bandit.features import action_features
from bandit.ope_stats import wilson_interval
from service.ranker.counts import VariantStats
from streams.schemas import Decision, Feedback, FeedbackKind
from tests.service.api.api_helpers import make_pool


def decision(variant_index: int = 0, product_id: str = "p") -> Decision:
    pool = make_pool(product_id)
    feats = [action_features(v, pool.generator_version) for v in pool.variants]
    return Decision(
        event_id=uuid.uuid4(),
        product_id=product_id,
        channel="ad_headline",
        pool_version=1,
        policy_version="init",
        actions=[v.variant_id for v in pool.variants],
        action_features=feats,
        action=variant_index,
        pscore=1 / 3,
        action_dist=[1 / 3] * 3,
    )


def fb(d: Decision, kind: FeedbackKind, fid: str | None = None) -> Feedback:
    return Feedback(feedback_id=fid or uuid.uuid4().hex, event_id=d.event_id, kind=kind)


# -- Wilson interval ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [  # reference values from the closed form (e.g. statsmodels proportion_confint, wilson)
        (0, 10, 0.0, 0.27753),
        (5, 10, 0.23659, 0.76341),
        (10, 10, 0.72247, 1.0),
        (30, 1000, 0.02109, 0.04250),
    ],
)
def test_wilson_interval_matches_reference_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_edges_and_bad_input():
    # no trials: nothing is known, so the whole range (not a zero-width interval at 0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 7)
    assert 0 <= lo < 3 / 7 < hi <= 1
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(-1, 3)
    with pytest.raises(ValueError, match="alpha"):
        wilson_interval(1, 3, alpha=1.5)


def test_a_wider_interval_at_a_smaller_alpha():
    lo95, hi95 = wilson_interval(30, 1000)
    lo99, hi99 = wilson_interval(30, 1000, alpha=0.01)
    assert lo99 < lo95 < 0.03 < hi95 < hi99


def test_a_variant_never_shown_has_the_whole_interval():
    stats = VariantStats()
    stats.add_decision(decision(1))
    assert stats.variant("p", "ad1").ci95 == (0.0, 1.0)
    assert stats.variant("p", "unknown").ci95 == (0.0, 1.0)


# -- per-variant counts ---------------------------------------------------------------------
def test_counts_are_per_event_and_duplicates_do_not_inflate():
    stats = VariantStats()
    d0, d1, d2 = decision(0), decision(0), decision(1)
    for d in (d0, d1, d2):
        stats.add_decision(d)
    stats.add_decision(d0)  # a redelivered decision
    for d in (d0, d1, d2):
        stats.add_feedback(fb(d, "impression"))
    stats.add_feedback(fb(d0, "click"))
    stats.add_feedback(fb(d0, "click"))  # a second click on one event
    stats.add_feedback(fb(d0, "purchase"))  # neither impression nor click
    a, b = stats.variant("p", "ad0"), stats.variant("p", "ad1")
    assert (a.decisions, a.impressions, a.clicks) == (2, 2, 1)
    assert (b.decisions, b.impressions, b.clicks) == (1, 1, 0)
    assert a.ctr == 0.5 and a.ci95 == wilson_interval(1, 2)
    assert stats.duplicates == 2


def test_the_same_variant_id_in_two_products_is_counted_apart():
    stats = VariantStats()
    dp, dq = decision(0, "p"), decision(0, "q")
    for d in (dp, dq, decision(0, "q")):
        stats.add_decision(d)
    stats.add_feedback(fb(dq, "impression"))
    stats.add_feedback(fb(dq, "click"))
    p, q = stats.variant("p", "ad0"), stats.variant("q", "ad0")
    assert (p.decisions, p.impressions, p.clicks) == (1, 0, 0)
    assert (q.decisions, q.impressions, q.clicks) == (2, 1, 1)
    assert stats.products() == ["p", "q"]


def test_counted_events_leave_nothing_for_the_garbage_collector_to_walk():
    # a ranker keeps up to max_events events; were each a tracked object (a list), every full
    # collection would walk all of them with the GIL held, stalling the request path
    stats = VariantStats()
    ds = [decision(i % 3) for i in range(3000)]
    for d in ds[:3]:  # a variant's first event creates its counts, once
        stats.add_decision(d)
    gc.collect()
    before = len(gc.get_objects())
    for d in ds[3:]:
        stats.add_decision(d)
        stats.add_feedback(fb(d, "impression"))
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert sum(stats.variant("p", f"ad{i}").impressions for i in range(3)) == len(ds) - 3


def test_feedback_before_its_decision_is_counted_when_the_decision_arrives():
    stats = VariantStats()
    d = decision(2)
    stats.add_feedback(fb(d, "click"))
    stats.add_feedback(fb(d, "impression"))
    assert stats.variant("p", "ad2").impressions == 0
    stats.add_decision(d)
    c = stats.variant("p", "ad2")
    assert (c.impressions, c.clicks) == (1, 1)


def test_click_without_impression_does_not_count_as_a_click():
    stats = VariantStats()
    d = decision(0)
    stats.add_decision(d)
    stats.add_feedback(fb(d, "click"))
    assert stats.variant("p", "ad0").clicks == 0  # CTR stays within [0, 1]
    stats.add_feedback(fb(d, "impression"))
    assert stats.variant("p", "ad0").clicks == 1


def test_memory_is_bounded():
    stats = VariantStats(max_events=10, max_waiting=5)
    ds = [decision(0) for _ in range(30)]
    for d in ds:
        stats.add_decision(d)
    for _ in range(20):
        stats.add_feedback(fb(decision(), "impression"))  # unknown events: wait, then dropped
    assert len(stats._events) == 10 and len(stats._waiting) == 5
    assert stats.orphans_dropped == 15
    stats.add_feedback(fb(ds[0], "impression"))  # forgotten: waits instead of counting
    assert stats.variant("p", "ad0").impressions == 0
    with pytest.raises(ValueError, match="max_events"):
        VariantStats(max_events=0)

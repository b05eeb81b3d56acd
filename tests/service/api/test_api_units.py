"""Pure parts of the service, no broker: counts and intervals, the pool cache, keys, jobs."""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.errors import Conflict, Forbidden, NotFound, Unauthorized
from service.ranker.counts import VariantStats, wilson_interval
from service.ranker.jobs import JobStatus, JobStore, merge_pools
from service.ranker.keys import check_admin, load_hash_key
from service.ranker.pool_cache import PoolCache
from service.ranker.runtime import PacedDeliver, claim_spool_dir
from streams.schemas import Decision, Feedback
from tests.service.api.api_helpers import make_pool


def decision(variant_index: int = 0, product_id: str = "p") -> Decision:
    pool = make_pool(product_id)
    from bandit.features import action_features

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


def fb(d: Decision, kind: str, fid: str | None = None) -> Feedback:
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
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 7)
    assert 0 <= lo < 3 / 7 < hi <= 1
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


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


# -- pool cache ------------------------------------------------------------------------------
def test_pool_cache_indexes_by_channel_and_language_and_keeps_the_newest():
    cache = PoolCache()
    assert cache.apply(make_pool("p", 2, ("ad_headline", "push")))
    assert not cache.apply(make_pool("p", 1))  # older: ignored
    assert cache.stale_ignored == 1 and cache.version("p") == 2
    actions = cache.actions("p", "push")
    assert actions.ids == ["pu0", "pu1"]
    assert cache.actions("p", "push", "zh").ids == ["pu0", "pu1"]
    assert actions.features[0].generator_version == "g-test"
    with pytest.raises(NotFound) as nf:
        cache.get("q")
    assert nf.value.field == "product_id"
    with pytest.raises(Conflict) as ch:
        cache.actions("p", "social")
    assert ch.value.field == "channel"
    with pytest.raises(Conflict) as lang:
        cache.actions("p", "push", "en")
    assert lang.value.field == "language"


# -- keys --------------------------------------------------------------------------------
def test_hash_key_is_created_once_private_and_reused(tmp_path: Path):
    first = load_hash_key(None, tmp_path)
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "hash.key").st_mode) == 0o600
    assert load_hash_key(None, tmp_path) == first
    assert load_hash_key(None, tmp_path / "other") != first  # random, not a fixed default
    assert load_hash_key(SecretStr("given"), tmp_path) == b"given"


def test_concurrent_workers_agree_on_the_created_key(tmp_path: Path):
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_hash_key(None, tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1


@pytest.mark.parametrize(
    ("header", "key", "error"),
    [
        ("Bearer k", None, Forbidden),
        (None, "k", Unauthorized),
        ("Basic k", "k", Unauthorized),
        ("Bearer ", "k", Unauthorized),
        ("Bearer x", "k", Forbidden),
        ("Bearer kk", "k", Forbidden),
    ],
)
def test_admin_check_refuses(header, key, error):
    with pytest.raises(error) as exc:
        check_admin(header, SecretStr(key) if key else None)
    assert exc.value.field == "authorization"


def test_admin_check_accepts_the_key():
    check_admin("Bearer k3y", SecretStr("k3y"))
    check_admin("bearer  k3y ", SecretStr("k3y"))


# -- jobs and spool slots ------------------------------------------------------------------
def test_job_store_round_trip_and_unknown_ids(tmp_path: Path):
    store = JobStore(tmp_path)
    status = JobStatus(
        job_id=str(uuid.uuid4()), product_id="p", state="queued", channels=["push"], n=4
    )
    store.put(status)
    assert store.get(status.job_id) == status
    for bad in (str(uuid.uuid4()), "../etc/passwd", "x"):
        with pytest.raises(NotFound):
            store.get(bad)


def test_merge_pools_keeps_ids_unique_across_channels():
    a = make_pool("p", 1, ("ad_headline",))
    b = make_pool("p", 1, ("ad_headline",)).model_copy(
        update={"variants": [v.model_copy(update={"channel": "push"}) for v in a.variants]}
    )
    merged = merge_pools("p", [a, b], 7)
    ids = [v.variant_id for v in merged.variants]
    assert len(ids) == len(set(ids)) == 6 and merged.pool_version == 7
    assert "push:ad0" in ids


def test_spool_slots_are_exclusive_while_held(tmp_path: Path):
    first, lock1 = claim_spool_dir(tmp_path)
    second, lock2 = claim_spool_dir(tmp_path)
    assert first != second
    lock1.close()
    again, lock3 = claim_spool_dir(tmp_path)
    assert again == first  # a released slot is reused (its spool gets delivered)
    lock2.close()
    lock3.close()


def test_paced_deliver_batches_calls_and_passes_outcomes_through():
    calls: list[tuple[float, int]] = []

    def deliver(records):
        calls.append((time.monotonic(), len(records)))
        return [None if r[2] != b"bad" else RuntimeError("no") for r in records]

    paced = PacedDeliver(deliver, min_interval_s=0.05)
    out = [paced([("t", None, b"ok"), ("t", None, b"bad")]) for _ in range(3)]
    assert out[0][0] is None and isinstance(out[0][1], RuntimeError)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.049 for g in gaps)

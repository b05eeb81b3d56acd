"""Pure parts of the ranker, no broker: the pool cache, keys, jobs, spool slots and pacing."""

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

from service.errors import Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from service.ranker.jobs import JobStatus, JobStore, merge_pools
from service.ranker.keys import check_admin, load_hash_key
from service.ranker.pool_cache import PoolCache
from service.ranker.runtime import PacedDeliver, claim_spool_dir
from tests.service.api.api_helpers import make_pool


# -- pool cache ------------------------------------------------------------------------------
def test_pool_cache_indexes_by_channel_and_language_and_keeps_the_newest() -> None:
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
def test_hash_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = load_hash_key(None, tmp_path)
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "hash.key").st_mode) == 0o600
    assert load_hash_key(None, tmp_path) == first
    assert load_hash_key(None, tmp_path / "other") != first  # random, not a fixed default
    assert load_hash_key(SecretStr("given"), tmp_path) == b"given"


def test_concurrent_workers_agree_on_the_created_key(tmp_path: Path) -> None:
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
def test_admin_check_refuses(
    header: str | None, key: str | None, error: type[ServiceError]
) -> None:
    with pytest.raises(error) as exc:
        check_admin(header, SecretStr(key) if key else None)
    assert exc.value.field == "authorization"


def test_admin_check_accepts_the_key() -> None:
    check_admin("Bearer k3y", SecretStr("k3y"))
    check_admin("bearer  k3y ", SecretStr("k3y"))


# -- jobs and spool slots ------------------------------------------------------------------
def test_job_store_round_trip_and_unknown_ids(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    status = JobStatus(
        job_id=str(uuid.uuid4()), product_id="p", state="queued", channels=["push"], n=4
    )
    store.put(status)
    assert store.get(status.job_id) == status
    for bad in (str(uuid.uuid4()), "../etc/passwd", "x"):
        with pytest.raises(NotFound):
            store.get(bad)


def test_merge_pools_keeps_ids_unique_across_channels() -> None:
    a = make_pool("p", 1, ("ad_headline",))
    b = make_pool("p", 1, ("ad_headline",)).model_copy(
        update={"variants": [v.model_copy(update={"channel": "push"}) for v in a.variants]}
    )
    merged = merge_pools("p", [a, b], 7)
    ids = [v.variant_id for v in merged.variants]
    assert len(ids) == len(set(ids)) == 6 and merged.pool_version == 7
    assert "push:ad0" in ids


def test_spool_slots_are_exclusive_while_held(tmp_path: Path) -> None:
    first, lock1 = claim_spool_dir(tmp_path)
    second, lock2 = claim_spool_dir(tmp_path)
    assert first != second
    lock1.close()
    again, lock3 = claim_spool_dir(tmp_path)
    assert again == first  # a released slot is reused (its spool gets delivered)
    lock2.close()
    lock3.close()


def test_paced_deliver_batches_calls_and_passes_outcomes_through() -> None:
    calls: list[tuple[float, int]] = []

    def deliver(records):
        calls.append((time.monotonic(), len(records)))
        return [None if r[2] != b"bad" else RuntimeError("no") for r in records]

    paced = PacedDeliver(deliver, min_interval_s=0.05)
    out = [paced([("t", None, b"ok"), ("t", None, b"bad")]) for _ in range(3)]
    assert out[0][0] is None and isinstance(out[0][1], RuntimeError)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    assert all(g >= 0.049 for g in gaps)

"""Keys (docs/security.md): product writes need the write or admin key and are refused when
neither is configured (unless opened for local use); rank and feedback need one of the API keys
when those are configured; generation jobs are rate-limited per key and their files pruned; the
product record a job checks its copy against is the registered one, which an unauthenticated
caller cannot change; a multi-host deployment without a shared hash key does not start. All on
the in-memory sink, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.api.auth import TokenBuckets
from service.errors import ServiceError
from service.ranker.jobs import JobStatus, JobStore
from service.ranker.keys import hash_key_for, is_multi_host
from service.settings import Settings
from tests.ports import free_port
from tests.service.api.api_helpers import (
    PRODUCT,
    StubGenerator,
    bearer,
    make_pool,
    memory_app,
    wait_until,
)

ADMIN_KEY = "admin-key-for-keys"
WRITE_KEY = "write-key-for-keys"
POOL = make_pool("scarf-1", 1, ("ad_headline",))
RANK = {"product_id": "scarf-1", "channel": "ad_headline", "user": {}, "context": {}}


@pytest.fixture
def stub() -> StubGenerator:
    return StubGenerator()


def _finish(client: TestClient, job_id: str) -> dict[str, Any]:
    done: dict[str, Any] = {}

    def finished() -> bool:
        done.update(client.get(f"/v1/jobs/{job_id}").json())
        return done.get("state") in ("succeeded", "failed")

    wait_until(finished, 30, f"job {job_id}")
    return done


def _put(client: TestClient, headers: dict[str, str] | None = None, **fields: Any) -> Any:
    body = {**PRODUCT, **fields}
    return client.put(
        f"/v1/products/{body['product_id']}",
        params={"channel": "ad_headline", "n": 2},
        json=body,
        headers=headers or {},
    )


# -- product writes -------------------------------------------------------------------------


def test_product_writes_are_refused_without_a_configured_write_key(
    tmp_path: Path, stub: StubGenerator
) -> None:
    with memory_app(tmp_path, POOL, generator=stub) as (client, _, _):
        r = _put(client)
        assert r.status_code == 403, r.text
        assert r.json()["field"] == "authorization"
        assert "COPYLOOP_WRITE_KEY" in r.json()["detail"]
        assert _put(client, bearer("anything")).status_code == 403
    assert stub.seen == []


def test_open_product_writes_let_anyone_register_for_local_use(
    tmp_path: Path, stub: StubGenerator
) -> None:
    settings = {"open_product_writes": True}
    with memory_app(tmp_path, POOL, settings=settings, generator=stub) as (client, _, _):
        r = _put(client)
        assert r.status_code == 202, r.text
        assert _finish(client, r.json()["job_id"])["state"] == "succeeded"


def test_product_writes_need_the_write_or_the_admin_key(
    tmp_path: Path, stub: StubGenerator
) -> None:
    settings = {"write_key": WRITE_KEY, "admin_key": ADMIN_KEY}
    with memory_app(tmp_path, POOL, settings=settings, generator=stub) as (client, _, _):
        missing = _put(client)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["field"] == "authorization"
        assert _put(client, {"Authorization": WRITE_KEY}).status_code == 401  # no scheme
        assert _put(client, price=-1).status_code == 401  # the key is checked before the body
        wrong = _put(client, bearer("not-the-key"))
        assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
        for key in (WRITE_KEY, ADMIN_KEY):
            r = _put(client, bearer(key))
            assert r.status_code == 202, r.text
            assert _finish(client, r.json()["job_id"])["state"] == "succeeded"
        # the write key is not an admin key
        assert client.post("/v1/admin/reload", headers=bearer(WRITE_KEY)).status_code == 403


def test_an_unauthenticated_caller_cannot_change_the_registered_product(
    tmp_path: Path, stub: StubGenerator
) -> None:
    settings = {"write_key": WRITE_KEY}
    with memory_app(tmp_path, POOL, settings=settings, generator=stub) as (client, _, rt):
        ok = _put(client, bearer(WRITE_KEY))
        assert _finish(client, ok.json()["job_id"])["state"] == "succeeded"
        # a fake price and brand from someone without the key: refused, the record unchanged
        fake: dict[str, Any] = {"price": 9, "sale_price": 1, "brand": "假牌"}
        assert _put(client, **fake).status_code == 401
        assert _put(client, bearer("guess"), **fake).status_code == 403
        record = rt.jobs.products.get("scarf-9")
        assert record is not None and (record.price, record.brand) == (199, "暖织")
        assert [(p.price, p.brand) for p in stub.seen] == [(199, "暖织")]

        # a job generates from the record as registered when it runs: a queued job whose
        # product was registered again meanwhile is checked against the newer record
        stub.gate = threading.Event()
        busy = _put(client, bearer(WRITE_KEY), product_id="other-1")  # holds the job thread
        wait_until(
            lambda: client.get(f"/v1/jobs/{busy.json()['job_id']}").json()["state"] == "running"
        )
        first = _put(client, bearer(WRITE_KEY), price=299, sale_price=None)
        second = _put(client, bearer(WRITE_KEY), price=259, sale_price=None)
        stub.gate.set()
        for r in (busy, first, second):
            assert _finish(client, r.json()["job_id"])["state"] == "succeeded"
        assert [p.price for p in stub.seen[2:]] == [259, 259]
        assert rt.jobs.products.get("scarf-9").price == 259  # type: ignore[union-attr]


# -- rank and feedback ----------------------------------------------------------------------


@pytest.mark.parametrize("fast_rank", [True, False])
def test_rank_and_feedback_need_an_api_key_when_keys_are_configured(
    tmp_path: Path, fast_rank: bool
) -> None:
    settings = {"api_keys": " key-one, key-two ,", "admin_key": ADMIN_KEY}
    with memory_app(tmp_path, POOL, settings=settings, fast_rank=fast_rank) as (client, _, _):
        missing = client.post("/v1/rank", json=RANK)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["field"] == "authorization"
        for headers in (bearer("key-three"), {"X-API-Key": "key"}, bearer(ADMIN_KEY)):
            wrong = client.post("/v1/rank", json=RANK, headers=headers)
            assert wrong.status_code == 403, (headers, wrong.text)
        for headers in (bearer("key-one"), {"X-API-Key": "key-two"}):
            r = client.post("/v1/rank", json=RANK, headers=headers)
            assert r.status_code == 200, r.text
        event_id = r.json()["event_id"]
        fb = {"feedback_id": "fb-1", "event_id": event_id, "kind": "click"}
        assert client.post("/v1/feedback", json=fb).status_code == 401
        assert client.post("/v1/feedback", json=fb, headers=bearer("nope")).status_code == 403
        ok = client.post("/v1/feedback", json=fb, headers={"X-API-Key": "key-one"})
        assert ok.status_code == 202, ok.text


def test_rank_and_feedback_stay_open_without_api_keys(tmp_path: Path) -> None:
    with memory_app(tmp_path, POOL) as (client, _, _):
        assert client.post("/v1/rank", json=RANK).status_code == 200


# -- generation jobs: rate limit and pruning ------------------------------------------------


def test_generation_jobs_are_rate_limited_per_key_with_retry_after(
    tmp_path: Path, stub: StubGenerator
) -> None:
    settings = {"write_key": WRITE_KEY, "admin_key": ADMIN_KEY, "jobs_per_minute": 2}
    with memory_app(tmp_path, POOL, settings=settings, generator=stub) as (client, _, _):
        assert [_put(client, bearer(WRITE_KEY)).status_code for _ in range(2)] == [202, 202]
        limited = _put(client, bearer(WRITE_KEY))
        assert limited.status_code == 429, limited.text
        assert limited.json()["field"] == "authorization"
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert _put(client, bearer(ADMIN_KEY)).status_code == 202  # another key, its own bucket


def test_token_buckets_refill_evenly() -> None:
    now = [0.0]
    buckets = TokenBuckets(2, clock=lambda: now[0], max_callers=2)
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(30.0)
    now[0] = 29.0
    assert buckets.take("a") == pytest.approx(1.0)
    now[0] = 30.0
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0 and buckets.take("c") == 0.0  # past max_callers: bounded
    assert len(buckets._buckets) <= 2


def test_job_files_past_the_newest_keep_or_older_than_max_age_are_pruned(
    tmp_path: Path,
) -> None:
    now = time.time()

    def write(store: JobStore, ages: list[float]) -> list[str]:
        ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(len(ages))]
        for job_id, age in zip(ids, ages, strict=True):
            store.put(JobStatus(job_id=job_id, product_id="p", state="succeeded", channels=[], n=1))
            os.utime(store.folder / f"{job_id}.json", (now - age, now - age))
        return ids

    def left(store: JobStore) -> list[str]:
        return sorted(p.stem for p in store.folder.glob("*.json"))

    by_count = JobStore(tmp_path / "count", keep=3, max_age_s=3600)
    ids = write(by_count, [50, 40, 30, 20, 10])
    assert by_count.prune(now) == 2
    assert left(by_count) == ids[2:]  # the three newest

    by_age = JobStore(tmp_path / "age", keep=100, max_age_s=3600)
    ids = write(by_age, [7200, 10, 3599])
    assert by_age.prune(now) == 1
    assert left(by_age) == ids[1:]

    unbounded = JobStore(tmp_path / "age")
    assert unbounded.prune(now + 10**6) == 0


def test_the_service_prunes_job_files_after_each_job(tmp_path: Path, stub: StubGenerator) -> None:
    settings = {"open_product_writes": True, "jobs_keep": 2}
    with memory_app(tmp_path, POOL, settings=settings, generator=stub) as (client, _, _):
        jobs = [_put(client, product_id=f"p-{i}").json()["job_id"] for i in range(4)]
        wait_until(lambda: len(stub.seen) == 4, 30, "four jobs")
        wait_until(lambda: client.get(f"/v1/jobs/{jobs[-1]}").json().get("state") == "succeeded")
        wait_until(lambda: len(list((tmp_path / "jobs").glob("*.json"))) == 2, 10, "pruning")
        assert client.get(f"/v1/jobs/{jobs[0]}").status_code == 404


# -- the hash key in a multi-host deployment ------------------------------------------------


def test_a_multi_host_deployment_without_a_hash_key_does_not_start(tmp_path: Path) -> None:
    remote: dict[str, Any] = {"multi_host": True}
    with (
        pytest.raises(ServiceError, match="COPYLOOP_HASH_KEY") as caught,
        memory_app(tmp_path, POOL, settings=remote),
    ):
        pass
    assert caught.value.field == "hash_key"
    # explicitly allowed, or a key given, or declared single-host: it starts
    allowed: list[dict[str, Any]] = [
        {"allow_local_hash_key": True},
        {"hash_key": SecretStr("shared")},
        {"multi_host": False},
    ]
    for i, extra in enumerate(allowed):
        with memory_app(tmp_path / str(i), POOL, settings={**remote, **extra}) as (client, _, _):
            assert client.post("/v1/rank", json=RANK).status_code == 200


@pytest.mark.parametrize(
    ("bootstrap", "multi_host", "expected"),
    [
        ("127.0.0.1:19092", None, False),
        ("localhost:9092,[::1]:9092", None, False),
        ("10.0.0.5:9092", None, True),
        ("127.0.0.1:9092,kafka:9092", None, True),
        ("127.0.0.1:9092", True, True),
    ],
)
def test_multi_host_is_assumed_from_a_remote_broker(
    tmp_path: Path, bootstrap: str, multi_host: bool | None, expected: bool
) -> None:
    settings = Settings(kafka_bootstrap=bootstrap, multi_host=multi_host, data_dir=tmp_path)
    assert is_multi_host(settings) is expected
    if expected:
        with pytest.raises(ServiceError, match="hash_key"):
            hash_key_for(settings)
    else:
        assert hash_key_for(settings) == hash_key_for(settings)  # made once, then reused


def test_copyloop_serve_refuses_a_multi_host_start_without_a_hash_key(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COPYLOOP_")},
        "COPYLOOP_KAFKA_BOOTSTRAP": "kafka.internal:9092",
        "COPYLOOP_DATA_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "service", "serve", "--port", str(free_port())]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired as exc:  # it started serving: the check is missing
        raise AssertionError("copyloop serve started without a hash key") from exc
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "hash_key" in said and "COPYLOOP_ALLOW_LOCAL_HASH_KEY" in said
    assert not (tmp_path / "hash.key").exists()

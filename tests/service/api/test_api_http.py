"""The HTTP API without a broker: the app on an in-memory sink and no Kafka feeds. Rank →
the published decision with its pscore, hashed user ids, feedback as published, the 4xx that
name the field, limits, admin keys, metrics, and the fast path agreeing with the route. What
needs the topics themselves (hot swap, counts, pool updates, dead letters) is in test_api.py."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.bodies import RankResponse
from service.ranker.keys import HASH_KEY_FILE
from service.ranker.record_sinks import MemoryRecordSink
from service.ranker.runtime import Runtime
from streams.schemas import Decision, Feedback, VariantPool
from tests.service.api.api_helpers import PRODUCT, make_pool, memory_app

ADMIN_KEY = "s3cret-admin-key"
#: product writes take the admin key as a write key
WRITE = {"Authorization": f"Bearer {ADMIN_KEY}"}
POOL = make_pool("scarf-1", 1, ("ad_headline", "push"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("svc")
    with memory_app(data, POOL, settings={"admin_key": ADMIN_KEY}, seed=3) as (client, sink, rt):
        yield {"client": client, "sink": sink, "runtime": rt, "data": data}


def _rank(client: TestClient, **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "product_id": "scarf-1",
        "channel": "ad_headline",
        "user": {},
        "context": {},
    }
    payload.update(body)
    r = client.post("/v1/rank", json=payload)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _published(env: dict[str, Any], topic: str, model: type[Any]) -> list[Any]:
    runtime: Runtime = env["runtime"]
    assert runtime.publisher.flush(10), "the publisher did not deliver"
    sink: MemoryRecordSink = env["sink"]
    return sink.events(topic, model)


def test_the_app_publishes_to_its_sink_and_closes_it(tmp_path: Path) -> None:
    with memory_app(tmp_path, POOL) as (client, sink, rt):
        assert client.get("/readyz").status_code == 200  # nothing to catch up on
        answer = _rank(client)
        assert rt.publisher.flush(10)
        pools = sink.events(rt.topics.variants, VariantPool)
        decisions = sink.events(rt.topics.decisions, Decision)
        assert [p.product_id for p in pools] == ["scarf-1"]
        assert [str(d.event_id) for d in decisions] == [answer["event_id"]]
        assert not sink.closed
    assert sink.closed  # the runtime owns its sink


def test_rank_publishes_the_decision_with_its_pscore(env: dict[str, Any]) -> None:
    client = env["client"]
    answers = [
        _rank(client, user={"user_id": f"shopper-{i}", "age": 20 + i, "gender": "f"})
        for i in range(12)
    ]
    by_id = {a["event_id"]: a for a in answers}
    decisions = [
        d
        for d in _published(env, env["runtime"].topics.decisions, Decision)
        if str(d.event_id) in by_id
    ]
    assert sorted(str(d.event_id) for d in decisions) == sorted(by_id)  # each exactly once
    headline_ids = [v.variant_id for v in POOL.variants if v.channel == "ad_headline"]
    for d in decisions:
        a = by_id[str(d.event_id)]
        assert d.actions == headline_ids  # only the requested channel's variants are scored
        assert d.actions[d.action] == a["variant_id"]
        assert d.pscore == pytest.approx(a["pscore"])
        assert d.action_dist[d.action] == pytest.approx(d.pscore)
        assert d.policy_version == a["policy_version"]
        assert a["text"] == next(v.text for v in POOL.variants if v.variant_id == a["variant_id"])
        assert d.context["c_channel"] == "ad_headline"


def test_user_ids_are_only_published_hashed(env: dict[str, Any]) -> None:
    client, topic = env["client"], env["runtime"].topics.decisions
    raw_id = f"raw-user-{uuid.uuid4().hex}"
    answer = _rank(client, user={"user_id": raw_id, "phone": "13800000000", "name": "张三"})
    mine = [d for d in _published(env, topic, Decision) if str(d.event_id) == answer["event_id"]]
    assert len(mine) == 1
    dumped = mine[0].model_dump_json()
    assert raw_id not in dumped and "13800000000" not in dumped and "张三" not in dumped
    assert len(str(mine[0].context["u_id"])) == 16
    key_file = env["data"] / HASH_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # the same user hashes the same way on the next request (a stable, stored key)
    again = _rank(client, user={"user_id": raw_id})
    second = next(
        d for d in _published(env, topic, Decision) if str(d.event_id) == again["event_id"]
    )
    assert second.context["u_id"] == mine[0].context["u_id"]


def test_feedback_single_and_batch_are_published(env: dict[str, Any]) -> None:
    client = env["client"]
    eid = str(uuid.uuid4())
    one = {"feedback_id": f"f-{uuid.uuid4().hex}", "event_id": eid, "kind": "impression"}
    batch = [
        {"feedback_id": f"f-{uuid.uuid4().hex}", "event_id": eid, "kind": k, "value": 99.0}
        for k in ("click", "purchase")
    ]
    r1 = client.post("/v1/feedback", json=one)
    r2 = client.post("/v1/feedback", json=batch)
    assert (r1.status_code, r1.json()) == (202, {"accepted": 1})
    assert (r2.status_code, r2.json()) == (202, {"accepted": 2})
    got = [
        f
        for f in _published(env, env["runtime"].topics.feedback, Feedback)
        if str(f.event_id) == eid
    ]
    assert sorted(f.feedback_id for f in got) == sorted(
        [one["feedback_id"]] + [b["feedback_id"] for b in batch]
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"product_id": "nope", "channel": "ad_headline"}, 404, "product_id"),
        ({"product_id": "scarf-1", "channel": "social"}, 409, "channel"),
        ({"product_id": "scarf-1", "channel": "ad_headline", "language": "en"}, 409, "language"),
        ({"product_id": "scarf-1", "channel": "billboard"}, 422, "body.channel"),
        ({"channel": "ad_headline"}, 422, "body.product_id"),
        ({"product_id": "a b", "channel": "ad_headline"}, 422, "body.product_id"),
        ({"product_id": "a\n", "channel": "ad_headline"}, 422, "body.product_id"),
        ({"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": -3}}, 422, "user.age"),
        (
            {"product_id": "scarf-1", "channel": "ad_headline", "user": {"user_id": ""}},
            422,
            "user.user_id",
        ),
        (
            {"product_id": "scarf-1", "channel": "ad_headline", "context": {"hour": 25}},
            422,
            "context.hour",
        ),
        (
            {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": 10**40}},
            422,
            "body.user",
        ),
        (
            {
                "product_id": "scarf-1",
                "channel": "ad_headline",
                "context": {"ts": "9999-12-31T23:59:00Z"},
            },
            422,
            "context",
        ),
        ({"product_id": "scarf-1", "channel": "ad_headline", "user": [1]}, 422, "body.user"),
    ],
)
def test_bad_rank_requests_are_4xx_naming_the_field(
    env: dict[str, Any], body: dict[str, Any], status: int, field: str
) -> None:
    r = env["client"].post("/v1/rank", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert field.split(".")[-1] in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"feedback_id": "f", "event_id": "not-a-uuid", "kind": "click"}, "event_id"),
        ({"feedback_id": "f", "event_id": str(uuid.UUID(int=1)), "kind": "like"}, "kind"),
        ([], "body"),
        ([{"feedback_id": "f", "event_id": str(uuid.UUID(int=1)), "kind": "click"}] * 1001, "body"),
    ],
)
def test_bad_feedback_is_422_naming_the_field(env: dict[str, Any], body: Any, field: str) -> None:
    r = env["client"].post("/v1/feedback", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


@pytest.mark.parametrize("number", [b"Infinity", b"NaN", b"-Infinity"])
def test_non_finite_numbers_are_422(env: dict[str, Any], number: bytes) -> None:
    body = b'{"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": ' + number + b"}}"
    r = env["client"].post("/v1/rank", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body.user" and "user.age" in r.json()["detail"]


def test_oversized_body_is_413(env: dict[str, Any]) -> None:
    r = env["client"].post(
        "/v1/rank",
        content=b'{"product_id": "scarf-1", "channel": "ad_headline", "pad": "'
        + b"x" * (600 * 1024)
        + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"product_id": "scarf-1", "channel": "ad_headline", "pad": "'
        for _ in range(100):
            yield b"x" * 8192
        yield b'"}'

    r = env["client"].post(
        "/v1/rank", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_admin_reload_needs_the_key(env: dict[str, Any]) -> None:
    client = env["client"]
    assert client.post("/v1/admin/reload").status_code == 401
    assert (
        client.post("/v1/admin/reload", headers={"Authorization": "Basic abc"}).status_code == 401
    )
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403 and wrong.json()["field"] == "authorization"
    ok = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and ok.json()["pools"] >= 1


def test_admin_is_disabled_without_a_key(tmp_path: Path) -> None:
    with memory_app(tmp_path) as (client, _, _):
        r = client.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "disabled" in r.json()["detail"]
        assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_expose_rank_latency_and_counts(env: dict[str, Any]) -> None:
    client = env["client"]
    _rank(client)
    text = client.get("/metrics").text
    for name in (
        "copyloop_rank_latency_seconds_bucket",
        "copyloop_decisions_published_total",
        "copyloop_records_spooled_total",
        "copyloop_feedback_accepted_total",
        "copyloop_dead_letters_total",
        "copyloop_pools",
        "copyloop_ready 1.0",
    ):
        assert name in text, name


@pytest.mark.parametrize(
    ("path_id", "body", "field"),
    [
        ("other", PRODUCT, "product_id"),
        ("scarf-9", {**PRODUCT, "sale_price": 300}, "sale_price"),
        ("scarf-9", {**PRODUCT, "price": -1}, "price"),
        ("scarf-9", {k: v for k, v in PRODUCT.items() if k != "title"}, "title"),
        ("bad id!", PRODUCT, "product_id"),
        ("scarf-9%0A", PRODUCT, "product_id"),
    ],
)
def test_bad_products_are_422_naming_the_field(
    env: dict[str, Any], path_id: str, body: dict[str, Any], field: str
) -> None:
    r = env["client"].put(f"/v1/products/{path_id}", json=body, headers=WRITE)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_bad_product_query_and_unknown_job(env: dict[str, Any]) -> None:
    client = env["client"]
    r = client.put("/v1/products/scarf-9", params={"n": 0}, json=PRODUCT, headers=WRITE)
    assert r.status_code == 422 and "n" in r.json()["field"]
    r = client.put(
        "/v1/products/scarf-9", params={"channel": "billboard"}, json=PRODUCT, headers=WRITE
    )
    assert r.status_code == 422 and "channel" in r.json()["field"]
    missing = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["field"] == "job_id"


RANK_CASES: list[dict[str, Any]] = [
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": 30}},
    {"product_id": "nope", "channel": "ad_headline"},
    {"product_id": "scarf-1", "channel": "social"},
    {"product_id": "scarf-1", "channel": "billboard"},
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": -1}},
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": 10**40}},
    {"channel": "ad_headline"},
]


def test_fastapi_route_and_fast_path_answer_alike(env: dict[str, Any], tmp_path: Path) -> None:
    """The hot path in front of FastAPI and the documented FastAPI route agree."""
    fast = [env["client"].post("/v1/rank", json=body) for body in RANK_CASES]
    with memory_app(tmp_path, POOL, fast_rank=False) as (plain_client, _, _):
        plain = [plain_client.post("/v1/rank", json=body) for body in RANK_CASES]
    for body, a, b in zip(RANK_CASES, fast, plain, strict=True):
        assert a.status_code == b.status_code, body
        if a.status_code == 200:
            # ``explain`` is only present when the request asks for it
            assert set(a.json()) == set(b.json()) == set(RankResponse.model_fields) - {"explain"}
            assert a.json()["product_id"] == b.json()["product_id"]
        else:
            assert a.json()["field"] == b.json()["field"], body

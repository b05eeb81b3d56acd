"""The HTTP API against a real broker: rank → decision on the topic with the right pscore,
snapshot hot-swap, feedback → topic, counts and intervals, admin keys, limits."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bandit.policy import Policy
from bandit.snapshot import write_snapshot
from service.api.app import create_app
from service.api.bodies import RankResponse
from service.ranker.counts import wilson_interval
from service.ranker.keys import HASH_KEY_FILE
from streams.producer import KafkaEventSink
from streams.schemas import DeadLetter, Decision, Feedback, ModelAnnouncement
from streams.topics import Topics
from tests.service.api.api_helpers import (
    make_pool,
    new_topics,
    read_topic,
    settings_for,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.kafka

ADMIN_KEY = "s3cret-admin-key"


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One running app for the module (starting one costs a broker round of consumers)."""
    topics = new_topics(kafka_bootstrap)
    sink = KafkaEventSink(kafka_bootstrap)
    sink.add(topics.variants, "scarf-1", make_pool("scarf-1", 1, ("ad_headline", "push")))
    sink.flush(10)
    data = tmp_path_factory.mktemp("svc")
    settings = settings_for(kafka_bootstrap, topics, data, admin_key=SecretStr(ADMIN_KEY))
    with TestClient(create_app(settings, seed=3)) as client:
        wait_ready(client)
        yield {"client": client, "topics": topics, "sink": sink, "data": data}
    sink.close()


def _rank(client: TestClient, **body) -> dict:
    payload = {"product_id": "scarf-1", "channel": "ad_headline", "user": {}, "context": {}}
    payload.update(body)
    r = client.post("/v1/rank", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def test_rank_publishes_the_decision_with_its_pscore(env, kafka_bootstrap):
    client, topics = env["client"], env["topics"]
    answers = [
        _rank(client, user={"user_id": f"shopper-{i}", "age": 20 + i, "gender": "f"})
        for i in range(12)
    ]
    by_id = {a["event_id"]: a for a in answers}
    decisions = [
        d
        for d in read_topic(kafka_bootstrap, topics.decisions, Decision, len(answers))
        if str(d.event_id) in by_id
    ]
    assert sorted(str(d.event_id) for d in decisions) == sorted(by_id)  # each exactly once
    pool = make_pool("scarf-1", 1, ("ad_headline", "push"))
    headline_ids = [v.variant_id for v in pool.variants if v.channel == "ad_headline"]
    for d in decisions:
        a = by_id[str(d.event_id)]
        assert d.actions == headline_ids  # only the requested channel's variants are scored
        assert d.actions[d.action] == a["variant_id"]
        assert d.pscore == pytest.approx(a["pscore"])
        assert d.action_dist[d.action] == pytest.approx(d.pscore)
        assert d.policy_version == a["policy_version"]
        assert a["text"] == next(v.text for v in pool.variants if v.variant_id == a["variant_id"])
        assert d.context["c_channel"] == "ad_headline"


def test_user_ids_are_only_published_hashed(env, kafka_bootstrap):
    client, topics = env["client"], env["topics"]
    raw_id = f"raw-user-{uuid.uuid4().hex}"
    answer = _rank(client, user={"user_id": raw_id, "phone": "13800000000", "name": "张三"})
    decisions = read_topic(kafka_bootstrap, topics.decisions, Decision, 10**6, timeout_s=3)
    mine = [d for d in decisions if str(d.event_id) == answer["event_id"]]
    assert len(mine) == 1
    dumped = mine[0].model_dump_json()
    assert raw_id not in dumped and "13800000000" not in dumped and "张三" not in dumped
    assert len(str(mine[0].context["u_id"])) == 16
    key_file = env["data"] / HASH_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # the same user hashes the same way on the next request (a stable, stored key)
    again = _rank(client, user={"user_id": raw_id})
    later = read_topic(kafka_bootstrap, topics.decisions, Decision, 10**6, timeout_s=3)
    second = next(d for d in later if str(d.event_id) == again["event_id"])
    assert second.context["u_id"] == mine[0].context["u_id"]


def test_announced_snapshot_is_hot_swapped_and_scores_the_pscore(env, kafka_bootstrap, tmp_path):
    client, topics, sink = env["client"], env["topics"], env["sink"]
    # train a policy that prefers one headline, so its distribution is far from uniform
    trained = Policy(seed=11, version=f"snap-{uuid.uuid4().hex[:6]}")
    pool = make_pool("scarf-1", 1)
    from bandit.features import action_features

    actions = [(v.variant_id, action_features(v, pool.generator_version)) for v in pool.variants]
    template = Decision(
        event_id=uuid.uuid4(),
        product_id="scarf-1",
        channel="ad_headline",
        pool_version=1,
        policy_version="x",
        context={"c_channel": "ad_headline"},
        actions=[a[0] for a in actions],
        action_features=[a[1] for a in actions],
        action=0,
        pscore=1 / 3,
        action_dist=[1 / 3] * 3,
    )
    for i in range(300):
        choice = i % 3
        trained.learn(template.model_copy(update={"action": choice}), 1.0 if choice == 2 else 0.0)
    path = write_snapshot(trained, tmp_path)
    sink.add(
        topics.models,
        "bandit",
        ModelAnnouncement(kind="bandit", version=trained.version, uri=path.as_uri()),
    )
    sink.flush(10)
    wait_until(lambda: _rank(client)["policy_version"] == trained.version, 30, "the hot swap")
    answers = [_rank(client, user={"age": 30}) for _ in range(20)]
    ids = {a["event_id"] for a in answers}
    decisions = [
        d
        for d in read_topic(kafka_bootstrap, topics.decisions, Decision, 10**6, timeout_s=5)
        if str(d.event_id) in ids
    ]
    assert len(decisions) == len(answers)
    for d in decisions:
        expected = trained.pmf(d.context, list(zip(d.actions, d.action_features, strict=True)))
        assert d.action_dist == pytest.approx(expected, abs=1e-6)
        assert d.pscore == pytest.approx(expected[d.action], abs=1e-6)
        assert d.policy_version == trained.version
    assert max(decisions[0].action_dist) > 0.5  # the trained preference shows
    metrics = client.get("/metrics").text
    assert f'copyloop_policy_info{{version="{trained.version}"}} 1.0' in metrics


def test_feedback_single_and_batch_reach_the_topic(env, kafka_bootstrap):
    client, topics = env["client"], env["topics"]
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
        for f in read_topic(kafka_bootstrap, topics.feedback, Feedback, 10**6, timeout_s=5)
        if str(f.event_id) == eid
    ]
    assert sorted(f.feedback_id for f in got) == sorted(
        [one["feedback_id"]] + [b["feedback_id"] for b in batch]
    )


def test_counts_are_exact_for_a_fresh_product(env):
    client, sink, topics = env["client"], env["sink"], env["topics"]
    pid = f"fresh-{uuid.uuid4().hex[:6]}"
    sink.add(topics.variants, pid, make_pool(pid, 1))
    sink.flush(10)
    wait_until(lambda: client.get(f"/v1/products/{pid}/variants").status_code == 200, 30, "pool")
    answers = [_rank(client, product_id=pid) for _ in range(20)]
    fb = [
        {"feedback_id": f"i{a['event_id']}", "event_id": a["event_id"], "kind": "impression"}
        for a in answers
    ]
    fb += [
        {"feedback_id": f"c{a['event_id']}", "event_id": a["event_id"], "kind": "click"}
        for a in answers[:4]
    ]
    fb += [
        {"feedback_id": f"c2{a['event_id']}", "event_id": a["event_id"], "kind": "click"}
        for a in answers[:4]
    ]
    client.post("/v1/feedback", json=fb)

    def totals() -> tuple[int, int, int]:
        rows = client.get(f"/v1/products/{pid}/variants").json()["variants"]
        return (
            sum(r["decisions"] for r in rows),
            sum(r["impressions"] for r in rows),
            sum(r["clicks"] for r in rows),
        )

    wait_until(lambda: totals() == (20, 20, 4), 30, "exact counts")
    for row in client.get(f"/v1/products/{pid}/variants").json()["variants"]:
        assert row["ai_generated"] is True
        if row["impressions"]:
            assert row["ctr"] == pytest.approx(row["clicks"] / row["impressions"])
            assert row["ci95"] == pytest.approx(
                list(wilson_interval(row["clicks"], row["impressions"]))
            )
    page = client.get("/dashboard")
    assert page.status_code == 200 and pid in page.text and "限时8折" in page.text


def test_newer_pool_replaces_older_and_stale_is_ignored(env):
    client, sink, topics = env["client"], env["sink"], env["topics"]
    pid = f"ver-{uuid.uuid4().hex[:6]}"
    sink.add(topics.variants, pid, make_pool(pid, 2))
    sink.flush(10)
    wait_until(lambda: client.get(f"/v1/products/{pid}/variants").status_code == 200, 30, "pool")
    sink.add(topics.variants, pid, make_pool(pid, 1, ("push",)))  # older: ignored
    sink.add(topics.variants, pid, make_pool(pid, 3, ("push",)))
    sink.flush(10)
    wait_until(
        lambda: client.get(f"/v1/products/{pid}/variants").json()["pool_version"] == 3, 30, "v3"
    )
    r = client.post("/v1/rank", json={"product_id": pid, "channel": "ad_headline"})
    assert r.status_code == 409 and r.json()["field"] == "channel"
    assert client.post("/v1/rank", json={"product_id": pid, "channel": "push"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"product_id": "nope", "channel": "ad_headline"}, 404, "product_id"),
        ({"product_id": "scarf-1", "channel": "social"}, 409, "channel"),
        ({"product_id": "scarf-1", "channel": "ad_headline", "language": "en"}, 409, "language"),
        ({"product_id": "scarf-1", "channel": "billboard"}, 422, "body.channel"),
        ({"channel": "ad_headline"}, 422, "body.product_id"),
        ({"product_id": "a b", "channel": "ad_headline"}, 422, "body.product_id"),
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
def test_bad_rank_requests_are_4xx_naming_the_field(env, body, status, field):
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
def test_bad_feedback_is_422_naming_the_field(env, body, field):
    r = env["client"].post("/v1/feedback", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


@pytest.mark.parametrize("number", [b"Infinity", b"NaN", b"-Infinity"])
def test_non_finite_numbers_are_422(env, number):
    body = b'{"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": ' + number + b"}}"
    r = env["client"].post("/v1/rank", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body.user" and "user.age" in r.json()["detail"]


def test_oversized_body_is_413(env):
    r = env["client"].post(
        "/v1/rank",
        content=b'{"product_id": "scarf-1", "channel": "ad_headline", "pad": "'
        + b"x" * (600 * 1024)
        + b'"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"product_id": "scarf-1", "channel": "ad_headline", "pad": "'
        for _ in range(100):
            yield b"x" * 8192
        yield b'"}'

    r = env["client"].post(
        "/v1/rank", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_admin_reload_needs_the_key(env):
    client = env["client"]
    assert client.post("/v1/admin/reload").status_code == 401
    assert (
        client.post("/v1/admin/reload", headers={"Authorization": "Basic abc"}).status_code == 401
    )
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403 and wrong.json()["field"] == "authorization"
    ok = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200 and ok.json()["pools"] >= 1


def test_admin_is_disabled_without_a_key(kafka_bootstrap, tmp_path):
    topics: Topics = new_topics(kafka_bootstrap)
    settings = settings_for(kafka_bootstrap, topics, tmp_path)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "disabled" in r.json()["detail"]
        assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_expose_rank_latency_and_counts(env):
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


def test_malformed_pool_is_dead_lettered_and_the_feed_goes_on(env, kafka_bootstrap):
    client, sink, topics = env["client"], env["sink"], env["topics"]
    pid = f"dl-{uuid.uuid4().hex[:6]}"
    sink.add_raw(topics.variants, pid.encode(), b'{"product_id": "' + pid.encode() + b'"}')
    sink.add(topics.variants, pid, make_pool(pid, 1))
    sink.flush(10)
    wait_until(lambda: client.get(f"/v1/products/{pid}/variants").status_code == 200, 30, "pool")
    letters = [
        d
        for d in read_topic(kafka_bootstrap, topics.deadletter, DeadLetter, 1, 30)
        if d.source_topic == topics.variants
    ]
    assert len(letters) == 1 and "pool_version" in letters[0].reason


RANK_CASES = [
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": 30}},
    {"product_id": "nope", "channel": "ad_headline"},
    {"product_id": "scarf-1", "channel": "social"},
    {"product_id": "scarf-1", "channel": "billboard"},
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": -1}},
    {"product_id": "scarf-1", "channel": "ad_headline", "user": {"age": 10**40}},
    {"channel": "ad_headline"},
]


def test_fastapi_route_and_fast_path_answer_alike(env, kafka_bootstrap, tmp_path):
    """The hot path in front of FastAPI and the documented FastAPI route agree."""
    fast = [env["client"].post("/v1/rank", json=body) for body in RANK_CASES]
    settings = settings_for(kafka_bootstrap, env["topics"], tmp_path)
    with TestClient(create_app(settings, fast_rank=False)) as plain_client:
        wait_ready(plain_client)
        plain = [plain_client.post("/v1/rank", json=body) for body in RANK_CASES]
    for body, a, b in zip(RANK_CASES, fast, plain, strict=True):
        assert a.status_code == b.status_code, body
        if a.status_code == 200:
            assert set(a.json()) == set(b.json()) == set(RankResponse.model_fields)
            assert a.json()["product_id"] == b.json()["product_id"]
        else:
            assert a.json()["field"] == b.json()["field"], body

"""The HTTP API against a real broker, for what needs the topics themselves: an announced
snapshot hot-swapped and scoring the published pscore, counts and intervals from the decisions
and feedback topics, pool updates and dead letters from the variants topic. The HTTP surface
alone runs without a broker in test_api_http.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from bandit.ope_stats import wilson_interval
from bandit.policy import Policy, PolicyConfig
from bandit.snapshot import write_snapshot
from bandit.vw import VWConfig
from service.api.app import create_app
from streams.producer import KafkaEventSink
from streams.schemas import DeadLetter, Decision, ModelAnnouncement
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


def _rank(client: TestClient, **body: Any) -> dict:
    payload = {"product_id": "scarf-1", "channel": "ad_headline", "user": {}, "context": {}}
    payload.update(body)
    r = client.post("/v1/rank", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def test_announced_snapshot_is_hot_swapped_and_scores_the_pscore(env, kafka_bootstrap, tmp_path):
    client, topics, sink = env["client"], env["topics"], env["sink"]
    # train a policy that prefers one headline, so its distribution is far from uniform
    # VW learns from every decision at once (the batch refit would wait for its window)
    trained = Policy(PolicyConfig(VWConfig()), seed=11, version=f"snap-{uuid.uuid4().hex[:6]}")
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

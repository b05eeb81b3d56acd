"""A raw user id and a free-text value planted in requests (``user.user_id``,
``context.category``, ``context.placement``, ``user.recent_categories``, extra fields, requests
refused as bad input) reach nothing the service or the learner keeps: no topic (decisions,
feedback, dead letters, variants, models; dead letters' payloads decoded), no log line, no
metric, no file under the data folders (spool, job files, product records, the learner's
checkpoint and snapshots)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from bandit.learner import Learner, LearnerConfig
from bandit.promotion import PromotionConfig
from bandit.reward import RewardConfig
from service.api.app import create_app
from service.errors import ServiceError
from service.ranker.record_sinks import MemoryRecordSink
from service.ranker.runtime import Runtime
from service.settings import Settings
from streams.schemas import Decision
from streams.serde import decode
from streams.topics import Topics
from tests.service.api.api_helpers import (
    NO_BROKER,
    PRODUCT,
    StubGenerator,
    bearer,
    make_pool,
    memory_app,
    settings_for,
    wait_ready,
    wait_until,
)

RAW_ID = "zhangwei-13800138000"
RAW_TEXT = "Zhang Wei likes velvet"
NEEDLES = (RAW_ID.lower().encode(), RAW_TEXT.lower().encode())
WRITE_KEY = "write-key-raw-ids"

#: a rank request carrying the planted values in every free-form place
PLANTED_USER = {
    "user_id": RAW_ID,
    "age": 31,
    "recent_categories": [RAW_TEXT, RAW_ID, "服饰"],
    "name": RAW_TEXT,
    "phone": RAW_ID,
}
PLANTED_CONTEXT = {"category": RAW_ID, "placement": RAW_TEXT, "note": RAW_TEXT, "hour": 20}


def _plain(blob: bytes) -> list[bytes]:
    """``blob`` and what it decompresses to (gzip, zlib), lower-cased."""
    out = [blob]
    for unpack in (gzip.decompress, zlib.decompress):
        with contextlib.suppress(OSError, zlib.error, EOFError):
            out.append(unpack(blob))
    return [b.lower() for b in out]


def leaks(blob: bytes) -> bool:
    return any(n in b for b in _plain(blob) for n in NEEDLES)


def leaking_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and leaks(p.read_bytes())]


def raw_values(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> dict[str, list]:
    """Every value on the topics ``names``, as bytes, read to the end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: dict[str, list] = {t: [] for t in names}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, "reading the topics back timed out"
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.topic].extend(r.value for r in records)
        return out
    finally:
        consumer.close()


def _rank_planted(client: TestClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {
            "product_id": "scarf-9",
            "channel": "ad_headline",
            "user": {**PLANTED_USER, "user_id": f"{RAW_ID}{i % 2 or ''}"},
            "context": PLANTED_CONTEXT,
        }
        r = client.post("/v1/rank", json=body)
        assert r.status_code == 200, r.text
        ids.append(r.json()["event_id"])
    # refused ones (a bad hour, a bad gender) must not be logged with what they carried
    bad = {"product_id": "scarf-9", "channel": "ad_headline", "user": PLANTED_USER}
    assert (
        client.post(
            "/v1/rank", json={**bad, "context": {**PLANTED_CONTEXT, "hour": 99}}
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/v1/rank", json={**bad, "user": {**PLANTED_USER, "gender": "x" * 17}}
        ).status_code
        == 422
    )
    return ids


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    for name in ("service", "bandit", "streams", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


@pytest.mark.kafka
def test_a_planted_raw_id_reaches_no_topic_log_metric_or_file(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    service_dir, learner_dir = tmp_path / "service", tmp_path / "learner"
    settings = settings_for(kafka_bootstrap, topics, service_dir, write_key=WRITE_KEY)
    with TestClient(create_app(settings, seed=1, generator=StubGenerator())) as client:
        wait_ready(client)
        put = client.put(
            "/v1/products/scarf-9",
            params={"channel": "ad_headline", "n": 2},
            json=PRODUCT,
            headers=bearer(WRITE_KEY),
        )
        assert put.status_code == 202, put.text
        job = put.json()["job_id"]
        wait_until(lambda: client.get(f"/v1/jobs/{job}").json()["state"] == "succeeded")
        ids = _rank_planted(client, 12)
        feedback: list[dict[str, Any]] = []
        for i, event_id in enumerate(ids):
            feedback.append({"feedback_id": f"imp-{i}", "event_id": event_id, "kind": "impression"})
            if i % 3 == 0:
                feedback.append(
                    {
                        "feedback_id": f"clk-{i}",
                        "event_id": event_id,
                        "kind": "click",
                        "user_id": RAW_ID,
                    }
                )
        # an event nobody ranked: the learner dead-letters this one
        feedback.append(
            {
                "feedback_id": "orphan-1",
                "event_id": str(uuid.uuid4()),
                "kind": "click",
                "note": RAW_TEXT,
            }
        )
        assert client.post("/v1/feedback", json=feedback).status_code == 202
        bad = {"feedback_id": "bad-1", "event_id": ids[0], "kind": RAW_TEXT, "user_id": RAW_ID}
        assert client.post("/v1/feedback", json=bad).status_code == 422
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.publisher.flush(10)
        metrics = client.get("/metrics").content

    config = LearnerConfig(
        topics=topics,
        data_dir=learner_dir,
        reward=RewardConfig(window_s=1.0),
        lateness_s=0.0,
        snapshot_every_s=0.5,
        poll_timeout_s=0.2,
        idle_close=True,
        promotion=PromotionConfig(enabled=False),
    )
    learner = Learner.connect(config, kafka_bootstrap)
    try:
        learner.start()
        deadline = time.monotonic() + 60
        while not (learner.stats.learned >= len(ids) and learner.joiner.stats.unknown_feedback):
            assert time.monotonic() < deadline, f"the learner did not get there: {learner.stats}"
            learner.step()
        learner.checkpoint()
    finally:
        learner.close()
    assert config.checkpoint_path.is_file() and any(config.snapshot_dir.iterdir())

    values = raw_values(
        kafka_bootstrap,
        [topics.decisions, topics.feedback, topics.deadletter, topics.variants, topics.models],
    )
    letters = values[topics.deadletter]
    assert letters, "the orphan feedback was not dead-lettered"
    payloads = [base64.b64decode(json.loads(v)["raw"]) for v in letters]
    for topic, found in values.items():
        assert not [v for v in found if leaks(v)], f"the planted value is on {topic}"
    assert not [p for p in payloads if leaks(p)], "the planted value is in a dead letter"
    assert not leaks(metrics), "the planted value is in /metrics"
    assert not leaks(logs.text.encode()), "the planted value is in the logs"
    assert any((service_dir / "jobs").glob("*.json")) and any((service_dir / "spool").iterdir())
    assert leaking_files(tmp_path) == []
    decisions = [decode(Decision, v) for v in values[topics.decisions]]
    assert len(decisions) == len(ids)
    for d in decisions:  # the planted fields were read, hashed, not dropped
        assert d.context["c_category"] != d.context["c_placement"]
        assert all(str(c).startswith("h") for c in d.context["u_cats"])  # type: ignore[union-attr]


class DownSink(MemoryRecordSink):
    """A broker that refuses every record until ``up`` is set: what the app publishes is spooled."""

    up = False

    def deliver(self, records: list) -> list[BaseException | None]:
        if self.up:
            return super().deliver(records)
        return [ConnectionError("the broker is down")] * len(records)


def test_what_the_spool_keeps_holds_no_planted_raw_id(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    sink = DownSink()
    settings = Settings(kafka_bootstrap=NO_BROKER, data_dir=tmp_path, open_product_writes=True)
    with TestClient(create_app(settings, sink=sink, feeds=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.publish_pool(make_pool("scarf-9", 1, ("ad_headline",)))
        ids = _rank_planted(client, 8)
        wait_until(lambda: runtime.publisher.stats.spooled >= len(ids), 20, "the spool")
        spool = [p for p in (tmp_path / "spool").rglob("*") if p.is_file() and p.name != ".lock"]
        assert sum(p.stat().st_size for p in spool) > 0, "nothing was spooled to disk"
        spooled = leaking_files(tmp_path)
        metrics = client.get("/metrics").content
        sink.up = True  # so closing delivers at once
    assert spooled == []
    assert not leaks(metrics) and not leaks(logs.text.encode())
    decisions = sink.events(settings.topics.decisions, Decision)
    assert {str(d.event_id) for d in decisions} >= set(ids)


def _contexts(sink: MemoryRecordSink, runtime: Runtime) -> list[dict[str, Any]]:
    assert runtime.publisher.flush(10)
    return [dict(d.context) for d in sink.events(runtime.topics.decisions, Decision)]


def test_free_text_is_hashed_by_default_and_equal_values_stay_one_feature(tmp_path: Path) -> None:
    pool = make_pool("scarf-1", 1, ("ad_headline",))
    with memory_app(tmp_path, pool) as (client, sink, runtime):
        for category in ("Scarves", " scarves ", "hats"):
            body = {
                "product_id": "scarf-1",
                "channel": "ad_headline",
                "context": {"category": category},
                "user": {"recent_categories": [category]},
            }
            assert client.post("/v1/rank", json=body).status_code == 200
        got = [(c["c_category"], c["u_cats"]) for c in _contexts(sink, runtime)]
    assert got[0] == got[1] != got[2]
    assert all(str(cat).startswith("h") and len(str(cat)) == 17 for cat, _ in got)


def test_the_vocabulary_mode_keeps_listed_values_and_maps_the_rest_to_other(
    tmp_path: Path,
) -> None:
    pool = make_pool("scarf-1", 1, ("ad_headline",))
    settings = {"context_text": "vocabulary", "context_vocabulary": "服饰, Home ,banner"}
    with memory_app(tmp_path, pool, settings=settings) as (client, sink, runtime):
        body = {
            "product_id": "scarf-1",
            "channel": "ad_headline",
            "user": {"recent_categories": ["home", RAW_TEXT]},
            "context": {"category": "服饰", "placement": RAW_ID},
        }
        assert client.post("/v1/rank", json=body).status_code == 200
        [context] = _contexts(sink, runtime)
    assert (context["c_category"], context["c_placement"]) == ("服饰", "other")
    assert context["u_cats"] == ["home", "other"]
    with (
        pytest.raises(ServiceError, match="context_vocabulary"),
        memory_app(tmp_path / "empty", pool, settings={"context_text": "vocabulary"}),
    ):
        pass

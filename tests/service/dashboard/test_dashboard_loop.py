"""Loop-wide figures with two workers, against the real broker: ``copyloop serve --workers 2``
and ``copyloop learn`` as processes, rank requests spread over both workers, and every
worker's dashboard shows the same decision total as the decisions topic holds (the learner's
record on ``copyloop.stats``, not the answering worker's own counts)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams.producer import KafkaEventSink
from streams.schemas import Decision, LoopStats
from streams.topics import Topics
from tests.ports import free_port
from tests.service.api.api_helpers import make_pool, read_topic
from tests.stack import start, stop

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
N = 60


@pytest.fixture
def loop(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[tuple[str, Topics]]:
    sink = KafkaEventSink(kafka_bootstrap)
    sink.add(topics.variants, "scarf-1", make_pool("scarf-1"))
    sink.flush(10)
    sink.close()
    port = free_port()
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_TOPIC_PARTITIONS": "2",
        "COPYLOOP_SNAPSHOT_EVERY_S": "1",
    }
    serve = start(
        ["serve", "--port", str(port), "--workers", "2"],
        {**env, "COPYLOOP_DATA_DIR": str(tmp_path / "serve")},
        tmp_path / "serve.log",
    )
    learn = start(
        ["learn", "--lateness", "1"],
        {**env, "COPYLOOP_DATA_DIR": str(tmp_path / "learn")},
        tmp_path / "learn.log",
    )
    try:
        yield f"http://127.0.0.1:{port}", topics
    finally:
        stop(serve)
        stop(learn)


def _wait_ready(url: str) -> None:
    """Until two distinct workers (by pid; fresh connections, so either may answer) are
    ready with the pool loaded."""
    ready: set[int] = set()
    deadline = time.monotonic() + 120
    while len(ready) < 2 and time.monotonic() < deadline:
        try:
            data = httpx.get(f"{url}/dashboard/data.json", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(0.2)
            continue
        worker = data["health"]["worker"]
        if worker["ready"] and [p["product_id"] for p in data["leaderboard"]] == ["scarf-1"]:
            ready.add(worker["pid"])
        time.sleep(0.1)
    assert len(ready) == 2, "the two workers did not become ready"


def test_two_workers_show_the_decisions_on_the_topic(loop, kafka_bootstrap):
    url, topics = loop
    with httpx.Client(base_url=url, timeout=5) as http:
        _wait_ready(url)
        ids = []
        body = {"product_id": "scarf-1", "channel": "ad_headline"}
        for _ in range(N):
            # a fresh connection each time, so the requests spread over both workers
            r = httpx.post(f"{url}/v1/rank", json=body)
            assert r.status_code == 200, r.text
            ids.append(r.json()["event_id"])
        seen = [{"feedback_id": f"i{e}", "event_id": e, "kind": "impression"} for e in ids[:20]]
        assert http.post("/v1/feedback", json=seen).status_code == 202
        decisions = read_topic(kafka_bootstrap, topics.decisions, Decision, N, 60)
        assert sorted(str(d.event_id) for d in decisions) == sorted(ids)
        # every worker's dashboard: the learner's totals, equal to the topic's decisions
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            data = httpx.get(f"{url}/dashboard/data.json", timeout=5).json()
            totals = data["totals"]
            if data["source"] == "learner" and totals.get("impressions") == 20:
                answers[data["health"]["worker"]["pid"]] = data
                if len(answers) == 2:
                    break
            time.sleep(0.3)
        assert len(answers) == 2, f"not both workers showed the learner's figures: {answers}"
        for data in answers.values():
            assert data["totals"]["decisions"] == len(decisions) == N
            board = data["leaderboard"][0]
            assert board["product_id"] == "scarf-1" and board["decisions"] == N
            assert sum(b["decisions"] for b in data["series"]) == N
        record = read_topic(kafka_bootstrap, topics.stats, LoopStats, 1, 30)[-1]
        assert record.figures["totals"]["decisions"] == N

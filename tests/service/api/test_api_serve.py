"""``copyloop serve`` as a real process with two uvicorn workers: both answer rank, and SIGTERM
stops them cleanly with every decision delivered."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from streams.producer import KafkaEventSink
from streams.schemas import Decision
from tests.conftest import REPO
from tests.service.api.api_helpers import make_pool, new_topics, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_two_workers_ranks_and_stops_cleanly(kafka_bootstrap, tmp_path):
    topics = new_topics(kafka_bootstrap)
    sink = KafkaEventSink(kafka_bootstrap)
    sink.add(topics.variants, "scarf-1", make_pool("scarf-1"))
    sink.flush(10)
    sink.close()
    port = _port()
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = 0
        while ready < 5 and time.monotonic() < deadline:  # several answers: both workers up
            try:
                ready = ready + 1 if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            time.sleep(0.2)
        assert ready == 5, "the service did not become ready"
        with httpx.Client(base_url=url, timeout=5) as http:
            answers = [
                http.post("/v1/rank", json={"product_id": "scarf-1", "channel": "ad_headline"})
                for _ in range(40)
            ]
        assert all(a.status_code == 200 for a in answers)
        ids = sorted(a.json()["event_id"] for a in answers)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    slots = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert slots == ["slot-0", "slot-1"]  # one spool per worker
    decisions = read_topic(kafka_bootstrap, topics.decisions, Decision, len(ids), 60)
    assert sorted(str(d.event_id) for d in decisions) == ids

"""The metrics against real parts: ``copyloop serve --workers 2`` and ``copyloop learn`` run as
processes on a real broker, a real Prometheus server (Debian's package) scrapes both, and
PromQL over its HTTP API returns what the test sent, whichever worker answered."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.producer import KafkaEventSink
from streams.topics import Topics
from tests.conftest import REPO
from tests.ports import free_port
from tests.service.api.api_helpers import make_pool
from tests.service.observe.promtext import sample_sum
from tests.stack import start, stop
from tests.system_tools import system_tool

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_RANKS = 30
N_CLICKS = 5


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on time-out."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def _scrape(url: str) -> str:
    return httpx.get(url, timeout=5).text


@pytest.fixture
def stack(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The service (two workers) and the learner on ``topics``, with a pool for one product."""
    sink = KafkaEventSink(kafka_bootstrap)
    sink.add(topics.variants, "scarf-1", make_pool("scarf-1"))
    sink.flush(10)
    sink.close()
    env = {
        **os.environ,
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_TOPIC_PARTITIONS": "2",
        "COPYLOOP_DATA_DIR": str(tmp_path / "data"),
        "COPYLOOP_SNAPSHOT_EVERY_S": "1",
        "COPYLOOP_REWARD_WINDOW_S": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port, learner_port = free_port(), free_port()
    serve_args = ["serve", "--port", str(port), "--workers", "2"]
    learn_args = ["learn", "--metrics-port", str(learner_port), "--lateness", "0"]
    service = start(serve_args, env, tmp_path / "serve.log")
    learner = start(learn_args, env, tmp_path / "learn.log")
    try:
        yield {
            "service": f"127.0.0.1:{port}",
            "learner": f"127.0.0.1:{learner_port}",
            "procs": (service, learner),
            "metrics_dir": tmp_path / "data" / "metrics" / f"serve-{port}",
        }
    finally:
        stop(service)
        stop(learner)


def _prometheus(tmp_path: Path, targets: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A Prometheus server on loopback scraping ``targets`` (job → host:port) every second."""
    binary = system_tool("prometheus")
    port = free_port()
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in targets.items()
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{jobs}"
    )
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (tmp_path / "prometheus.log").open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _query(base: str, expr: str) -> float | None:
    """The single value of an instant PromQL query (None: no series yet)."""
    r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_service_workers_and_learner(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    service, learner = stack["service"], stack["learner"]
    _until(
        lambda: all(
            httpx.get(f"http://{service}/readyz", timeout=2).status_code == 200 for _ in range(6)
        ),
        120,
        "the service (both workers) ready",
    )
    _until(
        lambda: "copyloop_learned_events" in _scrape(f"http://{learner}/metrics"),
        60,
        "the learner's /metrics",
    )
    event_ids = []
    with httpx.Client(base_url=f"http://{service}", timeout=5) as http:
        for _ in range(N_RANKS):
            r = http.post("/v1/rank", json={"product_id": "scarf-1", "channel": "ad_headline"})
            assert r.status_code == 200, r.text
            event_ids.append(r.json()["event_id"])
        feedback = [
            {"feedback_id": uuid.uuid4().hex, "event_id": e, "kind": "impression"}
            for e in event_ids
        ] + [
            {"feedback_id": uuid.uuid4().hex, "event_id": e, "kind": "click"}
            for e in event_ids[:N_CLICKS]
        ]
        r = http.post("/v1/feedback", json=feedback)
        assert r.status_code in (200, 202), r.text
    # whichever worker answers, /metrics shows both workers' requests summed
    for _ in range(6):
        text = _scrape(f"http://{service}/metrics")
        assert sample_sum(text, "copyloop_rank_requests_total", outcome="ok") == N_RANKS
        assert sample_sum(text, "copyloop_decisions_total") == N_RANKS
        assert sample_sum(text, "copyloop_feedback_total", kind="click") == N_CLICKS

    prom, base = _prometheus(tmp_path, {"copyloop-service": service, "copyloop-learner": learner})
    try:
        _until(lambda: _query(base, 'sum(up{job=~"copyloop-.*"})') == 2, 60, "both targets up")
        decisions = _until(
            lambda: (
                _query(base, 'sum(copyloop_decisions_total{job="copyloop-service"})') == N_RANKS
            ),
            30,
            "the service's decisions in Prometheus",
        )
        assert decisions
        assert (
            _query(base, 'sum(copyloop_rank_latency_seconds_count{job="copyloop-service"})')
            == N_RANKS
        )
        # the learner read every decision and every click the service published
        _until(
            lambda: (
                _query(base, 'copyloop_loop_events_total{kind="decisions"}') == N_RANKS
                and _query(base, 'copyloop_loop_events_total{kind="clicks"}') == N_CLICKS
            ),
            60,
            "the learner's loop-wide counts in Prometheus",
        )
        assert _query(base, 'sum(copyloop_variant_clicks_total{product="scarf-1"})') == N_CLICKS
        assert _query(base, 'sum(copyloop_consumer_lag{job="copyloop-learner"})') == 0
    finally:
        stop(prom)
    # the workers' files were this run's; once they exit, their live gauges leave the sum
    files = stack["metrics_dir"]
    assert any(files.glob("counter_*.db")) and any(files.glob("gauge_livesum_*.db"))
    stop(stack["procs"][0])
    assert not list(files.glob("gauge_live*.db"))

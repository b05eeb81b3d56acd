"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) loads
``/dashboard`` from a running server whose learner record holds an hour of traffic, runs the
page's own script, and the DOM it leaves has charts drawn with data: trend lines with points,
heatmap cells with values, leaderboard bars. A screenshot is kept under
``var/test-artifacts/`` for a person to look at."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from bandit.policy import Policy
from service.api.app import create_app
from service.ranker.record_sinks import MemoryRecordSink
from service.settings import Settings
from tests.conftest import REPO
from tests.ports import free_port
from tests.service.api.api_helpers import NO_BROKER
from tests.service.dashboard.dash_helpers import pool, stats_record, traffic, trained_policy
from tests.system_tools import system_tool

ARTIFACTS = REPO / "var" / "test-artifacts"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A server on loopback with a pool, a trained policy and the learner's record of an hour
    of its traffic; yields its base URL."""
    settings = Settings(kafka_bootstrap=NO_BROKER, topic_prefix="dash.", data_dir=tmp_path)
    app = create_app(settings, sink=MemoryRecordSink(), feeds=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start"
        p = pool()
        policy = trained_policy(p, n=1200)
        rt = app.state.runtime
        rt.publish_pool(p)
        rt.policy.swap(policy)
        # half an hour of uniform choices, then half an hour of the trained policy
        start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        events = list(traffic(Policy(seed=1), p, 180, seed=10, start=start, step_s=10))
        later = start + timedelta(minutes=30)
        events += traffic(policy, p, 180, seed=11, start=later, step_s=10)
        app.state.loop_stats.apply(stats_record(events, policy))
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    exe = system_tool("chromium")
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_charts_render_with_data_in_headless_chromium(served: str, tmp_path: Path) -> None:
    url = f"{served}/dashboard"
    done = _chromium(["--dump-dom", "--virtual-time-budget=8000", url], tmp_path / "p1")
    dom = done.stdout
    assert done.returncode == 0 and "data-rendered=" in dom, done.stderr[-2000:]
    # the click-rate trend: the logged CTR and the policy's estimate as lines of many points
    for cls in ("ctr", "policy", "uniform"):
        points = re.findall(rf'<polyline[^>]*class="series {cls}"[^>]*data-points="(\d+)"', dom)
        assert points and int(points[0]) >= 50, cls
    lines = re.findall(r'<polyline\b[^>]*?\spoints="([^"]+)"', dom)
    assert all(len(line.split()) >= 2 for line in lines) and len(lines) >= 5
    assert 'class="band"' in dom  # the current policy's interval
    cells = re.findall(r'<rect class="cell"[^>]*data-value="([^"]*)"', dom)
    assert len(cells) >= 6 and sum(1 for v in cells if v) >= 6
    # a bar per variant with traffic (a trained policy may never show the worst one)
    assert len(re.findall(r'class="share-bar"', dom)) == 3
    assert len(re.findall(r'class="ctr-bar"', dom)) >= 2
    assert len(re.findall(r'class="ope-bar"', dom)) == 3
    assert "限时8折 羊毛围巾" in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    done = _chromium(
        [
            f"--screenshot={shot}",
            "--window-size=1400,2200",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
            url,
        ],
        tmp_path / "p2",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

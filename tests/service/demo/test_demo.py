"""`copyloop demo` end to end on a small scenario: learner, service and fine-tune worker start,
the generator's pools are published through the API, shoppers rank and click, the live table
carries the fine-tune rows, children stop afterwards."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.service.demo.test_live_shoppers import ROUND_ROW, SUMMARY, VERDICT_ROW

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_runs_the_loop(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenario = {
        "name": "demo-test",
        "seed": 3,
        "decisions": 1000,
        "products": 2,
        "channel": "ad_headline",
        "language": "zh",
        "base_ctr": 0.05,
        "pool_size": 4,
        "segments": [
            {
                "name": "a",
                "weight": 1,
                "user": {"age": [20, 30], "gender": "f"},
                "trait_effects": {"urgency": 1.0},
            },
        ],
    }
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    env = os.environ | {
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_DATA_DIR": str(tmp_path / "data"),
        "COPYLOOP_TOPIC_PREFIX": f"demo{uuid.uuid4().hex[:6]}.",
        "COLUMNS": "200",
    }
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "demo",
            "--minutes",
            "0.2",
            "--scenario",
            str(path),
            "--port",
            str(port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    decisions = int(re.findall(r"decisions\s*│\s*(\d+)", out.stdout)[-1])
    errors = int(re.findall(r"request errors\s*│\s*(\d+)", out.stdout)[-1])
    assert decisions > 50
    assert errors == 0
    assert "2 pools published" in out.stdout
    summary = [line for line in out.stdout.splitlines() if line.startswith("summary:")]
    assert len(summary) == 1 and re.fullmatch(SUMMARY, summary[0].strip()), out.stdout[-2000:]
    # the fine-tune rows (a 12-second demo rarely reaches a round: their format is the point)
    assert re.fullmatch(ROUND_ROW, _row("fine-tune round", out.stdout)), out.stdout[-2000:]
    assert re.fullmatch(VERDICT_ROW, _row("fine-tune verdict", out.stdout))
    assert re.fullmatch(r"\S+-[0-9a-f]{10}", _row("generator version", out.stdout))
    finetune = [line for line in out.stdout.splitlines() if line.startswith("fine-tune:")]
    assert len(finetune) == 1 and re.fullmatch(
        r"fine-tune: (no round yet \(one every \d+ joined rewards\)|\d+ round\(s\), .+)",
        finetune[0].strip(),
    )
    # the children are gone: nothing listens on the service port any more
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    logs = tmp_path / "data" / "demo"
    assert (logs / "service.log").exists() and (logs / "learner.log").exists()
    assert "following" in (logs / "finetune.log").read_text()  # the worker followed the learner


def _row(name: str, table: str) -> str:
    """The value of the live table's row ``name``, as last drawn."""
    return str(re.findall(rf"{name}\s*│\s*(.+?)\s*│", table)[-1])

"""Tests do not take the caller's ``COPYLOOP_*`` settings (only the broker's address): a
session started from a shell with an admin key set runs as one without. The check runs a
probe test in a fresh pytest process with such a shell environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PROBE_FLAG = "ISOLATION_PROBE"


@pytest.mark.skipif(PROBE_FLAG not in os.environ, reason="run by the test below only")
def test_probe_sees_no_caller_settings() -> None:
    settings = Settings()
    assert settings.admin_key is None
    assert settings.topic_prefix == "copyloop."
    assert os.environ["COPYLOOP_KAFKA_BOOTSTRAP"] == os.environ[PROBE_FLAG]


@pytest.mark.slow
def test_the_callers_copyloop_settings_do_not_reach_a_test(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COPYLOOP_")},
        "COPYLOOP_ADMIN_KEY": "set-in-the-shell",
        "COPYLOOP_TOPIC_PREFIX": "shell.",
        "COPYLOOP_KAFKA_BOOTSTRAP": "127.0.0.1:19999",
        PROBE_FLAG: "127.0.0.1:19999",
    }
    probe = f"{Path(__file__).relative_to(REPO)}::test_probe_sees_no_caller_settings"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout

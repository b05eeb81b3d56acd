"""The real stack for tests: ``copyloop`` processes of their own, on the broker and topics a
test names, stopped however the test ends (tests only ever stop processes they started, by
their pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from streams.topics import Topics
from tests.service.api.api_helpers import wait_until

REPO = Path(__file__).resolve().parents[1]


def stack_env(bootstrap: str, topics: Topics, data_dir: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without its ``COPYLOOP_*`` settings, plus the broker, topics,
    data dir and ``settings`` (``reward_window_s="2"`` becomes ``COPYLOOP_REWARD_WINDOW_S``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPYLOOP_")}
    env |= {
        "COPYLOOP_KAFKA_BOOTSTRAP": bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_TOPIC_PARTITIONS": "2",
        "COPYLOOP_DATA_DIR": str(data_dir),
        "COLUMNS": "240",  # the console wraps at its width: keep each message on one line
    }
    return env | {f"COPYLOOP_{k.upper()}": v for k, v in settings.items()}


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``copyloop ARGS`` (``python -m service``) as a child whose pid the test keeps; its
    output goes to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM, then the exit status; a SIGKILL if it hangs, so no test leaves it running."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@contextmanager
def serving(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``copyloop serve`` on ``127.0.0.1:port``, ready (``/readyz`` 200) when the block starts
    and stopped when it ends; its output goes to ``log``."""
    cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"], cwd=REPO, env=env, stdout=out, stderr=out
        )

    def ready() -> bool:
        assert proc.poll() is None, f"serve exited: {log.read_text()[-2000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 180, "copyloop serve to be ready")
        yield proc
    finally:
        stop(proc)

"""The whole loop on one machine (``copyloop demo``): a local Kafka, the learner and the HTTP
service as child processes, and pools written by the real generator through ``PUT
/v1/products``. The shoppers who then ask ``/v1/rank`` and report through ``/v1/feedback`` are
the simulator's (``service.demo.live_shoppers``): this module only starts, watches and stops the
processes and talks to the service."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.errors import DemoError
from service.settings import Settings
from streams.schemas import Product


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise DemoError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


def start_child(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    """``copyloop ARGS`` as a child whose output goes to ``logs/NAME.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "service", *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Child(name, proc, log)


def child_env(settings: Settings, bootstrap: str, *, window_s: float, snapshot_s: float) -> dict:
    """The children's settings: short reward windows and frequent snapshots so that learning is
    visible within minutes; a fresh admin key unless one is set."""
    admin = settings.admin_key.get_secret_value() if settings.admin_key else secrets.token_hex(16)
    return os.environ | {
        "COPYLOOP_KAFKA_BOOTSTRAP": bootstrap,
        "COPYLOOP_TOPIC_PREFIX": settings.topic_prefix,
        "COPYLOOP_DATA_DIR": str(settings.data_dir.resolve()),
        "COPYLOOP_REWARD_WINDOW_S": str(window_s),
        "COPYLOOP_SNAPSHOT_EVERY_S": str(snapshot_s),
        "COPYLOOP_ADMIN_KEY": admin,
    }


def wait_ready(client: httpx.Client, children: list[Child], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            child.check()
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise DemoError(f"the service did not become ready within {timeout_s:.0f} s")


def publish_products(
    client: httpx.Client,
    products: list[Product],
    channel: str,
    n: int,
    on_done: Callable[[], None],
    timeout_s: float = 600.0,
    key: str | None = None,
) -> None:
    """PUT every product (the service generates and publishes its pool) and wait for the jobs;
    ``key`` (the admin key, which the service also takes as a write key) authorises the PUTs."""
    jobs = {}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for p in products:
        r = client.put(
            f"/v1/products/{p.product_id}",
            params={"channel": channel, "n": n},
            json=p.model_dump(mode="json"),
            headers=headers,
        )
        if r.status_code != 202:
            raise DemoError(f"PUT {p.product_id}: {r.status_code} {r.text}")
        jobs[p.product_id] = r.json()["job_id"]
    deadline = time.monotonic() + timeout_s
    while jobs and time.monotonic() < deadline:
        for pid, job in list(jobs.items()):
            view = client.get(f"/v1/jobs/{job}").json()
            if view["state"] == "failed":
                raise DemoError(f"generating {pid} failed: {view.get('error')}")
            if view["state"] == "succeeded":
                del jobs[pid]
                on_done()
        time.sleep(0.3)
    if jobs:
        raise DemoError(f"generation did not finish for {sorted(jobs)}")

"""Fault tests of the ranker's publisher against the real stack, each ending with counts that
prove nothing acknowledged was lost and nothing arrived twice:

* ``copyloop serve`` with durable acknowledgements, SIGKILLed under rank load, then restarted:
  every decision it answered 200 for is on the decisions topic, once;
* the spool's file system filling up (a 1 MiB tmpfs) while the broker is away: the service
  refuses work with 503 and ``/readyz`` says why, no line is torn, and once space returns and
  the broker is back every accepted feedback is on the topic, once."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.ranker import disk_spool
from service.ranker.record_sinks import kafka_record_sink
from service.settings import Settings
from streams.errors import BrokerUnavailable
from streams.producer import KafkaEventSink
from streams.schemas import Decision, Feedback
from streams.topics import Topics
from tests.faults.counts import report_counts
from tests.ports import free_port
from tests.service.api.api_helpers import make_pool, read_topic, settings_for, wait_until
from tests.stack import serving, stack_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RANK = {"product_id": "scarf-1", "channel": "ad_headline", "user": {"user_id": "u1", "age": 30}}


# -- a ranker SIGKILLed under load with durable acknowledgements ----------------------------------
def test_ranker_sigkilled_under_load_with_durable_acks_loses_no_acknowledged_decision(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    producer = KafkaEventSink(kafka_bootstrap)
    producer.add(topics.variants, "scarf-1", make_pool("scarf-1"))
    producer.flush(30)
    producer.close()
    env = stack_env(kafka_bootstrap, topics, tmp_path / "data", durable_ack="true")
    port, log = free_port(), tmp_path / "serve.log"
    acked: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def shopper() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not done.is_set():
                try:
                    r = client.post("/v1/rank", json=RANK)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["event_id"])

    shoppers = [threading.Thread(target=shopper) for _ in range(4)]
    try:
        with serving(env, port, log) as server:
            for t in shoppers:
                t.start()
            wait_until(lambda: len(acked) >= 300, 60, "load")
            server.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            server.wait(30)
    finally:
        done.set()
        for t in shoppers:
            t.join(30)
    with lock:
        answered = list(acked)
    with serving(env, port, log):  # a restart delivers whatever the killed one had spooled
        decisions = read_topic(kafka_bootstrap, topics.decisions, Decision, len(answered), 120)
    on_topic = Counter(str(d.event_id) for d in decisions)
    found = sum(1 for e in answered if e in on_topic)
    duplicates = sum(n - 1 for n in on_topic.values())
    # decisions on the topic beyond the acknowledged ones were in flight at the kill
    report_counts(
        "ranker-sigkill-durable-ack",
        acked=len(answered),
        found=found,
        duplicates=duplicates,
        on_topic=sum(on_topic.values()),
    )
    assert found == len(answered)
    assert duplicates == 0


# -- a full disk under the spool -------------------------------------------------------------------
class SwitchedSink:
    """The ranker's real Kafka producer behind a switch that plays a broker outage."""

    def __init__(self, settings: Settings) -> None:
        self.inner = kafka_record_sink(settings)
        self.settle_timeout_s = self.inner.settle_timeout_s
        self.down = False

    def deliver(self, records: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
        if self.down:
            raise BrokerUnavailable("the broker is away (scripted)")
        return self.inner.deliver(records)

    def close(self, timeout_s: float = 10.0) -> None:
        self.inner.close(timeout_s)


@contextmanager
def small_disk(folder: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A ``size``-byte file system at ``folder``: a tmpfs where this process may mount one,
    else a disk simulated under the spool (its fsync fails with ENOSPC past ``size`` bytes
    written into the folder)."""
    folder.mkdir(parents=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if not mounted:
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            used = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            if used > size:
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            real_fsync(fd)

        monkeypatch.setattr(disk_spool.os, "fsync", fsync)
    try:
        yield "tmpfs" if mounted else "simulated"
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the file system at ``folder`` with one file."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def _feedback(i: int) -> dict[str, Any]:
    return {"feedback_id": f"fb-{i}", "event_id": str(uuid.uuid4()), "kind": "click"}


def test_full_disk_under_the_spool_refuses_work_and_loses_nothing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, 1024 * 1024, monkeypatch) as kind:
        settings = settings_for(kafka_bootstrap, topics, disk / "data")
        sink = SwitchedSink(settings)
        accepted: list[str] = []
        refused: list[Any] = []
        with TestClient(create_app(settings, sink=sink, feeds=False)) as client:
            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            runtime.publish_pool(make_pool("scarf-1"))
            assert runtime.publisher.flush(30)
            filler = _fill(disk, 48 * 1024) if kind == "tmpfs" else None
            sink.down = True
            n = 0
            while not refused and n < 5000:
                batch = [_feedback(n + i) for i in range(20)]
                n += 20
                r = client.post("/v1/feedback", json=batch)
                if r.status_code == 202:
                    accepted.extend(b["feedback_id"] for b in batch)
                else:
                    refused.append(r)
            assert refused, "the spool never reported the disk full"
            assert refused[0].status_code == 503 and refused[0].headers["retry-after"] == "1"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "No space left" in ready.json()["reason"]
            assert client.post("/v1/rank", json=RANK).status_code == 503
            # nothing torn: every line of the spool file reads, and the file holds exactly
            # what the spool counts
            spool = runtime.publisher.spool
            lines = spool._data_path(spool.generation).read_bytes().split(b"\n")
            assert lines[-1] == b""
            assert all(json.loads(line) for line in lines[:-1])
            assert len(lines) - 1 == len(spool)
            spooled_when_full = len(spool)
            # space returns (the simulated disk: the cap moves), the broker still away
            if filler is not None:
                filler.unlink()
            else:
                monkeypatch.undo()
            wait_until(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
            for _ in range(5):
                batch = [_feedback(n + i) for i in range(20)]
                n += 20
                assert client.post("/v1/feedback", json=batch).status_code == 202
                accepted.extend(b["feedback_id"] for b in batch)
            sink.down = False
            assert runtime.publisher.flush(60), f"{runtime.publisher.pending} pending"
        got = read_topic(kafka_bootstrap, topics.feedback, Feedback, len(accepted), 60)
    ids = Counter(fb.feedback_id for fb in got)
    lost = [i for i in accepted if i not in ids]
    duplicates = sum(c - 1 for c in ids.values())
    report_counts(
        "spool-full-disk",
        disk=kind,
        accepted=len(accepted),
        spooled_when_full=spooled_when_full,
        sent=n,
        on_topic=len(got),
        lost=len(lost),
        duplicates=duplicates,
    )
    assert lost == [] and duplicates == 0
    assert set(ids) == set(accepted)

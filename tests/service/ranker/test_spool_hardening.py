"""The spool on a bad day, no broker: concurrent publishers, a slow or full disk, torn and
garbage lines, a crash inside rotation, a dead delivery thread, orphaned slots, and durable
acknowledgements over HTTP."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.ranker import disk_spool
from service.ranker.disk_spool import DiskSpool
from service.ranker.runtime import Runtime
from service.ranker.spool import SpoolingPublisher
from service.settings import Settings
from streams.errors import BrokerUnavailable
from streams.schemas import Feedback
from tests.service.api.api_helpers import NO_BROKER, make_pool, wait_until


def fb(i: int) -> Feedback:
    return Feedback(feedback_id=f"f{i}", event_id=uuid.uuid4(), kind="impression")


def rec(i: int) -> tuple[str, bytes | None, bytes]:
    return ("t", None, f'"{i}"'.encode())


class ScriptedSink:
    """A record sink that is down, up, blocked (until released) or broken, as a test says;
    remembers what it acknowledged, in order."""

    settle_timeout_s = 1.0

    def __init__(self) -> None:
        self.down = False
        self.broken = False
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.acked: list[bytes] = []

    def deliver(self, records: list[tuple[str, bytes | None, bytes]]) -> list[Any]:
        self.gate.wait(30)
        if self.broken:
            raise RuntimeError("scripted bug in the sink")
        if self.down:
            raise BrokerUnavailable("scripted outage")
        with self.lock:
            self.acked.extend(v for _, _, v in records)
        return [None] * len(records)

    def close(self, timeout_s: float = 10.0) -> None:
        self.gate.set()

    def ids(self) -> list[str]:
        with self.lock:
            # feedback only (a test's app also publishes its pool)
            return [
                Feedback.model_validate_json(v).feedback_id
                for v in self.acked
                if b'"feedback_id"' in v
            ]


@contextmanager
def app_on(
    sink: ScriptedSink, data_dir: Path, **settings: Any
) -> Iterator[tuple[TestClient, Runtime]]:
    config = Settings(
        kafka_bootstrap=NO_BROKER,
        topic_prefix=f"mem{uuid.uuid4().hex[:8]}.",
        data_dir=data_dir,
        **settings,
    )
    with TestClient(create_app(config, sink=sink, feeds=False)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.publish_pool(make_pool("scarf-1"))
        yield client, runtime


RANK = {"product_id": "scarf-1", "channel": "ad_headline", "user": {"user_id": "u1"}}


def feedback_body(i: int) -> dict[str, Any]:
    return {"feedback_id": f"f{i}", "event_id": str(uuid.uuid4()), "kind": "click"}


# -- thread-safety and the event loop ----------------------------------------------------------
def test_publish_never_touches_the_disk_and_threads_share_the_spool_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_threads: set[str] = set()
    real_fsync = os.fsync

    def watched(fd: int) -> None:
        fsync_threads.add(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watched)
    sink = ScriptedSink()
    sink.down = True
    # a tiny queue: the old publisher spooled inline (on the caller's thread, the event loop)
    # once it was full, racing the delivery thread's own appends
    pub = SpoolingPublisher(sink.deliver, tmp_path, max_queue=5, probe_every_s=0.05).start()

    def producer(base: int) -> None:
        for i in range(300):
            pub.publish("t", None, fb(base + i))

    threads = [
        threading.Thread(target=producer, args=(k * 1000,), name=f"request-{k}") for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: pub.stats.spooled > 0, 10, "records spooled")
    assert not any(name.startswith("request-") for name in fsync_threads)
    sink.down = False
    assert pub.flush(30), f"{pub.pending} pending"
    pub.close()
    got = sink.ids()
    assert len(got) == len(set(got)) == 1200  # each record once, none torn or lost
    for k in range(4):  # each publisher's own records in its order
        mine = [int(x[1:]) for x in got if k * 1000 <= int(x[1:]) < (k + 1) * 1000]
        assert mine == sorted(mine)


# -- the cap -----------------------------------------------------------------------------------
def test_spool_takes_what_fits_under_its_cap(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=200)
    written = spool.append([rec(i) for i in range(50)])
    assert 0 < written < 50 and spool.size_bytes <= 200
    assert spool.problem is not None and "cap" in spool.problem
    assert [i for i, _ in spool.read(100)] == list(range(written))
    spool.mark_delivered(list(range(written)))  # drained: rotated, room again
    assert spool.size_bytes == 0 and spool.problem is None
    assert spool.append([rec(0)]) == 1


def test_full_spool_refuses_work_with_503_until_it_drains_and_loses_nothing(
    tmp_path: Path,
) -> None:
    sink = ScriptedSink()
    with app_on(sink, tmp_path, spool_max_bytes=4096) as (client, runtime):
        assert client.get("/readyz").status_code == 200
        sink.down = True
        accepted: list[str] = []
        refused = None
        for i in range(2000):
            r = client.post("/v1/feedback", json=[feedback_body(i)])
            if r.status_code == 202:
                accepted.append(f"f{i}")
                continue
            refused = r
            break
        assert refused is not None, "a capped spool never refused work"
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "cap" in refused.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "cap" in ready.json()["reason"]
        rank = client.post("/v1/rank", json=RANK)
        assert rank.status_code == 503 and rank.headers["retry-after"] == "1"
        assert runtime.publisher.spool.size_bytes <= 4096
        sink.down = False
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
        assert runtime.publisher.flush(30)
        assert client.post("/v1/feedback", json=[feedback_body(99_999)]).status_code == 202
        assert runtime.publisher.flush(30)
    got = sink.ids()
    assert got == [*accepted, "f99999"]  # in order, each once, nothing accepted was lost


# -- crash safety --------------------------------------------------------------------------------
class TornWrites:
    """A file handle whose writes stop halfway with ENOSPC while ``full``."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.full = False

    def write(self, data: bytes) -> int:
        if self.full:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self.fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def test_a_failed_write_leaves_no_torn_line_and_nothing_half_counted(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append([rec(0), rec(1)])
    torn = TornWrites(spool._fh)
    spool._fh = torn  # type: ignore[assignment]
    torn.full = True
    assert spool.append([rec(2), rec(3)]) == 0  # refused, not half-written
    assert "No space left" in (spool.problem or "")
    assert len(spool) == 2 and spool.pending == 2
    assert spool.append([rec(4)]) == 1  # space is back: the next write lands cleanly
    assert spool.problem is None
    spool.close()
    again = DiskSpool(tmp_path)
    assert again.skipped == 0
    assert [r[2] for _, r in again.read(10)] == [b'"0"', b'"1"', b'"4"']


def test_torn_and_garbage_lines_are_skipped_with_a_count_never_fatal(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append([rec(0)])
    spool.close()
    with open(tmp_path / "spool.jsonl", "ab") as fh:
        fh.write(b'{"t": "t", "k": nu{"t": "t"}\n')  # a torn write with a record behind it
        fh.write(b"\x00\x00\x00\n")  # garbage a disk can leave
    again = DiskSpool(tmp_path)
    again.append([rec(1)])
    with open(tmp_path / "spool.jsonl", "ab") as fh:
        fh.write(b'{"t": "t", "k"')  # a torn tail
    again.close()
    loaded = DiskSpool(tmp_path)
    assert loaded.skipped == 3
    assert [r[2] for _, r in loaded.read(10)] == [b'"0"', b'"1"']
    loaded.mark_delivered([i for i, _ in loaded.read(10)])
    assert loaded.pending == 0 and len(loaded) == 0  # the skipped lines do not hold it back


@pytest.mark.parametrize("crash_at", ["before the cursor moves", "after the cursor moves"])
def test_a_crash_inside_rotation_neither_skips_nor_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    spool = DiskSpool(tmp_path)
    spool.append([rec(i) for i in range(5)])
    spool.mark_delivered([0, 1])

    class Crash(Exception):
        pass

    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src: Any, dst: Any) -> None:
        if crash_at == "before the cursor moves" and '"generation": 1' in Path(src).read_text():
            raise Crash
        real_replace(src, dst)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if crash_at == "after the cursor moves" and self.name == "spool.jsonl":
            raise Crash
        real_unlink(self, missing_ok)

    monkeypatch.setattr(disk_spool.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(Crash):
        spool.mark_delivered([2, 3, 4])  # everything delivered: rotation, interrupted
    monkeypatch.undo()
    spool._fh.close()  # the process is gone
    after = DiskSpool(tmp_path)
    assert after.pending == 0  # nothing delivered again
    assert [p.name for p in tmp_path.glob("spool*.jsonl")] == [
        after._data_path(after.generation).name
    ]
    after.append([rec(10), rec(11), rec(12)])
    assert [r[2] for _, r in after.read(10)] == [b'"10"', b'"11"', b'"12"']  # none skipped


# -- the delivery thread's health -------------------------------------------------------------
def test_a_dead_delivery_thread_makes_readyz_false_with_the_reason(tmp_path: Path) -> None:
    sink = ScriptedSink()
    with app_on(sink, tmp_path) as (client, runtime):
        assert runtime.publisher.flush(10)  # the pool is out
        sink.broken = True
        assert client.post("/v1/feedback", json=feedback_body(1)).status_code == 202
        wait_until(lambda: runtime.publisher.failure is not None, 10, "the thread to stop")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "scripted bug in the sink" in ready.json()["reason"]
        refused = client.post("/v1/rank", json=RANK)  # nothing would deliver it: refused
        assert refused.status_code == 503 and "retry-after" in refused.headers
    # the feedback of the round the thread died in was not lost: closing spooled it
    reopened = DiskSpool(tmp_path / "spool" / "slot-0")
    assert [b'"f1"' in r[2] for _, r in reopened.read(10)] == [True]


# -- orphaned slots ----------------------------------------------------------------------------
def test_a_live_worker_drains_the_slots_of_workers_that_are_gone(tmp_path: Path) -> None:
    # four workers spooled; the service now runs one: slots 1-3 have no owner
    for k in range(1, 4):
        spool = DiskSpool(tmp_path / "spool" / f"slot-{k}")
        spool.append([("t", None, fb(k * 100 + i).model_dump_json().encode()) for i in range(5)])
        spool.close()
    sink = ScriptedSink()
    with app_on(sink, tmp_path) as (_, runtime):
        wait_until(lambda: len(sink.acked) >= 16, 30, "orphaned spools delivered")
        assert runtime.publisher.flush(10)
    got = sink.ids()
    assert sorted(got) == sorted(f"f{k * 100 + i}" for k in range(1, 4) for i in range(5))
    for k in range(1, 4):  # delivered, and the slots are free again
        assert DiskSpool(tmp_path / "spool" / f"slot-{k}").pending == 0


# -- durable acknowledgements -----------------------------------------------------------------
def _post_in_thread(client: TestClient, path: str, body: Any) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(client.post(path, json=body)))
    t.start()
    return t, out


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/feedback"])
def test_durable_ack_answers_only_once_the_record_is_delivered(tmp_path: Path, path: str) -> None:
    sink = ScriptedSink()
    body = RANK if path == "/v1/rank" else feedback_body(7)
    with app_on(sink, tmp_path, durable_ack=True) as (client, runtime):
        assert runtime.publisher.flush(10)
        before = len(sink.acked)
        sink.gate.clear()  # Kafka holds the acknowledgement
        t, out = _post_in_thread(client, path, body)
        t.join(0.5)
        assert not out, "answered before the record was acknowledged"
        sink.gate.set()
        t.join(30)
        assert out[0].status_code in (200, 202)
        assert len(sink.acked) > before


def test_without_durable_ack_the_answer_does_not_wait(tmp_path: Path) -> None:
    sink = ScriptedSink()
    with app_on(sink, tmp_path) as (client, runtime):
        sink.gate.clear()
        try:
            r = client.post("/v1/rank", json=RANK)
            assert r.status_code == 200 and runtime.publisher.pending >= 1
        finally:
            sink.gate.set()


def test_durable_feedback_while_the_broker_is_down_is_on_disk_when_answered(
    tmp_path: Path,
) -> None:
    sink = ScriptedSink()
    sink.down = True
    with app_on(sink, tmp_path, durable_ack=True) as (client, runtime):
        r = client.post("/v1/feedback", json=[feedback_body(i) for i in range(3)])
        assert r.status_code == 202
        assert runtime.publisher.spool.pending >= 3  # fsynced into the spool before the 202
        sink.down = False


def test_durable_ack_that_times_out_answers_503_with_retry_after(tmp_path: Path) -> None:
    sink = ScriptedSink()
    with app_on(sink, tmp_path, durable_ack=True, durable_ack_timeout_s=0.2) as (client, _):
        sink.gate.clear()
        try:
            r = client.post("/v1/rank", json=RANK)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "durable" in r.json()["detail"]
        finally:
            sink.gate.set()

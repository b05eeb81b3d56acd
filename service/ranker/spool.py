"""Publishing off the request path, and a local spool for when Kafka is unreachable.

A handler calls :meth:`SpoolingPublisher.publish`, which only enqueues. One delivery thread
sends batches; what the broker does not acknowledge is appended to an on-disk spool (JSON
lines), and from then on newer records go behind it, so order is kept. While the spool holds
records the thread probes the broker and delivers them, oldest first. Each record's outcome is
known before it is spooled (the sink's ``deliver`` waits out a bounded delivery timeout), and
the spool's cursor records exactly which lines were delivered, also out of line, so a record is
delivered once — across a broker outage and across a restart of this process.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import SpoolError
from streams.errors import StreamsError
from streams.schemas import Event
from streams.serde import encode

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]
Deliver = Callable[[list[Record]], list[BaseException | None]]


class DiskSpool:
    """Append-only JSON-lines file plus a cursor: ``next`` (every line before it is delivered)
    and ``ahead`` (lines after it delivered out of line)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._data = folder / "spool.jsonl"
        self._cursor = folder / "cursor.json"
        self._offsets: list[int] = []  # byte offset of each line
        self.next = 0
        self.ahead: set[int] = set()
        self._load()
        self._fh = open(self._data, "ab")  # noqa: SIM115 - held for the spool's lifetime

    def _load(self) -> None:
        if self._data.exists():
            raw = self._data.read_bytes()
            pos = 0
            for line in raw.splitlines(keepends=True):
                if not line.endswith(b"\n"):  # a torn write at a crash: drop it
                    with open(self._data, "r+b") as fh:
                        fh.truncate(pos)
                    break
                self._offsets.append(pos)
                pos += len(line)
        if self._cursor.exists():
            try:
                cur = json.loads(self._cursor.read_text())
                self.next, self.ahead = int(cur["next"]), {int(i) for i in cur["ahead"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise SpoolError(f"corrupt spool cursor {self._cursor}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def pending(self) -> int:
        return len(self._offsets) - self.next - len(self.ahead)

    def append(self, records: list[Record]) -> None:
        pos = self._fh.tell()
        chunks = []
        for topic, key, value in records:
            line = json.dumps(
                {
                    "t": topic,
                    "k": None if key is None else base64.b64encode(key).decode(),
                    "v": value.decode("utf-8"),
                },
                ensure_ascii=False,
            ).encode("utf-8")
            chunks.append(line + b"\n")
            self._offsets.append(pos)
            pos += len(chunks[-1])
        self._fh.write(b"".join(chunks))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def read(self, limit: int) -> list[tuple[int, Record]]:
        """Up to ``limit`` undelivered records, oldest first, with their line numbers."""
        out: list[tuple[int, Record]] = []
        with open(self._data, "rb") as fh:
            for index in range(self.next, len(self._offsets)):
                if index in self.ahead:
                    continue
                fh.seek(self._offsets[index])
                item = json.loads(fh.readline())
                key = None if item["k"] is None else base64.b64decode(item["k"])
                out.append((index, (item["t"], key, item["v"].encode("utf-8"))))
                if len(out) >= limit:
                    break
        return out

    def mark_delivered(self, indices: list[int]) -> None:
        self.ahead.update(indices)
        while self.next in self.ahead:
            self.ahead.discard(self.next)
            self.next += 1
        if self.next == len(self._offsets):  # all delivered: start a fresh file
            self._fh.truncate(0)
            self._fh.seek(0)
            self._offsets.clear()
            self.next = 0
            self.ahead.clear()
        tmp = self._cursor.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next": self.next, "ahead": sorted(self.ahead)}))
        os.replace(tmp, self._cursor)

    def close(self) -> None:
        self._fh.close()


@dataclass
class PublisherStats:
    published: int = 0
    delivered: int = 0
    spooled: int = 0
    dropped: int = 0


class SpoolingPublisher:
    def __init__(
        self,
        deliver: Deliver,
        spool_dir: Path,
        *,
        batch_max: int = 1000,
        probe_every_s: float = 1.0,
        max_queue: int = 200_000,
        round_timeout_s: float = 120.0,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"`batch_max` must be >= 1, got {batch_max}")
        self._deliver = deliver
        self.spool = DiskSpool(spool_dir)
        self._batch_max = batch_max
        self._probe_every_s = probe_every_s
        self._max_queue = max_queue
        self._round_timeout_s = round_timeout_s
        self._queue: collections.deque[Record] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._spill = False  # closing and out of time: take no more batches, queue goes to disk
        self._thread: threading.Thread | None = None
        self.stats = PublisherStats()
        self.broker_ok = True
        self._inflight = 0  # records handed to ``deliver`` whose outcome is not known yet

    # -- request side ---------------------------------------------------------------------
    def publish(self, topic: str, key: str | None, event: Event) -> None:
        record = (topic, key.encode("utf-8") if key is not None else None, encode(event))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the publisher is closed")
            if len(self._queue) >= self._max_queue:
                # the delivery thread cannot keep up even with the spool: spool here, in order
                self.spool.append([*self._queue, record])
                self.stats.spooled += len(self._queue) + 1
                self._queue.clear()
            else:
                self._queue.append(record)
            self.stats.published += 1
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._queue) + self._inflight + self.spool.pending

    # -- delivery thread ------------------------------------------------------------------
    def start(self) -> SpoolingPublisher:
        self._thread = threading.Thread(target=self._run, name="copyloop-publisher", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> list[Record]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout=0.05 if self.spool.pending else 0.2)
            if self._spill:
                return []
            n = min(len(self._queue), self._batch_max)
            self._inflight = n  # counted as pending until delivered or spooled
            return [self._queue.popleft() for _ in range(n)]

    def _try(self, records: list[Record]) -> list[BaseException | None]:
        try:
            return self._deliver(records)
        except StreamsError as exc:  # the broker is unreachable: everything goes to the spool
            return [exc] * len(records)

    def _run(self) -> None:
        last_probe = 0.0
        while True:
            batch = self._take()
            if self.spool.pending:
                if batch:
                    self.spool.append(batch)
                    self.stats.spooled += len(batch)
                self._inflight = 0
                now = time.monotonic()
                if self._stopping:
                    pass  # closing: no more probes; the spool is delivered at the next start
                elif now - last_probe >= self._probe_every_s or self.broker_ok:
                    last_probe = now
                    self._drain_spool()
            elif batch:
                outcomes = self._try(batch)
                failed = [r for r, o in zip(batch, outcomes, strict=True) if o is not None]
                self.stats.delivered += len(batch) - len(failed)
                if failed:
                    self.broker_ok = False
                    last_probe = time.monotonic()
                    self.spool.append(failed)
                    self.stats.spooled += len(failed)
                self._inflight = 0
            with self._cond:
                if self._stopping and (self._spill or not self._queue):
                    return

    def _drain_spool(self) -> None:
        chunk = self.spool.read(self._batch_max)
        if not chunk:
            return
        outcomes = self._try([r for _, r in chunk])
        done = [i for (i, _), o in zip(chunk, outcomes, strict=True) if o is None]
        self.spool.mark_delivered(done)
        self.stats.delivered += len(done)
        self.broker_ok = len(done) == len(chunk)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is pending (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.pending == 0

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking records; deliver what waits in memory or spool it for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # out of time: the rest of the queue goes to disk
                with self._cond:
                    self._spill = True
                # a delivery round in flight ends within the sink's settle timeout; its records
                # must be counted or spooled before the spool closes, so wait for it (bounded:
                # a round that never ends must not hang the process; its records are then
                # neither marked delivered nor lost, as the spool and queue stay as they are)
                self._thread.join(self._round_timeout_s)
            if self._thread.is_alive():
                log.error(
                    "the publisher's delivery round did not end within %.0f s; "
                    "closing without it (%d record(s) pending)",
                    self._round_timeout_s,
                    self.pending,
                )
                return
        with self._cond:
            if self._queue:  # the thread did not finish in time: keep the rest on disk
                self.spool.append(list(self._queue))
                self.stats.spooled += len(self._queue)
                self._queue.clear()
        self.spool.close()

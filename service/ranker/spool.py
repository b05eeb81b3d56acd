"""Publishing off the request path, and a local spool for when Kafka is unreachable.

A handler calls :meth:`SpoolingPublisher.publish`, which only enqueues: no disk and no network
on the request's thread (the event loop). One delivery thread sends batches; what the broker
does not acknowledge is appended to an on-disk spool (:mod:`service.ranker.disk_spool`), and
from then on newer records go behind it, so order is kept. While the spool holds records the
thread probes the broker and delivers them, oldest first. Each record's outcome is known
before it is spooled (the sink's ``deliver`` waits out a bounded delivery timeout), and the
spool's cursor records exactly which lines were delivered, also out of line, so a record is
delivered once — across a broker outage and across a restart of this process.

What may be lost is bounded and visible: records only in memory (the queue) die with the
process. ``durable=True`` on a publish returns a future that completes once the record is
acknowledged by Kafka or fsynced into the spool (one Kafka round or one fsync serves every
record taken in that round: group commit), so a caller that waits for it never acknowledges
what a crash could lose. When the spool cannot take more (its cap, a full disk) the records
stay in memory and :meth:`SpoolingPublisher.check_accepting` refuses new work until it drains.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from service.ranker.disk_spool import DiskSpool, Record, SpoolFull
from streams.errors import StreamsError
from streams.schemas import Event
from streams.serde import encode

log = logging.getLogger(__name__)

__all__ = ["Deliver", "DiskSpool", "Record", "SpoolFull", "SpoolingPublisher", "Ticket"]

Deliver = Callable[[list[Record]], list[BaseException | None]]
#: completes when the records of one publish are durable (Kafka's ack or the spool's fsync)
Ticket = concurrent.futures.Future[None]
#: a record and, on the last record of a durable publish, its ticket
Entry = tuple[Record, "Ticket | None"]
#: spool folders of workers that no longer run, each with the lock held on it
OrphanFinder = Callable[[], list[tuple[Path, IO[bytes]]]]


def _resolve(entries: list[Entry]) -> None:
    for _, ticket in entries:
        if ticket is not None:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # given up on
                ticket.set_result(None)


@dataclass
class PublisherStats:
    published: int = 0
    delivered: int = 0
    spooled: int = 0
    dropped: int = 0


class _Orphan:
    """A dead worker's spool, held (by its lock) until this publisher has delivered it."""

    def __init__(self, folder: Path, lock: IO[bytes]) -> None:
        self.spool = DiskSpool(folder)
        self.lock = lock

    def close(self) -> None:
        self.spool.close()
        self.lock.close()


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
        max_spool_bytes: int | None = None,
        orphans: OrphanFinder | None = None,
        orphan_scan_every_s: float = 30.0,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"`batch_max` must be >= 1, got {batch_max}")
        self._deliver = deliver
        self.spool = DiskSpool(spool_dir, max_bytes=max_spool_bytes)
        self._batch_max = batch_max
        self._probe_every_s = probe_every_s
        self._max_queue = max_queue
        self._round_timeout_s = round_timeout_s
        self._find_orphans = orphans
        self._orphan_scan_every_s = orphan_scan_every_s
        self._orphans: list[_Orphan] = []
        # one lock (this condition's) guards the queue, the in-flight count and the state below
        self._queue: collections.deque[Entry] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._spill = False  # closing and out of time: take no more batches, queue goes to disk
        self._thread: threading.Thread | None = None
        self.stats = PublisherStats()
        self.broker_ok = True
        self._inflight = 0  # records handed to ``deliver`` whose outcome is not known yet
        self._taken: list[Entry] = []  # the round's records (requeued if the thread dies)
        #: why records are held in memory (the spool refused them); None when none are
        self.blocked: str | None = None
        #: why the delivery thread stopped; None while it runs
        self.failure: str | None = None

    # -- request side ---------------------------------------------------------------------
    def publish(
        self, topic: str, key: str | None, event: Event, *, durable: bool = False
    ) -> Ticket | None:
        return self.publish_many([(topic, key, event)], durable=durable)

    def publish_many(
        self, items: list[tuple[str, str | None, Event]], *, durable: bool = False
    ) -> Ticket | None:
        """Enqueue ``items`` in order (never blocks on disk or network). With ``durable`` the
        returned ticket completes once all of them are acknowledged by Kafka or on disk."""
        if not items:
            return None
        records = [
            (t, k.encode("utf-8") if k is not None else None, encode(e)) for t, k, e in items
        ]
        ticket: Ticket | None = concurrent.futures.Future() if durable else None
        with self._cond:
            if self._stopping:
                raise RuntimeError("the publisher is closed")
            self._queue.extend((r, None) for r in records[:-1])
            self._queue.append((records[-1], ticket))
            self.stats.published += len(records)
            self._cond.notify()
        return ticket

    def health(self) -> str | None:
        """Why new work should be refused now (None: accept): a stopped delivery thread, a
        spool that cannot take the records waiting in memory, or a full queue."""
        if self.failure is not None:
            return f"the publisher's delivery thread stopped: {self.failure}"
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return "the publisher's delivery thread is not running"
        if self.blocked is not None:
            return self.blocked
        if len(self._queue) >= self._max_queue:
            return f"the publisher's queue is full ({self._max_queue} records)"
        return None

    def check_accepting(self) -> None:
        """Raise :class:`SpoolFull` (503, ``Retry-After``) when :meth:`health` says so."""
        reason = self.health()
        if reason is not None:
            raise SpoolFull(reason)

    @property
    def pending(self) -> int:
        orphaned = sum(o.spool.pending for o in list(self._orphans))
        return len(self._queue) + self._inflight + self.spool.pending + orphaned

    # -- delivery thread ------------------------------------------------------------------
    def start(self) -> SpoolingPublisher:
        self._thread = threading.Thread(target=self._run, name="copyloop-publisher", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> list[Entry]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout=0.05 if self.spool.pending else 0.2)
            if self._spill:
                return []
            # behind a spool everything waiting goes to disk in one write (one fsync)
            n = len(self._queue) if self.spool.pending else min(len(self._queue), self._batch_max)
            self._inflight = n  # counted as pending until delivered, spooled or held
            self._taken = [self._queue.popleft() for _ in range(n)]
            return self._taken

    def _try(self, records: list[Record]) -> list[BaseException | None]:
        try:
            return self._deliver(records)
        except StreamsError as exc:  # the broker is unreachable: everything goes to the spool
            return [exc] * len(records)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by health() and /readyz, never silent
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the publisher's delivery thread stopped")
            with self._cond:  # the round's records go back, so close() spools them
                self._queue.extendleft(reversed(self._taken))
                self._taken, self._inflight = [], 0

    def _loop(self) -> None:
        last_probe = 0.0
        last_scan = -self._orphan_scan_every_s
        while True:
            batch = self._take()
            held: list[Entry] = []
            now = time.monotonic()
            if self.spool.pending:
                held = self._to_spool(batch)
                if self._stopping:
                    pass  # closing: no more probes; the spool is delivered at the next start
                elif now - last_probe >= self._probe_every_s or self.broker_ok:
                    last_probe = now
                    self._drain(self.spool)
            elif batch:
                outcomes = self._try([r for r, _ in batch])
                failed_at = [i for i, o in enumerate(outcomes) if o is not None]
                self.stats.delivered += len(batch) - len(failed_at)
                stop = len(batch)
                self.broker_ok = not failed_at
                if failed_at:
                    last_probe = now
                    held = self._to_spool([batch[i] for i in failed_at])
                    if held:
                        stop = failed_at[len(failed_at) - len(held)]
                # tickets of delivered records up to the first one held in memory (one behind
                # it is not durable yet and never resolved: its caller times out and may
                # retry; downstream drops repeats); the spooled ones were resolved by _to_spool
                _resolve([batch[i] for i in range(stop) if outcomes[i] is None])
            elif not self._stopping and (self.broker_ok or now - last_probe >= self._probe_every_s):
                last_probe = now
                if self._find_orphans is not None and now - last_scan >= self._orphan_scan_every_s:
                    last_scan = now
                    self._adopt_orphans(self._find_orphans)
                self._drain_orphan()
            self._settle(held)
            with self._cond:
                if self._stopping and (self._spill or not self._queue):
                    return
                if held:
                    self._cond.wait(timeout=self._probe_every_s)  # let the disk or broker recover

    def _to_spool(self, entries: list[Entry]) -> list[Entry]:
        """Append ``entries`` to the spool; resolve the tickets of those written; return the
        rest (the spool is at its cap or the disk refused the write)."""
        if not entries:
            return []
        written = self.spool.append([r for r, _ in entries])
        self.stats.spooled += written
        _resolve(entries[:written])
        return entries[written:]

    def _settle(self, held: list[Entry]) -> None:
        """End a round: held records go back to the front of the queue, in order."""
        with self._cond:
            self._queue.extendleft(reversed(held))
            self._taken, self._inflight = [], 0
            self.blocked = (self.spool.problem or "the spool refused records") if held else None

    def _drain(self, spool: DiskSpool) -> None:
        chunk = spool.read(self._batch_max)
        if not chunk:
            return
        outcomes = self._try([r for _, r in chunk])
        done = [i for (i, _), o in zip(chunk, outcomes, strict=True) if o is None]
        try:
            spool.mark_delivered(done)
        except OSError as exc:  # delivered, but the cursor is not saved: a restart repeats them
            log.error("could not record %d delivered spool line(s): %s", len(done), exc)
        self.stats.delivered += len(done)
        self.broker_ok = len(done) == len(chunk)

    def _adopt_orphans(self, find: OrphanFinder) -> None:
        for folder, lock in find():
            try:
                orphan = _Orphan(folder, lock)
            except Exception as exc:  # an unreadable orphan must not stop this worker's own
                log.error("cannot adopt the orphaned spool %s: %s", folder, exc)
                lock.close()
                continue
            if orphan.spool.pending:
                log.info(
                    "delivering %d record(s) spooled by a worker that is gone (%s)",
                    orphan.spool.pending,
                    folder,
                )
                self._orphans.append(orphan)
            else:
                orphan.close()

    def _drain_orphan(self) -> None:
        if not self._orphans:
            return
        orphan = self._orphans[0]
        self._drain(orphan.spool)
        if not orphan.spool.pending:
            self._orphans.pop(0)
            orphan.close()  # releases the slot for a new worker

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is pending (True), the timeout passes or the delivery thread has
        stopped (False)."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline and self.failure is None:
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
                rest = list(self._queue)
                self._queue.clear()
                held = self._to_spool(rest)
                if held:
                    self.stats.dropped += len(held)
                    log.error("%d record(s) lost at close: %s", len(held), self.spool.problem)
        self.spool.close()
        for orphan in self._orphans:
            orphan.close()
        self._orphans.clear()

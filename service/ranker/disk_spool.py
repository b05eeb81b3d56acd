"""The on-disk half of the publisher's spool: an append-only JSON-lines file and its cursor.

Crash safety rests on three orders of operations:

* a batch is written and fsynced *before* the in-memory offsets advance; a write that fails
  (a full disk, an I/O error) is cut back to where the file ended, so no torn line is left
  mid-file for later records to land behind;
* the cursor is replaced atomically (temporary file, fsync, ``os.replace``, fsync of the
  folder), so a crash leaves the old cursor or the new one, never half of one;
* rotation (everything delivered) starts a new data file of the next *generation* and only
  then points the cursor at it; the old file is removed last. A crash in between leaves a
  cursor that names a file holding exactly what it describes, and the stray file is removed at
  the next load. (Truncating in place before the cursor was replaced could leave a cursor
  pointing past the end of an emptied file, and records spooled after it were skipped.)

Lines that cannot be read at load (a torn tail, garbage mid-file left by an older version or
by a disk that lied) are skipped and counted, never fatal: the rest of the spool is delivered.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from service.errors import SpoolError

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes]


class SpoolFull(SpoolError):
    """The spool cannot take more records (at its size cap, or the disk refused a write): the
    service stops accepting work until it drains, so nothing accepted is lost. Answered as 503
    with ``Retry-After``."""

    retry_after_s = 1

    def __init__(self, reason: str) -> None:
        super().__init__(f"not accepting records for now: {reason}")
        self.reason = reason
        self.headers = {"Retry-After": str(self.retry_after_s)}  # the error handler sends them


def _encode(record: Record) -> bytes:
    topic, key, value = record
    line = json.dumps(
        {
            "t": topic,
            "k": None if key is None else base64.b64encode(key).decode(),
            "v": value.decode("utf-8"),
        },
        ensure_ascii=False,
    )
    return line.encode("utf-8") + b"\n"


def _decode(line: bytes) -> Record:
    item = json.loads(line)
    key = None if item["k"] is None else base64.b64decode(item["k"])
    return (str(item["t"]), key, str(item["v"]).encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskSpool:
    """Append-only JSON-lines file plus a cursor: ``next`` (every line before it is delivered)
    and ``ahead`` (lines after it delivered out of line, or unreadable and skipped).

    Thread-safe: one lock guards the file, the offsets and the cursor, so the request side and
    the delivery thread may both call it. ``max_bytes`` caps the data file: :meth:`append`
    writes the records that fit and reports how many, leaving the rest to the caller."""

    def __init__(self, folder: Path, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"`max_bytes` must be >= 1, got {max_bytes}")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._cursor = folder / "cursor.json"
        self._lock = threading.RLock()
        self._offsets: list[int] = []  # byte offset of each line
        self.next = 0
        self.ahead: set[int] = set()
        self.generation = 0
        self.skipped = 0  # unreadable lines found at load and left out
        #: why the last append did not take everything (None after one that did)
        self.problem: str | None = None
        self._load()
        self._fh = open(self._data_path(self.generation), "ab")  # noqa: SIM115 - spool's lifetime
        self._size = self._fh.seek(0, os.SEEK_END)

    def _data_path(self, generation: int) -> Path:
        # generation 0 keeps the historical name, so a spool written before rotation by
        # generations existed is read as it is
        name = "spool.jsonl" if generation == 0 else f"spool.{generation}.jsonl"
        return self.folder / name

    # -- load -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._cursor.exists():
            try:
                cur = json.loads(self._cursor.read_text())
                self.next, self.ahead = int(cur["next"]), {int(i) for i in cur["ahead"]}
                self.generation = int(cur.get("generation", 0))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SpoolError(f"corrupt spool cursor {self._cursor}: {exc}") from exc
        data = self._data_path(self.generation)
        for stray in self.folder.glob("spool*.jsonl"):
            if stray != data:  # a rotation interrupted before or after the cursor moved
                log.warning("removing %s, left by an interrupted spool rotation", stray)
                stray.unlink()
        raw = data.read_bytes() if data.exists() else b""
        pos = 0
        lines = raw.split(b"\n")
        for line in lines[:-1]:  # each complete line (the last piece has no newline)
            self._offsets.append(pos)
            pos += len(line) + 1
        if lines[-1]:  # a torn write at a crash: cut it off
            self.skipped += 1
            with open(data, "r+b") as fh:
                fh.truncate(pos)
                os.fsync(fh.fileno())
        if self.next > len(self._offsets):
            # a cursor past the end of its file: the file was emptied before the cursor moved
            # (an older rotation): everything in the file now is undelivered
            log.warning("spool cursor past the end of %s; delivering the whole file", data)
            self.next, self.ahead = 0, set()
        self.ahead = {i for i in self.ahead if self.next <= i < len(self._offsets)}
        for index in range(self.next, len(self._offsets)):
            if index in self.ahead:
                continue
            end = self._offsets[index + 1] if index + 1 < len(self._offsets) else pos
            try:
                _decode(raw[self._offsets[index] : end])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                log.warning("skipping unreadable spool line %d of %s: %s", index, data, exc)
                self.ahead.add(index)
                self.skipped += 1
        while self.next in self.ahead:
            self.ahead.discard(self.next)
            self.next += 1

    # -- figures --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def pending(self) -> int:
        return len(self._offsets) - self.next - len(self.ahead)

    @property
    def size_bytes(self) -> int:
        return self._size

    # -- write ----------------------------------------------------------------------------
    def append(self, records: list[Record]) -> int:
        """Write and fsync the leading records that fit under the cap; return how many.

        Fewer than all means :attr:`problem` says why (the cap, or the error of a failed
        write, after which the file is cut back to where it ended: nothing half-written stays).
        """
        if not records:
            return 0
        chunks = [_encode(r) for r in records]
        with self._lock:
            take = len(chunks)
            if self.max_bytes is not None:
                room, take = self.max_bytes - self._size, 0
                for chunk in chunks:
                    if len(chunk) > room:
                        break
                    room -= len(chunk)
                    take += 1
            start = self._size
            if take:
                try:
                    self._fh.write(b"".join(chunks[:take]))
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    self._cut_back(start)
                    self.problem = f"cannot write the spool in {self.folder}: {exc}"
                    log.error("%s", self.problem)
                    return 0
                pos = start
                for chunk in chunks[:take]:
                    self._offsets.append(pos)
                    pos += len(chunk)
                self._size = pos
            if take < len(chunks):
                self.problem = f"the spool is at its cap of {self.max_bytes} bytes"
            else:
                self.problem = None
            return take

    def _cut_back(self, size: int) -> None:
        """Undo a failed write: drop what Python buffered and cut the file to ``size``."""
        with contextlib.suppress(OSError):
            self._fh.close()  # a buffered remainder may fail to flush again: that is fine
        try:
            with open(self._data_path(self.generation), "r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
        except OSError as exc:  # the load repairs a torn tail; report it meanwhile
            log.error("could not cut the spool back to %d bytes: %s", size, exc)
        self._fh = open(self._data_path(self.generation), "ab")  # noqa: SIM115

    # -- read and mark --------------------------------------------------------------------
    def read(self, limit: int) -> list[tuple[int, Record]]:
        """Up to ``limit`` undelivered records, oldest first, with their line numbers."""
        out: list[tuple[int, Record]] = []
        with self._lock, open(self._data_path(self.generation), "rb") as fh:
            for index in range(self.next, len(self._offsets)):
                if index in self.ahead:
                    continue
                fh.seek(self._offsets[index])
                out.append((index, _decode(fh.readline())))
                if len(out) >= limit:
                    break
        return out

    def mark_delivered(self, indices: list[int]) -> None:
        """Record ``indices`` as delivered; once every line is, rotate to a fresh file."""
        with self._lock:
            self.ahead.update(indices)
            while self.next in self.ahead:
                self.ahead.discard(self.next)
                self.next += 1
            # saved first even when a rotation follows: a crash inside the rotation then
            # finds every line delivered, and neither repeats nor skips any
            self._save_cursor(self.generation, self.next, self.ahead)
            if self._offsets and self.next == len(self._offsets):
                self._rotate()

    def _rotate(self) -> None:
        old = self._data_path(self.generation)
        generation = self.generation + 1
        fresh = open(self._data_path(generation), "ab")  # noqa: SIM115 - becomes self._fh
        try:
            os.fsync(fresh.fileno())
            self._save_cursor(generation, 0, set())  # from here on, the fresh file counts
        except OSError:
            fresh.close()
            raise
        self._fh.close()
        self._fh = fresh
        self.generation, self.next, self._size = generation, 0, 0
        self._offsets.clear()
        self.ahead.clear()
        old.unlink()
        if self.problem is not None and self.problem.startswith("the spool is at its cap"):
            self.problem = None

    def _save_cursor(self, generation: int, next_: int, ahead: set[int]) -> None:
        tmp = self._cursor.with_suffix(".tmp")
        body = {"generation": generation, "next": next_, "ahead": sorted(ahead)}
        with open(tmp, "w") as fh:
            fh.write(json.dumps(body))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._cursor)
        _fsync_dir(self.folder)

    def close(self) -> None:
        with self._lock:
            self._fh.close()

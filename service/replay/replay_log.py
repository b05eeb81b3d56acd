"""Reading logged decisions and feedback for ``copyloop replay``: JSON-lines dumps of the topics
(``*decisions*.jsonl``, ``*feedback*.jsonl``, one Kafka value a line) or the topics themselves.

Lines are decoded by ``service.replay.replay_lines``. The contract's cross-field rules
(``action_dist`` sums to 1, ``pscore`` is ``action_dist[action]``, one entry per action) are
then checked on whole arrays, and a line that fails is validated again by the contract's
pydantic model, so its error names the file, the line and the field as every other part of
copyloop does. ``strict`` validates every line with the pydantic models (slow)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, pairwise
from operator import attrgetter as _get
from pathlib import Path
from typing import Any, Literal, NoReturn

import msgspec
import numpy as np
from numpy.typing import NDArray

from bandit.wire import DecisionRow
from service.replay.replay_lines import (
    POOL,
    FeedbackRow,
    ReplayError,
    bad_line,
    canonical_uuids,
    decode_file,
    nonblank,
    read_file,
    validate_decision,
    validate_feedback,
)
from streams.consumer import EventConsumer
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.schemas import Decision, Event, Feedback
from streams.serde import no_gc
from streams.topics import Topics

__all__ = ["KIND_BITS", "DecisionLog", "FeedbackLog", "ReplayError", "ReplayLog", "canonical_uuids"]

#: bit of each feedback kind in a per-event mask
KIND_BITS: dict[str, int] = {"impression": 1, "click": 2, "add_to_cart": 4, "purchase": 8}
DECISION_GLOB = "*decisions*.jsonl"
FEEDBACK_GLOB = "*feedback*.jsonl"


@dataclass(frozen=True)
class Source:
    """Rows ``[first, first + rows)`` of a log came from the non-blank lines of ``path``."""

    path: Path
    first: int
    rows: int


@dataclass
class DecisionLog:
    """Decisions as columns; ``action_dist`` and ``action_codes`` are padded to the widest pool
    (probability 0, code -1)."""

    event_ids: list[str]
    ts: NDArray[np.float64]
    action: NDArray[np.intp]
    pscore: NDArray[np.float64]
    action_dist: NDArray[np.float64]
    n_actions: NDArray[np.intp]
    action_codes: NDArray[np.int32]
    variant_ids: list[str]
    missing_pscore: int
    sources: list[Source] = field(default_factory=list)
    #: the validated decisions, when they were read as such (from Kafka)
    objects: list[Decision] | None = None

    def __len__(self) -> int:
        return len(self.event_ids)

    def full(self, rows: Sequence[int]) -> Iterator[Decision]:
        """The contract's ``Decision`` of each row, in order (for scoring with a saved model);
        ``rows`` ascending, so that each log file is read once."""
        if any(b < a for a, b in pairwise(rows)):
            raise ValueError("`rows` must be ascending")
        if self.objects is not None:
            yield from (self.objects[r] for r in rows)
            return
        it = iter(rows)
        row = next(it, None)
        for src in self.sources:
            if row is None:
                return
            if row >= src.first + src.rows:
                continue
            numbered = nonblank(src.path, read_file(src.path))
            while row is not None and row < src.first + src.rows:
                lineno, line = numbered[row - src.first]
                yield validate_decision(src.path, lineno, line)
                row = next(it, None)


@dataclass
class FeedbackLog:
    feedback_ids: list[str]
    event_ids: list[str]
    ts: NDArray[np.float64]
    kind_bits: NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.event_ids)


@dataclass
class ReplayLog:
    decisions: DecisionLog
    feedback: FeedbackLog
    origin: dict[str, Any]
    #: messages skipped while reading (undecodable Kafka values), as reasons
    skipped: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        return len(self.decisions) + len(self.feedback) + len(self.skipped)


# -- columns -----------------------------------------------------------------------------------
def _padded(lengths: NDArray[np.intp], flat: NDArray[Any], fill: float, dtype: Any) -> NDArray[Any]:
    width = int(lengths.max())
    out = np.full((lengths.shape[0], width), fill, dtype=dtype)
    out[np.arange(width) < lengths[:, None]] = flat
    return out


def _decision_columns(
    rows: Sequence[DecisionRow], sources: list[Source], index: dict[str, int]
) -> DecisionLog:
    # map + attrgetter keep each column pass in C: a generator costs a frame per row
    n = len(rows)
    event_ids, bad_id = canonical_uuids(list(map(_get("event_id"), rows)))
    if bad_id is not None:
        _reject("decision", sources, bad_id, "`event_id` is not a UUID")
    dists = list(map(_get("action_dist"), rows))
    lengths = np.fromiter(map(len, dists), np.intp, n)
    dist_flat = np.fromiter(chain.from_iterable(dists), np.float64)
    n_ids, codes = _pool_codes(rows, sources, index, int(lengths.max()))
    action = np.fromiter(map(_get("action"), rows), np.intp, n)
    # None (no pscore logged) becomes NaN
    pscore = np.array(list(map(_get("pscore"), rows)), dtype=np.float64)
    bad = np.flatnonzero(n_ids != lengths)
    if bad.size:
        _reject("decision", sources, int(bad[0]), "`actions` and `action_dist` differ in length")
    dist = _padded(lengths, dist_flat, 0.0, np.float64)
    chosen = np.where(action < lengths, action, 0)
    p_chosen = dist[np.arange(n), chosen]
    sums = dist.sum(axis=1)
    missing = np.isnan(pscore)
    checks = [
        (action >= lengths, "`action` is not an index of `actions`"),
        (~(dist.min(axis=1) >= 0), "`action_dist` holds a negative or non-finite probability"),
        (~(np.abs(sums - 1.0) <= 1e-4), "`action_dist` does not sum to 1"),
        (~missing & ~(np.abs(pscore - p_chosen) <= 1e-6), "`pscore` != `action_dist[action]`"),
        (missing & ~(p_chosen > 0), "`pscore` is missing and `action_dist[action]` is 0"),
    ]
    for failed, reason in checks:
        hit = np.flatnonzero(failed)
        if hit.size:
            _reject("decision", sources, int(hit[0]), reason)
    return DecisionLog(
        event_ids=event_ids,
        ts=np.fromiter(map(datetime.timestamp, map(_get("ts"), rows)), np.float64, n),
        action=action,
        pscore=np.where(missing, p_chosen, pscore),
        action_dist=dist,
        n_actions=lengths,
        action_codes=codes,
        variant_ids=list(index),
        missing_pscore=int(missing.sum()),
        sources=sources,
    )


def _pool_codes(
    rows: Sequence[DecisionRow], sources: list[Source], index: dict[str, int], width: int
) -> tuple[NDArray[np.intp], NDArray[np.int32]]:
    """Each row's number of actions and variant codes (padded with -1 to ``width``), decoding
    each distinct ``actions`` list once; ``index`` maps variant ids to codes."""
    keys = list(map(bytes, map(_get("actions"), rows)))
    pools = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    pool_of = np.fromiter(map(pools.__getitem__, keys), np.intp, len(keys))
    table = np.full((len(pools), width), -1, dtype=np.int32)
    sizes = np.zeros(len(pools), dtype=np.intp)
    for key, i in pools.items():
        try:
            ids = POOL.decode(key)
        except (msgspec.ValidationError, msgspec.DecodeError):
            _reject("decision", sources, keys.index(key), "`actions` must list variant ids")
        sizes[i] = len(ids)
        codes = [index.setdefault(v, len(index)) for v in ids[:width]]
        table[i, : len(codes)] = codes
    return sizes[pool_of], table[pool_of]


def _reject(
    kind: Literal["decision", "feedback"], sources: list[Source], row: int, reason: str
) -> NoReturn:
    """Raise for a row that failed a check on the arrays, in the contract model's words."""
    validate = validate_decision if kind == "decision" else validate_feedback
    for src in sources:
        if src.first <= row < src.first + src.rows:
            lineno, line = nonblank(src.path, read_file(src.path))[row - src.first]
            validate(src.path, lineno, line)  # raises with the field's name
            raise bad_line(src.path, lineno, reason)
    raise ReplayError(f"{kind} #{row + 1}: {reason}")


def _feedback_columns(rows: Sequence[FeedbackRow], sources: list[Source]) -> FeedbackLog:
    n = len(rows)
    event_ids, bad_id = canonical_uuids(list(map(_get("event_id"), rows)))
    if bad_id is not None:
        _reject("feedback", sources, bad_id, "`event_id` is not a UUID")
    return FeedbackLog(
        feedback_ids=list(map(_get("feedback_id"), rows)),
        event_ids=event_ids,
        ts=np.fromiter(map(datetime.timestamp, map(_get("ts"), rows)), np.float64, n),
        kind_bits=np.fromiter(map(KIND_BITS.__getitem__, map(_get("kind"), rows)), np.uint8, n),
    )


# -- whole logs --------------------------------------------------------------------------------
def log_files(log_dir: Path) -> tuple[list[Path], list[Path]]:
    if not log_dir.is_dir():
        raise ReplayError(f"{log_dir} is not a directory", "--log")
    return sorted(log_dir.glob(DECISION_GLOB)), sorted(log_dir.glob(FEEDBACK_GLOB))


def read_dir(
    log_dir: Path, *, strict: bool = False, step: Callable[[Path], None] | None = None
) -> ReplayLog:
    """Read every ``*decisions*.jsonl`` and ``*feedback*.jsonl`` of ``log_dir`` (in name order;
    ``step`` is called after each file, for a progress bar)."""
    with no_gc():
        return _read_dir(log_dir, strict, step)


def _read_files(
    paths: list[Path],
    kind: Literal["decision", "feedback"],
    strict: bool,
    step: Callable[[Path], None] | None,
) -> tuple[list[Any], list[Source]]:
    """The rows of ``paths`` in order, and where each file's rows start."""
    rows: list[Any] = []
    sources: list[Source] = []
    for path in paths:
        got = decode_file(path, kind, strict)
        sources.append(Source(path, len(rows), len(got)))
        rows.extend(got)
        if step is not None:
            step(path)
    return rows, sources


def _read_dir(log_dir: Path, strict: bool, step: Callable[[Path], None] | None) -> ReplayLog:
    decision_files, feedback_files = log_files(log_dir)
    if not decision_files:
        raise ReplayError(f"no decision logs ({DECISION_GLOB}) in {log_dir}", "--log")
    rows, sources = _read_files(decision_files, "decision", strict, step)
    if not rows:
        raise ReplayError(f"no decisions in {', '.join(p.name for p in decision_files)}", "--log")
    fb_rows, fb_sources = _read_files(feedback_files, "feedback", strict, step)
    origin = {
        "dir": str(log_dir),
        "decision_files": [p.name for p in decision_files],
        "feedback_files": [p.name for p in feedback_files],
    }
    return ReplayLog(
        _decision_columns(rows, sources, {}), _feedback_columns(fb_rows, fb_sources), origin
    )


class _Skipped:
    """An ``EventSink`` that keeps the reasons of dead letters instead of producing them:
    replay only reads, and reports what it could not decode."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def add(self, topic: str, key: str | None, event: Event) -> None:
        self.reasons.append(getattr(event, "reason", "undecodable"))

    def flush(self, timeout_s: float | None = None) -> None:
        return None


def read_kafka(
    bootstrap: str,
    topics: Topics,
    *,
    idle_s: float = 5.0,
    step: Callable[[int], None] | None = None,
) -> ReplayLog:
    """Read the decision and feedback topics from the beginning to their current end (or until
    nothing arrives for ``idle_s``); undecodable values are skipped and reported."""
    skipped = _Skipped()
    consumer = EventConsumer(
        bootstrap,
        {topics.decisions: Decision, topics.feedback: Feedback},
        group_id=None,
        deadletter=DeadLetterWriter(skipped, topics.deadletter),
        client_id="copyloop-replay",
    )
    decisions: list[Decision] = []
    feedback: list[Feedback] = []
    try:
        consumer.assign()
        ends = consumer.end_offsets()
        last = time.monotonic()
        while any(consumer.positions.get(k, 0) < end for k, end in ends.items()):
            batch = consumer.poll(timeout_s=0.5, max_records=5000)
            for rec in batch:
                if isinstance(rec.event, Decision):
                    decisions.append(rec.event)
                elif isinstance(rec.event, Feedback):
                    feedback.append(rec.event)
            if batch:
                last = time.monotonic()
                if step is not None:
                    step(len(batch))
            elif time.monotonic() - last > idle_s:
                break
    except StreamsError as exc:
        raise ReplayError(f"reading Kafka at {bootstrap} failed: {exc}") from exc
    finally:
        consumer.close()
    if not decisions:
        raise ReplayError(f"no decisions on `{topics.decisions}` at {bootstrap}", "--from-kafka")
    log = _decision_columns(list(map(DecisionRow.of, decisions)), [], {})
    log.objects = decisions
    origin = {"kafka": bootstrap, "topics": [topics.decisions, topics.feedback]}
    fb = _feedback_columns(list(map(FeedbackRow.of, feedback)), [])
    return ReplayLog(log, fb, origin, skipped.reasons)


def from_events(decisions: Sequence[Decision], feedback: Sequence[Feedback]) -> ReplayLog:
    """A log of validated events held in memory (the simulator's, or a test's)."""
    if not decisions:
        raise ReplayError("no decisions to replay")
    log = _decision_columns(list(map(DecisionRow.of, decisions)), [], {})
    log.objects = list(decisions)
    fb = _feedback_columns(list(map(FeedbackRow.of, feedback)), [])
    return ReplayLog(log, fb, {"memory": True})

"""The reward join: decisions ⨝ feedback by ``event_id`` within the reward window, on event time.

Pure logic, no Kafka: the learner, the offline replay and the simulator feed it events in the
order they read them. The watermark is the latest event time seen, or, with
``follow_event_time=False``, only what the caller gives to :meth:`RewardJoiner.advance` (the
learner computes it over partitions, so a partition read ahead cannot close the windows of one
read behind). An event closes, and is emitted as :class:`Joined` when it was seen, once the
watermark passes its decision time + window + ``lateness_s``; the lateness absorbs messages that
reach Kafka a little after later ones. Closed events are emitted in (close time, event id)
order, so the same input gives the same learning order however it was interleaved.

Whose clock the watermark runs on: an event's ``ts`` is stamped by whoever sent it, feedback
by the ad server or a shopper's device, and a watermark that took the latest ``ts`` as it came
would let one record stamped minutes ahead close every open window early (and turn genuine late
clicks into dead letters). The learner therefore bounds each record's contribution with
:func:`bounded_event_time`: the earlier of its ``ts`` and the time the broker logged it plus a
small skew. The broker's time is the record's log-append time (the decisions and feedback topics
are created with ``message.timestamp.type=LogAppendTime``, see :mod:`streams.topics`), which no
client can set; on a topic made before that, the producer's create time (the service's own clock
for ``/v1/feedback``). A record's own ``ts`` still decides which window it falls in; only how
far the watermark moves is bounded. ``follow_event_time`` (one ordered log file, no broker
times) takes the events' own times.

Feedback that cannot count is handed back as :class:`Rejected` for the caller to dead-letter:
``late`` (after its event's window, or after the event closed) and ``unknown_event`` (no decision
arrived for it in time). A repeated ``feedback_id`` counts once and is dropped quietly. With
``max_open`` set, a decision that would hold more events open than that is handed back too
(``overflow``), so memory and checkpoints stay bounded whatever the traffic.

The checkpointed state does not grow with the decisions' payload. A decision added with the
place it was read from (``ref``: its partition and offset in the decisions topic, as the learner
gives) is kept by that reference: its event id, deadline, reference, feedback kinds and the
8-byte hashes of its feedback ids, about 50 bytes whatever its context and pool hold (a
30-minute window at 1,000 decisions/s is ~90 MB, not ~840 MB). A joiner restored from such a
state holds those decisions as placeholders and reads each back through its ``fetch`` callable
only when its window closes with a reward to learn (the topic's retention must cover the window
and the lateness): restoring costs no re-read, and a restart re-reads the window's decisions
once, spread over the window, in the order they close. A decision added without a reference (a
replay, the simulator) is kept whole, less its pool, which is written once and referred to by
index. Held feedback (``orphans``, at most a lateness' worth) is kept whole.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeVar
from uuid import UUID

import msgspec
import numpy as np

from bandit.errors import CheckpointError, ConfigError
from bandit.reward import DEFAULT_REWARD, RewardConfig
from bandit.wire import AnyDecision, AnyFeedback, LoggedDecision, WireDecision, as_event, assemble
from streams.schemas import FEEDBACK_KINDS, ActionFeatures, Channel, Feedback
from streams.serde import no_gc

#: where a message was read, ``(partition, offset)``: for a feedback's dead letter, and for a
#: decision, where to read it back after a restore
Ref = tuple[int, int] | None
#: reads the decisions at these ``(partition, offset)`` references back, in the same order
Fetch = Callable[[Sequence[tuple[int, int]]], Sequence[AnyDecision]]


def fid_hash(feedback_id: str) -> int:
    """A feedback id as a checkpoint keeps it: 8 bytes of its BLAKE2b digest (a stable hash:
    Python's own ``hash`` of a string changes with each process)."""
    digest = hashlib.blake2b(feedback_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def bounded_event_time(event_ts: float, logged_at_ms: int, skew_s: float) -> float:
    """The event time (epoch seconds) a record may move the watermark to: its own ``ts``,
    but never later than when the broker logged it (``logged_at_ms``) plus ``skew_s``, so a
    sender's clock that runs ahead cannot close anyone's window early. A record without a
    broker time (``logged_at_ms`` < 0, pre-0.10 formats) keeps its own time."""
    if logged_at_ms < 0:
        return event_ts
    return min(event_ts, logged_at_ms / 1000.0 + skew_s)


#: builds a :class:`Joined` without its Python-level ``__new__`` (one per learned event)
_new = tuple.__new__


class Joined(NamedTuple):
    """A closed event that was seen: its decision and the reward it earned (a tuple: the
    learner makes one per event it learns)."""

    decision: AnyDecision
    reward: float


@dataclass(frozen=True)
class Rejected:
    #: the feedback that cannot count, or (``overflow``) the decision that was not held
    event: AnyFeedback | AnyDecision
    reason: Literal["late", "unknown_event", "overflow"]
    detail: str
    ref: Ref = None


@dataclass
class JoinStats:
    decisions: int = 0
    feedback: int = 0
    joined: int = 0
    #: closed without an impression: never seen, so not learned
    unseen: int = 0
    duplicate_decisions: int = 0
    duplicate_feedback: int = 0
    late_feedback: int = 0
    unknown_feedback: int = 0
    #: decisions that arrived after their own close time (closed at the next advance)
    late_decisions: int = 0
    #: decisions not held because ``max_open`` events were open already
    overflow_decisions: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _State(msgspec.Struct):
    """The checkpointed state; events stay raw JSON until each is decoded on its own.
    Format 1 kept each open decision whole; format 2 keeps it as :class:`_Held` plus the
    index of its pool in ``pools``."""

    format: int
    watermark: float | None = None
    open: list[msgspec.Raw] = []
    pools: list[tuple[list[str], list[ActionFeaturesRow]]] = []
    orphans: list[tuple[msgspec.Raw, tuple[int, int] | None]] = []
    closed: list[tuple[str, float]] = []
    stats: dict[str, int] = {}


class ActionFeaturesRow(msgspec.Struct, array_like=True, gc=False):
    traits: list[str]
    language: str
    length_bucket: str
    generator_version: str


class _Held(msgspec.Struct, array_like=True, gc=False):
    """An open decision in a checkpoint: the decision less its pool, the pool's index, and
    the feedback counted so far."""

    pool: int
    event_id: UUID
    ts: datetime
    product_id: str
    channel: Channel
    pool_version: int
    policy_version: str
    context: dict[str, str | int | float | bool | list[str]]
    action: int
    pscore: float
    action_dist: list[float]
    kinds: list[str]
    fids: list[str]


class _ByRef(msgspec.Struct, array_like=True):
    """Open decisions kept by reference, column by column (numpy buffers, little-endian)."""

    event_ids: bytes = b""  # 16 bytes each, big-endian
    deadlines: bytes = b""  # float64: decision time + window
    partitions: bytes = b""  # int32
    offsets: bytes = b""  # int64
    kinds: bytes = b""  # uint8: the feedback kinds seen, as a bit mask
    fid_counts: bytes = b""  # uint32: feedback ids counted per decision
    fids: bytes = b""  # uint64: their :func:`fid_hash`, decision after decision


class _State3(msgspec.Struct):
    """Format 3 (MessagePack): open decisions by reference (:class:`_ByRef`), those without
    one as a format-2 JSON state (``inline``), held feedback as JSON, closed ids as columns."""

    format: int
    watermark: float | None
    stats: dict[str, int]
    by_ref: _ByRef
    inline: bytes
    orphans: list[tuple[bytes, tuple[int, int] | None]]
    closed_ids: bytes
    closed_at: bytes


_STATE = msgspec.json.Decoder(_State)
_STATE3 = msgspec.msgpack.Decoder(_State3)
_MSGPACK = msgspec.msgpack.Encoder()
_HELD = msgspec.json.Decoder(_Held)
_HELD_V1 = msgspec.json.Decoder(tuple[msgspec.Raw, list[str], list[str]])
_ENCODER = msgspec.json.Encoder()
_KINDS: dict[str, int] = {kind: 1 << i for i, kind in enumerate(FEEDBACK_KINDS)}


_T = TypeVar("_T", bound=tuple[Any, ...])


def _pop_due(heap: list[_T], limit: float) -> list[_T]:
    """The entries of ``heap`` (ordered by their first item, a time) due by ``limit``, taken
    out in order. One by one while they are few; when more than a sixteenth of the heap is due
    (a catch-up's end, a flush), the rest are found in one pass and sorted, which costs far
    less than a pop each."""
    due: list[_T] = []
    budget = len(heap) // 16
    while heap and heap[0][0] <= limit:
        if len(due) > budget:
            rest: list[_T] = []
            more: list[_T] = []
            for item in heap:
                (more if item[0] <= limit else rest).append(item)
            more.sort()
            due += more  # all after those popped: a heap pops its least first
            heap[:] = rest
            heapq.heapify(heap)
            break
        due.append(heapq.heappop(heap))
    return due


def _kind_names(mask: int) -> list[str]:
    return [kind for kind, bit in _KINDS.items() if mask & bit]


class _Open:
    """One event waiting for its window to close; the feedback kinds seen as a bit mask and
    the feedback ids as a tuple (an event gets one to three), small for millions held. Once
    checkpointed, the ids are kept as their :func:`fid_hash` (ints, first in the tuple); a
    decision restored by reference is ``None`` until it is read back."""

    __slots__ = ("deadline", "decision", "fids", "kinds", "ref")

    def __init__(self, decision: AnyDecision | None, deadline: float, ref: Ref = None) -> None:
        self.decision = decision
        self.deadline = deadline
        self.ref = ref
        self.kinds = 0
        self.fids: tuple[str | int, ...] = ()


class RewardJoiner:
    """Joins decisions and feedback; see the module docstring for the rules."""

    def __init__(
        self,
        config: RewardConfig = DEFAULT_REWARD,
        *,
        lateness_s: float = 60.0,
        follow_event_time: bool = True,
        max_open: int | None = None,
        fetch: Fetch | None = None,
    ) -> None:
        if not (isinstance(lateness_s, int | float) and 0 <= lateness_s < math.inf):
            raise ConfigError(f"`lateness_s` must be >= 0 and finite, got {lateness_s!r}")
        if max_open is not None and not (type(max_open) is int and max_open >= 1):
            raise ConfigError(f"`max_open` must be an integer >= 1 or None, got {max_open!r}")
        self.max_open = max_open
        #: reads back decisions a restored state keeps by reference (see the module docstring)
        self.fetch = fetch
        #: reward per feedback-kind mask (at most 16 masks)
        self._rewards: dict[int, float | None] = {}
        self.config = config
        self.window_s = float(config.window_s)
        self.lateness_s = float(lateness_s)
        #: move the watermark to each event's time as it is added (one ordered stream, such
        #: as a log file); off when the caller computes it, as the learner does per partition
        self.follow_event_time = follow_event_time
        self.stats = JoinStats()
        self._wm = -math.inf
        # events are keyed by ``event_id.int``: hashing a UUID runs Python code, an int's does not
        self._open: dict[int, _Open] = {}
        self._close_heap: list[tuple[float, int]] = []
        self._orphans: dict[int, dict[str, tuple[AnyFeedback, Ref]]] = {}
        self._orphan_heap: list[tuple[float, int, str]] = []
        #: recently closed events → when to forget them (to spot duplicates and late feedback)
        self._closed: dict[int, float] = {}
        self._closed_heap: list[tuple[float, int]] = []

    # -- introspection --------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        """Event time (epoch seconds) up to which the stream is taken as complete."""
        return self._wm

    @property
    def pending(self) -> int:
        return len(self._open)

    @property
    def orphans(self) -> int:
        return sum(len(v) for v in self._orphans.values())

    # -- input ----------------------------------------------------------------------------
    def add_decision(
        self, decision: AnyDecision, ref: Ref = None, ts: float | None = None
    ) -> list[Rejected]:
        """Open ``decision``'s event; returns buffered feedback for it that cannot count, or
        the decision itself when ``max_open`` events are open already. ``ts``: its time in
        epoch seconds, where the caller has it already."""
        if ts is None:
            ts = decision.ts.timestamp()
        if self.follow_event_time:
            self._wm = max(self._wm, ts)
        eid = decision.event_id.int
        if eid in self._open or eid in self._closed:
            self.stats.duplicate_decisions += 1
            return []
        if self.max_open is not None and len(self._open) >= self.max_open:
            self.stats.overflow_decisions += 1
            detail = f"overflow: {len(self._open)} decisions open, at most {self.max_open}"
            return [Rejected(decision, "overflow", detail, ref)]
        self.stats.decisions += 1
        close_at = ts + self.window_s + self.lateness_s
        if close_at <= self._wm:
            self.stats.late_decisions += 1
        self._open[eid] = _Open(decision, ts + self.window_s, ref)
        heapq.heappush(self._close_heap, (close_at, eid))
        held = self._orphans.pop(eid, None)
        if held is None:
            return []
        rejected: list[Rejected] = []
        for fb, ref in held.values():
            r = self._attach(fb, ref)
            if r is not None:
                rejected.append(r)
        return rejected

    def add_feedback(
        self, feedback: AnyFeedback, ref: Ref = None, ts: float | None = None
    ) -> list[Rejected]:
        """Count ``feedback`` towards its event (or hold it until its decision arrives);
        ``ts`` as for :meth:`add_decision`."""
        if ts is None:
            ts = feedback.ts.timestamp()
        if self.follow_event_time:
            self._wm = max(self._wm, ts)
        self.stats.feedback += 1
        r = self._attach(feedback, ref, ts)
        return [] if r is None else [r]

    def _attach(self, fb: AnyFeedback, ref: Ref, ts: float | None = None) -> Rejected | None:
        eid = fb.event_id.int
        if ts is None:
            ts = fb.ts.timestamp()
        op = self._open.get(eid)
        if op is not None:
            fids = op.fids
            fid = fb.feedback_id
            if fid in fids or (fids and type(fids[0]) is int and fid_hash(fid) in fids):
                self.stats.duplicate_feedback += 1
                return None
            if ts > op.deadline:
                self.stats.late_feedback += 1
                after = ts - op.deadline + self.window_s
                detail = f"late: {after:.0f} s after its decision, window {self.window_s:.0f} s"
                return Rejected(fb, "late", detail, ref)
            op.fids = (*fids, fid)
            op.kinds |= _KINDS[fb.kind]
            return None
        if eid in self._closed:
            self.stats.late_feedback += 1
            return Rejected(fb, "late", "late: its event's reward window has closed", ref)
        held = self._orphans.setdefault(eid, {})
        if fb.feedback_id in held:
            self.stats.duplicate_feedback += 1
            return None
        expire_at = ts + self.lateness_s
        if expire_at <= self._wm:
            self.stats.unknown_feedback += 1
            if not held:
                del self._orphans[eid]
            return Rejected(fb, "unknown_event", "unknown or expired event: no decision", ref)
        held[fb.feedback_id] = (fb, ref)
        heapq.heappush(self._orphan_heap, (expire_at, eid, fb.feedback_id))
        return None

    # -- output ---------------------------------------------------------------------------
    def advance(
        self, watermark: datetime | float | None = None
    ) -> tuple[list[Joined], list[Rejected]]:
        """Move the watermark (never back) and emit what it closes: joined events in order,
        and held feedback whose decision never came."""
        if watermark is not None:
            wm = watermark.timestamp() if isinstance(watermark, datetime) else float(watermark)
            self._wm = max(self._wm, wm)
        return self._close_until(self._wm)

    def flush(self) -> tuple[list[Joined], list[Rejected]]:
        """Close everything (the end of a finite log); the watermark itself does not move."""
        return self._close_until(math.inf)

    def _reward(self, kinds: int) -> float | None:
        try:
            return self._rewards[kinds]
        except KeyError:
            value = self._rewards[kinds] = self.config.reward(_kind_names(kinds))
            return value

    def _close_until(self, limit: float) -> tuple[list[Joined], list[Rejected]]:
        joined: list[Joined] = []
        heap = self._close_heap
        due = _pop_due(heap, limit)
        unread: list[tuple[int, _Open]] = []
        for item in due:
            op = self._open[item[1]]
            if op.decision is None and self._reward(op.kinds) is not None:
                unread.append((item[1], op))
        if unread:
            try:
                self._read_back(unread)
            except BaseException:
                for item in due:  # nothing closed: the caller may retry (or rewind)
                    heapq.heappush(heap, item)
                raise
        pop_open, closed, closed_heap = self._open.pop, self._closed, self._closed_heap
        wm, span = self._wm, self.window_s + self.lateness_s
        unseen = 0
        for close_at, eid in due:
            op = pop_open(eid)
            # remember it for a window's span of event time after it closed, to tell late or
            # repeated messages for it from unknown ones
            forget_at = (close_at if close_at > wm else wm) + span
            closed[eid] = forget_at
            heapq.heappush(closed_heap, (forget_at, eid))
            value = self._reward(op.kinds)
            if value is None:
                unseen += 1
            else:
                joined.append(_new(Joined, (op.decision, value)))
        self.stats.unseen += unseen
        self.stats.joined += len(joined)
        rejected: list[Rejected] = []
        oheap = self._orphan_heap
        if not self._orphans:
            # every entry is of feedback whose decision came since (or already expired)
            oheap.clear()
        for _, eid, fid in _pop_due(oheap, limit):
            held = self._orphans.get(eid)
            entry = held.pop(fid, None) if held is not None else None
            if held is not None and not held:
                del self._orphans[eid]
            if entry is not None:
                self.stats.unknown_feedback += 1
                detail = "unknown or expired event: no decision within the lateness"
                rejected.append(Rejected(entry[0], "unknown_event", detail, entry[1]))
        for _, eid in _pop_due(self._closed_heap, self._wm):
            self._closed.pop(eid, None)
        return joined, rejected

    def _read_back(self, unread: list[tuple[int, _Open]]) -> None:
        """Read back the decisions of ``unread`` (restored by reference) through ``fetch``,
        all or none, checking each is the event it stands for."""
        if self.fetch is None:
            raise CheckpointError(
                "open decisions restored by reference need `fetch` to read them back"
            )
        refs = [op.ref for _, op in unread]
        got = self.fetch(refs)  # type: ignore[arg-type]  # a placeholder always has its ref
        if len(got) != len(unread):
            raise CheckpointError(f"`fetch` gave {len(got)} decisions for {len(unread)} refs")
        for (eid, op), d in zip(unread, got, strict=True):
            if d.event_id.int != eid:
                raise CheckpointError(
                    f"the decision at partition {op.ref[0]} offset {op.ref[1]} is event "  # type: ignore[index]
                    f"{d.event_id}, not {UUID(int=eid)}: was the decisions topic recreated?"
                )
        for (_, op), d in zip(unread, got, strict=True):
            op.decision = d

    # -- checkpointing --------------------------------------------------------------------
    def to_state(self) -> bytes:
        """Everything needed to resume: open events (by reference where they have one), held
        feedback, closed ids, counters. The feedback ids of open events are kept as their
        hashes from here on (see :class:`_Open`), so each is hashed once."""
        # no container per event: millions of them would wake the cycle collector again and
        # again, each time to walk every object the learner holds
        ids: list[int] = []
        by_ref: list[_Open] = []
        inline: list[_Open] = []
        for eid, op in self._open.items():
            if op.ref is None:
                inline.append(op)
            else:
                ids.append(eid)
                by_ref.append(op)
        state = _State3(
            format=3,
            watermark=None if self._wm == -math.inf else self._wm,
            stats=self.stats.to_dict(),
            by_ref=_columns(ids, by_ref),
            inline=_inline_state(inline) if inline else b"",
            orphans=[
                (as_event(fb).model_dump_json().encode("utf-8"), ref)
                for held_fb in self._orphans.values()
                for fb, ref in held_fb.values()
            ],
            closed_ids=_ids_to_bytes(self._closed),
            closed_at=np.fromiter(self._closed.values(), "<f8", len(self._closed)).tobytes(),
        )
        return _MSGPACK.encode(state)

    @classmethod
    def from_state(
        cls,
        data: bytes,
        config: RewardConfig = DEFAULT_REWARD,
        *,
        lateness_s: float = 60.0,
        follow_event_time: bool = True,
        max_open: int | None = None,
        fetch: Fetch | None = None,
    ) -> RewardJoiner:
        """The joiner ``to_state`` saved (any format so far). Decisions kept by reference
        are read back through ``fetch`` as their windows close."""
        joiner = cls(
            config,
            lateness_s=lateness_s,
            follow_event_time=follow_event_time,
            max_open=max_open,
            fetch=fetch,
        )
        try:
            with no_gc():  # millions of events restored, each a few new objects
                if data[:1] == b"{":  # formats 1 and 2: JSON
                    joiner._load_json(data)
                else:
                    joiner._load_v3(_STATE3.decode(data))
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
        ) as exc:
            raise CheckpointError(f"unreadable joiner state: {exc}") from exc
        heapq.heapify(joiner._close_heap)
        heapq.heapify(joiner._orphan_heap)
        heapq.heapify(joiner._closed_heap)
        return joiner

    def _load_v3(self, state: _State3) -> None:
        if state.format != 3:
            raise CheckpointError(f"unknown joiner state format {state.format!r}")
        if state.inline:
            self._load_json(state.inline)
        self._wm = -math.inf if state.watermark is None else state.watermark
        cols = state.by_ref
        ids = _ids_from_bytes(cols.event_ids)
        deadlines = np.frombuffer(cols.deadlines, "<f8").tolist()
        partitions = np.frombuffer(cols.partitions, "<i4").tolist()
        offsets = np.frombuffer(cols.offsets, "<i8").tolist()
        kinds = list(cols.kinds)
        counts = np.frombuffer(cols.fid_counts, "<u4").tolist()
        fids = np.frombuffer(cols.fids, "<u8").tolist()
        if not len(ids) == len(deadlines) == len(partitions) == len(offsets) == len(kinds):
            raise CheckpointError("unreadable joiner state: columns of unequal length")
        if len(counts) != len(ids) or sum(counts) != len(fids):
            raise CheckpointError("unreadable joiner state: feedback ids do not add up")
        lateness = self.lateness_s
        at = 0
        for eid, deadline, p, o, k, c in zip(
            ids, deadlines, partitions, offsets, kinds, counts, strict=True
        ):
            op = _Open(None, deadline, (p, o))
            op.kinds = k
            op.fids = tuple(fids[at : at + c])
            at += c
            self._open[eid] = op
            self._close_heap.append((deadline + lateness, eid))
        self._restore_orphans(state.orphans)
        closed_at = np.frombuffer(state.closed_at, "<f8").tolist()
        for eid, forget_at in zip(_ids_from_bytes(state.closed_ids), closed_at, strict=True):
            self._closed[eid] = forget_at
            self._closed_heap.append((forget_at, eid))
        self.stats = JoinStats(**state.stats)

    def _load_json(self, data: bytes) -> None:
        state = _STATE.decode(data)
        if state.format not in (1, 2):
            raise CheckpointError(f"unknown joiner state format {state.format!r}")
        self._wm = -math.inf if state.watermark is None else state.watermark
        pools = [
            (ids, [assemble(ActionFeatures, msgspec.structs.asdict(f)) for f in feats])
            for ids, feats in state.pools
        ]
        for item in state.open:
            if state.format == 1:
                raw, kinds, fids = _HELD_V1.decode(item)
                d = WireDecision.model_validate_json(bytes(raw))
            else:
                h = _HELD.decode(item)
                d = _decision(h, *pools[h.pool])
                kinds, fids = h.kinds, h.fids
            # the deadline as add_decision computes it, so the close order is the same
            deadline = d.ts.timestamp() + self.window_s
            op = _Open(d, deadline)
            op.kinds = sum({_KINDS[k] for k in kinds})
            op.fids = tuple(fids)
            self._open[d.event_id.int] = op
            self._close_heap.append((deadline + self.lateness_s, d.event_id.int))
        self._restore_orphans([(bytes(raw), ref) for raw, ref in state.orphans])
        for hex_id, forget_at in state.closed:
            eid = UUID(hex=hex_id).int
            self._closed[eid] = forget_at
            self._closed_heap.append((forget_at, eid))
        self.stats = JoinStats(**state.stats)

    def _restore_orphans(self, orphans: list[tuple[bytes, tuple[int, int] | None]]) -> None:
        for raw, ref in orphans:
            fb = Feedback.model_validate_json(raw)
            self._orphans.setdefault(fb.event_id.int, {})[fb.feedback_id] = (fb, ref)
            expire_at = fb.ts.timestamp() + self.lateness_s
            self._orphan_heap.append((expire_at, fb.event_id.int, fb.feedback_id))


def _ids_to_bytes(ids: Iterable[int]) -> bytes:
    return b"".join([eid.to_bytes(16, "big") for eid in ids])


def _ids_from_bytes(data: bytes) -> list[int]:
    if len(data) % 16:
        raise CheckpointError("unreadable joiner state: event ids are not 16 bytes each")
    halves = np.frombuffer(data, ">u8").tolist()
    return [(hi << 64) | lo for hi, lo in zip(halves[::2], halves[1::2], strict=True)]


def _columns(ids: list[int], ops: list[_Open]) -> _ByRef:
    """Open decisions with a reference, as :class:`_ByRef` columns; turns their feedback ids
    into hashes in place (see :class:`_Open`)."""
    n = len(ops)
    counts: list[int] = []
    hashed: list[int] = []
    for op in ops:
        fids = op.fids
        if fids and type(fids[-1]) is not int:  # ids counted since the last checkpoint
            fids = op.fids = tuple(f if type(f) is int else fid_hash(f) for f in fids)  # type: ignore[arg-type]
        counts.append(len(fids))
        hashed.extend(fids)  # type: ignore[arg-type]  # all ints now
    return _ByRef(
        event_ids=_ids_to_bytes(ids),
        deadlines=np.fromiter((op.deadline for op in ops), "<f8", n).tobytes(),
        partitions=np.fromiter((op.ref[0] for op in ops), "<i4", n).tobytes(),  # type: ignore[index]
        offsets=np.fromiter((op.ref[1] for op in ops), "<i8", n).tobytes(),  # type: ignore[index]
        kinds=bytes([op.kinds for op in ops]),
        fid_counts=np.array(counts, "<u4").tobytes(),
        fids=np.array(hashed, "<u8").tobytes(),
    )


def _inline_state(ops: list[_Open]) -> bytes:
    """Open decisions without a reference as a format-2 JSON state (nothing else in it): each
    less its pool, each pool written once and referred to by index."""
    pools: list[bytes] = []
    pool_of: dict[tuple[int, int], int] = {}
    by_text: dict[bytes, int] = {}
    held: list[bytes] = []
    encode = _ENCODER.encode
    for op in ops:
        d = op.decision
        if d is None:  # only decisions kept by reference are ever left unread
            raise CheckpointError("an open decision has neither its body nor a reference")
        key = (id(d.actions), id(d.action_features))
        index = pool_of.get(key)
        if index is None:
            # decisions decoded from one pool share its lists; others are told apart by text
            text = encode(
                (d.actions, [ActionFeaturesRow(**f.model_dump()) for f in d.action_features])
            )
            index = by_text.setdefault(text, len(by_text))
            if index == len(pools):
                pools.append(text)
            pool_of[key] = index
        fids = op.fids
        held.append(
            encode(
                _Held(
                    index,
                    d.event_id,
                    d.ts,
                    d.product_id,
                    d.channel,
                    d.pool_version,
                    d.policy_version,
                    d.context,
                    d.action,
                    d.pscore,
                    d.action_dist,
                    _kind_names(op.kinds),
                    list(fids),  # type: ignore[arg-type]  # hashed by reference only
                )
            )
        )
    return b"".join(
        (b'{"format":2,"pools":[', b",".join(pools), b'],"open":[', b",".join(held), b"]}")
    )


def _decision(h: _Held, actions: list[str], features: list[ActionFeatures]) -> LoggedDecision:
    """A checkpointed open decision (checked when it was first read) with its pool."""
    return LoggedDecision(
        1,
        h.event_id,
        h.ts.astimezone(UTC),
        h.product_id,
        h.channel,
        h.pool_version,
        h.policy_version,
        h.context,
        actions,
        features,
        h.action,
        h.pscore,
        h.action_dist,
    )

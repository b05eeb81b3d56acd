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

The checkpointed state keeps each open decision without its pool (its actions and their
features, two thirds of its bytes): pools are written once each and referred to by index.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from bandit.errors import CheckpointError, ConfigError
from bandit.reward import DEFAULT_REWARD, RewardConfig
from bandit.wire import WireDecision, assemble
from streams.schemas import FEEDBACK_KINDS, ActionFeatures, Decision, Feedback

#: where a feedback message was read, ``(partition, offset)``, for its dead letter
Ref = tuple[int, int] | None


def bounded_event_time(event_ts: float, logged_at_ms: int, skew_s: float) -> float:
    """The event time (epoch seconds) a record may move the watermark to: its own ``ts``,
    but never later than when the broker logged it (``logged_at_ms``) plus ``skew_s``, so a
    sender's clock that runs ahead cannot close anyone's window early. A record without a
    broker time (``logged_at_ms`` < 0, pre-0.10 formats) keeps its own time."""
    if logged_at_ms < 0:
        return event_ts
    return min(event_ts, logged_at_ms / 1000.0 + skew_s)


@dataclass(frozen=True)
class Joined:
    decision: Decision
    reward: float


@dataclass(frozen=True)
class Rejected:
    #: the feedback that cannot count, or (``overflow``) the decision that was not held
    event: Feedback | Decision
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
    channel: str
    pool_version: int
    policy_version: str
    context: dict[str, str | int | float | bool | list[str]]
    action: int
    pscore: float
    action_dist: list[float]
    kinds: list[str]
    fids: list[str]


_STATE = msgspec.json.Decoder(_State)
_HELD = msgspec.json.Decoder(_Held)
_HELD_V1 = msgspec.json.Decoder(tuple[msgspec.Raw, list[str], list[str]])
_ENCODER = msgspec.json.Encoder()
_KINDS: dict[str, int] = {kind: 1 << i for i, kind in enumerate(FEEDBACK_KINDS)}


def _kind_names(mask: int) -> list[str]:
    return [kind for kind, bit in _KINDS.items() if mask & bit]


class _Open:
    """One event waiting for its window to close; the feedback kinds seen as a bit mask and
    the feedback ids as a tuple (an event gets one to three), small for millions held."""

    __slots__ = ("deadline", "decision", "fids", "kinds")

    def __init__(self, decision: Decision, deadline: float) -> None:
        self.decision = decision
        self.deadline = deadline
        self.kinds = 0
        self.fids: tuple[str, ...] = ()


class RewardJoiner:
    """Joins decisions and feedback; see the module docstring for the rules."""

    def __init__(
        self,
        config: RewardConfig = DEFAULT_REWARD,
        *,
        lateness_s: float = 60.0,
        follow_event_time: bool = True,
        max_open: int | None = None,
    ) -> None:
        if not (isinstance(lateness_s, int | float) and 0 <= lateness_s < math.inf):
            raise ConfigError(f"`lateness_s` must be >= 0 and finite, got {lateness_s!r}")
        if max_open is not None and not (type(max_open) is int and max_open >= 1):
            raise ConfigError(f"`max_open` must be an integer >= 1 or None, got {max_open!r}")
        self.max_open = max_open
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
        self._orphans: dict[int, dict[str, tuple[Feedback, Ref]]] = {}
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
    def add_decision(self, decision: Decision, ref: Ref = None) -> list[Rejected]:
        """Open ``decision``'s event; returns buffered feedback for it that cannot count, or
        the decision itself when ``max_open`` events are open already."""
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
        self._open[eid] = _Open(decision, ts + self.window_s)
        heapq.heappush(self._close_heap, (close_at, eid))
        rejected: list[Rejected] = []
        for fb, ref in self._orphans.pop(eid, {}).values():
            r = self._attach(fb, ref)
            if r is not None:
                rejected.append(r)
        return rejected

    def add_feedback(self, feedback: Feedback, ref: Ref = None) -> list[Rejected]:
        """Count ``feedback`` towards its event (or hold it until its decision arrives)."""
        if self.follow_event_time:
            self._wm = max(self._wm, feedback.ts.timestamp())
        self.stats.feedback += 1
        r = self._attach(feedback, ref)
        return [] if r is None else [r]

    def _attach(self, fb: Feedback, ref: Ref) -> Rejected | None:
        eid = fb.event_id.int
        ts = fb.ts.timestamp()
        op = self._open.get(eid)
        if op is not None:
            fids = op.fids
            if fb.feedback_id in fids:
                self.stats.duplicate_feedback += 1
                return None
            if ts > op.deadline:
                self.stats.late_feedback += 1
                after = ts - op.deadline + self.window_s
                detail = f"late: {after:.0f} s after its decision, window {self.window_s:.0f} s"
                return Rejected(fb, "late", detail, ref)
            op.fids = (*fids, fb.feedback_id)
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

    def _close_until(self, limit: float) -> tuple[list[Joined], list[Rejected]]:
        joined: list[Joined] = []
        heap = self._close_heap
        while heap and heap[0][0] <= limit:
            close_at, eid = heapq.heappop(heap)
            op = self._open.pop(eid)
            # remember it for a window's span of event time after it closed, to tell late or
            # repeated messages for it from unknown ones
            forget_at = max(close_at, self._wm) + self.window_s + self.lateness_s
            self._closed[eid] = forget_at
            heapq.heappush(self._closed_heap, (forget_at, eid))
            try:
                value = self._rewards[op.kinds]
            except KeyError:
                value = self._rewards[op.kinds] = self.config.reward(_kind_names(op.kinds))
            if value is None:
                self.stats.unseen += 1
            else:
                self.stats.joined += 1
                joined.append(Joined(op.decision, value))
        rejected: list[Rejected] = []
        oheap = self._orphan_heap
        while oheap and oheap[0][0] <= limit:
            _, eid, fid = heapq.heappop(oheap)
            held = self._orphans.get(eid)
            entry = held.pop(fid, None) if held is not None else None
            if held is not None and not held:
                del self._orphans[eid]
            if entry is not None:
                self.stats.unknown_feedback += 1
                detail = "unknown or expired event: no decision within the lateness"
                rejected.append(Rejected(entry[0], "unknown_event", detail, entry[1]))
        cheap = self._closed_heap
        while cheap and cheap[0][0] <= self._wm:
            _, eid = heapq.heappop(cheap)
            self._closed.pop(eid, None)
        return joined, rejected

    # -- checkpointing --------------------------------------------------------------------
    def to_state(self) -> bytes:
        """Everything needed to resume: open events, held feedback, closed ids, counters."""
        pools: list[bytes] = []
        pool_of: dict[tuple[int, int], int] = {}
        by_text: dict[bytes, int] = {}
        held: list[bytes] = []
        encode = _ENCODER.encode
        for op in self._open.values():
            d = op.decision
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
                        list(op.fids),
                    )
                )
            )
        state: dict[str, Any] = {
            "format": 2,
            "watermark": None if self._wm == -math.inf else self._wm,
            "orphans": [
                [fb.model_dump(mode="json"), ref]
                for held_fb in self._orphans.values()
                for fb, ref in held_fb.values()
            ],
            "closed": [[f"{eid:032x}", t] for eid, t in self._closed.items()],
            "stats": self.stats.to_dict(),
        }
        head = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
        # pools and open decisions are spliced in as the JSON they already are
        return b"".join(
            (
                head[:-1].encode("utf-8"),
                b',"pools":[',
                b",".join(pools),
                b'],"open":[',
                b",".join(held),
                b"]}",
            )
        )

    @classmethod
    def from_state(
        cls,
        data: bytes,
        config: RewardConfig = DEFAULT_REWARD,
        *,
        lateness_s: float = 60.0,
        follow_event_time: bool = True,
        max_open: int | None = None,
    ) -> RewardJoiner:
        joiner = cls(
            config, lateness_s=lateness_s, follow_event_time=follow_event_time, max_open=max_open
        )
        try:
            state = _STATE.decode(data)
            if state.format not in (1, 2):
                raise CheckpointError(f"unknown joiner state format {state.format!r}")
            joiner._wm = -math.inf if state.watermark is None else state.watermark
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
                ts = d.ts.timestamp()
                op = _Open(d, ts + joiner.window_s)
                op.kinds = sum({_KINDS[k] for k in kinds})
                op.fids = tuple(fids)
                joiner._open[d.event_id.int] = op
                joiner._close_heap.append(
                    (ts + joiner.window_s + joiner.lateness_s, d.event_id.int)
                )
            for raw, ref in state.orphans:
                fb = Feedback.model_validate_json(bytes(raw))
                joiner._orphans.setdefault(fb.event_id.int, {})[fb.feedback_id] = (fb, ref)
                expire_at = fb.ts.timestamp() + joiner.lateness_s
                joiner._orphan_heap.append((expire_at, fb.event_id.int, fb.feedback_id))
            for hex_id, forget_at in state.closed:
                eid = UUID(hex=hex_id).int
                joiner._closed[eid] = forget_at
                joiner._closed_heap.append((forget_at, eid))
            joiner.stats = JoinStats(**state.stats)
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


def _decision(h: _Held, actions: list[str], features: list[ActionFeatures]) -> Decision:
    """A checkpointed open decision (checked when it was first read) with its pool."""
    built: Decision = assemble(
        Decision,
        {
            "schema_version": 1,
            "event_id": h.event_id,
            "ts": h.ts.astimezone(UTC),
            "product_id": h.product_id,
            "channel": h.channel,
            "pool_version": h.pool_version,
            "policy_version": h.policy_version,
            "context": h.context,
            "actions": actions,
            "action_features": features,
            "action": h.action,
            "pscore": h.pscore,
            "action_dist": h.action_dist,
        },
    )
    return built

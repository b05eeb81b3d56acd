"""Loop-wide figures, kept by the learner and published on ``copyloop.stats``.

Why here: the learner reads every decision and every feedback message of the loop, whichever
ranker worker logged them, so what it counts does not depend on which worker answers a
dashboard request. Each worker follows the compacted stats topic and shows its latest record.

What is counted, as the records are read (not when rewards join, which may be a reward window
later): decisions (by event id: a repeated one counts once), how many were explored (the chosen
variant was not the single most probable one), impressions, clicks and purchases per event (a
click or purchase counts once its impression is known), per one-minute bucket of the
decision's time and per product x variant, and the first time each policy and generator version
was seen in a decision. When rewards join: clicks and rewards per shopper segment x trait of
the shown copy, and the rows the off-policy estimate reads, which are scored at each publication
by the snapshot the rankers serve (SNIPS of the click rate with its 95 % interval, against the
uniform policy and the logging policy's own click rate).

Exactly once across the learner's rewinds and restarts: each partition's next offset is kept
with the counts, records below it are skipped, and the counts are saved to a file before every
learner checkpoint, so the checkpoint's offsets are never past what the file counted. The
per-event flags are not saved: feedback for a decision read before a restart no longer counts
(a brief undercount of impressions and clicks, never a double count)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bandit.errors import BanditError
from bandit.join import Joined
from bandit.ope import estimate
from bandit.promotion import Serving
from bandit.snapshot import load_snapshot
from bandit.wire import AnyDecision, AnyFeedback, LoggedDecision, LoggedFeedback
from streams.consumer import Received
from streams.errors import StreamsError
from streams.schemas import Decision, Event, FeatureValue, Feedback, LoopStats

log = logging.getLogger(__name__)

STATS_FILE = "loop-stats.json"
_FORMAT = 1
#: encoded shopper keys a segment is made of (the fine-tuning rounds' segments)
SEGMENT_KEYS: tuple[str, ...] = ("u_age", "u_gender")
_IMPRESSION, _CLICK, _PURCHASE, _JOINED = 1, 2, 4, 8
_FLAG_OF = {"impression": _IMPRESSION, "click": _CLICK, "purchase": _PURCHASE}
# an event's entry: variant slot << 40 | bucket number << 4 | flags (ints: nothing to collect)
_BUCKET_SHIFT, _SLOT_SHIFT = 4, 40
_BUCKET_MASK = (1 << (_SLOT_SHIFT - _BUCKET_SHIFT)) - 1
#: flag, index in a variant's and a bucket's counts, total
_KINDS = ((_IMPRESSION, 1, "impressions"), (_CLICK, 2, "clicks"), (_PURCHASE, 3, "purchases"))
# a bucket's counts, in this order
_BUCKET_FIELDS = (
    "decisions",
    "impressions",
    "clicks",
    "purchases",
    "explored",
    "evaluated",
    "w_policy",
    "wc_policy",
    "w_uniform",
    "wc_uniform",
)
_TOTALS = (
    "decisions",
    "duplicates",
    "impressions",
    "clicks",
    "purchases",
    "explored",
    "joined",
    "joined_unmatched",
)


def segment_of(context: Mapping[str, FeatureValue], keys: Sequence[str] = SEGMENT_KEYS) -> str:
    """``"25-29|f"``: the decision's encoded shopper features at ``keys`` (``?`` where absent)."""
    return "|".join(str(context.get(k, "?")) for k in keys)


def explored(decision: AnyDecision) -> bool:
    """Whether the chosen variant was not the single most probable one: a draw away from the
    policy's mode, or a draw among ties (a uniform policy explores every time)."""
    dist = decision.action_dist
    top = max(dist)
    return decision.pscore < top or dist.count(top) > 1


class Evaluator(Protocol):
    """What scores the joined rows: the policy the rankers serve (``Policy.pmf_logged``)."""

    def pmf_logged(self, decision: AnyDecision) -> list[float]: ...


class Uniform:
    """The untrained policy rankers hold before the first snapshot: every variant alike."""

    def pmf_logged(self, decision: AnyDecision) -> list[float]:
        return [1.0 / len(decision.actions)] * len(decision.actions)


class LoopCounts:
    """The figures themselves (pure: no Kafka, no clock but the events' own times)."""

    def __init__(
        self,
        *,
        bucket_s: int = 60,
        max_buckets: int = 240,
        max_events: int = 500_000,
        max_waiting: int = 100_000,
        ope_rows: int = 5_000,
        max_variants: int = 20_000,
    ) -> None:
        if bucket_s < 1:
            raise ValueError(f"`bucket_s` must be >= 1, got {bucket_s}")
        self.bucket_s = bucket_s
        self.max_buckets = max_buckets
        self.max_events = max_events
        self.max_waiting = max_waiting
        self.max_variants = max_variants
        self.offsets: dict[tuple[str, int], int] = {}
        self.totals = dict.fromkeys(_TOTALS, 0)
        self.buckets: dict[int, list[float]] = {}
        self.variants: dict[tuple[str, str], list[int]] = {}
        self._slots: list[tuple[str, str]] = []
        self._slot_of: dict[tuple[str, str], int] = {}
        self.segments: dict[tuple[str, str], list[float]] = {}
        self.versions: dict[tuple[str, str], float] = {}
        self.ope: deque[tuple[float, float, float, float]] = deque(maxlen=ope_rows)
        #: joined rows waiting to be scored by the policy: (decision, clicked, bucket)
        self.unscored: deque[tuple[AnyDecision, bool, int]] = deque(maxlen=ope_rows)
        # by the event id's integer: no string built per record
        self._events: OrderedDict[int, int] = OrderedDict()
        self._waiting: OrderedDict[int, int] = OrderedDict()

    # -- records ----------------------------------------------------------------------------
    def read(self, records: Sequence[Received[Event]]) -> None:
        """Count the records not counted before (by each partition's next offset)."""
        offsets = self.offsets
        for rec in records:
            key = (rec.topic, rec.partition)
            if rec.offset < offsets.get(key, 0):
                continue  # read again after a rewind or restart: counted already
            offsets[key] = rec.offset + 1
            event = rec.event
            if isinstance(event, LoggedDecision | Decision):
                self.add_decision(event)
            elif isinstance(event, LoggedFeedback | Feedback):
                self.add_feedback(event)

    def _bucket(self, number: int) -> list[float]:
        row = self.buckets.get(number)
        if row is None:
            row = self.buckets[number] = [0.0] * len(_BUCKET_FIELDS)
            if len(self.buckets) > self.max_buckets:
                del self.buckets[min(self.buckets)]
        return row

    def _slot(self, product_id: str, variant_id: str) -> int:
        key = (product_id, variant_id)
        slot = self._slot_of.get(key)
        if slot is None:
            if len(self._slots) >= self.max_variants:
                key = (product_id, "other")
                slot = self._slot_of.get(key)
            if slot is None:
                slot = self._slot_of[key] = len(self._slots)
                self._slots.append(key)
                self.variants.setdefault(key, [0, 0, 0, 0])
        return slot

    def add_decision(self, decision: AnyDecision) -> None:
        eid = decision.event_id.int
        if eid in self._events:
            self.totals["duplicates"] += 1
            return
        ts = decision.ts.timestamp()
        number = int(ts // self.bucket_s)
        slot = self._slot(decision.product_id, decision.actions[decision.action])
        bucket = self._bucket(number)
        bucket[0] += 1
        self.totals["decisions"] += 1
        self.variants[self._slots[slot]][0] += 1
        if explored(decision):
            bucket[4] += 1
            self.totals["explored"] += 1
        for kind, version in (
            ("bandit", decision.policy_version),
            ("generator", decision.action_features[decision.action].generator_version),
        ):
            seen = self.versions.get((kind, version))
            if seen is None or ts < seen:
                self.versions[(kind, version)] = ts
        self._events[eid] = (slot << _SLOT_SHIFT) | (number << _BUCKET_SHIFT)
        if len(self._events) > self.max_events:
            self._events.popitem(last=False)
        early = self._waiting.pop(eid, 0)
        if early:
            self._apply(eid, early)

    def add_feedback(self, feedback: AnyFeedback) -> None:
        flag = _FLAG_OF.get(feedback.kind, 0)
        if not flag:
            return  # add_to_cart: in the reward, not in these rates
        eid = feedback.event_id.int
        if eid in self._events:
            self._apply(eid, flag)
        elif self.max_waiting:
            self._waiting[eid] = self._waiting.get(eid, 0) | flag
            if len(self._waiting) > self.max_waiting:
                self._waiting.popitem(last=False)

    def _apply(self, eid: int, flags: int) -> None:
        entry = self._events[eid]
        before = entry & (_IMPRESSION | _CLICK | _PURCHASE)
        after = before | flags
        if after == before or not after & _IMPRESSION:
            self._events[eid] = entry | flags
            return
        self._events[eid] = entry | flags
        # a click or purchase counts once its impression is known, in whichever order: each
        # kind counts when it and the impression are first both known
        newly = after & ~before if before & _IMPRESSION else after
        if not newly:
            return
        bucket = self.buckets.get((entry >> _BUCKET_SHIFT) & _BUCKET_MASK)
        counts = self.variants[self._slots[entry >> _SLOT_SHIFT]]
        for flag, index, total in _KINDS:
            if newly & flag:
                counts[index] += 1
                self.totals[total] += 1
                if bucket is not None:
                    bucket[index] += 1

    # -- joined rewards ---------------------------------------------------------------------
    def joined(self, joined: Sequence[Joined]) -> None:
        """Rewards that closed: per segment x trait, and rows for the off-policy estimate."""
        for j in joined:
            d = j.decision
            eid = d.event_id.int
            entry = self._events.get(eid)
            if entry is None:
                self.totals["joined_unmatched"] += 1
                continue
            if entry & _JOINED:
                continue  # joined again after the learner rewound
            self._events[eid] = entry | _JOINED
            self.totals["joined"] += 1
            clicked = bool(entry & _CLICK)
            segment = segment_of(d.context)
            for trait in d.action_features[d.action].traits or ["(none)"]:
                cell = self.segments.setdefault((segment, trait), [0.0, 0.0, 0.0])
                cell[0] += 1
                cell[1] += clicked
                cell[2] += j.reward
            self.unscored.append((d, clicked, (entry >> _BUCKET_SHIFT) & _BUCKET_MASK))

    def score(self, policy: Evaluator) -> None:
        """Score the joined rows waiting for it by ``policy`` (importance weights against the
        logged propensities, for the policy and for a uniform choice)."""
        while self.unscored:
            d, clicked, number = self.unscored.popleft()
            p_policy = policy.pmf_logged(d)[d.action]
            p_uniform = 1.0 / len(d.actions)
            self.ope.append((float(clicked), p_policy, p_uniform, d.pscore))
            bucket = self.buckets.get(number)
            if bucket is not None:
                w, u = p_policy / d.pscore, p_uniform / d.pscore
                bucket[5] += 1
                bucket[6] += w
                bucket[7] += w * clicked
                bucket[8] += u
                bucket[9] += u * clicked

    # -- output -----------------------------------------------------------------------------
    def estimates(self) -> dict[str, Any]:
        """SNIPS of the click rate (95 % normal interval) of the current policy and of the
        uniform one on the latest scored rows, beside the logging policy's own rate."""
        if not self.ope:
            return {"rounds": 0}
        rows = np.asarray(self.ope, dtype=np.float64)
        reward, p_pol, p_uni, pscore = rows.T
        n = len(rows)
        out: dict[str, Any] = {"rounds": n, "metric": "ctr"}
        for name, p in (("policy", p_pol), ("uniform", p_uni), ("logging", pscore)):
            # one action per row: the probability of the logged one, the rest elsewhere
            dist = np.stack([p, 1.0 - p], axis=1)
            est = estimate(reward, np.zeros(n, dtype=np.intp), pscore, dist, estimators=("snips",))
            e = est["snips"]
            out[name] = {
                "value": _finite(e.value),
                "low": _finite(e.ci.low),
                "high": _finite(e.ci.high),
            }
        return out

    def figures(self, health: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The published record's ``figures`` (the layout the dashboard reads)."""
        buckets = []
        for number in sorted(self.buckets):
            b = dict(zip(_BUCKET_FIELDS, self.buckets[number], strict=True))
            buckets.append(
                {
                    "t": number * self.bucket_s,
                    **{k: int(b[k]) for k in _BUCKET_FIELDS[:6]},
                    "policy_ctr": _ratio(b["wc_policy"], b["w_policy"]),
                    "uniform_ctr": _ratio(b["wc_uniform"], b["w_uniform"]),
                }
            )
        variants = sorted(self.variants.items(), key=lambda kv: -kv[1][0])[:2000]
        segments = sorted(self.segments.items(), key=lambda kv: -kv[1][0])[:2000]
        versions = sorted(self.versions.items(), key=lambda kv: kv[1])
        return {
            "bucket_s": self.bucket_s,
            "totals": dict(self.totals),
            "buckets": buckets,
            "variants": [
                {
                    "product_id": p,
                    "variant_id": v,
                    "decisions": c[0],
                    "impressions": c[1],
                    "clicks": c[2],
                    "purchases": c[3],
                }
                for (p, v), c in variants
            ],
            "segments": [
                {"segment": s, "trait": t, "shown": int(c[0]), "clicks": int(c[1]), "reward": c[2]}
                for (s, t), c in segments
            ],
            "versions": [
                {"kind": k, "version": v, "since": datetime.fromtimestamp(ts, UTC).isoformat()}
                for (k, v), ts in versions[-40:]
            ],
            "ope": self.estimates(),
            "health": dict(health or {}),
        }

    # -- persistence ------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "bucket_s": self.bucket_s,
            "offsets": [[t, p, o] for (t, p), o in self.offsets.items()],
            "totals": self.totals,
            "buckets": [[k, *v] for k, v in self.buckets.items()],
            "variants": [[p, v, *c] for (p, v), c in self.variants.items()],
            "segments": [[s, t, *c] for (s, t), c in self.segments.items()],
            "versions": [[k, v, ts] for (k, v), ts in self.versions.items()],
            "ope": list(self.ope),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != _FORMAT or state.get("bucket_s") != self.bucket_s:
            raise ValueError(f"format {state.get('format')!r}, bucket {state.get('bucket_s')!r}")
        self.offsets = {(t, int(p)): int(o) for t, p, o in state["offsets"]}
        self.totals.update({k: int(v) for k, v in state["totals"].items() if k in self.totals})
        self.buckets = {int(r[0]): [float(x) for x in r[1:]] for r in state["buckets"]}
        for p, v, *c in state["variants"]:
            self._slot(p, v)
            self.variants[(p, v)] = [int(x) for x in c]
        self.segments = {(s, t): [float(x) for x in c] for s, t, *c in state["segments"]}
        self.versions = {(k, v): float(ts) for k, v, ts in state["versions"]}
        self.ope.extend(tuple(r) for r in state["ope"])

    def save(self, path: Path) -> None:
        """Atomically: a reader (or a crash) sees the old file or the new one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_state(), separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, **options: Any) -> LoopCounts:
        """The counts saved at ``path``; fresh ones when there is none (or it is unreadable,
        which is logged: figures restart, learning is untouched)."""
        counts = cls(**options)
        if path.exists():
            try:
                counts.restore(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("loop stats at %s unreadable, starting afresh: %s", path, exc)
                counts = cls(**options)
        return counts


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class EventSinkLike(Protocol):
    def add(self, topic: str, key: str | None, event: Event) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


class StatsPublisher:
    """The learner's observer (``Learner.observer``): counts what it reads and joins, saves
    the counts before each checkpoint and publishes a :class:`LoopStats` record every
    ``every_s`` seconds on ``topic`` (key ``loop``)."""

    def __init__(
        self,
        counts: LoopCounts,
        sink: EventSinkLike,
        topic: str,
        path: Path,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts = counts
        self.sink = sink
        self.topic = topic
        self.path = path
        self.every_s = every_s
        self.clock = clock
        self.published = 0
        self._last = -math.inf
        self._serving: tuple[str, Evaluator] | None = None

    def read(self, records: Sequence[Received[Event]]) -> None:
        self.counts.read(records)

    def joined(self, joined: Sequence[Joined]) -> None:
        self.counts.joined(joined)

    def saving(self) -> None:
        self.counts.save(self.path)

    def stepped(self, serving: Serving, health: Callable[[], Mapping[str, Any]]) -> None:
        """Publish when due, the joined rows scored by the ``serving`` snapshot: the policy the
        rankers use, and one that never learned rows joined after it was cut (the live model
        has learned them by now, and would flatter itself)."""
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self.publish(self._scorer(serving), health())

    def _scorer(self, serving: Serving) -> Evaluator:
        if serving.path is None:
            return Uniform()
        if self._serving is None or self._serving[0] != serving.version:
            try:
                self._serving = (serving.version, load_snapshot(str(serving.path)))
            except BanditError as exc:
                log.warning("loop stats cannot load snapshot %s: %s", serving.path, exc)
                return Uniform() if self._serving is None else self._serving[1]
        return self._serving[1]

    def publish(self, policy: Evaluator, health: Mapping[str, Any]) -> bool:
        """Score what joined since the last record and send one now; False when the broker
        refused it (the next step tries again)."""
        self.counts.score(policy)
        record = LoopStats(figures=self.counts.figures(health))
        try:
            self.sink.add(self.topic, "loop", record)
            self.sink.flush()
        except StreamsError as exc:
            log.warning("publishing loop stats failed, will retry: %s", exc)
            return False
        self.published += 1
        return True

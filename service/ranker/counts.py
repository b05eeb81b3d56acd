"""Per-variant impressions and clicks, from the decisions and feedback topics.

A decision says which variant an event showed; feedback says whether the event was seen
(impression) and clicked. Counts are per event, not per message, so a duplicated feedback
message (same ``feedback_id`` or a second click on one event) never inflates them, and a click
only counts once its impression is known, so the CTR stays within [0, 1]. Feedback that arrives
before its decision (they travel on different topics) waits in a bounded buffer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from bandit.ope_stats import wilson_interval
from bandit.wire import AnyDecision, AnyFeedback

_IMPRESSION = 1
_CLICK = 2
_FLAGS = _IMPRESSION | _CLICK


@dataclass(frozen=True)
class VariantCounts:
    decisions: int
    impressions: int
    clicks: int

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.clicks, self.impressions)


class VariantStats:
    """Thread-safe counts per ``(product_id, variant_id)``; the consumer thread writes, request
    handlers read. ``max_events`` bounds the per-event memory (oldest events are forgotten:
    feedback for them after that is ignored)."""

    def __init__(self, *, max_events: int = 500_000, max_waiting: int = 100_000) -> None:
        if max_events < 1:
            raise ValueError(f"`max_events` must be >= 1, got {max_events}")
        if max_waiting < 0:
            raise ValueError(f"`max_waiting` must be >= 0, got {max_waiting}")
        self._max_events = max_events
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        # event_id -> slot << 2 | flags, where ``self._slots[slot]`` is the counts of the
        # variant the event showed. A plain int per event, not a list: the garbage collector
        # tracks every list and scans the whole table at each full collection (hundreds of
        # thousands of events, tens of milliseconds that stall every request thread), while
        # ints and strings are never tracked.
        self._events: OrderedDict[str, int] = OrderedDict()
        # event_id -> flags seen before the decision arrived
        self._waiting: OrderedDict[str, int] = OrderedDict()
        # product_id -> variant_id -> [decisions, impressions, clicks]
        self._counts: dict[str, dict[str, list[int]]] = {}
        # one entry per (product, variant) ever counted: the same lists as in ``_counts``
        self._slots: list[list[int]] = []
        self._slot_of: dict[tuple[str, str], int] = {}
        self.duplicates = 0
        self.orphans_dropped = 0

    def add_decision(self, decision: AnyDecision) -> None:
        key = str(decision.event_id)
        variant = decision.actions[decision.action]
        with self._lock:
            if key in self._events:
                self.duplicates += 1
                return
            slot = self._slot_of.get((decision.product_id, variant))
            if slot is None:
                slot = self._slot_of[(decision.product_id, variant)] = len(self._slots)
                product = self._counts.setdefault(decision.product_id, {})
                self._slots.append(product.setdefault(variant, [0, 0, 0]))
            self._slots[slot][0] += 1
            self._events[key] = slot << 2
            if len(self._events) > self._max_events:
                self._events.popitem(last=False)
            early = self._waiting.pop(key, 0)
            if early:
                self._apply(key, early)

    def add_feedback(self, feedback: AnyFeedback) -> None:
        flag = {"impression": _IMPRESSION, "click": _CLICK}.get(feedback.kind, 0)
        if not flag:
            return  # add_to_cart and purchase do not change impressions or clicks
        key = str(feedback.event_id)
        with self._lock:
            if key in self._events:
                self._apply(key, flag)
            elif self._max_waiting:
                self._waiting[key] = self._waiting.get(key, 0) | flag
                self._waiting.move_to_end(key)
                if len(self._waiting) > self._max_waiting:
                    self._waiting.popitem(last=False)
                    self.orphans_dropped += 1

    def _apply(self, key: str, flags: int) -> None:
        entry = self._events[key]
        before = entry & _FLAGS
        after = before | flags
        if after == before:
            self.duplicates += 1
            return
        self._events[key] = entry | flags
        counts = self._slots[entry >> 2]
        if after & _IMPRESSION and not before & _IMPRESSION:
            counts[1] += 1
        # a click counts once both it and its impression are known, in whichever order
        if after == _IMPRESSION | _CLICK:
            counts[2] += 1

    def variant(self, product_id: str, variant_id: str) -> VariantCounts:
        with self._lock:
            c = self._counts.get(product_id, {}).get(variant_id, [0, 0, 0])
            return VariantCounts(c[0], c[1], c[2])

    def product(self, product_id: str) -> dict[str, VariantCounts]:
        with self._lock:
            return {
                v: VariantCounts(c[0], c[1], c[2])
                for v, c in self._counts.get(product_id, {}).items()
            }

    def products(self) -> list[str]:
        with self._lock:
            return sorted(self._counts)

"""Prometheus metrics of one service process, in a registry of its own (so tests and several
apps in one process never collide on the global one).

Request-path figures are counters and a histogram updated in the handlers; figures that other
parts already count (the publisher, the consumers, the caches) are copied into counters and
gauges by :meth:`Metrics.sync`, at each scrape and, with several workers, once a second on a
thread of each worker, so the hot path pays nothing for them.

With ``copyloop serve --workers N`` prometheus-client's multiprocess mode is on
(``service.observe.scrape``): every value lives in the workers' shared files and whichever
worker answers ``/metrics`` renders the sum of all of them. A gauge says how it is combined
(``livesum`` for pending records, ``livemin`` for readiness and the broker, ``livemax`` for
pools); only the policy version is the answering worker's own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bandit.loop_stats import explored
from service.observe import scrape
from service.observe.bounded import MAX_PRODUCTS, BoundedLabels
from streams.schemas import FEEDBACK_KINDS, Decision, Feedback

log = logging.getLogger(__name__)

CONTENT_TYPE = scrape.CONTENT_TYPE

#: fine around the 10 ms p99 target, so the histogram alone tells whether it is met
_LATENCY_BUCKETS = (
    *(0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02),
    *(0.025, 0.05, 0.1, 0.25, 0.5),
)
#: how often each worker copies its runtime figures into the shared files (multiprocess mode)
SYNC_EVERY_S = 1.0


@dataclass(frozen=True)
class RuntimeFigures:
    """What :meth:`Metrics.sync` reads from the runtime."""

    decisions_published: int
    records_delivered: int
    records_spooled: int
    records_pending: int
    broker_ok: bool
    dead_letters: int
    pools: int
    policy_version: str
    policy_swaps: int
    ready: bool


class _PolicyInfo(Collector):
    """``copyloop_policy_info{version}``: the snapshot this process serves (in multiprocess
    mode, the answering worker's: versions are labels, which files cannot retire)."""

    def __init__(self, version: Callable[[], str | None]) -> None:
        self._version = version

    def collect(self) -> Iterator[Metric]:
        version = self._version()
        if version is not None:
            info = GaugeMetricFamily(
                "copyloop_policy_info", "the bandit snapshot in use", labels=["version"]
            )
            info.add_metric([version], 1)
            yield info


class Metrics:
    """The service's metrics; ``max_products`` bounds the product label (``other`` past it)."""

    def __init__(self, *, max_products: int = MAX_PRODUCTS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._read: Callable[[], RuntimeFigures] | None = None
        self._seen = RuntimeFigures(0, 0, 0, 0, False, 0, 0, "", 0, False)
        self._version: str | None = None
        self._lock = threading.Lock()
        self._syncing: threading.Thread | None = None
        self._closed = threading.Event()
        r = self.registry
        self.rank_latency = Histogram(
            "copyloop_rank_latency_seconds",
            "time to answer POST /v1/rank, in the handler",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rank_requests = Counter(
            "copyloop_rank_requests", "rank requests by outcome", ["outcome"], registry=r
        )
        self.rank_ok = self.rank_requests.labels("ok")
        self.rank_rejected = self.rank_requests.labels("rejected")
        self.decisions = Counter(
            "copyloop_decisions",
            "decisions made, by product (past the cap: `other`) and whether the chosen variant "
            "was not the policy's single most probable one (explored)",
            ["product", "explored"],
            registry=r,
        )
        self._products = BoundedLabels(max_products)
        self._decision_children: dict[tuple[str, bool], Counter] = {}
        self.feedback_accepted = Counter(
            "copyloop_feedback_accepted", "feedback events accepted", registry=r
        )
        self.feedback = Counter(
            "copyloop_feedback", "feedback events accepted, by kind", ["kind"], registry=r
        )
        self._feedback_kinds = {kind: self.feedback.labels(kind) for kind in FEEDBACK_KINDS}
        self.jobs = Counter(
            "copyloop_generation_jobs", "generation jobs by final state", ["state"], registry=r
        )
        self.client_errors = Counter(
            "copyloop_client_errors", "4xx answers by status", ["status"], registry=r
        )
        # the runtime's own figures, copied by sync()
        self._published = Counter(
            "copyloop_decisions_published",
            "decisions handed to the publisher (delivered or spooled)",
            registry=r,
        )
        self._delivered = Counter(
            "copyloop_records_delivered", "records acknowledged by Kafka", registry=r
        )
        self._spooled = Counter(
            "copyloop_records_spooled",
            "records written to the local spool while Kafka was unreachable",
            registry=r,
        )
        self._dead_letters = Counter(
            "copyloop_dead_letters",
            "consumed messages sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        ).labels("invalid")
        self._swaps = Counter(
            "copyloop_policy_swaps", "bandit snapshots hot-swapped in", registry=r
        )
        self._pending = Gauge(
            "copyloop_records_pending",
            "records not yet delivered",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._broker_up = Gauge(
            "copyloop_broker_up",
            "1 when the last delivery reached Kafka (every worker's)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self._pools = Gauge(
            "copyloop_pools", "products with a cached pool", registry=r, multiprocess_mode="livemax"
        )
        self._ready = Gauge(
            "copyloop_ready",
            "1 when /readyz answers 200 (every worker's)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self._info = _PolicyInfo(lambda: self._version)
        r.register(self._info)

    # -- the request path -----------------------------------------------------------------
    def decided(self, decision: Decision) -> None:
        """Count one decision by product and exploration."""
        key = (decision.product_id, explored(decision))
        child = self._decision_children.get(key)
        if child is None:
            label = self._products.label(key[0])
            child = self.decisions.labels(label, "true" if key[1] else "false")
            self._decision_children[key] = child
        child.inc()

    def accepted(self, items: Iterable[Feedback]) -> None:
        """Count accepted feedback, in total and by kind."""
        n = 0
        for fb in items:
            self._feedback_kinds[fb.kind].inc()
            n += 1
        self.feedback_accepted.inc(n)

    # -- the runtime's figures ------------------------------------------------------------
    def bind(self, read: Callable[[], RuntimeFigures]) -> None:
        """Copy the runtime's figures from ``read`` (a new runtime replaces the last, and its
        counts start again from zero). In multiprocess mode a daemon thread copies them every
        :data:`SYNC_EVERY_S`, so another worker's scrape sees them too."""
        with self._lock:
            self._read = read
            self._seen = RuntimeFigures(0, 0, 0, 0, False, 0, 0, "", 0, False)
        self._closed.clear()
        if scrape.multiprocess_dir() is not None and not (
            self._syncing is not None and self._syncing.is_alive()
        ):
            self._syncing = threading.Thread(
                target=self._sync_forever, name="metrics-sync", daemon=True
            )
            self._syncing.start()

    def sync(self) -> None:
        """Copy the bound runtime's figures: counters by their increase, gauges as they are."""
        with self._lock:
            if self._read is None:
                return
            f, last = self._read(), self._seen
            for counter, now, before in (
                (self._published, f.decisions_published, last.decisions_published),
                (self._delivered, f.records_delivered, last.records_delivered),
                (self._spooled, f.records_spooled, last.records_spooled),
                (self._dead_letters, f.dead_letters, last.dead_letters),
                (self._swaps, f.policy_swaps, last.policy_swaps),
            ):
                if now > before:
                    counter.inc(now - before)
            self._pending.set(f.records_pending)
            self._broker_up.set(int(f.broker_ok))
            self._pools.set(f.pools)
            self._ready.set(int(f.ready))
            self._version = f.policy_version
            self._seen = f

    def close(self) -> None:
        """Stop copying; in multiprocess mode, take this worker's live gauges out of the sum
        (its counters stay in the totals). Called at the app's shutdown: a worker stopped by
        SIGTERM ends by the signal, so exit handlers never run."""
        self._closed.set()
        if self._syncing is not None:
            self._syncing.join(timeout=2 * SYNC_EVERY_S)
        scrape.worker_exited()

    def _sync_forever(self) -> None:
        while not self._closed.wait(SYNC_EVERY_S):
            try:
                self.sync()
            except Exception as exc:  # a metrics thread must outlive a bad read
                log.debug("copying the runtime's figures failed: %s", exc)

    def render(self) -> bytes:
        """The exposition text: this app's registry and the process-wide one, or in
        multiprocess mode the sum over every worker."""
        self.sync()
        return scrape.render(self.registry, local=self._info)

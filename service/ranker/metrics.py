"""Prometheus metrics of one service process, in a registry of its own (so tests and several
apps in one process never collide on the global one).

Request-path figures are counters and a histogram updated in the handlers; figures that other
parts already count (the publisher, the consumers, the caches) are read at scrape time by a
collector, so the hot path pays nothing for them. With ``--workers N`` each worker has its own
figures; the scraper sums them per pod."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: fine around the 10 ms p99 target, so the histogram alone tells whether it is met
_LATENCY_BUCKETS = (
    *(0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02),
    *(0.025, 0.05, 0.1, 0.25, 0.5),
)


@dataclass(frozen=True)
class RuntimeFigures:
    """What the collector reads from the runtime at scrape time."""

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


class _RuntimeCollector(Collector):
    def __init__(self, read: Callable[[], RuntimeFigures]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        f = self._read()
        yield CounterMetricFamily(
            "copyloop_decisions_published",
            "decisions handed to the publisher (delivered or spooled)",
            value=f.decisions_published,
        )
        yield CounterMetricFamily(
            "copyloop_records_delivered", "records acknowledged by Kafka", value=f.records_delivered
        )
        yield CounterMetricFamily(
            "copyloop_records_spooled",
            "records written to the local spool while Kafka was unreachable",
            value=f.records_spooled,
        )
        yield GaugeMetricFamily(
            "copyloop_records_pending", "records not yet delivered", value=f.records_pending
        )
        yield GaugeMetricFamily(
            "copyloop_broker_up", "1 when the last delivery reached Kafka", value=int(f.broker_ok)
        )
        yield CounterMetricFamily(
            "copyloop_dead_letters",
            "consumed messages sent to the dead-letter topic",
            value=f.dead_letters,
        )
        yield GaugeMetricFamily("copyloop_pools", "products with a cached pool", value=f.pools)
        yield CounterMetricFamily(
            "copyloop_policy_swaps", "bandit snapshots hot-swapped in", value=f.policy_swaps
        )
        info = InfoMetricFamily("copyloop_policy", "the bandit snapshot in use")
        info.add_metric([], {"version": f.policy_version})
        yield info
        yield GaugeMetricFamily("copyloop_ready", "1 when /readyz answers 200", value=int(f.ready))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._bound: _RuntimeCollector | None = None
        self.rank_latency = Histogram(
            "copyloop_rank_latency_seconds",
            "time to answer POST /v1/rank, in the handler",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rank_requests = Counter(
            "copyloop_rank_requests",
            "rank requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.rank_ok = self.rank_requests.labels("ok")
        self.rank_rejected = self.rank_requests.labels("rejected")
        self.feedback_accepted = Counter(
            "copyloop_feedback_accepted", "feedback events accepted", registry=self.registry
        )
        self.jobs = Counter(
            "copyloop_generation_jobs",
            "generation jobs by final state",
            ["state"],
            registry=self.registry,
        )
        self.client_errors = Counter(
            "copyloop_client_errors", "4xx answers by status", ["status"], registry=self.registry
        )

    def bind(self, read: Callable[[], RuntimeFigures]) -> None:
        """Read the runtime's figures at scrape time (a new runtime replaces the last)."""
        if self._bound is not None:
            self.registry.unregister(self._bound)
        self._bound = _RuntimeCollector(read)
        self.registry.register(self._bound)

    def render(self) -> bytes:
        return generate_latest(self.registry)

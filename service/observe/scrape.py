"""Rendering ``/metrics`` and serving it, for one process or for the workers of one server.

A server with several worker processes cannot answer a scrape from one worker's memory: the
scraper would see whichever worker answered. prometheus-client's multiprocess mode keeps each
worker's values in memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` and sums them when
any worker renders. The folder must be set before the workers import prometheus-client (the
value class is chosen at import), be private to one server run and start empty, or the last
run's counts would be added to this one's (:func:`prepare_multiprocess_dir`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

#: the variable prometheus-client reads to store values in files (multiprocess mode)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> Path | None:
    """The multiprocess folder this process writes to (None: single-process mode)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(folder: Path) -> Path:
    """Make ``folder`` this server run's multiprocess folder: created, emptied of the value
    files an earlier run left (only those: the folder may be the operator's), and exported so
    the workers started next inherit it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def worker_exited(pid: int | None = None) -> None:
    """Forget an exiting worker's live gauges (pending records, readiness), so the sum no longer
    counts a process that is gone; its counters stay in the totals."""
    folder = multiprocess_dir()
    if folder is not None:
        mark_process_dead(os.getpid() if pid is None else pid, str(folder))


def render(*registries: CollectorRegistry, local: Collector | None = None) -> bytes:
    """The exposition text. In multiprocess mode, the sum over every worker's files (the
    registries' own values are in those files too) plus ``local``: figures that cannot be
    summed (the policy version this worker serves). Otherwise each registry in turn, the
    process-wide default one included."""
    folder = multiprocess_dir()
    if folder is None:
        return b"".join(generate_latest(r) for r in (*registries, REGISTRY))
    merged = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(merged, str(folder))
    if local is not None:
        merged.register(local)
    return generate_latest(merged)


def serve(
    port: int, registry: CollectorRegistry, host: str = "127.0.0.1"
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` and the process-wide metrics at ``http://host:port/metrics`` from a
    daemon thread (for processes without an HTTP app of their own: the learner). Raises
    ``OSError`` when the port is taken."""
    registry.register(_Default())
    return start_http_server(port, addr=host, registry=registry)


class _Default(Collector):
    """The process-wide registry (generation, guardrails, the process itself) inside another."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()

"""The FastAPI app: ``create_app(settings)`` builds it, its lifespan starts the
:class:`~service.ranker.runtime.Runtime` (caches, consumers, publisher) once and stops it on
shutdown,
flushing decisions to Kafka or leaving them in the spool for the next start."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import admin, feedback, ops, products, rank
from service.api.fast_rank import FastRank
from service.api.handlers import BodyLimit, install_error_handlers
from service.dashboard import routes as dashboard_routes
from service.dashboard.stats_feed import LatestStats, StatsTopicFeed
from service.ranker.jobs import GenerateFn
from service.ranker.metrics import Metrics
from service.ranker.record_sinks import RecordSink, kafka_record_sink
from service.ranker.runtime import Runtime
from service.settings import Settings

SWITCH_INTERVAL_S = 0.0005
#: bodies over this are refused with 413 (a feedback batch of 1,000 fits comfortably)
MAX_BODY_BYTES = 512 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    seed: int = 0,
    generator: GenerateFn | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    fast_rank: bool = True,
    sink: RecordSink | None = None,
    feeds: bool = True,
) -> FastAPI:
    """The service app. ``generator`` replaces the copy generator the jobs load from
    ``settings.generator_model`` (for a caller that already holds one); ``fast_rank=False``
    leaves ``POST /v1/rank`` to the FastAPI route alone (see ``service.api.fast_rank``).
    ``sink`` receives what the app publishes (default: a Kafka producer built at start-up, one
    per worker) and ``feeds=False`` runs without Kafka consumers (see :class:`Runtime`): with
    a memory sink, the whole HTTP surface runs without a broker."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    loop_stats = LatestStats()  # the learner's loop-wide figures, for the dashboard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        out = sink if sink is not None else kafka_record_sink(settings)
        rt = Runtime(
            settings, out, seed=seed, generator=generator, metrics=metrics, feeds=feeds
        ).start()
        app.state.runtime = rt
        stats_feed = StatsTopicFeed(settings.kafka_bootstrap, settings.topics, loop_stats)
        if feeds:
            stats_feed.start()
        try:
            yield
        finally:
            stats_feed.stop()
            rt.close()
            metrics.close()  # with several workers: this one's live gauges leave the sum

    app = FastAPI(
        title="copyloop",
        version="1",
        summary="Copy variants that learn: rank, feedback, products, admin.",
        lifespan=lifespan,
    )
    app.state.loop_stats = loop_stats
    install_error_handlers(app, metrics)
    if fast_rank:
        app.add_middleware(FastRank)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # added last: the outermost
    for module in (rank, feedback, products, admin, ops, dashboard_routes):
        app.include_router(module.router)
    return app


def make_app() -> FastAPI:
    """The factory ``copyloop serve`` gives uvicorn (each worker builds its own app)."""
    # A request thread that released the GIL for a socket write waits for the background
    # threads (publisher, consumers) to hand it back: up to the switch interval, 5 ms by
    # default, which would be most of the rank latency budget. 0.5 ms bounds that wait.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(Settings())

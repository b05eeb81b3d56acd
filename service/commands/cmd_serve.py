"""``copyloop serve``: the HTTP API under uvicorn, with one or more worker processes.

Each worker builds its own app from the ``COPYLOOP_*`` environment (its own caches, consumers
and spool slot); uvicorn stops them cleanly on SIGTERM, and each flushes its decisions to Kafka
or leaves them in its spool for the next start."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console

from bandit.errors import ConfigError
from bandit.presets import DEFAULT_PRESET, PRESETS, preset
from service.errors import ServiceError
from service.observe import scrape
from service.ranker.keys import hash_key_for
from service.settings import Settings
from streams.serde import describe

if TYPE_CHECKING:
    from fastapi import FastAPI

console = Console(stderr=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="port to listen on"),
    workers: int = typer.Option(1, min=1, max=64, help="worker processes"),
    access_log: bool = typer.Option(False, help="log every request (costs latency under load)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    preset_name: str | None = typer.Option(
        None,
        "--preset",
        help=f"the bandit's settings until the learner's first snapshot, one of "
        f"{', '.join(PRESETS)} (default: $COPYLOOP_BANDIT_PRESET, else {DEFAULT_PRESET})",
    ),
    metrics_dir: Path | None = typer.Option(  # noqa: B008 - typer reads its options from defaults
        None,
        help="with --workers > 1: where the workers keep their metrics for /metrics to sum, "
        "emptied at start (default: $PROMETHEUS_MULTIPROC_DIR, else DATA_DIR/metrics/serve-PORT)",
    ),
) -> None:
    """Serve the rank, feedback, products and admin API (CONTRACT.md §4)."""
    import uvicorn

    try:
        # checked here, so a bad variable or an unusable data folder fails before any worker
        # starts, with one line instead of a traceback per worker
        if preset_name is not None:
            preset(preset_name)
            # the workers build their settings from the environment
            os.environ["COPYLOOP_BANDIT_PRESET"] = preset_name
        settings = Settings()
        hash_key_for(settings)
        multiprocess_metrics(workers, metrics_dir, settings.data_dir / "metrics" / f"serve-{port}")
    except ValidationError as exc:
        console.print(f"[bold red]error:[/] settings: {describe(exc)}")
        raise typer.Exit(2) from exc
    except (ServiceError, ConfigError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"copyloop serving on http://{host}:{port} ({workers} worker(s)), Kafka at "
        f"{settings.kafka_bootstrap}, topics {settings.topic_prefix}*, "
        f"dashboard http://{host}:{port}/dashboard"
    )
    uvicorn.run(
        "service.commands.cmd_serve:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=15,
    )


def multiprocess_metrics(workers: int, chosen: Path | None, default: Path) -> Path | None:
    """Several workers: give this server run its own, empty multiprocess metrics folder (set
    before uvicorn spawns the workers, which read it when they import prometheus-client), so
    any worker's ``/metrics`` sums them all. One worker serves from this process, which
    imported prometheus-client already: its own registry, unless the operator's environment
    set multiprocess mode from the start."""
    inherited = scrape.multiprocess_dir()
    if workers == 1 and inherited is None:
        return None
    return scrape.prepare_multiprocess_dir(chosen or inherited or default)


def serving_app() -> FastAPI:
    """The factory uvicorn runs in each worker: ``make_app``'s app, in a process whose garbage
    collector leaves the request path alone."""
    from service.api.app import make_app

    app = make_app()
    # What is loaded by now (scikit-learn, FastAPI, pydantic, the app: ~180,000 objects that live
    # as long as the process) is left out of every later collection. Each full collection walked
    # all of it with the GIL held, 100-150 ms on this machine every couple of seconds at 1,000
    # requests/s: that pause was the rank's p99. Frozen, a full collection walks only what was
    # made since (what start-up left as garbage is collected first, not frozen with the rest;
    # a frozen object that dies later is still freed by its reference count, and only a cycle
    # among such objects would be kept: a one-off, bounded by the start-up heap).
    gc.collect()
    gc.freeze()
    return app


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

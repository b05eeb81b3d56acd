"""``copyloop finetune`` fine-tunes the generator on the logged feedback, gated:

* with no flag it runs until stopped and starts a round every ``COPYLOOP_FINETUNE_EVERY`` newly
  joined rewards (as the learner's announcements count them);
* ``--once`` runs one round now and prints its result as JSON;
* ``--rollback`` serves the previous generator version again and restores the pools its
  successor's promotion replaced.

Rounds read decisions, feedback and pools from the configured Kafka and publish the generator
announcement and refreshed pools there. ``--products`` gives the catalog (stored for later
rounds; without it the last round's is used). A round with too little evidence is an ordinary
outcome (status ``skipped`` and the reason); bad input ends with a message and exit 2, never a
traceback. SIGTERM (or Ctrl-C) stops the process; a round it interrupts leaves no version."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from generator.errors import GeneratorError
from service.errors import ServiceError
from service.finetune.kafka_rounds import catalog, live_rollback, live_round
from service.finetune.registry import Registry
from service.finetune.sources import load_products
from service.finetune.trigger import STATE, Trigger, follow
from service.settings import Settings
from streams.errors import StreamsError
from streams.producer import KafkaEventSink
from streams.schemas import Product

console = Console(stderr=True)


class Interrupted(Exception):
    """SIGTERM arrived during a round: the round unwinds (and removes its candidate)."""


def _round(settings: Settings, products: list[Product], sink: KafkaEventSink) -> None:
    result = live_round(settings, products, sink=sink)
    console.print(f"[bold]{result.status}[/]: {escape(result.reason)}", highlight=False)
    print(json.dumps(result.to_dict(), ensure_ascii=False), flush=True)


def _follow(settings: Settings, products: list[Product], sink: KafkaEventSink) -> int:
    registry = Registry.under(settings.data_dir)
    trigger = Trigger(settings.finetune_every, registry.root / STATE)
    stop = threading.Event()
    busy = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if busy.is_set():
            busy.clear()
            raise Interrupted(f"signal {signum} during a round")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def run() -> None:
        busy.set()
        try:
            _round(settings, products, sink)
        except (ServiceError, GeneratorError, StreamsError) as exc:  # the next round may do
            console.print(f"[bold red]round failed:[/] {escape(str(exc))}", highlight=False)
        finally:
            busy.clear()

    console.print(
        f"following {settings.topics.models}: a round every {settings.finetune_every} joined "
        f"rewards (last round at {trigger.last})",
        highlight=False,
    )
    try:
        return follow(settings.kafka_bootstrap, settings.topics, trigger, run, stop)
    except Interrupted:
        console.print("stopped during a round; its candidate was removed")
        return 0


def finetune(
    once: Annotated[bool, typer.Option("--once", help="run one round and exit")] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="serve the previous generator version again")
    ] = False,
    products: Annotated[
        Path | None,
        typer.Option(
            "--products",
            help="catalog: a JSON list (or JSON lines) of products (default: the last round's)",
        ),
    ] = None,
) -> None:
    """Fine-tune the generator on the logged feedback, gated; or roll back the last promotion."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("service.finetune").setLevel(logging.INFO)
    try:
        settings = Settings()
        if once and rollback:
            raise ServiceError("--once", "and --rollback exclude each other: give one")
        if not (once or rollback) and settings.finetune_every < 1:
            raise ServiceError(
                "COPYLOOP_FINETUNE_EVERY", "is 0 (automatic rounds off): set it, or use --once"
            )
        sink = KafkaEventSink(settings.kafka_bootstrap, client_id="copyloop-finetune")
        try:
            if rollback:
                done = live_rollback(settings, sink=sink)
                print(json.dumps(done.to_dict(), ensure_ascii=False))
                return
            given = load_products(products) if products is not None else None
            chosen = catalog(Registry.under(settings.data_dir), given, field="--products")
            if once:
                with console.status("fine-tune round (data, training, gate, refresh)"):
                    _round(settings, chosen, sink)
            else:
                rounds = _follow(settings, chosen, sink)
                console.print(f"stopped after {rounds} round(s)")
        finally:
            sink.close()
    except (ServiceError, GeneratorError, StreamsError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)

"""``copyloop kafka up|down|status``: the local single-node Apache Kafka (KRaft)."""

from __future__ import annotations

import typer
from rich.console import Console

from service.settings import Settings
from streams.errors import StreamsError
from streams.kafka_local import LocalKafka
from streams.topics import TopicAdmin

console = Console(stderr=True)
kafka_app = typer.Typer(no_args_is_help=True, help="A local single-node Apache Kafka (KRaft).")


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _local_kafka(settings: Settings) -> LocalKafka:
    return LocalKafka.from_bootstrap(settings.kafka_bootstrap, settings.kafka_home.resolve())


@kafka_app.command("up")
def kafka_up(
    timeout: float = typer.Option(180.0, help="seconds to wait for the broker to answer"),
) -> None:
    """Start the broker and create the contract's topics (both idempotent); print its
    bootstrap address.

    The broker never creates a topic on first use, so the topics are made here: a client
    outside the project (an ad server producing feedback) may then write before the service
    or the learner has run."""
    settings = Settings()
    try:
        kafka = _local_kafka(settings)
        with console.status("starting Kafka") as status:
            bootstrap = kafka.up(timeout_s=timeout, step=lambda msg: status.update(msg))
            status.update("creating topics")
            admin = TopicAdmin(bootstrap)
            try:
                created = admin.ensure(settings.topics, partitions=settings.topic_partitions)
            finally:
                admin.close()
    except StreamsError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Kafka is up (log: {kafka.log_file})")
    if created:
        console.print(f"created topics: {', '.join(created)}")
    print(bootstrap)


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the broker started by `kafka up`."""
    settings = Settings()
    try:
        stopped = _local_kafka(settings).down()
    except StreamsError as exc:
        raise _fail(str(exc)) from exc
    console.print("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Print whether the broker runs; exit 0 when running, 1 when stopped."""
    settings = Settings()
    try:
        status = _local_kafka(settings).status()
    except StreamsError as exc:
        raise _fail(str(exc)) from exc
    if status.running:
        print(f"running {status.bootstrap} pid={status.pid}")
        return
    print(f"stopped {status.bootstrap}")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(kafka_app, name="kafka")

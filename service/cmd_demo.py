"""``copyloop demo``: the whole loop on one machine with no set-up.

Today it starts the local broker, creates the topics and shows events flowing through them
(a pool, decisions and feedback written and read back); the generator, ranker, learner and
simulated shoppers join it as they land."""

from __future__ import annotations

import time
import uuid

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.settings import Settings
from streams.consumer import EventConsumer
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.kafka_local import LocalKafka
from streams.producer import KafkaEventSink
from streams.schemas import (
    ActionFeatures,
    Decision,
    Event,
    Feedback,
    Variant,
    VariantPool,
)
from streams.topics import TopicAdmin, Topics

console = Console()


def _sample_events(topics: Topics, n: int) -> list[tuple[str, str, Event]]:
    pool = VariantPool(
        product_id="demo-scarf-1",
        pool_version=1,
        generator_version="seed",
        variants=[
            Variant(
                variant_id="v1",
                text="羊毛围巾 冬季暖心之选",
                language="zh",
                channel="ad_headline",
                traits=["festive", "emotion"],
            ),
            Variant(
                variant_id="v2",
                text="限时8折 羊毛围巾仅需¥159",
                language="zh",
                channel="ad_headline",
                traits=["urgency", "discount", "price"],
            ),
        ],
    )
    feats = [
        ActionFeatures(
            traits=v.traits, language="zh", length_bucket="short", generator_version="seed"
        )
        for v in pool.variants
    ]
    out: list[tuple[str, str, Event]] = [(topics.variants, pool.product_id, pool)]
    for i in range(n):
        eid = uuid.uuid4()
        decision = Decision(
            event_id=eid,
            product_id=pool.product_id,
            channel="ad_headline",
            pool_version=1,
            policy_version="uniform",
            context={"channel": "app"},
            actions=[v.variant_id for v in pool.variants],
            action_features=feats,
            action=i % 2,
            pscore=0.5,
            action_dist=[0.5, 0.5],
        )
        out.append((topics.decisions, str(eid), decision))
        out.append(
            (
                topics.feedback,
                str(eid),
                Feedback(feedback_id=f"{eid}-imp", event_id=eid, kind="impression"),
            )
        )
    return out


def demo(
    minutes: float = typer.Option(1.0, help="how long to run the loop"),
    events: int = typer.Option(200, help="decisions to send through the topics"),
) -> None:
    """Run the loop locally: Kafka, topics, events flowing (more parts join as they land)."""
    settings = Settings()
    topics = settings.topics
    try:
        kafka = LocalKafka.from_bootstrap(settings.kafka_bootstrap, settings.kafka_home.resolve())
        with console.status("starting Kafka") as status:
            bootstrap = kafka.up(timeout_s=180, step=lambda m: status.update(m))
        console.print(f"[green]Kafka[/] at {bootstrap}")
        TopicAdmin(bootstrap).ensure(topics, partitions=settings.topic_partitions)
        sink = KafkaEventSink(bootstrap)
        sent = _sample_events(topics, events)
        for topic, key, event in sent:
            sink.add(topic, key, event)
        sink.flush(30)
        consumer = EventConsumer(
            bootstrap,
            {topics.variants: VariantPool, topics.decisions: Decision, topics.feedback: Feedback},
            group_id=f"copyloop-demo-{uuid.uuid4().hex[:8]}",
            deadletter=DeadLetterWriter(sink, topics.deadletter),
        )
        counts: dict[str, int] = {}
        deadline = time.monotonic() + minutes * 60
        with Progress(console=console) as progress:
            task = progress.add_task("reading events back", total=len(sent))
            while sum(counts.values()) < len(sent) and time.monotonic() < deadline:
                for rec in consumer.poll(1.0):
                    counts[rec.topic] = counts.get(rec.topic, 0) + 1
                    progress.advance(task)
        consumer.commit()
        consumer.close()
        sink.close()
    except StreamsError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title="events through Kafka")
    table.add_column("topic")
    table.add_column("read back", justify="right")
    for topic in (topics.variants, topics.decisions, topics.feedback):
        table.add_row(topic, str(counts.get(topic, 0)))
    console.print(table)
    console.print("stop the broker with [bold]copyloop kafka down[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

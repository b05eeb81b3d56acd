"""``copyloop demo``: the whole loop on one machine with no set-up (see ``service.demo``):
local Kafka, the learner and the service, pools from the real generator, simulated shoppers;
shows progress, the CTR the bandit earns beside uniform and oracle, and where the dashboard is.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bandit.errors import ConfigError
from bandit.presets import DEFAULT_PRESET, PRESETS, preset
from service.demo.demo_stack import (
    Child,
    DemoError,
    child_env,
    publish_products,
    start_child,
    wait_ready,
)
from service.demo.live_shoppers import LiveShoppers, Tally, demo_products, shop_once
from service.errors import SimulationError
from service.settings import Settings
from service.simulate.scenario import load_scenario
from streams.errors import StreamsError
from streams.kafka_local import LocalKafka
from streams.topics import TopicAdmin

console = Console()
DEFAULT_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "standard.json"


def _table(tally: Tally, url: str) -> Table:
    table = Table(title=f"the loop — dashboard at {url}/dashboard")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("decisions", str(tally.decisions))
    table.add_row("clicks", str(tally.clicks))
    for name, value in tally.rows().items():
        table.add_row(name, value)
    table.add_row("policy version", tally.policy_version)
    table.add_row("request errors", str(tally.errors))
    return table


def demo(
    minutes: float = typer.Option(2.0, min=0.1, help="how long simulated shoppers shop"),
    scenario_file: Path = typer.Option(  # noqa: B008 - typer reads its options from defaults
        DEFAULT_SCENARIO, "--scenario", help="shopper scenario"
    ),
    products: int = typer.Option(4, min=1, max=50, help="products (when the scenario counts)"),
    port: int = typer.Option(8000, min=1, max=65535, help="port of the HTTP service"),
    keep_running: bool = typer.Option(False, help="leave Kafka, service and learner running"),
    preset_name: str = typer.Option(
        DEFAULT_PRESET,
        "--preset",
        help=f"the bandit's settings for the learner and the service, one of {', '.join(PRESETS)}",
    ),
) -> None:
    """Run the whole loop locally: Kafka, service, learner, generator and simulated shoppers."""
    try:
        preset(preset_name)
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    settings = Settings()
    url = f"http://127.0.0.1:{port}"
    children: list[Child] = []
    kafka: LocalKafka | None = None
    started_kafka = False
    try:
        scenario = load_scenario(scenario_file)
        if isinstance(scenario.products, int):
            scenario = scenario.model_copy(update={"products": min(products, scenario.products)})
        kafka = LocalKafka.from_bootstrap(settings.kafka_bootstrap, settings.kafka_home.resolve())
        if not kafka.status().running and kafka.reachable():
            bootstrap = kafka.bootstrap  # a broker someone else runs: use it, leave it be
        else:
            started_kafka = not kafka.status().running
            with console.status("starting Kafka") as status:
                bootstrap = kafka.up(timeout_s=180, step=lambda m: status.update(m))
        console.print(f"[green]Kafka[/] at {bootstrap}")
        TopicAdmin(bootstrap).ensure(settings.topics, partitions=settings.topic_partitions)
        env = child_env(settings, bootstrap, window_s=10.0, snapshot_s=5.0)
        logs = settings.data_dir.resolve() / "demo"
        chosen = ["--preset", preset_name]
        children.append(start_child("learner", ["learn", "--lateness", "2", *chosen], env, logs))
        children.append(start_child("service", ["serve", "--port", str(port), *chosen], env, logs))
        client = httpx.Client(base_url=url, timeout=30.0)
        with console.status("starting the learner and the service"):
            wait_ready(client, children, timeout_s=180)
        console.print(f"[green]service[/] at {url} (logs in {logs})")

        catalog = demo_products(scenario)
        with Progress(console=console) as progress:
            task = progress.add_task("generating pools", total=len(catalog))
            publish_products(
                client,
                catalog,
                scenario.channel,
                scenario.pool_size,
                on_done=lambda: progress.advance(task),
            )
        shoppers = LiveShoppers(scenario, catalog, seed=scenario.seed)
        for product in catalog:
            pool = _wait_pool(client, product.product_id)
            shoppers.learn_pool(product, [v["text"] for v in pool["variants"]])
        console.print(f"{len(catalog)} pools published; shoppers arriving for {minutes:g} min")

        tally = Tally()
        progress = Progress(TextColumn("shopping"), BarColumn(), TimeRemainingColumn())
        task = progress.add_task("shopping", total=minutes * 60)
        start = time.monotonic()
        with Live(
            Group(progress, _table(tally, url)), console=console, refresh_per_second=2
        ) as live:
            while (elapsed := time.monotonic() - start) < minutes * 60:
                for child in children:
                    child.check()
                for _ in range(20):
                    shop_once(client, shoppers, tally)
                progress.update(task, completed=elapsed)
                live.update(Group(progress, _table(tally, url)))
    except (DemoError, StreamsError, SimulationError, httpx.HTTPError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    finally:
        if not keep_running:
            for child in reversed(children):
                child.stop()
            if kafka is not None and started_kafka:
                kafka.down()
    console.line()
    console.print(tally.summary(), highlight=False, soft_wrap=True)
    if keep_running:
        console.print(f"still running: dashboard {url}/dashboard; stop with Ctrl-C / kill")


def _wait_pool(client: httpx.Client, product_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = client.get(f"/v1/products/{product_id}/variants")
        if r.status_code == 200:
            return dict(r.json())
        time.sleep(0.3)
    raise DemoError(f"the pool of {product_id} did not reach the service")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

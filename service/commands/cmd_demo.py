"""``copyloop demo``: the whole loop on one machine with no set-up (see ``service.demo``):
local Kafka, the learner, the service and the fine-tune worker, pools from the real generator,
simulated shoppers; shows progress, the CTR the bandit earns beside uniform and oracle, the
fine-tune rounds (number, verdict, generator version) and where the dashboard is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import typer
from pydantic import TypeAdapter
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
from service.demo.live_shoppers import (
    LiveShoppers,
    Tally,
    demo_products,
    finetune_rows,
    finetune_summary,
    shop_once,
)
from service.errors import SimulationError
from service.finetune.registry import Registry
from service.finetune.trigger import RoundRecord, round_history, round_running
from service.settings import Settings
from service.simulate.scenario import load_scenario
from streams.errors import StreamsError
from streams.kafka_local import LocalKafka
from streams.schemas import Product
from streams.topics import TopicAdmin

console = Console()
DEFAULT_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "standard.json"
#: joined rewards between the demo's fine-tune rounds: on a 2-core machine the shoppers bring
#: 300-400 a second, so the first round starts some 30 s in, on enough evidence to judge copy
#: by, and ends within the first minute and a half
DEMO_FINETUNE_EVERY = 3000
#: how long the demo waits, once its shoppers are done, for its first fine-tune round to end
#: (a busy machine can stretch a round past the shopping time; the table should show one)
FINISH_ROUND_S = 120.0


def _table(tally: Tally, url: str, finetune: dict[str, str]) -> Table:
    table = Table(title=f"the loop — dashboard at {url}/dashboard")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("decisions", str(tally.decisions))
    table.add_row("clicks", str(tally.clicks))
    for name, value in tally.rows().items():
        table.add_row(name, value)
    table.add_row("policy version", tally.policy_version)
    for name, value in finetune.items():
        table.add_row(name, value)
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
    finetune_every: int | None = typer.Option(
        None,
        min=0,
        help="joined rewards between fine-tune rounds of the generator; 0: no fine-tuning "
        f"(default: COPYLOOP_FINETUNE_EVERY when set, else {DEMO_FINETUNE_EVERY})",
    ),
) -> None:
    """Run the whole loop locally: Kafka, service, learner, generator and simulated shoppers."""
    try:
        preset(preset_name)
    except ConfigError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    settings = Settings()
    if finetune_every is None:
        finetune_every = settings.finetune_every or DEMO_FINETUNE_EVERY
    registry = Registry.under(settings.data_dir.resolve())
    earlier = len(round_history(registry.root))  # rounds of earlier demos on this data dir
    rounds: list[RoundRecord] = []
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
        if finetune_every > 0:
            children.append(_start_finetune(catalog, finetune_every, env, logs))
        with Progress(console=console) as progress:
            task = progress.add_task("generating pools", total=len(catalog))
            publish_products(
                client,
                catalog,
                scenario.channel,
                scenario.pool_size,
                on_done=lambda: progress.advance(task),
                key=env["COPYLOOP_ADMIN_KEY"],
            )
        shoppers = LiveShoppers(scenario, catalog, seed=scenario.seed)
        for product in catalog:
            shoppers.learn_view(product, _wait_pool(client, product.product_id))
        console.print(f"{len(catalog)} pools published; shoppers arriving for {minutes:g} min")

        tally = Tally()
        progress = Progress(TextColumn("shopping"), BarColumn(), TimeRemainingColumn())
        task = progress.add_task("shopping", total=minutes * 60)
        start = time.monotonic()

        def view() -> Group:
            rows = finetune_rows(rounds, finetune_every, shoppers.generator_version)
            return Group(progress, _table(tally, url, rows))

        with Live(view(), console=console, refresh_per_second=2) as live:
            while (elapsed := time.monotonic() - start) < minutes * 60:
                for child in children:
                    child.check()
                for _ in range(20):
                    shop_once(client, shoppers, tally)
                rounds = round_history(registry.root)[earlier:]
                progress.update(task, completed=elapsed)
                live.update(view())
            deadline = time.monotonic() + FINISH_ROUND_S
            if not rounds and round_running(registry.root):
                console.print("shoppers done; waiting for the first fine-tune round to end")
            while not rounds and round_running(registry.root) and time.monotonic() < deadline:
                for child in children:
                    child.check()
                time.sleep(1.0)
                rounds = round_history(registry.root)[earlier:]
                live.update(view())
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
    console.print(finetune_summary(rounds, finetune_every), highlight=False, soft_wrap=True)
    if keep_running:
        console.print(f"still running: dashboard {url}/dashboard; stop with Ctrl-C / kill")


def _start_finetune(catalog: list[Product], every: int, env: dict[str, str], logs: Path) -> Child:
    """The fine-tune worker (``copyloop finetune`` following the learner) on the demo's catalog;
    each round it runs lands in the rounds' history the live table reads. Its torch gets a
    quarter of the cores, so training leaves the service and the learner theirs (niced instead,
    it would wait for them the whole demo on a small machine)."""
    logs.mkdir(parents=True, exist_ok=True)
    products = logs / "products.json"
    products.write_bytes(TypeAdapter(list[Product]).dump_json(catalog))
    args = ["finetune", "--products", str(products)]
    threads = str(max(1, (os.cpu_count() or 1) // 4))
    own = {"COPYLOOP_FINETUNE_EVERY": str(every), "OMP_NUM_THREADS": threads}
    return start_child("finetune", args, env | own, logs)


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

"""``copyloop simulate``: the offline closed-loop simulator (CONTRACT.md §5-§6).

A malformed scenario, an unreachable broker or a generator that cannot load ends with one line
naming the field or the cause and a non-zero exit, never a traceback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bandit.errors import BanditError
from service.errors import ServiceError
from service.settings import Settings
from streams.errors import StreamsError

if TYPE_CHECKING:
    from service.simulate.kafka_loop import KafkaOptions

console = Console(stderr=True)
#: what ``--bandit`` (kept for older scripts) stands for; None: the default preset
_BANDIT_PRESETS: dict[str, str | None] = {"sim": None, "vw": "vw-bag", "defaults": None}


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _kafka_options(settings: Settings, out: Path, batch: int) -> KafkaOptions:
    from service.simulate.kafka_loop import KafkaOptions
    from streams.topics import TopicAdmin, Topics

    # a prefix of this run alone: the learner must not read other runs' decisions
    topics = Topics(f"{settings.topic_prefix}sim-{uuid.uuid4().hex[:8]}.")
    admin = TopicAdmin(settings.kafka_bootstrap)
    try:
        admin.ensure(topics, partitions=settings.topic_partitions)
    finally:
        admin.close()
    return KafkaOptions(
        bootstrap=settings.kafka_bootstrap,
        topics=topics,
        data_dir=out / "learner",
        batch=batch,
    )


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    table = Table(title=f"simulation {summary['scenario']} ({summary['decisions']} decisions)")
    for col in ("policy", "CTR", "95% interval", "CTR last half", "true CTR last half"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, f in summary["policies"].items():
        low, high = f["ci95"]
        table.add_row(
            name,
            f"{f['ctr']:.4f}",
            f"[{low:.4f}, {high:.4f}]",
            f"{f['ctr_last_half']:.4f}",
            f"{f['true_ctr_last_half']:.4f}",
        )
    console.print(table)
    ratios = summary.get("ratios") or {}
    if ratios:
        console.print(
            f"bandit / oracle (last half): {ratios['bandit_vs_oracle_last_half']}   "
            f"bandit / uniform (last half): {ratios['bandit_vs_uniform_last_half']}"
        )
    ope = summary.get("ope")
    if ope:
        low, high = ope["dr_ci95"]
        console.print(
            f"OPE of the final bandit from the uniform log: IPS {ope['ips']:.4f}  "
            f"SNIPS {ope['snips']:.4f}  DR {ope['dr']:.4f} [{low:.4f}, {high:.4f}]  "
            f"true {ope['true_value']:.4f}"
        )
    for note in summary.get("notes", []):
        console.print(f"[dim]note: {note}[/]")
    console.print(f"wrote {out / 'summary.json'}, {out / 'report.html'} and the plots")


def simulate_command(
    scenario: Annotated[Path, typer.Option("--scenario", help="scenario JSON (CONTRACT.md §6)")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for summary.json, the plots and report.html")
    ],
    transport: Annotated[
        str, typer.Option(help="inprocess (fast) or kafka (real topics, learner, snapshots)")
    ] = "inprocess",
    decisions: Annotated[
        int, typer.Option(min=0, help="override the scenario's decisions (0: keep)")
    ] = 0,
    seed: Annotated[int, typer.Option(help="override the scenario's seed (-1: keep)")] = -1,
    preset_name: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="the bandit's settings by name (bandit.presets; default: the default preset)",
        ),
    ] = None,
    bandit: Annotated[
        str | None,
        typer.Option(
            help="older spelling of --preset: sim (the default preset), vw (vw-bag) or defaults"
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="generator model folder (default: the bootstrap model)")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="pool cache folder (default: $COPYLOOP_DATA_DIR/cache/simulate)"),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="generate the pools afresh")] = False,
    batch: Annotated[
        int, typer.Option(min=1, help="kafka: decisions per publish/learn/announce round")
    ] = 250,
    reference: Annotated[
        bool,
        typer.Option(
            help="also run the informed reference learner (segment known): how hard the "
            "scenario is for any learner"
        ),
    ] = True,
) -> None:
    """Run a scenario's synthetic shoppers against the uniform, best-fixed, bandit and oracle
    policies on the same shoppers; write summary.json, learning curves and report.html."""
    if transport not in ("inprocess", "kafka"):
        raise _fail(f"`transport` must be inprocess or kafka, got {transport!r}")
    # imported here: matplotlib, VW and the generator need not load for the other commands
    from bandit.presets import DEFAULT_PRESET, preset

    if bandit is not None:
        if preset_name is not None:
            raise _fail("`--bandit` and `--preset` both given: `--preset` alone is enough")
        if bandit not in _BANDIT_PRESETS:
            raise _fail(f"`bandit` must be sim, vw or defaults, got {bandit!r}")
        preset_name = _BANDIT_PRESETS[bandit] or DEFAULT_PRESET
    try:
        policy = preset(DEFAULT_PRESET if preset_name is None else preset_name)
    except BanditError as exc:
        raise _fail(str(exc)) from None
    from service.simulate.pool_source import GeneratorPools
    from service.simulate.run import SimulationConfig, simulate
    from service.simulate.scenario import load_scenario, parse_scenario

    settings = Settings()
    try:
        scen = load_scenario(scenario)
        update: dict[str, Any] = {}
        if decisions:
            update["decisions"] = decisions
        if seed >= 0:
            update["seed"] = seed
        if update:
            scen = parse_scenario({**scen.model_dump(mode="json"), **update})
        out.mkdir(parents=True, exist_ok=True)
        options = _kafka_options(settings, out, batch) if transport == "kafka" else None
        config = SimulationConfig(
            transport=transport,  # type: ignore[arg-type]
            policy=policy,
            cache_dir=None if no_cache else (cache or settings.data_dir / "cache" / "simulate"),
            kafka=options,
            reference=reference,
        )
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            result = simulate(
                scen, out, source=GeneratorPools(model), config=config, progress=progress
            )
    except (ServiceError, BanditError, StreamsError, OSError) as exc:
        raise _fail(str(exc)) from None
    _print_summary(result.summary, out)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_command)

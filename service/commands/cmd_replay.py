"""``copyloop replay --log DIR --out DIR [--policy SPEC]``: off-policy evaluation of logged
decisions and feedback (CONTRACT.md §5). Writes ``DIR/ope.json``, ``DIR/ope.png`` and
``DIR/report.html``; a missing directory, a malformed line or a log without decisions ends with
a message and a non-zero exit, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bandit.errors import BanditError
from bandit.reward import RewardConfig
from service.replay.replay_eval import PolicySpec, ReplayConfig, ReplayResult, evaluate_replay
from service.replay.replay_log import ReplayError, ReplayLog, log_files, read_dir, read_kafka
from service.replay.replay_report import ESTIMATORS, estimate_cells, write_replay_report
from service.settings import Settings
from streams.errors import StreamsError

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _read(log: Path | None, from_kafka: bool, strict: bool, settings: Settings) -> ReplayLog:
    if (log is None) == (not from_kafka):
        raise ReplayError("give exactly one of --log DIR or --from-kafka", "--log")
    with _progress() as bar:
        if log is not None:
            decisions, feedback = log_files(log)
            task = bar.add_task("reading logs", total=len(decisions) + len(feedback))
            return read_dir(log, strict=strict, step=lambda _p: bar.advance(task))
        task = bar.add_task(f"reading {settings.kafka_bootstrap}", total=None)
        return read_kafka(
            settings.kafka_bootstrap, settings.topics, step=lambda n: bar.advance(task, n)
        )


def _evaluate(log: ReplayLog, config: ReplayConfig, started: float) -> ReplayResult:
    with _progress() as bar:
        tasks: dict[str, Any] = {}

        def step(name: str, done: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"scoring {name}", total=len(log.decisions))
            bar.advance(tasks[name], done)

        return evaluate_replay(log, config, started=started, step=step)


def replay(
    out: Annotated[
        Path, typer.Option("--out", help="folder for ope.json, ope.png and report.html")
    ],
    log: Annotated[
        Path | None,
        typer.Option("--log", help="folder of *decisions*.jsonl and *feedback*.jsonl"),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="candidate policy, repeatable: uniform, greedy:PATH, vw:PATH (a saved bandit "
            "model); the logging policy is always evaluated; default uniform",
        ),
    ] = None,
    from_kafka: bool = typer.Option(
        False, "--from-kafka", help="read the topics to their end instead"
    ),
    interval: str = typer.Option("normal", help="normal (fast) or bootstrap"),
    alpha: float = typer.Option(0.05, help="1 - confidence level of the intervals"),
    bootstrap_samples: int = typer.Option(2000, help="resamples for --interval bootstrap"),
    seed: int = typer.Option(0, help="seed of the bootstrap and of the DR model's folds"),
    window_s: float | None = typer.Option(
        None, help="reward window; default COPYLOOP_REWARD_WINDOW_S"
    ),
    strict: bool = typer.Option(False, help="validate every line against the full event schema"),
) -> None:
    """Estimate the logging policy's value and candidates' by IPS, SNIPS and DR with intervals."""
    started = time.perf_counter()
    try:
        settings = Settings()
        specs = [PolicySpec("logging")] + [PolicySpec.parse(p) for p in policy or ["uniform"]]
        config = ReplayConfig(
            policies=tuple(dict.fromkeys(specs)),
            reward=RewardConfig(window_s=window_s or settings.reward_window_s),
            alpha=alpha,
            interval=interval,  # type: ignore[arg-type]
            n_bootstrap_samples=bootstrap_samples,
            seed=seed,
        )
        data = _read(log, from_kafka, strict, settings)
        result = _evaluate(data, config, started)
        paths = write_replay_report(result, out)
    except (ReplayError, BanditError, StreamsError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    _summary(result)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    print(paths["json"])


def _summary(result: ReplayResult) -> None:
    table = Table(title=f"off-policy estimates ({result.join['joined']} seen decisions)")
    table.add_column("policy")
    for name in ESTIMATORS:
        table.add_column(name.upper(), justify="right")
    table.add_column("ESS", justify="right")
    for name, entry in result.policies.items():
        cells = ["—" if c is None else f"{c[0]} [{c[1]}, {c[2]}]" for c in estimate_cells(entry)]
        table.add_row(name, *cells, f"{entry['diagnostics']['ess']:.0f}")
    console.print(table)
    console.print(f"{result.events} events in {result.elapsed_s:.2f} s")


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)

"""``copyloop replay --log DIR --out DIR [--policy SPEC]``: off-policy evaluation of logged
decisions and feedback (CONTRACT.md §5). Writes ``DIR/ope.json``, ``DIR/ope.png`` and
``DIR/report.html``; a missing directory, a malformed line or a log without decisions ends with
a message and a non-zero exit, never a traceback."""

from __future__ import annotations

import html
import json
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
from service.replay import PolicySpec, ReplayConfig, ReplayResult, evaluate
from service.replay_log import ReplayError, ReplayLog, log_files, read_dir, read_kafka
from service.settings import Settings
from streams.errors import StreamsError

console = Console(stderr=True)
ESTIMATORS = ("ips", "snips", "dr")


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

        return evaluate(log, config, started=started, step=step)


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
        paths = write_report(result, out)
    except (ReplayError, BanditError, StreamsError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    _summary(result)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    print(paths["json"])


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _ci(est: dict[str, Any]) -> list[float | None]:
    return next(v for k, v in est.items() if k.startswith("ci") and isinstance(v, list))


def _summary(result: ReplayResult) -> None:
    table = Table(title=f"off-policy estimates ({result.join['joined']} seen decisions)")
    table.add_column("policy")
    for name in ESTIMATORS:
        table.add_column(name.upper(), justify="right")
    table.add_column("ESS", justify="right")
    for name, entry in result.policies.items():
        cells = []
        for est_name in ESTIMATORS:
            est = entry.get(est_name)
            if est is None:
                cells.append("—")
                continue
            lo, hi = _ci(est)
            cells.append(f"{_fmt(est['value'])} [{_fmt(lo)}, {_fmt(hi)}]")
        table.add_row(name, *cells, f"{entry['diagnostics']['ess']:.0f}")
    console.print(table)
    console.print(f"{result.events} events in {result.elapsed_s:.2f} s")


def write_report(result: ReplayResult, out: Path) -> dict[str, Path]:
    """``ope.json``, a bar plot of the estimates with their intervals and ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    paths = {"json": out / "ope.json", "png": out / "ope.png", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    _plot(data, paths["png"])
    paths["html"].write_text(_html(data), "utf-8")
    return paths


def _plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["policies"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 3.6), dpi=110)
    width = 0.8 / len(ESTIMATORS)
    for i, est_name in enumerate(ESTIMATORS):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[list[float]] = [[], []]
        for j, name in enumerate(names):
            est = data["policies"][name].get(est_name)
            if est is None or est["value"] is None:
                continue
            lo, hi = _ci(est)
            xs.append(j + (i - 1) * width)
            ys.append(est["value"])
            errs[0].append(0.0 if lo is None else est["value"] - lo)
            errs[1].append(0.0 if hi is None else hi - est["value"])
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=est_name.upper())
    ax.set_xticks(range(len(names)), [n if len(n) < 28 else "…" + n[-26:] for n in names])
    ax.set_ylabel("estimated reward per seen decision")
    ax.set_title(f"policy value, {100 * (1 - data['alpha']):.0f}% intervals ({data['interval']})")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _html(data: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for name, entry in data["policies"].items():
        cells = []
        for est_name in ESTIMATORS:
            est = entry.get(est_name)
            if est is None:
                cells.append("<td>—</td>")
                continue
            lo, hi = _ci(est)
            cells.append(f"<td>{_fmt(est['value'])} <small>[{_fmt(lo)}, {_fmt(hi)}]</small></td>")
        diag = entry["diagnostics"]
        rows.append(
            f"<tr><th>{e(name)}</th>{''.join(cells)}<td>{diag['ess']:.0f}</td>"
            f"<td>{_fmt(diag['min_pscore'])}</td><td>{_fmt(diag['max_weight'])}</td></tr>"
        )
    join = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in data["join"].items())
    warnings = "".join(f"<li>{e(w)}</li>" for w in data["warnings"]) or "<li>none</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>copyloop replay</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;
text-align:right}}th{{text-align:left}}</style></head><body>
<h1>Off-policy evaluation</h1>
<p>{e(json.dumps(data["log"], ensure_ascii=False))}: {data["events"]} events,
{data["join"]["joined"]} seen decisions. Reward per seen decision; intervals at
{100 * (1 - data["alpha"]):.0f}% ({e(data["interval"])}). DR's reward model:
{e(data["reward_model"])}.</p>
<img src="ope.png" alt="estimates with intervals">
<table><tr><th>policy</th><th>IPS</th><th>SNIPS</th><th>DR</th><th>ESS</th>
<th>min pscore</th><th>max weight</th></tr>{"".join(rows)}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Join</h2><table>{join}</table>
</body></html>
"""


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)

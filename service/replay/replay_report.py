"""The replay's report: ``ope.json``, ``ope.png`` (estimates with their intervals) and
``report.html``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from service.replay.replay_eval import ReplayResult

ESTIMATORS = ("ips", "snips", "dr")


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def ci_of(est: dict[str, Any]) -> list[float | None]:
    return next(v for k, v in est.items() if k.startswith("ci") and isinstance(v, list))


def estimate_cells(entry: dict[str, Any]) -> list[tuple[str, str, str] | None]:
    """Per estimator of ``ESTIMATORS``: its value and interval bounds, formatted (None where the
    estimator did not run), for the command's table and the HTML report alike."""
    cells: list[tuple[str, str, str] | None] = []
    for name in ESTIMATORS:
        est = entry.get(name)
        if est is None:
            cells.append(None)
            continue
        lo, hi = ci_of(est)
        cells.append((fmt(est["value"]), fmt(lo), fmt(hi)))
    return cells


def write_replay_report(result: ReplayResult, out: Path) -> dict[str, Path]:
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
            lo, hi = ci_of(est)
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
        cells = [
            "<td>—</td>" if c is None else f"<td>{c[0]} <small>[{c[1]}, {c[2]}]</small></td>"
            for c in estimate_cells(entry)
        ]
        diag = entry["diagnostics"]
        rows.append(
            f"<tr><th>{e(name)}</th>{''.join(cells)}<td>{diag['ess']:.0f}</td>"
            f"<td>{fmt(diag['min_pscore'])}</td><td>{fmt(diag['max_weight'])}</td></tr>"
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

"""Learning-curve plots (PNG, matplotlib's Agg backend) and a self-contained ``report.html``
(the PNGs embedded as base64, no outside files or scripts)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from service.simulate.policies import Trace
from service.simulate.summary import rolling
from service.simulate.world import World

_COLOURS = {
    "uniform": "#9e9e9e",
    "best_fixed": "#ff9800",
    "bandit": "#1976d2",
    "oracle": "#2e7d32",
    "bandit_finetune": "#c2185b",
    "bandit_refresh": "#7b1fa2",
}
CTR_PLOT = "ctr_curve.png"
REGRET_PLOT = "regret.png"


def _save(fig: Any, ax: Any, path: Path, legend: str) -> Path:
    """Grid, legend, layout; write the PNG and free the figure."""
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ctr(traces: Mapping[str, Trace], path: Path, rounds: Sequence[int] = ()) -> Path:
    """Rolling CTR per policy (clicks, solid) and its noise-free version (the policy's mean
    click probability, dotted); fine-tune rounds as vertical lines."""
    n = next(iter(traces.values())).n
    window = max(50, n // 20)
    # the first decisions' trailing means rest on a handful of clicks (one click is CTR 1.0)
    skip = min(window // 4, n // 10)
    x = np.arange(1, n + 1)[skip:]
    top = 0.0
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, trace in traces.items():
        colour = _COLOURS.get(name)
        clicks = rolling(trace.click, window)[skip:]
        ax.plot(x, clicks, color=colour, lw=1.4, label=f"{name} (clicks)")
        ax.plot(x, rolling(trace.expected, window)[skip:], color=colour, lw=1.0, ls=":")
        top = max(top, float(clicks.max(initial=0.0)))
    ax.set_ylim(0, max(top * 1.15, 1e-3))
    for i, t in enumerate(rounds):
        ax.axvline(t, color="0.5", lw=0.8, ls="--", label="fine-tune round" if i == 0 else None)
    ax.set_xlabel("decision")
    ax.set_ylabel(f"CTR, trailing {window} decisions")
    ax.set_title("CTR over decisions (dotted: true click probability of the policy)")
    return _save(fig, ax, path, "lower right")


def plot_regret(traces: Mapping[str, Trace], path: Path) -> Path:
    """Cumulative expected regret against the oracle: sum over decisions of the oracle's click
    probability minus the policy's (no click noise, so the curves compare choices)."""
    best = traces["oracle"].expected
    x = np.arange(1, best.shape[0] + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, trace in traces.items():
        if name == "oracle":
            continue
        ax.plot(x, np.cumsum(best - trace.expected), color=_COLOURS.get(name), label=name)
    ax.set_xlabel("decision")
    ax.set_ylabel("cumulative regret (expected clicks lost)")
    ax.set_title("Regret against the oracle")
    return _save(fig, ax, path, "upper left")


def plot_sweep(rows: Sequence[Mapping[str, Any]], path: Path, bar: float = 0.9) -> Path:
    """One point per random scenario: the bandit's last-half CTR against the oracle's (y) beside
    the informed reference learner's (x). Points left of the vertical line are worlds where even
    the reference misses the bar; below the horizontal line, the bandit misses it."""
    x = np.array([float(r["reference_vs_oracle_last_half"]) for r in rows])
    y = np.array([float(r["bandit_vs_oracle_last_half"]) for r in rows])
    met = np.array([bool(r["meets_bars"]) for r in rows], dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    lo = float(min(x.min(initial=bar), y.min(initial=bar))) - 0.02
    hi = float(max(x.max(initial=1.0), y.max(initial=1.0))) + 0.02
    ax.plot([lo, hi], [lo, hi], color="#9e9e9e", lw=0.8, ls="--", label="bandit = reference")
    ax.axhline(bar, color="#c62828", lw=0.8)
    ax.axvline(bar, color="#c62828", lw=0.8, ls=":")
    ax.scatter(x[met], y[met], color=_COLOURS["bandit"], s=22, label="bandit meets every bar")
    ax.scatter(x[~met], y[~met], color="#c62828", marker="x", s=30, label="bandit misses a bar")
    for r, xi, yi in zip(rows, x, y, strict=True):
        if not r["meets_bars"]:
            ax.annotate(
                str(r["seed"]), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("informed reference (segment known), CTR / oracle, last half")
    ax.set_ylabel("bandit CTR / oracle, last half")
    ax.set_title(f"{len(rows)} random scenarios")
    return _save(fig, ax, path, "lower right")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pools(world: World, limit: int = 6) -> str:
    parts = []
    for product, pool, shown in list(
        zip(world.products, world.pools, world.shown_traits, strict=True)
    )[:limit]:
        rows = [
            (v.variant_id, v.text, ", ".join(t)) for v, t in zip(pool.variants, shown, strict=True)
        ]
        title = f"{product.title} ({product.product_id}, {product.category})"
        parts.append(f"<h3>{html.escape(title)}</h3>" + _table(["variant", "text", "traits"], rows))
    more = len(world.products) - limit
    if more > 0:
        parts.append(f"<p>… and {more} more products.</p>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans CJK SC",sans-serif;margin:2em;
max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3} img{max-width:100%} .note{color:#555}
"""


def write_report(
    summary: Mapping[str, Any], world: World, plots: Sequence[Path], out_dir: Path
) -> Path:
    """``report.html``: the figures, the plots, the OPE check, the notes and some pools."""
    pol = summary["policies"]
    rows = [
        (
            name,
            f["ctr"],
            f["ci95"],
            f["ctr_last_half"],
            f["true_ctr_last_half"],
            f["decisions"],
            f["clicks"],
        )
        for name, f in pol.items()
    ]
    figures = _table(
        [
            "policy",
            "CTR",
            "95% interval",
            "CTR last half",
            "true CTR last half",
            "decisions",
            "clicks",
        ],
        rows,
    )
    ratios = summary.get("ratios") or {}
    ratio_table = _table(["ratio", "value"], [(k, v) for k, v in ratios.items()])
    ope = summary.get("ope")
    ope_html = "<p>No off-policy estimate.</p>"
    if ope:
        ope_html = _table(
            ["estimator", "estimate", "95% interval"],
            [
                ("IPS", ope["ips"], ope["ips_ci95"]),
                ("SNIPS", ope["snips"], ope["snips_ci95"]),
                ("DR", ope["dr"], ope["dr_ci95"]),
                ("true value", ope["true_value"], None),
            ],
        ) + (
            f"<p>DR interval covers the true value: <b>{ope['dr_covers_true']}</b>; "
            f"|DR − true| / true = {_fmt(ope['dr_rel_error'])}; "
            f"{ope['n_rounds']} logged rounds, effective sample size {ope['ess']}.</p>"
        )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []))
    rounds_html = _rounds(summary)
    images = "".join(f"<p>{_img(p, p.stem)}</p>" for p in plots)
    name = html.escape(str(summary["scenario"]))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>copyloop simulation: {name}</title>
<style>{_CSS}</style></head><body>
<h1>Simulation: {name}</h1>
<p>{summary["decisions"]} decisions; every policy met the same shoppers and the same click draws
(common random numbers).</p>
<h2>Policies</h2>{figures}{ratio_table}
<h2>Learning curves</h2>{images}
<h2>Off-policy evaluation of the final bandit (from the uniform policy's log)</h2>{ope_html}
{rounds_html}
<h2>Notes</h2><ul class="note">{notes}</ul>
<h2>Initial pools</h2>{_pools(world)}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path


def _rounds(summary: Mapping[str, Any]) -> str:
    """The fine-tune rounds and their control's, side by side (empty when none ran)."""
    tuned, control = summary.get("finetune_rounds") or [], summary.get("refresh_rounds") or []
    if not tuned:
        return ""
    rows = []
    for i, r in enumerate(tuned):
        c = control[i] if i < len(control) else {}
        rows.append(
            f"<tr><td>{r['round']}</td><td>{r['at_decision']}</td>"
            f"<td>{html.escape(str(r.get('status')))}</td>"
            f"<td>{r['pool_true_ctr_before']:.4f} → {r['pool_true_ctr_after']:.4f}</td>"
            f"<td>{c.get('pool_true_ctr_after', float('nan')):.4f}</td>"
            f"<td>{html.escape(str(r.get('reason', '')))}</td></tr>"
        )
    return (
        "<h2>Fine-tune rounds (bandit_finetune; control: bandit_refresh)</h2><table><thead><tr>"
        "<th>round</th><th>at decision</th><th>verdict</th><th>pool true CTR</th>"
        "<th>control's after</th><th>why</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )

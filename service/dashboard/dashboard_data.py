"""What ``/dashboard/data.json`` answers: the learner's loop-wide figures (``copyloop.stats``)
joined with what every worker holds alike (the pools from the compacted variants topic, the
announced snapshot's weights), plus this worker's own health beside the learner's.

Figures never come from one worker's request counts: decisions, clicks and shares are the
learner's; without a stats record yet (no learner running), the leaderboard falls back to the
worker's counts feed, which also reads the whole decisions and feedback topics, and says so."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bandit.ope_stats import wilson_interval
from bandit.policy import Policy
from service.ranker.runtime import Runtime
from streams.schemas import TRAITS, LoopStats

#: products on the leaderboard (the most decided first) and rows of the heatmap
MAX_PRODUCTS = 50
MAX_HEATMAP_ROWS = 24
_TRAIT_PREFIX = "t="


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def _series(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in figures.get("buckets", []):
        out.append(
            {
                "t": b["t"],
                "decisions": b["decisions"],
                "impressions": b["impressions"],
                "ctr": _rate(b["clicks"], b["impressions"]),
                "cvr": _rate(b["purchases"], b["impressions"]),
                "exploration": _rate(b["explored"], b["decisions"]),
                "policy_ctr": b.get("policy_ctr"),
                "uniform_ctr": b.get("uniform_ctr"),
            }
        )
    return out


def _totals(figures: Mapping[str, Any]) -> dict[str, Any]:
    t = dict(figures.get("totals", {}))
    t["ctr"] = _rate(t.get("clicks", 0), t.get("impressions", 0))
    t["cvr"] = _rate(t.get("purchases", 0), t.get("impressions", 0))
    t["exploration"] = _rate(t.get("explored", 0), t.get("decisions", 0))
    return t


def _counts(rt: Runtime, figures: Mapping[str, Any] | None) -> dict[tuple[str, str], list[int]]:
    """(product, variant) -> [decisions, impressions, clicks]: the learner's, else the feed's."""
    if figures is not None:
        return {
            (v["product_id"], v["variant_id"]): [v["decisions"], v["impressions"], v["clicks"]]
            for v in figures.get("variants", [])
        }
    out: dict[tuple[str, str], list[int]] = {}
    for pid in rt.stats.products():
        for vid, c in rt.stats.product(pid).items():
            out[(pid, vid)] = [c.decisions, c.impressions, c.clicks]
    return out


def _leaderboard(rt: Runtime, counts: Mapping[tuple[str, str], list[int]]) -> list[dict[str, Any]]:
    products: list[dict[str, Any]] = []
    for pid in rt.pools.product_ids():
        pool = rt.pools.get(pid).pool
        rows: list[dict[str, Any]] = []
        for v in pool.variants:
            d, imp, clk = counts.get((pid, v.variant_id), [0, 0, 0])
            low, high = wilson_interval(clk, imp)
            rows.append(
                {
                    "variant_id": v.variant_id,
                    "text": v.text,
                    "channel": v.channel,
                    "traits": list(v.traits),
                    "decisions": d,
                    "impressions": imp,
                    "clicks": clk,
                    "ctr": _rate(clk, imp),
                    "low": low,
                    "high": high,
                }
            )
        total = sum(r["decisions"] for r in rows)
        for r in rows:
            r["share"] = _rate(r["decisions"], total)
        rows.sort(key=lambda r: (-(r["ctr"] or 0.0), -r["decisions"], r["variant_id"]))
        products.append(
            {
                "product_id": pid,
                "pool_version": pool.pool_version,
                "generator_version": pool.generator_version,
                "decisions": total,
                "variants": rows,
            }
        )
    products.sort(key=lambda p: (-p["decisions"], p["product_id"]))
    return products[:MAX_PRODUCTS]


_weights_lock = threading.Lock()
_weights_cache: dict[str, Any] = {}


def model_heatmap(policy: Policy) -> dict[str, Any] | None:
    """Shopper feature x trait weights of the served model: the very numbers ``explain``
    reports as contributions (``Policy.weights``); None for a model without named weights or
    before its first fit. Cached per policy version."""
    with _weights_lock:
        if _weights_cache.get("key") == (id(policy), policy.version):
            hit: dict[str, Any] | None = _weights_cache["value"]
            return hit
    weights = policy.weights()
    value: dict[str, Any] | None = None
    if weights:
        cells: dict[tuple[str, str], float] = {}
        for token, w in weights.items():
            parts = token.split("^", 2)
            if len(parts) == 3 and parts[0] == "U" and parts[2].startswith(_TRAIT_PREFIX):
                cells[(parts[1], parts[2][len(_TRAIT_PREFIX) :])] = w
        if cells:
            strength: dict[str, float] = {}
            for (row, _), w in cells.items():
                strength[row] = max(strength.get(row, 0.0), abs(w))
            rows = sorted(strength, key=lambda r: (-strength[r], r))[:MAX_HEATMAP_ROWS]
            rows.sort()
            cols = [t for t in TRAITS if any((r, t) in cells for r in rows)]
            value = {
                "source": "model",
                "label": f"weight of shopper feature x trait in model {policy.version}",
                "rows": rows,
                "cols": cols,
                "values": [[cells.get((r, c)) for c in cols] for r in rows],
            }
    with _weights_lock:
        _weights_cache.update(key=(id(policy), policy.version), value=value)
    return value


def observed_heatmap(figures: Mapping[str, Any]) -> dict[str, Any] | None:
    """Click rate per shopper segment x trait of the shown copy, from joined rewards."""
    cells = {(s["segment"], s["trait"]): s for s in figures.get("segments", [])}
    if not cells:
        return None
    rows = sorted({s for s, _ in cells})[:MAX_HEATMAP_ROWS]
    cols = sorted({t for _, t in cells})
    return {
        "source": "observed",
        "label": "click rate per shopper segment (age|gender) x trait, joined rewards",
        "rows": rows,
        "cols": cols,
        "values": [[_cell_rate(cells.get((r, c))) for c in cols] for r in rows],
    }


def _cell_rate(cell: Mapping[str, Any] | None) -> float | None:
    return None if cell is None else _rate(cell["clicks"], cell["shown"])


def _versions(rt: Runtime, figures: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], str] = {}
    for v in (figures or {}).get("versions", []):
        seen[(v["kind"], v["version"])] = v["since"]
    for pid in rt.pools.product_ids():
        pool = rt.pools.get(pid).pool
        key = ("generator", pool.generator_version)
        since = pool.created_at.isoformat()
        if key not in seen or since < seen[key]:
            seen[key] = since
    out = [{"kind": k, "version": v, "since": s} for (k, v), s in seen.items()]
    out.sort(key=lambda x: x["since"])
    return out[-30:]


def dashboard_data(rt: Runtime, stats: LoopStats | None) -> dict[str, Any]:
    figures = stats.figures if stats is not None else None
    pub = rt.publisher.stats
    heatmap = model_heatmap(rt.policy.policy)
    if heatmap is None and figures is not None:
        heatmap = observed_heatmap(figures)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "source": "learner" if figures is not None else "ranker-feed",
        "stats_at": stats.created_at.isoformat() if stats is not None else None,
        "bucket_s": (figures or {}).get("bucket_s", 60),
        "totals": _totals(figures or {}),
        "series": _series(figures or {}),
        "ope": (figures or {}).get("ope", {"rounds": 0}),
        "leaderboard": _leaderboard(rt, _counts(rt, figures)),
        "heatmap": heatmap,
        "serving": rt.policy.version,
        "versions": _versions(rt, figures),
        "health": {
            "learner": (figures or {}).get("health", {}),
            "worker": {
                "pid": os.getpid(),
                "ready": rt.ready,
                "broker_ok": rt.publisher.broker_ok,
                "pending": rt.publisher.pending,
                "spooled": pub.spooled,
                "delivered": pub.delivered,
                "dead_letters": rt.state.dead_lettered,
                "feed_errors": rt.state.errors + rt.stats_feed.errors,
            },
        },
    }

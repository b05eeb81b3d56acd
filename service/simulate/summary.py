"""``summary.json`` (CONTRACT.md §6): each policy's CTR with a 95% interval over the whole run,
its CTR over the last half, the fine-tune rounds and the off-policy estimates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bandit.ope_stats import wilson_interval
from service.simulate.offpolicy import OffPolicy
from service.simulate.policies import Trace
from service.simulate.scenario import Scenario


def policy_figures(trace: Trace) -> dict[str, Any]:
    n = trace.n
    half = n // 2
    clicks = int(trace.click.sum())
    last = trace.click[half:]
    low, high = wilson_interval(clicks, n)
    return {
        "ctr": round(clicks / n, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "ctr_last_half": round(float(last.mean()), 6),
        "decisions": n,
        "clicks": clicks,
        # the same without click noise: the mean click probability of what the policy did
        "true_ctr": round(float(trace.expected.mean()), 6),
        "true_ctr_last_half": round(float(trace.expected[half:].mean()), 6),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None


def build_summary(
    scenario: Scenario,
    traces: Mapping[str, Trace],
    off_policy: OffPolicy | None,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    policies = {name: policy_figures(trace) for name, trace in traces.items()}
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "decisions": scenario.decisions,
        "policies": policies,
        "finetune_rounds": [],
        "ope": off_policy.to_dict() if off_policy is not None else None,
        "notes": [],
    }
    bandit, oracle, uniform = (policies.get(k) for k in ("bandit", "oracle", "uniform"))
    if bandit and oracle and uniform:
        summary["ratios"] = {
            "bandit_vs_oracle_last_half": _ratio(bandit["ctr_last_half"], oracle["ctr_last_half"]),
            "bandit_vs_uniform_last_half": _ratio(
                bandit["ctr_last_half"], uniform["ctr_last_half"]
            ),
            "bandit_vs_uniform": _ratio(bandit["ctr"], uniform["ctr"]),
            "true_bandit_vs_oracle_last_half": _ratio(
                bandit["true_ctr_last_half"], oracle["true_ctr_last_half"]
            ),
            "true_bandit_vs_uniform_last_half": _ratio(
                bandit["true_ctr_last_half"], uniform["true_ctr_last_half"]
            ),
        }
    tuned, refresh = policies.get("bandit_finetune"), policies.get("bandit_refresh")
    if bandit and tuned:
        summary.setdefault("ratios", {})["true_finetune_vs_bandit_last_half"] = _ratio(
            tuned["true_ctr_last_half"], bandit["true_ctr_last_half"]
        )
    if tuned and refresh:
        summary.setdefault("ratios", {})["true_finetune_vs_refresh_last_half"] = _ratio(
            tuned["true_ctr_last_half"], refresh["true_ctr_last_half"]
        )
    if extra:
        summary.update(extra)
    return summary


def write_summary(summary: Mapping[str, Any], out_dir: Path) -> Path:
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` decisions (shorter at the start)."""
    csum = np.cumsum(np.asarray(values, dtype=np.float64))
    out = np.empty_like(csum)
    w = max(1, window)
    out[:w] = csum[:w] / np.arange(1, min(w, csum.shape[0]) + 1)
    out[w:] = (csum[w:] - csum[:-w]) / w
    return out

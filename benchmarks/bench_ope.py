"""Off-policy evaluation speed (TARGETS.md), measured in one run:

1. the estimators on arrays against Open Bandit Pipeline's on the same arrays (>= 1.0x obp's
   events/s for IPS, SNIPS and DR; obp's own validation is included on its side as ours is on
   ours). Skipped, and said so in the JSON, where obp is not installed (scripts/install-obp.sh);
2. replay end to end: read JSON-lines logs, join, estimate logging and uniform with intervals
   (>= 200,000 logged events/s).

    .venv/bin/python benchmarks/bench_ope.py [--rounds 1000000] [--decisions 200000] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from bandit import ope
from service.replay.replay_eval import ReplayConfig, evaluate_replay
from service.replay.replay_log import read_dir
from streams.schemas import Decision, Feedback


def _best(
    fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def _arrays(n: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(k), size=n)
    action = (logging.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    target = rng.dirichlet(np.ones(k), size=n)[:, :, np.newaxis]
    return {
        "reward": rng.binomial(1, 0.05, size=n).astype(np.float64),
        "action": action,
        "pscore": logging[np.arange(n), action],
        "action_dist": target,
        "estimated_rewards_by_reg_model": rng.random((n, k, 1)) * 0.1,
    }


def bench_estimators(n: int, k: int, repeats: int) -> dict[str, Any]:
    a = _arrays(n, k, seed=0)
    base = {key: a[key] for key in ("reward", "action", "pscore", "action_dist")}
    q = a["estimated_rewards_by_reg_model"]
    ours: dict[str, Callable[[], Any]] = {
        "ips": lambda: ope.ips(**base),
        "snips": lambda: ope.snips(**base),
        "dr": lambda: ope.dr(**base, estimated_rewards_by_reg_model=q),
    }
    try:
        from obp import ope as obp_ope
    except ImportError:
        obp_ope = None
    out: dict[str, Any] = {"rounds": n, "n_actions": k, "obp": obp_ope is not None}
    for name, fn in ours.items():
        theirs: Callable[[], Any] | None = None
        if obp_ope is not None:
            est = {
                "ips": obp_ope.InverseProbabilityWeighting(),
                "snips": obp_ope.SelfNormalizedInverseProbabilityWeighting(),
                "dr": obp_ope.DoublyRobust(),
            }[name]
            extra = {"estimated_rewards_by_reg_model": q} if name == "dr" else {}
            theirs = lambda est=est, extra=extra: est.estimate_policy_value(**base, **extra)  # noqa: E731
            assert abs(float(theirs()) - fn()) < 1e-9, name  # same arrays, same number
        t_ours = _best(fn, repeats)
        row: dict[str, Any] = {"ours_per_s": round(n / t_ours)}
        if theirs is not None:
            t_theirs = _best(theirs, repeats)
            row["obp_per_s"] = round(n / t_theirs)
            row["ratio"] = round(t_theirs / t_ours, 3)
        out[name] = row
    return out


def write_log(folder: Path, n: int, k: int, seed: int) -> int:
    """A synthetic log in the exact format of ``model_dump_json`` (checked on the first lines):
    uniform logging over ``k`` variants, 95% of decisions shown, clicks at per-variant rates,
    some add-to-cart and purchases. Returns the number of lines written."""
    rng = np.random.default_rng(seed)
    ctr = rng.uniform(0.01, 0.08, size=k)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    features = ",".join(
        '{"traits":["urgency","discount"],"language":"zh","length_bucket":"short",'
        '"generator_version":"g1"}'
        for _ in range(k)
    )
    dist = ",".join([repr(1.0 / k)] * k)
    decisions, feedback = [], []
    actions = rng.integers(0, k, size=n)
    shown = rng.random(n) < 0.95
    clicked = rng.random(n) < ctr[actions]
    for i in range(n):
        eid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i, version=4))
        ts = t0 + timedelta(seconds=i * 0.05)
        stamp = ts.isoformat().replace("+00:00", "Z")
        product = f"p{i % 50}"
        ids = ",".join(f'"{product}-v{j}"' for j in range(k))
        decisions.append(
            f'{{"schema_version":1,"event_id":"{eid}","ts":"{stamp}","product_id":"{product}",'
            f'"channel":"ad_headline","pool_version":1,"policy_version":"v1",'
            f'"context":{{"u_age":"25-34","u_gender":"f","c_hour":{i % 24}}},'
            f'"actions":[{ids}],"action_features":[{features}],"action":{actions[i]},'
            f'"pscore":{1.0 / k!r},"action_dist":[{dist}]}}'
        )
        if not shown[i]:
            continue
        later = (ts + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
        kinds = ["impression"] + (["click"] if clicked[i] else [])
        if clicked[i] and i % 7 == 0:
            kinds.append("add_to_cart")
        for j, kind in enumerate(kinds):
            feedback.append(
                f'{{"schema_version":1,"feedback_id":"f{i}-{j}","event_id":"{eid}",'
                f'"ts":"{later}","kind":"{kind}","value":null}}'
            )
    for line in decisions[:3]:
        Decision.model_validate_json(line)
    for line in feedback[:3]:
        Feedback.model_validate_json(line)
    (folder / "decisions.jsonl").write_text("\n".join(decisions) + "\n")
    (folder / "feedback.jsonl").write_text("\n".join(feedback) + "\n")
    return len(decisions) + len(feedback)


def bench_replay(n: int, k: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = write_log(folder, n, k, seed=1)
        config = ReplayConfig()

        def run() -> None:
            evaluate_replay(read_dir(folder), config)

        seconds = _best(run, repeats)
        # CPU seconds of this process too: on a shared machine wall time includes waiting
        cpu = _best(run, repeats, time.process_time)
        result = evaluate_replay(read_dir(folder), config).to_dict()
    per_s = lines / seconds
    return {
        "decisions": n,
        "events": lines,
        "seconds": round(seconds, 4),
        "events_per_s": round(per_s),
        "cpu_seconds": round(cpu, 4),
        "events_per_cpu_s": round(lines / cpu),
        "target_per_s": 200_000,
        "meets_target": per_s >= 200_000,
        "meets_target_on_cpu_time": lines / cpu >= 200_000,
        "logging_ips": result["policies"]["logging"]["ips"]["value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1_000_000, help="rounds for the estimators")
    parser.add_argument("--decisions", type=int, default=200_000, help="decisions in the log")
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("var/bench/ope.json"))
    args = parser.parse_args()
    with Progress(transient=True) as bar:
        task = bar.add_task("estimators vs obp", total=2)
        estimators = bench_estimators(args.rounds, args.actions, args.repeats)
        bar.update(task, advance=1, description="replay end to end")
        replay = bench_replay(args.decisions, args.actions, max(1, args.repeats // 2))
        bar.advance(task)
    result = {
        "benchmark": "ope",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "estimators": estimators,
        "replay": replay,
    }
    if estimators["obp"]:
        result["estimators_meet_target"] = all(
            estimators[name]["ratio"] >= 1.0 for name in ("ips", "snips", "dr")
        )
    write_result(args.out, result)


if __name__ == "__main__":
    main()

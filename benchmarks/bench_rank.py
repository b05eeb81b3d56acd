"""Rank hot path: one decision in-process (encode the request + the preset's model scores + draw
+ Decision) against raw VW ``Workspace.predict`` on pre-built strings (VW SquareCB at its
defaults, or the preset's own VW settings), measured in the same run (TARGETS.md: >= 0.7x).
Writes JSON.

    .venv/bin/python benchmarks/bench_rank.py [--preset refit] [--n 5000] [--actions 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
import uuid
from pathlib import Path

import vowpalwabbit
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from bandit.features import action_features, encode_context
from bandit.policy import ActionSet, Policy
from bandit.presets import DEFAULT_PRESET, PRESETS, VW_SQUARECB, preset
from bandit.vw import VWConfig, action_line, shared_line, vw_arguments
from streams.schemas import TRAITS, Variant


def _requests(n: int, rng: random.Random) -> list[tuple[dict[str, object], dict[str, object]]]:
    out = []
    for i in range(n):
        user = {
            "user_id": f"u{rng.randrange(5000)}",
            "age": rng.randint(16, 70),
            "gender": rng.choice("fm"),
            "city_tier": rng.randint(1, 5),
            "recent_categories": rng.sample(["服装", "美妆", "家居", "数码", "食品"], 2),
            "purchase_frequency": rng.random() * 6,
        }
        context = {"channel": "ad_headline", "device": "ios", "hour": i % 24}
        out.append((user, context))
    return out


def _pool(n_actions: int, rng: random.Random) -> list[Variant]:
    return [
        Variant(
            variant_id=f"v{i}",
            text="限时8折 羊毛围巾 冬季暖心"[: rng.randint(6, 14)],
            language="zh",
            channel="ad_headline",
            traits=rng.sample(list(TRAITS), 3),
        )
        for i in range(n_actions)
    ]


def _warm(policy: Policy, ctxs: list, actions: ActionSet, rng: random.Random) -> None:
    """Teach the model a little, so predictions run over non-zero weights."""
    for ctx in ctxs[:1000]:  # past the refit's first fits
        d = policy.choose(
            ctx,
            actions,
            event_id=uuid.uuid4(),
            product_id="p1",
            channel="ad_headline",
            pool_version=1,
        )
        policy.learn(d, float(rng.random() < 0.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("var/bench/rank.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    key = b"bench-key"
    requests = _requests(args.n, rng)
    variants = _pool(args.actions, rng)
    # a ranker prepares each pool once (per pool version), not per request
    actions = ActionSet([(v.variant_id, action_features(v, "seed")) for v in variants])
    config = preset(args.preset)
    policy = Policy(config, seed=args.seed)
    encoded = [encode_context(u, c, hash_key=key) for u, c in requests]
    _warm(policy, encoded, actions, rng)

    # reference: a workspace of the same configuration, fed pre-built strings
    vw = config.model if isinstance(config.model, VWConfig) else VW_SQUARECB.model
    assert isinstance(vw, VWConfig)
    raw = vowpalwabbit.Workspace(arg_list=vw_arguments(vw, args.seed))
    a_lines = [action_line(f, vid) for vid, f in zip(actions.ids, actions.features, strict=True)]
    prebuilt = [[shared_line({**ctx, "c_channel": "ad_headline"}), *a_lines] for ctx in encoded]
    event_ids = [uuid.uuid4() for _ in requests]

    best_raw = best_ours = 0.0
    with Progress() as progress:
        task = progress.add_task("rank benchmark", total=args.repeats * 2)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for ex in prebuilt:
                raw.predict(ex)
            best_raw = max(best_raw, args.n / (time.perf_counter() - t0))
            progress.advance(task)
            t0 = time.perf_counter()
            for (user, context), eid in zip(requests, event_ids, strict=True):
                ctx = encode_context(user, context, hash_key=key)
                policy.choose(
                    ctx,
                    actions,
                    event_id=eid,
                    product_id="p1",
                    channel="ad_headline",
                    pool_version=1,
                )
            best_ours = max(best_ours, args.n / (time.perf_counter() - t0))
            progress.advance(task)
    result = {
        "benchmark": "rank",
        "preset": args.preset,
        "decisions": args.n,
        "actions": args.actions,
        "repeats": args.repeats,
        "raw_predict_per_s": round(best_raw, 1),
        "choose_per_s": round(best_ours, 1),
        "ratio": round(best_ours / best_raw, 3),
        "target_ratio": 0.7,
        "python": platform.python_version(),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()

"""One fine-tune round (training data, training, gate) on the bootstrap model, from a synthetic
log of the standard scenario's world (TARGETS.md: data + training + gate <= 60 s on the 2-core
machine's CPU). ``--device`` picks where pools are sampled, the adapter trained and the gate
sampled: CUDA (bf16) when a GPU is present, else the CPU (float32). Pool generation for the
log's world is set-up, cached under var/, and not timed. Writes JSON with seconds per phase,
examples/s, and the device and dtype training really ran in; ``--keep DIR`` keeps the round's
registry (the candidate model folder, its data and record) under DIR.

    .venv/bin/python benchmarks/bench_finetune.py [--decisions 20000] [--products 6]
        [--device cuda|cpu] [--keep DIR] [--out var/bench/finetune.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from generator.finetune import FinetuneConfig
from generator.model import BOOTSTRAP_MODEL
from service.finetune.registry import Registry
from service.finetune.rounds import RoundConfig, run_round
from service.finetune.synthetic import uniform_log
from service.simulate.catalog import make_catalog
from service.simulate.pool_source import GeneratorPools, build_pools
from service.simulate.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "standard.json")
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--products", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where pools are sampled and the adapter trained (default: cuda when present)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the round's registry here (default: none)"
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/finetune.json"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        # a registry there would make its current version this round's parent
        parser.error(f"--keep {args.keep}: not empty")
    scenario = load_scenario(args.scenario).model_copy(
        update={"decisions": args.decisions, "products": args.products}
    )
    products = make_catalog(args.products, scenario.language, scenario.seed)
    t = time.perf_counter()
    pools = build_pools(
        GeneratorPools(BOOTSTRAP_MODEL, device=args.device),
        products,
        channel=scenario.channel,
        n=scenario.pool_size,
        seed=scenario.seed,
        today=scenario.copy_date,
        cache_dir=REPO / "var" / "cache" / "pools",
    )
    setup_pools = time.perf_counter() - t
    t = time.perf_counter()
    _, log = uniform_log(scenario, products, pools, seed=args.seed)
    setup_log = time.perf_counter() - t
    config = RoundConfig(
        train=FinetuneConfig(progress=False, device=args.device), device=args.device
    )
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry.under(args.keep if args.keep is not None else Path(tmp))
        result = run_round(log, pools, products, registry, BOOTSTRAP_MODEL, config)
        # what training itself recorded (the round's registry entry), not what was asked for
        record = registry.get(result.version).metadata if result.version else {}
        candidate = registry.root / result.version if result.version else None
    timed = result.timings
    core = timed.get("total_s", 0.0)
    trained = result.examples.get("trained_on", 0)
    out = {
        "benchmark": "finetune_round",
        "scenario": scenario.name,
        "decisions": args.decisions,
        "products": args.products,
        "events": log.events,
        "status": result.status,
        "reason": result.reason,
        "examples": result.examples,
        "steps": config.train.max_steps,
        "seconds": round(core, 3),
        "phases_s": {k: round(v, 3) for k, v in timed.items()},
        # distinct examples over training time, and examples passed through the trainer
        "examples_per_s": round(trained / timed["train_s"], 2) if "train_s" in timed else None,
        "examples_seen_per_s": (
            round(
                config.train.max_steps * min(config.train.batch_size, trained) / timed["train_s"], 2
            )
            if "train_s" in timed
            else None
        ),
        "events_per_s_data": round(log.events / timed["data_s"]) if timed.get("data_s") else None,
        "target_s": 60.0,
        "within_target": core <= 60.0,
        "setup_s": {"pools": round(setup_pools, 3), "log": round(setup_log, 3)},
        "verdict": result.verdict,
        "device": args.device,
        "dtype": (record.get("training") or {}).get("dtype"),
        "training": record.get("training"),
        "candidate": str(candidate) if candidate is not None and args.keep is not None else None,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or "?",
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },
    }
    write_result(args.out, out)


if __name__ == "__main__":
    main()

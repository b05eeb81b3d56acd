"""Generation throughput: checked variants per second and peak memory, bootstrap model on CPU
(TARGETS.md: a pool of 8 checked variants in <= 2 s per product). Writes JSON.

The reference measured in the same run is raw sampling: the same model completing the same
number of prompts with no slot filling, guardrails, traits or selection, so ``overhead_ratio``
says what checking costs on top of the model. Guardrail and trait-detection rates are reported
on their own (the simulator calls ``detect_traits`` on every text it shows).

    .venv/bin/python benchmarks/bench_generate.py [--rounds 3] [--n 8] [--channel ad_headline]
        [--model PATH] [--device cpu] [--out var/bench/generate.json]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from generator.guardrails import Checker
from generator.model import CopyGenerator
from generator.sampling import SamplingConfig, generate, max_new_tokens, plan_candidates
from generator.traits import detect_traits
from streams.schemas import Channel, Product

REPO = Path(__file__).resolve().parents[1]
TARGET_POOL_SECONDS = 2.0
console = Console(stderr=True)


def _products() -> list[Product]:
    files = sorted((REPO / "examples" / "products").glob("*.json"))
    return [Product.model_validate_json(f.read_text(encoding="utf-8")) for f in files]


def _raw_sampling(
    gen: CopyGenerator, product: Product, channel: Channel, count: int, seed: int
) -> float:
    import random

    plans = plan_candidates(product, channel, product.language, count, random.Random(seed))
    prompts = [gen.prompt(product, p) for p in plans]
    started = time.perf_counter()
    gen.complete(
        prompts,
        max_new_tokens=max_new_tokens(
            product.language, channel, slot_format=gen.prompt_format == "slots-v1"
        ),
        seed=seed,
    )
    return time.perf_counter() - started


def _rate(fn, items: list, repeat: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return repeat * len(items) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="pools per product")
    parser.add_argument("--n", type=int, default=8, help="variants per pool")
    parser.add_argument("--channel", default="ad_headline")
    parser.add_argument("--model", type=Path, default=None, help="default: the bootstrap model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("var/bench/generate.json"))
    args = parser.parse_args()
    if args.rounds < 1 or args.n < 1:
        parser.error("`--rounds` and `--n` must be >= 1")
    channel: Channel = args.channel

    load_started = time.perf_counter()
    gen = CopyGenerator.from_path(args.model, device=args.device, threads=args.threads)
    load_seconds = time.perf_counter() - load_started
    products = _products()
    config = SamplingConfig()
    generate(gen, products[0], channel, args.n, seed=999, config=config)  # warm-up

    pool_seconds: list[float] = []
    raw_seconds: list[float] = []
    variants = sampled = passed = short_pools = 0
    texts: list[tuple[Product, str]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pools", total=args.rounds * len(products))
        for r in range(args.rounds):
            for product in products:
                report = generate(gen, product, channel, args.n, seed=r, config=config)
                pool_seconds.append(report.seconds)
                variants += len(report.pool.variants)
                sampled += report.sampled
                passed += report.passed
                short_pools += len(report.pool.variants) < args.n
                texts.extend((product, v.text) for v in report.pool.variants)
                raw_seconds.append(
                    _raw_sampling(gen, product, channel, round(args.n * config.oversample), r)
                )
                progress.advance(task)

    checkers = {p.product_id: Checker(p, channel) for p in products}
    check_rate = _rate(lambda pt: checkers[pt[0].product_id].check(pt[1]), texts, 5)
    trait_rate = _rate(
        lambda pt: detect_traits(
            pt[1], language=pt[0].language, channel=channel, brand=pt[0].brand
        ),
        texts,
        50,
    )
    total = sum(pool_seconds)
    mean_pool = statistics.mean(pool_seconds)
    result = {
        "benchmark": "generate",
        "model_version": gen.version,
        "device": str(gen.device),
        "torch_threads": torch.get_num_threads(),
        "channel": channel,
        "n": args.n,
        "products": len(products),
        "pools": len(pool_seconds),
        "pool_seconds": {
            "mean": round(mean_pool, 4),
            "p50": round(statistics.median(pool_seconds), 4),
            "p95": round(sorted(pool_seconds)[int(0.95 * (len(pool_seconds) - 1))], 4),
            "max": round(max(pool_seconds), 4),
        },
        "target_pool_seconds": TARGET_POOL_SECONDS,
        "meets_target": mean_pool <= TARGET_POOL_SECONDS and short_pools == 0,
        "pools_short_of_n": short_pools,
        "checked_variants_per_s": round(variants / total, 2),
        "candidates_per_s": round(sampled / total, 2),
        "guardrail_pass_rate": round(passed / sampled, 4) if sampled else 0.0,
        "reference": {
            "what": "raw sampling of the same number of candidates, same model, no checks",
            "seconds_per_pool": round(statistics.mean(raw_seconds), 4),
        },
        "overhead_ratio": round(mean_pool / statistics.mean(raw_seconds), 3),
        "guardrail_checks_per_s": round(check_rate, 1),
        "detect_traits_per_s": round(trait_rate, 1),
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()

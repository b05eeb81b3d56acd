"""Generation throughput and copy quality: checked variants per second and peak memory,
bootstrap model on CPU (TARGETS.md: a pool of 8 checked variants in <= 2 s per product), and
per channel and language what the guardrails reject and how varied and fluent the pools are.
Writes JSON.

The reference measured in the same run is raw sampling: the same model completing the same
number of prompts with no slot filling, guardrails, traits or selection, so ``overhead_ratio``
says what checking costs on top of the model. Guardrail and trait-detection rates are reported
on their own (the simulator calls ``detect_traits`` on every text it shows).

``quality`` holds, for every channel and language (the example products, a few seeds each):

* ``rejected_share``: the share of sampled candidates that each rule (or a pre-check reason:
  ``unfinished``, ``unknown_slot``, ``empty``) rejected; a candidate may break several rules;
* ``distinct_1`` / ``distinct_2``: distinct unigrams / bigrams over all of a pool's n-grams
  (characters for zh, lower-cased words for en), averaged over pools: 1.0 repeats nothing;
* ``near_duplicate_rate``: the share of variant pairs in a pool at or above the guardrails'
  near-duplicate similarity (0 while selection works), with the mean and largest similarity of
  a pair, which say how close pools come to it;
* ``fluency_ppl``: the loaded model's own perplexity on each kept variant and its end token,
  after the prompt of the wish the text answers (token-weighted over the group); lower reads
  more like the copy the model learnt. The text is scored as the model writes it: in slot form
  (the product's facts put back into ``{slots}``) for the bootstrap model, as is for others.
  ``fluency_ppl_filled`` scores the filled text; product names the bootstrap vocabulary never
  saw fall back to bytes and dominate it, so compare it only across runs on the same products.

The generation date (``--date``) is fixed in the output because timeliness depends on it.

    .venv/bin/python benchmarks/bench_generate.py [--rounds 3] [--n 8] [--channel ad_headline]
        [--model PATH] [--device cpu] [--date 2026-12-04] [--quality-seeds 2]
        [--quality-products 3] [--out var/bench/generate.json]
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import re
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_result  # this folder: the script's own

from generator.guardrails import NEAR_DUPLICATE_THRESHOLD, Checker, GuardrailConfig, similarity
from generator.model import CopyGenerator
from generator.prompts import plan_for
from generator.sampling import Report, SamplingConfig, generate, max_new_tokens, plan_candidates
from generator.slots import slot_values, unfill
from generator.traits import detect_traits
from streams.schemas import CHANNELS, LANGUAGES, Channel, Language, Product, Variant

REPO = Path(__file__).resolve().parents[1]
TARGET_POOL_SECONDS = 2.0
SCORE_BATCH = 32
_WORD = re.compile(r"\w+")
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


def _units(text: str, language: Language) -> list[str]:
    """What distinct-n counts: characters for zh (no spaces), lower-cased words for en."""
    if language == "zh":
        return [ch for ch in text if not ch.isspace()]
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int, language: Language) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (1.0 when nothing repeats)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        units = _units(text, language)
        grams.extend(tuple(units[i : i + n]) for i in range(len(units) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def pair_similarities(texts: Sequence[str], language: Language) -> list[float]:
    """The guardrails' similarity of every pair of ``texts``."""
    return [similarity(a, b, language=language) for a, b in itertools.combinations(texts, 2)]


@torch.inference_mode()
def text_nll(gen: CopyGenerator, pairs: Sequence[tuple[str, str]]) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and token count of each text and the end token,
    each after its prompt: the model's own surprise at the copy."""
    tok = gen.tokenizer
    end = tok.eos_token_id
    total, count = 0.0, 0
    for start in range(0, len(pairs), SCORE_BATCH):
        rows: list[tuple[list[int], int]] = []
        for prompt, text in pairs[start : start + SCORE_BATCH]:
            head = tok(prompt, add_special_tokens=False).input_ids
            body = tok(text, add_special_tokens=False).input_ids + (
                [end] if end is not None else []
            )
            rows.append((head + body, len(head)))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        scored = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (row, head_len) in enumerate(rows):  # right padding: positions start at 0
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            scored[i, head_len : len(row)] = True
        logits = gen.model(
            input_ids=ids.to(gen.device), attention_mask=mask.to(gen.device)
        ).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = ids[:, 1:].to(gen.device)
        picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        keep = scored[:, 1:].to(gen.device)
        total -= float(picked[keep].sum())
        count += int(keep.sum())
    return total, count


def perplexity(gen: CopyGenerator, pairs: Sequence[tuple[str, str]]) -> float | None:
    """Token-weighted perplexity of the texts after their prompts (None for no tokens)."""
    nll, tokens = text_nll(gen, pairs)
    return round(math.exp(nll / tokens), 2) if tokens else None


def _group_quality(
    gen: CopyGenerator, channel: Channel, language: Language, reports: list[tuple[Product, Report]]
) -> dict[str, object]:
    sampled = sum(r.sampled for _, r in reports)
    rejected: Counter[str] = Counter()
    pairs: list[float] = []
    d1: list[float] = []
    d2: list[float] = []
    own: list[tuple[str, str]] = []  # prompt, the text as the model writes it
    filled: list[tuple[str, str]] = []
    slotted = gen.prompt_format == "slots-v1"
    for product, report in reports:
        rejected.update(report.rejected)
        variants: list[Variant] = report.pool.variants
        texts = [v.text for v in variants]
        d1.append(distinct_n(texts, 1, language))
        d2.append(distinct_n(texts, 2, language))
        pairs.extend(pair_similarities(texts, language))
        values = slot_values(product, language)
        for v in variants:
            prompt = gen.prompt(product, plan_for(product, channel, v.text, v.traits))
            filled.append((prompt, v.text))
            own.append((prompt, unfill(v.text, values) if slotted else v.text))
    sizes = [len(r.pool.variants) for _, r in reports]
    traits = [len({t for v in r.pool.variants for t in v.traits}) for _, r in reports]
    return {
        "products": len({p.product_id for p, _ in reports}),
        "pools": len(reports),
        "candidates": sampled,
        "pass_rate": round(sum(r.passed for _, r in reports) / sampled, 4) if sampled else 0.0,
        "rejected_share": {k: round(v / sampled, 4) for k, v in rejected.most_common()},
        "min_variants_per_pool": min(sizes),
        "min_traits_per_pool": min(traits),
        "distinct_1": round(statistics.mean(d1), 4),
        "distinct_2": round(statistics.mean(d2), 4),
        "near_duplicate_rate": round(
            sum(s >= NEAR_DUPLICATE_THRESHOLD for s in pairs) / len(pairs), 4
        )
        if pairs
        else 0.0,
        "mean_pair_similarity": round(statistics.mean(pairs), 4) if pairs else 0.0,
        "max_pair_similarity": round(max(pairs), 4) if pairs else 0.0,
        "fluency_ppl": perplexity(gen, own),
        "fluency_ppl_filled": perplexity(gen, filled),
    }


def quality(
    gen: CopyGenerator,
    products: list[Product],
    n: int,
    seeds: int,
    per_language: int,
    guardrails: GuardrailConfig,
    config: SamplingConfig,
) -> dict[str, dict[str, object]]:
    """Pools for every channel and language (``per_language`` products, ``seeds`` pools each),
    summarised by :func:`_group_quality`; keys are ``channel/language``."""
    out: dict[str, dict[str, object]] = {}
    groups = [
        (ch, lang, [p for p in products if p.language == lang][:per_language])
        for ch in CHANNELS
        for lang in LANGUAGES
    ]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("quality", total=sum(seeds * len(g) for *_, g in groups))
        for channel, language, chosen in groups:
            reports: list[tuple[Product, Report]] = []
            for product, seed in itertools.product(chosen, range(seeds)):
                report = generate(
                    gen, product, channel, n, seed=seed, config=config, guardrails=guardrails
                )
                reports.append((product, report))
                progress.advance(task)
            if reports:
                out[f"{channel}/{language}"] = _group_quality(gen, channel, language, reports)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="pools per product")
    parser.add_argument("--n", type=int, default=8, help="variants per pool")
    parser.add_argument("--channel", default="ad_headline")
    parser.add_argument("--model", type=Path, default=None, help="default: the bootstrap model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=date.today(),
        help="generation date for the timeliness rule (YYYY-MM-DD; default today)",
    )
    parser.add_argument("--quality-seeds", type=int, default=2, help="pools per product")
    parser.add_argument(
        "--quality-products", type=int, default=3, help="products per language (0: no quality)"
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/generate.json"))
    args = parser.parse_args()
    if args.rounds < 1 or args.n < 1 or args.quality_seeds < 1:
        parser.error("`--rounds`, `--n` and `--quality-seeds` must be >= 1")
    if args.quality_products < 0:
        parser.error("`--quality-products` must be >= 0")
    channel: Channel = args.channel

    load_started = time.perf_counter()
    gen = CopyGenerator.from_path(args.model, device=args.device, threads=args.threads)
    load_seconds = time.perf_counter() - load_started
    products = _products()
    config = SamplingConfig()
    guardrails = GuardrailConfig(today=args.date)
    generate(
        gen, products[0], channel, args.n, seed=999, config=config, guardrails=guardrails
    )  # warm-up

    pool_seconds: list[float] = []
    raw_seconds: list[float] = []
    variants = sampled = passed = short_pools = 0
    texts: list[tuple[Product, str]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pools", total=args.rounds * len(products))
        for r in range(args.rounds):
            for product in products:
                report = generate(
                    gen, product, channel, args.n, seed=r, config=config, guardrails=guardrails
                )
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
    quality_started = time.perf_counter()
    by_group = (
        quality(
            gen, products, args.n, args.quality_seeds, args.quality_products, guardrails, config
        )
        if args.quality_products
        else {}
    )
    quality_seconds = time.perf_counter() - quality_started
    total = sum(pool_seconds)
    mean_pool = statistics.mean(pool_seconds)
    result = {
        "benchmark": "generate",
        "model_version": gen.version,
        "device": str(gen.device),
        "torch_threads": torch.get_num_threads(),
        "channel": channel,
        "date": args.date.isoformat(),
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
        "quality": {
            "seeds": args.quality_seeds,
            "products_per_language": args.quality_products,
            "seconds": round(quality_seconds, 2),
            "by_channel_language": by_group,
        },
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()

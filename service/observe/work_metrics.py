"""Figures of work any process may do, in prometheus-client's process-wide registry: copy
generation (candidates, variants kept, time spent, guardrail rejections by rule) and fine-tune
rounds by outcome. A ranker's generation jobs and admin rounds, ``copyloop finetune`` and the
simulator all record here, so a process that serves ``/metrics`` shows them whichever runs.

Defined at import: in a multiprocess server each worker imports this after the multiprocess
folder is set, so the values land in its files and are summed with the other workers'."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from service.observe.bounded import BoundedLabels

#: guardrail rules are a fixed vocabulary, but a rejection reason may be free text: capped
_RULES = BoundedLabels(64)

GENERATED_CANDIDATES = Counter(
    "copyloop_generated_candidates", "copy candidates sampled from the generator"
)
GENERATED_VARIANTS = Counter(
    "copyloop_generated_variants", "variants that passed every guardrail and entered a pool"
)
GENERATION_SECONDS = Counter(
    "copyloop_generation_seconds", "time spent sampling and checking copy, in seconds"
)
GUARDRAIL_REJECTIONS = Counter(
    "copyloop_guardrail_rejections",
    "candidates rejected, by guardrail rule (or sampling reason)",
    ["rule"],
)
FINETUNE_ROUNDS = Counter(
    "copyloop_finetune_rounds",
    "fine-tune rounds by outcome: promoted, rejected (by the gate) or skipped (no evidence)",
    ["status"],
)


def record_generation(
    sampled: int, passed: int, seconds: float, rejected: Mapping[str, int]
) -> None:
    """One pool's generation (``generator.sampling.Report``'s figures)."""
    GENERATED_CANDIDATES.inc(sampled)
    GENERATED_VARIANTS.inc(passed)
    GENERATION_SECONDS.inc(max(seconds, 0.0))
    for rule, n in rejected.items():
        if n > 0:
            GUARDRAIL_REJECTIONS.labels(_RULES.label(rule)).inc(n)


def record_round(status: str) -> None:
    """One fine-tune round's outcome (``RoundResult.status``)."""
    FINETUNE_ROUNDS.labels(status).inc()

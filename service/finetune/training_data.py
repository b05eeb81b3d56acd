"""Training data for the generator from the interaction log, corrected for how it was collected.

The bandit shows what it already believes in, so a variant's raw click rate is a biased sample.
Each variant's value is estimated per cell (product × channel × shopper segment) by IPS with the
logged propensities (``bandit.ope``): the value of always showing that variant to the cell's
shoppers, with a normal interval. A segment is a coarse, bounded key made of encoded shopper
features (age bucket × gender), never an id.

* KTO rows ``{prompt, completion, label}``: desirable where a variant's value is above its cell's
  mean with probability >= ``confidence``, undesirable where it is below with that probability.
  The prompt carries no segment, so a variant judged good in one segment and bad in another is
  left out rather than taught both ways.
* DPO pairs ``{prompt, chosen, rejected}`` only where P(chosen beats rejected) >= ``confidence``.
* Copy that fails a guardrail today is never an example, however often it was clicked.

A log with too little evidence gives :class:`NotEnoughEvidence` (with the reason), not an
exception: a round that cannot train is an ordinary outcome."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from bandit import ope
from bandit.reward import DEFAULT_REWARD, RewardConfig
from generator.guardrails import Checker
from generator.prompts import (
    Plan,
    PromptFormat,
    available_slots,
    completion_prompt,
    control_prompt,
    plan_for,
    training_example,
)
from service.replay.replay_eval import join
from service.replay.replay_log import ReplayLog
from streams.schemas import Channel, Decision, FeatureValue, Product, Variant, VariantPool

Label = Literal["desirable", "undesirable"]
#: encoded shopper keys a segment is made of (bounded vocabularies, see ``bandit.features``)
SEGMENT_KEYS: tuple[str, ...] = ("u_age", "u_gender")
KTO_FILE, DPO_FILE, PROVENANCE_FILE = "kto.jsonl", "dpo.jsonl", "provenance.json"
_Z = NormalDist()


@dataclass(frozen=True)
class DataConfig:
    reward: RewardConfig = DEFAULT_REWARD
    confidence: float = 0.9
    alpha: float = 0.05
    min_joined: int = 200
    min_shown: int = 20
    min_examples: int = 4
    segment_keys: tuple[str, ...] = SEGMENT_KEYS

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"`confidence` must be in (0.5, 1), got {self.confidence}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"`alpha` must be in (0, 1), got {self.alpha}")
        for name in ("min_joined", "min_shown", "min_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if not self.segment_keys:
            raise ValueError("`segment_keys` must name at least one encoded feature")


@dataclass(frozen=True)
class VariantValue:
    """One variant's estimated value in one cell, and what became of it."""

    product_id: str
    channel: str
    segment: str
    variant_id: str
    offered: int  # decisions of the cell that could show it
    shown: int
    value: float  # IPS value of always showing it
    se: float
    ci95: tuple[float, float]
    cell_mean: float
    p_above_mean: float | None
    label: Label | None
    excluded: str | None = None
    #: its mean probability in the logged action distributions of the cell: under Thompson
    #: sampling, the logging policy's posterior probability that it is the cell's best choice
    share: float | None = None


@dataclass(frozen=True)
class NotEnoughEvidence:
    """The round ends without training; ``reason`` says why in words."""

    reason: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSet:
    kto: list[dict[str, Any]]
    dpo: list[dict[str, Any]]
    values: list[VariantValue]
    stats: dict[str, Any]
    #: product id -> the channel its examples are for (the gate writes pools for these)
    products: dict[str, Channel]

    def write(self, folder: Path) -> dict[str, Path]:
        """``kto.jsonl``, ``dpo.jsonl`` and ``provenance.json`` (events used, estimates,
        intervals) under ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"kto": folder / KTO_FILE, "dpo": folder / DPO_FILE}
        for name, rows in (("kto", self.kto), ("dpo", self.dpo)):
            paths[name].write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
            )
        paths["provenance"] = folder / PROVENANCE_FILE
        provenance = {
            "stats": self.stats,
            "products": self.products,
            "estimates": [asdict(v) for v in self.values],
        }
        paths["provenance"].write_text(
            json.dumps(provenance, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        return paths


def segment_of(context: Mapping[str, FeatureValue], keys: Sequence[str] = SEGMENT_KEYS) -> str:
    """``"25-29|f"``: the decision's encoded features at ``keys`` (``?`` where absent)."""
    return "|".join(str(context.get(k, "?")) for k in keys)


def example(
    product: Product, channel: Channel, variant: Variant, prompt_format: PromptFormat
) -> tuple[str, str]:
    """``(prompt, completion)`` of shown copy in the model's own prompt format: for the slot
    format the plan the text answers and the text in slot form (so the model keeps writing
    slots); otherwise the plain-words prompt and the text."""
    plan = plan_for(product, channel, variant.text, variant.traits)
    # the prompt wishes for the styles the text carries, as the sampler's plans do: asked the
    # same way the untrained model is, the tuned one learns which copy answers a wish well (a
    # prompt with no wished style taught the bootstrap model little and cost it guardrail
    # passes, see docs/experiments/2026-finetune-rounds.md)
    if prompt_format == "slots-v1":
        full = training_example(product, channel, variant.text, variant.traits)
        return control_prompt(plan), full[len(control_prompt(plan)) :]
    return completion_prompt(product, plan), f" {variant.text}"


def pair_prompt(product: Product, channel: Channel, prompt_format: PromptFormat) -> str:
    """A prompt that both sides of a pair answer: the product's, with no wished style."""
    plan = Plan(product.language, channel, "mid", (), available_slots(product, product.language))
    return control_prompt(plan) if prompt_format == "slots-v1" else completion_prompt(product, plan)


# -- estimates ---------------------------------------------------------------------------------
def _cell_values(
    key: tuple[str, str, str],
    decisions: Sequence[Decision],
    reward: np.ndarray[Any, np.dtype[np.float64]],
    config: DataConfig,
) -> list[VariantValue]:
    """Every variant offered in the cell, valued by IPS against the cell's mean: the value of
    showing a variant of the pool at random (also by IPS), not the logged policy's reward,
    which an adaptive policy pushes up to its winners' level so that nothing beats it."""
    n = len(decisions)
    cell_sd = float(reward.std(ddof=1)) if n > 1 else 0.0
    action = np.fromiter((d.action for d in decisions), np.intp, n)
    pscore = np.fromiter((d.pscore for d in decisions), np.float64, n)
    width = max(len(d.actions) for d in decisions)
    at_random = np.zeros((n, width))
    for row, d in enumerate(decisions):
        at_random[row, : len(d.actions)] = 1.0 / len(d.actions)
    mean_est = ope.estimate(
        reward, action, pscore, at_random, estimators=("ips",), alpha=config.alpha
    )["ips"]
    cell_mean = float(mean_est.value)
    z_mean = _Z.inv_cdf(1 - config.alpha / 2)
    cell_se = (
        (mean_est.ci.high - mean_est.ci.low) / (2 * z_mean)
        if math.isfinite(mean_est.ci.high)
        else cell_sd / math.sqrt(n)
    )
    index: dict[str, list[tuple[int, int]]] = defaultdict(list)  # variant -> (row, position)
    for row, d in enumerate(decisions):
        for pos, vid in enumerate(d.actions):
            index[vid].append((row, pos))
    z = _Z.inv_cdf(1 - config.alpha / 2)
    out = []
    for vid, where in index.items():
        rows = np.fromiter((r for r, _ in where), np.intp, len(where))
        at = np.fromiter((p for _, p in where), np.intp, len(where))
        target = np.zeros((rows.shape[0], width))
        target[np.arange(rows.shape[0]), at] = 1.0  # always show this variant
        shown = int((action[rows] == at).sum())
        share = float(np.mean([decisions[r].action_dist[a] for r, a in where]))
        est = ope.estimate(
            reward[rows],
            action[rows],
            pscore[rows],
            target,
            estimators=("ips",),
            alpha=config.alpha,
        )["ips"]
        half = (est.ci.high - est.ci.low) / 2 if math.isfinite(est.ci.high) else math.inf
        # the cell's own spread as a floor: a variant with no click yet is not certain to be bad
        se = max(half / z, cell_sd / math.sqrt(max(shown, 1)))
        p_above: float | None = None
        label: Label | None = None
        if shown >= config.min_shown and math.isfinite(se):
            spread = math.hypot(se, cell_se)
            p_above = _Z.cdf((est.value - cell_mean) / spread) if spread > 0 else 0.5
            if p_above >= config.confidence:
                label = "desirable"
            elif p_above <= 1 - config.confidence:
                label = "undesirable"
        out.append(
            VariantValue(
                *key,
                variant_id=vid,
                offered=int(rows.shape[0]),
                shown=shown,
                value=est.value,
                se=se,
                ci95=(est.value - z * se, est.value + z * se),
                cell_mean=cell_mean,
                p_above_mean=p_above,
                label=label,
                share=share,
            )
        )
    return out


def estimate_values(
    log: ReplayLog, config: DataConfig
) -> tuple[list[VariantValue], dict[str, Any], dict[str, int]]:
    """Variant values of every cell, the join's statistics, and joined decisions per segment."""
    joined = join(log, config.reward)
    stats: dict[str, Any] = {"events": log.events, **joined.stats}
    decisions = list(log.decisions.full(joined.rows.tolist())) if joined.rows.size else []
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    segments: dict[str, int] = defaultdict(int)
    for i, d in enumerate(decisions):
        seg = segment_of(d.context, config.segment_keys)
        cells[(d.product_id, d.channel, seg)].append(i)
        segments[seg] += 1
    values: list[VariantValue] = []
    for key, members in sorted(cells.items()):
        values.extend(
            _cell_values(key, [decisions[i] for i in members], joined.reward[members], config)
        )
    stats["cells"] = len(cells)
    return values, stats, dict(segments)


# -- examples ----------------------------------------------------------------------------------
def _variants(pools: Iterable[VariantPool]) -> dict[str, Variant]:
    return {v.variant_id: v for pool in pools for v in pool.variants}


def _screen(
    values: list[VariantValue], variants: Mapping[str, Variant], products: Mapping[str, Product]
) -> list[VariantValue]:
    """Mark what cannot become an example: an unknown variant or product, or copy that fails a
    guardrail today (checked against the product's current data)."""
    checkers: dict[tuple[str, str], Checker] = {}
    verdicts: dict[tuple[str, str], str | None] = {}
    out = []
    for v in values:
        why: str | None = None
        variant, product = variants.get(v.variant_id), products.get(v.product_id)
        if variant is None:
            why = "variant not in any known pool"
        elif product is None:
            why = "product unknown"
        else:
            key = (v.product_id, v.variant_id)
            if key not in verdicts:
                ck = (v.product_id, v.channel)
                if ck not in checkers:
                    checkers[ck] = Checker(product, variant.channel, language=variant.language)
                broken = checkers[ck].check(variant.text).rules_broken()
                verdicts[key] = f"guardrail: {', '.join(sorted(broken))}" if broken else None
            why = verdicts[key]
        out.append(v if why is None else replace(v, excluded=why))
    return out


def _kto_rows(
    values: Sequence[VariantValue],
    variants: Mapping[str, Variant],
    products: Mapping[str, Product],
    prompt_format: PromptFormat,
) -> tuple[list[dict[str, Any]], int]:
    """One row per labelled variant (its segments agreeing), and how many disagreed."""
    labels: dict[tuple[str, str], dict[Label, list[str]]] = defaultdict(lambda: defaultdict(list))
    for v in values:
        if v.label is not None and v.excluded is None:
            labels[(v.product_id, v.variant_id)][v.label].append(v.segment)
    rows, conflicts = [], 0
    for (pid, vid), by_label in sorted(labels.items()):
        if len(by_label) > 1:
            conflicts += 1
            continue
        ((label, segs),) = by_label.items()
        variant = variants[vid]
        prompt, completion = example(products[pid], variant.channel, variant, prompt_format)
        rows.append(
            {
                "prompt": prompt,
                "completion": completion,
                "label": label == "desirable",
                "product_id": pid,
                "variant_id": vid,
                "text": variant.text,
                "channel": variant.channel,
                "language": variant.language,
                "traits": list(variant.traits),
                "segments": segs,
            }
        )
    return rows, conflicts


def _dpo_pairs(
    values: Sequence[VariantValue],
    variants: Mapping[str, Variant],
    products: Mapping[str, Product],
    prompt_format: PromptFormat,
    confidence: float,
) -> list[dict[str, Any]]:
    """Pairs within a cell where P(a beats b) >= ``confidence`` (the two IPS estimates as
    independent normals: their per-round terms never both differ from 0, so the covariance is
    only ``-v_a v_b / n``); a pair that some segment reverses is left out."""
    by_cell: dict[tuple[str, str, str], list[VariantValue]] = defaultdict(list)
    for v in values:
        if v.excluded is None and v.p_above_mean is not None:
            by_cell[(v.product_id, v.channel, v.segment)].append(v)
    wins: dict[tuple[str, str, str], list[str]] = {}
    for (pid, _, seg), judged in by_cell.items():
        for a in judged:
            for b in judged:
                spread = math.hypot(a.se, b.se)
                if a is b or spread == 0:
                    continue
                if _Z.cdf((a.value - b.value) / spread) >= confidence:
                    wins.setdefault((pid, a.variant_id, b.variant_id), []).append(seg)
    pairs = []
    for (pid, win, lose), segs in sorted(wins.items()):
        if (pid, lose, win) in wins:
            continue
        product, chosen, rejected = products[pid], variants[win], variants[lose]
        pairs.append(
            {
                "prompt": pair_prompt(product, chosen.channel, prompt_format),
                "chosen": example(product, chosen.channel, chosen, prompt_format)[1],
                "rejected": example(product, rejected.channel, rejected, prompt_format)[1],
                "product_id": pid,
                "chosen_id": win,
                "rejected_id": lose,
                "segments": segs,
            }
        )
    return pairs


def build_training_data(
    log: ReplayLog,
    pools: Iterable[VariantPool],
    products: Iterable[Product],
    *,
    prompt_format: PromptFormat = "slots-v1",
    config: DataConfig | None = None,
) -> TrainingSet | NotEnoughEvidence:
    """The round's KTO rows and DPO pairs, or why there are none worth training on."""
    config = config or DataConfig()
    variants = _variants(pools)
    catalog = {p.product_id: p for p in products}
    values, stats, segments = estimate_values(log, config)
    if stats["joined"] < config.min_joined:
        return NotEnoughEvidence(
            f"{stats['joined']} decisions were seen (an impression joined), "
            f"fewer than the {config.min_joined} a round needs",
            stats,
        )
    values = _screen(values, variants, catalog)
    kto, conflicts = _kto_rows(values, variants, catalog, prompt_format)
    dpo = _dpo_pairs(values, variants, catalog, prompt_format, config.confidence)
    desirable = sum(1 for r in kto if r["label"])
    excluded: dict[str, int] = defaultdict(int)
    for v in values:
        if v.excluded is not None:
            excluded[v.excluded] += 1
    stats.update(
        {
            "segments": segments,
            "judged": sum(1 for v in values if v.p_above_mean is not None),
            "desirable": desirable,
            "undesirable": len(kto) - desirable,
            "conflicting": conflicts,
            "dpo_pairs": len(dpo),
            "excluded": dict(excluded),
            "confidence": config.confidence,
            "estimator": "ips, normal interval, cell reward spread as the standard error's floor",
        }
    )
    if len(kto) < config.min_examples or desirable == 0:
        return NotEnoughEvidence(
            f"{desirable} desirable and {len(kto) - desirable} undesirable variants are "
            f"confidently (P >= {config.confidence}) apart from their cell's mean; a round needs "
            f"at least {config.min_examples} examples, one of them desirable",
            stats,
        )
    channels = {r["product_id"]: variants[r["variant_id"]].channel for r in kto}
    return TrainingSet(kto, dpo, values, stats, channels)


# -- pooling across rounds -----------------------------------------------------------------------
def _row_variant(row: Mapping[str, Any]) -> Variant | None:
    """The shown copy an earlier round's row was made from, or None for a row written before
    rows carried their channel, language and traits (it cannot be checked again)."""
    try:
        return Variant(
            variant_id=row["variant_id"],
            text=row["text"],
            language=row["language"],
            channel=row["channel"],
            traits=list(row.get("traits") or []),
        )
    except (KeyError, TypeError, ValueError):
        return None


def pool_rows(
    current: TrainingSet,
    earlier: Sequence[Sequence[Mapping[str, Any]]],
    products: Iterable[Product],
    *,
    prompt_format: PromptFormat = "slots-v1",
    keep_rejudged: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """This round's KTO rows plus those of earlier rounds (``earlier``: newest round first)
    that are still valid, and counts of what was kept and dropped.

    * Newest evidence wins: one row per (product, variant) and per (prompt, completion), the
      newest round's. A variant this round judged again (any cell with an estimate) is taught
      only by this round, whatever it decided, since its log holds the older evidence too;
      with ``keep_rejudged`` only a label of this round overrules an earlier one (an earlier
      row stays where this round judged the variant but left it unlabelled).
    * An earlier row is checked against today's guardrails and the product's current data, as
      this round's are: copy that fails now is never an example (so never desirable), and a
      row for a product no longer in the catalog is dropped.
    * Its prompt is written anew from the product's current data, so every row asks as this
      round's do."""
    catalog = {p.product_id: p for p in products}
    judged = {
        (v.product_id, v.variant_id)
        for v in current.values
        if v.excluded is None and v.p_above_mean is not None
    }
    rows = [dict(r, round_age=0) for r in current.kto]
    seen_ids = {(r["product_id"], r["variant_id"]) for r in rows}
    seen_text = {(r["prompt"], r["completion"]) for r in rows}
    counts = {"current": len(rows), "pooled": 0, "judged_again": 0, "duplicate": 0}
    counts |= {"guardrail": 0, "unreadable": 0, "product_unknown": 0}
    checkers: dict[tuple[str, str, str], Checker] = {}
    for age, round_rows in enumerate(earlier, start=1):
        for row in round_rows:
            variant = _row_variant(row)
            pid = str(row.get("product_id", ""))
            product = catalog.get(pid)
            if variant is None or not isinstance(row.get("label"), bool):
                counts["unreadable"] += 1
                continue
            if product is None:
                counts["product_unknown"] += 1
                continue
            key = (pid, variant.variant_id)
            if key in judged and not keep_rejudged:
                counts["judged_again"] += 1
                continue
            if key in seen_ids:
                counts["duplicate"] += 1
                continue
            ck = (pid, variant.channel, variant.language)
            if ck not in checkers:
                checkers[ck] = Checker(product, variant.channel, language=variant.language)
            if checkers[ck].check(variant.text).rules_broken():
                counts["guardrail"] += 1
                continue
            prompt, completion = example(product, variant.channel, variant, prompt_format)
            if (prompt, completion) in seen_text:
                counts["duplicate"] += 1
                continue
            seen_ids.add(key)
            seen_text.add((prompt, completion))
            rows.append(
                {
                    **row,
                    "prompt": prompt,
                    "completion": completion,
                    "label": bool(row["label"]),
                    "round_age": age,
                }
            )
            counts["pooled"] += 1
    return rows, counts

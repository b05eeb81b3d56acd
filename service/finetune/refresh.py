"""Pool refresh after a promotion: for each product the round trained for, proven winners stay,
clear losers retire, and new copy from the promoted generator fills the pool back to its size.

A variant's fate comes from the round's own estimates (``training_data``: the IPS value of
always showing it, per product × channel × segment, against its cell's mean):

* **winner**: confidently above its cell's mean in some segment (P >= the data's confidence);
  it stays, even where another segment dislikes it, because the contextual bandit can still
  show it to the segment that answers to it;
* **loser**: confidently below the mean in some segment and above it in none; it retires;
* copy that fails a guardrail today retires whatever its clicks;
* everything else is undecided and stays: too little evidence is no reason to drop copy.

The new copy comes from ``generator.sampling.generate`` (the one way to write a pool, so every
text is guardrail-checked) and is checked once more against the copy that stays, so no
near-duplicate joins the pool. Variants of the product's other channels are left alone. The
refreshed pool is the product's newest pool plus one ``pool_version``, so rankers hot-swap to
it from the variants topic; the bandit scores the new variants from their features."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from generator.errors import GeneratorError
from generator.guardrails import Checker, GuardrailConfig
from generator.interface import CopyModel
from generator.sampling import SamplingConfig, generate
from service.finetune.training_data import VariantValue
from streams.schemas import Channel, Product, Variant, VariantPool, utc_now

log = logging.getLogger(__name__)
Fate = Literal["winner", "loser", "undecided", "unlawful"]
POOLS_BEFORE, POOLS_AFTER = "pools_before.jsonl", "pools_after.jsonl"


@dataclass(frozen=True)
class RefreshConfig:
    seed: int = 0
    #: candidates sampled per wanted variant (the sampler's own default is 3)
    oversample: float = 3.0
    #: the generation date and catalog brands the guardrails use (None: today, no catalog)
    guardrails: GuardrailConfig | None = None
    #: a variant the logging policy gives less than this share of its traffic in every segment
    #: that saw it often enough (``retire_offered`` decisions) is a loser: under Thompson
    #: sampling the share is the posterior probability of being the best copy there
    retire_share: float = 0.02
    retire_offered: int = 100

    def __post_init__(self) -> None:
        if self.oversample < 1:
            raise ValueError(f"`oversample` must be >= 1, got {self.oversample}")


@dataclass(frozen=True)
class Refreshed:
    """One product's refresh: the pool before and after, and what became of each variant."""

    product_id: str
    channel: Channel
    before: VariantPool
    after: VariantPool | None  # None: left as it was (``note`` says why)
    kept: dict[str, Fate] = field(default_factory=dict)
    retired: dict[str, str] = field(default_factory=dict)  # variant id -> why
    added: list[str] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "channel": self.channel,
            "pool_version_before": self.before.pool_version,
            "pool_version_after": self.after.pool_version if self.after else None,
            "kept": self.kept,
            "retired": self.retired,
            "added": self.added,
            "note": self.note,
        }


def latest_pools(pools: Iterable[VariantPool]) -> dict[str, VariantPool]:
    """Each product's newest pool (the variants topic keeps every version until compacted)."""
    out: dict[str, VariantPool] = {}
    for pool in pools:
        held = out.get(pool.product_id)
        if held is None or pool.pool_version > held.pool_version:
            out[pool.product_id] = pool
    return out


def judge(
    values: Iterable[VariantValue], config: RefreshConfig | None = None
) -> dict[tuple[str, str], tuple[Fate, str]]:
    """``(product id, variant id) -> (fate, why)`` from the round's estimates: the labels'
    posterior test (P(value > cell mean) beyond the data's confidence, one way or the other),
    and the logging policy's own posterior (its traffic share, see ``RefreshConfig``)."""
    config = config or RefreshConfig()
    labels: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    unlawful: dict[tuple[str, str], str] = {}
    shares: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for v in values:
        key = (v.product_id, v.variant_id)
        if v.excluded is not None and v.excluded.startswith("guardrail"):
            unlawful[key] = v.excluded
        if v.label is not None:
            labels[key][v.label].append(v.segment)
        if v.share is not None:
            shares[key].append((v.offered, v.share))
    out: dict[tuple[str, str], tuple[Fate, str]] = {}
    for key, by_label in labels.items():
        if by_label.get("desirable"):
            out[key] = ("winner", f"above its cell's mean in {sorted(by_label['desirable'])}")
        else:
            out[key] = ("loser", f"below its cell's mean in {sorted(by_label['undesirable'])}")
    for key, seen in shares.items():
        judged = [share for offered, share in seen if offered >= config.retire_offered]
        if key in out or not judged or max(judged) >= config.retire_share:
            continue
        out[key] = (
            "loser",
            f"the policy gives it at most {max(judged):.1%} of the traffic in every segment "
            f"that saw it {config.retire_offered}+ times",
        )
    for key, why in unlawful.items():
        out[key] = ("unlawful", why)
    return out


def _seed(base: int, product_id: str, version: int) -> int:
    digest = hashlib.blake2b(f"{base}:refresh:{product_id}:{version}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "little")


def refresh_pool(
    pool: VariantPool,
    product: Product,
    channel: Channel,
    fates: Mapping[tuple[str, str], tuple[Fate, str]],
    model: CopyModel,
    config: RefreshConfig | None = None,
) -> Refreshed:
    """``pool``'s ``channel`` variants judged, the retired replaced by fresh, checked copy."""
    config = config or RefreshConfig()
    pid = product.product_id
    mine = [v for v in pool.variants if v.channel == channel]
    others = [v for v in pool.variants if v.channel != channel]
    checkers: dict[str, Checker] = {}
    kept: list[Variant] = []
    fate_of: dict[str, Fate] = {}
    retired: dict[str, str] = {}
    for v in mine:
        fate, why = fates.get((pid, v.variant_id), ("undecided", ""))
        checker = checkers.setdefault(
            v.language, Checker(product, channel, language=v.language, config=config.guardrails)
        )
        broken = checker.check(v.text).rules_broken()
        if broken:  # also copy the round never estimated (no decision offered it)
            fate, why = "unlawful", f"guardrail: {', '.join(sorted(broken))}"
        if fate in ("loser", "unlawful"):
            retired[v.variant_id] = why
        else:
            kept.append(v)
            fate_of[v.variant_id] = fate
    if not retired:
        return Refreshed(pid, channel, pool, None, fate_of, {}, [], "nothing retired")
    version = pool.pool_version + 1
    added: list[Variant] = []
    note: str | None = None
    want = len(mine) - len(kept)
    if want > 0:
        checker = checkers.setdefault(
            product.language,
            Checker(product, channel, language=product.language, config=config.guardrails),
        )
        try:
            # as many as the pool holds, so that enough remain after dropping echoes of kept copy
            report = generate(
                model,
                product,
                channel,
                max(len(mine), 1),
                seed=_seed(config.seed, pid, version),
                pool_version=version,
                config=SamplingConfig(oversample=config.oversample),
                guardrails=config.guardrails,
            )
            fresh = report.pool.variants
        except GeneratorError as exc:
            fresh, note = [], f"the promoted generator wrote no usable copy: {exc}"
        texts = [v.text for v in kept]
        taken = {v.variant_id for v in pool.variants}
        for v in fresh:
            if len(added) == want:
                break
            if v.variant_id in taken or not checker.check(v.text, others=texts).passed:
                continue
            added.append(v)
            texts.append(v.text)
            taken.add(v.variant_id)
        if len(added) < want and note is None:
            note = f"filled {len(added)} of {want} retired places"
    if not kept and not added:
        why = note or "nothing to replace the retired copy with"
        return Refreshed(pid, channel, pool, None, fate_of, retired, [], f"pool kept: {why}")
    after = VariantPool(
        product_id=pid,
        pool_version=version,
        generator_version=model.version,
        variants=[*others, *kept, *added],
    )
    return Refreshed(
        pid, channel, pool, after, fate_of, retired, [v.variant_id for v in added], note
    )


def refresh_pools(
    pools: Iterable[VariantPool],
    values: Sequence[VariantValue],
    products: Mapping[str, Product],
    channels: Mapping[str, Channel],
    model: CopyModel,
    config: RefreshConfig | None = None,
) -> list[Refreshed]:
    """Refresh the newest pool of every product in ``channels`` (the ones the round trained
    for, with the channel its examples were for)."""
    latest = latest_pools(pools)
    fates = judge(values, config)
    out = []
    for pid, channel in channels.items():
        if pid not in latest or pid not in products:
            continue
        done = refresh_pool(latest[pid], products[pid], channel, fates, model, config)
        log.info(
            "pool refresh %s: %d kept, %d retired, %d added%s",
            pid,
            len(done.kept),
            len(done.retired),
            len(done.added),
            f" ({done.note})" if done.note else "",
        )
        out.append(done)
    return out


# -- what rollback restores --------------------------------------------------------------------
def save_pools(path: Path, pools: Iterable[VariantPool]) -> None:
    path.write_text("".join(p.model_dump_json() + "\n" for p in pools), encoding="utf-8")


def load_pools(path: Path) -> list[VariantPool]:
    """The pools saved at ``path`` (none when the file is absent: no refresh happened)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [VariantPool.model_validate_json(line) for line in lines if line.strip()]


def restored(saved: Iterable[VariantPool], versions: Mapping[str, int]) -> list[VariantPool]:
    """``saved`` pools as new versions: their variants again, each numbered past the newest
    version (``versions``) so rankers take them (they ignore a pool no newer than theirs)."""
    out = []
    for pool in saved:
        newest = max(versions.get(pool.product_id, 0), pool.pool_version)
        out.append(pool.model_copy(update={"pool_version": newest + 1, "created_at": utc_now()}))
    return out

"""Initial pools: each product's ``pool_size`` checked variants from the real generator, cached
on disk per (catalog, channel, size, seed, generator version), since generation is the slow part
of a run and a rerun of the same scenario should not pay it twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError

import generator
from generator.errors import GeneratorError
from generator.guardrails import GuardrailConfig
from service.errors import SimulationError
from streams.schemas import Channel, Product, VariantPool

if TYPE_CHECKING:  # torch loads only when a pool is really generated
    from generator.model import CopyGenerator


class PoolSource(Protocol):
    """Anything that writes a product's initial pool of checked variants."""

    @property
    def version(self) -> str: ...

    def pool(
        self, product: Product, channel: Channel, n: int, seed: int, *, today: date
    ) -> VariantPool: ...


def _key(
    products: Sequence[Product], channel: str, n: int, seed: int, version: str, today: date
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([p.model_dump(mode="json") for p in products], sort_keys=True).encode())
    h.update(f"|{channel}|{n}|{seed}|{version}|{today.isoformat()}".encode())
    return h.hexdigest()[:20]


def build_pools(
    source: PoolSource,
    products: Sequence[Product],
    *,
    channel: Channel,
    n: int,
    seed: int,
    today: date,
    cache_dir: Path | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[VariantPool]:
    """One pool per product (seeded per product), written as of ``today`` (the guardrails judge
    festive copy against it); read from / written to ``cache_dir``."""
    path = None
    if cache_dir is not None:
        key = _key(products, channel, n, seed, source.version, today)
        path = cache_dir / f"pools-{key}.json"
        cached = _read(path, len(products))
        if cached is not None:
            if advance is not None:
                advance(len(products))
            return cached
    pools = []
    for i, product in enumerate(products):
        pool = source.pool(product, channel, n, seed * 100_003 + i, today=today)
        if pool.product_id != product.product_id:
            raise SimulationError(
                "pools", f"the generator answered {pool.product_id} for {product.product_id}"
            )
        pools.append(pool)
        if advance is not None:
            advance(1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps([p.model_dump(mode="json") for p in pools], ensure_ascii=False),
            encoding="utf-8",
        )
        tmp.replace(path)
    return pools


def _read(path: Path, count: int) -> list[VariantPool] | None:
    """The cached pools, or None when absent or unreadable (then they are generated again)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        pools = [VariantPool.model_validate(p) for p in raw]
    except (OSError, ValueError, TypeError, ValidationError):
        return None
    return pools if len(pools) == count else None


class GeneratorPools:
    """The real generator: ``generator.sampling.generate`` with a :class:`CopyGenerator` loaded
    on first use (a cached run never loads torch's model), the guardrails included. Keeps the
    sampling reports' counts for the summary (how many candidates passed the guardrails)."""

    def __init__(self, model: Path | None = None, *, device: str | None = None) -> None:
        self.model_path = model
        self.device = device
        self._gen: CopyGenerator | None = None
        self._version: str | None = None
        self.sampled = 0
        self.passed = 0

    @property
    def version(self) -> str:
        """The model folder's name and a digest of its files and of the generator's code (a
        change to sampling or the guardrails must not be served stale pools), computed without
        importing torch, which costs more than a cached run itself."""
        if self._version is None:
            folder = self._folder()
            code = Path(generator.__file__).resolve().parent
            h = hashlib.sha256()
            files = sorted(p for p in folder.iterdir() if p.is_file())
            files += sorted(code.rglob("*.py"))
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            self._version = f"{folder.name}-{h.hexdigest()[:10]}"
        return self._version

    @property
    def model_folder(self) -> Path:
        """The model folder the pools are written with (fine-tune rounds start from it)."""
        return self._folder()

    def _folder(self) -> Path:
        if self.model_path is not None:
            if not (self.model_path / "config.json").is_file():
                raise SimulationError(
                    "generator_model", f"{self.model_path} is not a model folder (no config.json)"
                )
            return self.model_path
        shipped = Path(generator.__file__).resolve().parent / "bootstrap_model"
        if (shipped / "config.json").is_file():
            return shipped
        from generator.model import default_model_path  # trains one if the build left it out

        return default_model_path()

    def _generator(self) -> CopyGenerator:
        if self._gen is None:
            from generator.model import CopyGenerator

            try:
                self._gen = CopyGenerator.from_path(self.model_path, device=self.device)
            except GeneratorError as exc:
                raise SimulationError("generator_model", str(exc)) from exc
        return self._gen

    def pool(
        self, product: Product, channel: Channel, n: int, seed: int, *, today: date
    ) -> VariantPool:
        from generator.sampling import generate

        rules = GuardrailConfig(today=today)
        try:
            report = generate(self._generator(), product, channel, n, seed=seed, guardrails=rules)
        except GeneratorError as exc:
            raise SimulationError("pools", f"{product.product_id}: {exc}") from exc
        self.sampled += report.sampled
        self.passed += report.passed
        return report.pool

"""Generation jobs: ``PUT /v1/products/{id}`` answers 202 at once and a worker thread writes the
product's pool (one generation per channel, merged into one pool, since the compacted variants
topic keeps one pool per product) and publishes it.

The PUT registers the product: its record (``data_dir/products``) is the product data the
service holds, and a job generates from the record as registered when it runs, so the
guardrails check the copy against the registered prices and brand (who may register is
``service.api.auth``'s concern).

The language model is loaded on the first job, not at import or start-up, so ``copyloop serve``
starts quickly and a ranker that never generates never loads torch. Job states are JSON files
under ``data_dir/jobs`` so any worker process of the service can answer ``GET /v1/jobs/{id}``;
after each job the files beyond the newest ``keep`` and those older than ``max_age_s`` are
removed (``COPYLOOP_JOBS_KEEP``, ``COPYLOOP_JOBS_MAX_AGE_S``), so the folder stays bounded."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import ValidationError

from service.errors import Busy, NotFound
from service.observe.work_metrics import record_generation
from streams.schemas import IDENTIFIER_RE, Channel, Product, Variant, VariantPool, utc_now
from streams.serde import describe

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed"]
#: ``(product, channel, n, seed) -> pool`` of checked variants for one channel
GenerateFn = Callable[[Product, Channel, int, int], VariantPool]


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    product_id: str
    state: JobState
    channels: list[str]
    n: int
    created_at: str = field(default_factory=lambda: utc_now().isoformat())
    finished_at: str | None = None
    pool_version: int | None = None
    variants: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stored(Protocol):
    @property
    def job_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=_Stored)


def _replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader sees the old file or the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class JsonStore(Generic[S]):
    """One JSON file per job, replaced atomically on each state change; ``load`` turns a file's
    object back into a status. :meth:`prune` keeps the newest ``keep`` files no older than
    ``max_age_s`` (None: no bound of that kind)."""

    def __init__(
        self,
        folder: Path,
        load: Callable[[dict[str, Any]], S],
        *,
        keep: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"`keep` must be >= 1, got {keep}")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError(f"`max_age_s` must be > 0, got {max_age_s}")
        self.folder = folder
        self._load = load
        self.keep = keep
        self.max_age_s = max_age_s
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def put(self, status: S) -> None:
        _replace_file(self._path(status.job_id), json.dumps(status.to_dict()))

    def prune(self, now: float | None = None) -> int:
        """Remove the files past the newest ``keep`` and those unchanged for ``max_age_s``
        (by modification time); returns how many went. A job still running is written again
        when it ends, so at worst its state is briefly unknown (404)."""
        if self.keep is None and self.max_age_s is None:
            return 0
        found: list[tuple[float, str]] = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    try:
                        found.append((entry.stat().st_mtime, entry.path))
                    except FileNotFoundError:  # removed meanwhile by another worker
                        continue
        found.sort(reverse=True)
        keep = self.keep if self.keep is not None else len(found)
        cutoff = -float("inf") if self.max_age_s is None else (now or time.time()) - self.max_age_s
        removed = 0
        for i, (mtime, path) in enumerate(found):
            if i >= keep or mtime < cutoff:
                try:
                    os.unlink(path)
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def get(self, job_id: str) -> S:
        try:
            uuid.UUID(job_id)  # also keeps the id from naming any other file
            data = json.loads(self._path(job_id).read_text())
        except (ValueError, FileNotFoundError):
            raise NotFound("job_id", f"no such job: {job_id!r}") from None
        return self._load(data)


class JobStore(JsonStore[JobStatus]):
    """The generation jobs' states."""

    def __init__(
        self, folder: Path, *, keep: int | None = None, max_age_s: float | None = None
    ) -> None:
        super().__init__(folder, lambda data: JobStatus(**data), keep=keep, max_age_s=max_age_s)


class ProductRecords:
    """The registered products, one JSON file each: the product data the service holds. A
    record is replaced only by a product write, which needs a write key (``service.api.auth``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, product_id: str) -> Path:
        if not IDENTIFIER_RE.match(product_id) or product_id.strip(".") == "":
            raise NotFound("product_id", f"is not a product id: {product_id!r}")
        return self.folder / f"{product_id}.json"

    def put(self, product: Product) -> None:
        _replace_file(self._path(product.product_id), product.model_dump_json())

    def get(self, product_id: str) -> Product | None:
        """The registered record, or None when the product was never registered here."""
        try:
            return Product.model_validate_json(self._path(product_id).read_bytes())
        except FileNotFoundError:
            return None


def model_generator(path: Path | str | None) -> GenerateFn:
    """A :data:`GenerateFn` over the copy generator at ``path`` (default: the bootstrap model),
    loaded lazily on the first call and kept."""
    lock = threading.Lock()
    loaded: dict[int, Any] = {}

    def generate(product: Product, channel: Channel, n: int, seed: int) -> VariantPool:
        with lock:
            if not loaded:
                from generator.model import CopyGenerator  # heavy: torch and transformers

                loaded[0] = CopyGenerator.from_path(path, device=None)
            model = loaded[0]
        from generator.sampling import generate

        report = generate(model, product, channel, n, seed=seed)
        record_generation(report.sampled, report.passed, report.seconds, report.rejected)
        pool: VariantPool = report.pool
        return pool

    return generate


def merge_pools(product_id: str, parts: Sequence[VariantPool], version: int) -> VariantPool:
    """One pool from per-channel pools; a variant id seen twice is prefixed with its channel."""
    seen: set[str] = set()
    variants: list[Variant] = []
    for part in parts:
        for v in part.variants:
            vid = v.variant_id if v.variant_id not in seen else f"{v.channel}:{v.variant_id}"
            seen.add(vid)
            variants.append(v if vid == v.variant_id else v.model_copy(update={"variant_id": vid}))
    return VariantPool(
        product_id=product_id,
        pool_version=version,
        generator_version=parts[0].generator_version,
        variants=variants,
    )


class GenerationJobs:
    """Runs jobs one at a time on a worker thread; at most ``max_queued`` wait."""

    def __init__(
        self,
        store: JobStore,
        generate: Callable[[], GenerateFn],
        publish: Callable[[VariantPool], None],
        current_version: Callable[[str], int | None],
        *,
        seed: int = 0,
        max_queued: int = 16,
        on_done: Callable[[JobState], None] | None = None,
        products: ProductRecords | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"`max_queued` must be >= 1, got {max_queued}")
        self.store = store
        #: default: ``products`` beside the jobs' folder (``data_dir/products``)
        self.products = products or ProductRecords(store.folder.parent / "products")
        self._generate = generate
        self._publish = publish
        self._current_version = current_version
        self._seed = seed
        self._max_queued = max_queued
        self._on_done = on_done
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copyloop-gen")
        self._lock = threading.Lock()
        self._waiting = 0
        self._versions: dict[str, int] = {}

    def submit(
        self, product: Product, channels: Sequence[Channel], n: int, seed: int | None = None
    ) -> JobStatus:
        with self._lock:
            if self._waiting >= self._max_queued:
                raise Busy("product_id", f"{self._waiting} generation jobs are queued; retry later")
            self._waiting += 1
        try:
            self.products.put(product)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        status = JobStatus(
            job_id=str(uuid.uuid4()),
            product_id=product.product_id,
            state="queued",
            channels=list(channels),
            n=n,
        )
        self.store.put(status)
        self._executor.submit(self._run, status, product, seed)
        return status

    def _job_seed(self, product_id: str, version: int, seed: int | None) -> int:
        if seed is not None:
            return seed
        digest = hashlib.blake2b(f"{self._seed}:{product_id}:{version}".encode(), digest_size=4)
        return int.from_bytes(digest.digest(), "little")

    def _run(self, status: JobStatus, product: Product, seed: int | None) -> None:
        with self._lock:
            self._waiting -= 1
        self.store.put(replace(status, state="running"))
        try:
            # the record as registered now: a later PUT of the same product replaced it
            product = self.products.get(product.product_id) or product
            pool = self._make_pool(status, product, seed)
            self._publish(pool)
            final = replace(
                status,
                state="succeeded",
                pool_version=pool.pool_version,
                variants=len(pool.variants),
            )
        except Exception as exc:
            # the job is the boundary: whatever the generator raises becomes the job's error
            log.warning("generation job %s failed: %s", status.job_id, exc)
            message = describe(exc) if isinstance(exc, ValidationError) else str(exc)
            final = replace(status, state="failed", error=f"{type(exc).__name__}: {message}")
        self.store.put(replace(final, finished_at=datetime.now().astimezone().isoformat()))
        try:
            self.store.prune()
        except OSError as exc:
            log.warning("pruning job files failed: %s", exc)
        if self._on_done is not None:
            self._on_done(final.state)

    def _make_pool(self, status: JobStatus, product: Product, seed: int | None) -> VariantPool:
        pid = product.product_id
        cached = self._current_version(pid) or 0
        version = max(cached, self._versions.get(pid, 0)) + 1
        job_seed = self._job_seed(pid, version, seed)
        generate = self._generate()
        parts: list[VariantPool] = []
        errors: list[str] = []
        for channel in status.channels:
            try:
                parts.append(generate(product, channel, status.n, job_seed))  # type: ignore[arg-type]
            except Exception as exc:
                errors.append(f"{channel}: {exc}")
        if not parts:
            raise RuntimeError("no channel produced variants: " + "; ".join(errors))
        pool = merge_pools(pid, parts, version)
        self._versions[pid] = version
        return pool

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

"""Fine-tune rounds as jobs: ``POST /v1/admin/finetune`` answers 202 with a job id at once and a
background thread runs the round (minutes on a CPU); the job's state and result are JSON files
under ``DATA_DIR/finetune-jobs`` so any worker of the service answers ``GET`` for it.

One round at a time per process (a second request while one runs is told to wait); across
processes the registry's round lock (``service.finetune.kafka_rounds``) makes rounds take turns."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from service.errors import Busy
from service.ranker.jobs import JsonStore
from streams.schemas import Product, utc_now

if TYPE_CHECKING:  # the round imports torch and TRL; a ranker pays for them only when it trains
    from service.finetune.rounds import RoundResult

log = logging.getLogger(__name__)
JobState = Literal["queued", "running", "succeeded", "failed"]
RunRound = Callable[[Sequence[Product] | None], "RoundResult"]


@dataclass(frozen=True)
class RoundJob:
    job_id: str
    state: JobState
    created_at: str = field(default_factory=lambda: utc_now().isoformat())
    finished_at: str | None = None
    result: dict[str, Any] | None = None  # RoundResult.to_dict() once it succeeded
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RoundJobs:
    """Submits rounds to a daemon thread (a service that stops mid-round leaves no version:
    the round removes a candidate it did not finish)."""

    def __init__(self, store: JsonStore[RoundJob], run: RunRound) -> None:
        self.store = store
        self._run = run
        self._lock = threading.Lock()
        self._active: str | None = None

    def submit(self, products: Sequence[Product] | None) -> RoundJob:
        with self._lock:
            if self._active is not None:
                raise Busy("finetune", f"round job {self._active} has not finished; poll it")
            job = RoundJob(job_id=str(uuid.uuid4()), state="queued")
            self._active = job.job_id
        self.store.put(job)
        threading.Thread(
            target=self._work, args=(job, products), name="copyloop-finetune", daemon=True
        ).start()
        return job

    def _work(self, job: RoundJob, products: Sequence[Product] | None) -> None:
        try:
            self.store.put(replace(job, state="running"))
            try:
                result = self._run(products)
                final = replace(job, state="succeeded", result=result.to_dict())
            except Exception as exc:
                # the job is the boundary: whatever the round raises becomes the job's error
                log.warning("fine-tune job %s failed: %s", job.job_id, exc)
                final = replace(job, state="failed", error=f"{type(exc).__name__}: {exc}")
            self.store.put(replace(final, finished_at=datetime.now().astimezone().isoformat()))
        finally:
            with self._lock:
                self._active = None

    def get(self, job_id: str) -> RoundJob:
        return self.store.get(job_id)


def round_jobs(folder: Path, run: RunRound) -> RoundJobs:
    """Jobs whose states live in ``folder``."""
    return RoundJobs(JsonStore(folder, lambda data: RoundJob(**data)), run)

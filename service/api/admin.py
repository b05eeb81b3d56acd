"""Admin endpoints; each needs ``Authorization: Bearer <admin key>`` (the admin key is also
taken as a write key for product registration, see ``service.api.auth``).

Fine-tuning runs as a job (``POST /v1/admin/finetune`` → 202, then poll
``GET /v1/admin/finetune/{job_id}``); ``POST /v1/admin/generator/rollback`` undoes the last
promotion at once. What they publish (the generator announcement, refreshed or restored pools)
goes through this worker's publisher, so it is spooled while Kafka is away, and the pools are
served here at once."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Header, Path, Request

from service.api.auth import AUTH_ERRORS
from service.api.bodies import (
    ErrorBody,
    FinetuneAccepted,
    FinetuneJobView,
    FinetuneRequest,
    ReloadResult,
    RollbackResult,
)
from service.api.deps import runtime
from service.finetune.round_jobs import RoundJobs, round_jobs
from service.ranker.keys import check_admin
from service.ranker.runtime import Runtime
from streams.schemas import Event, Product, VariantPool

if TYPE_CHECKING:
    from service.finetune.rounds import RoundResult

router = APIRouter(prefix="/v1/admin", tags=["admin"])
_JOBS_LOCK = threading.Lock()


def require_admin(
    rt: Annotated[Runtime, Depends(runtime)],
    authorization: Annotated[str | None, Header(max_length=1024)] = None,
) -> None:
    check_admin(authorization, rt.settings.admin_key)


ADMIN = [Depends(require_admin)]
ADMIN_ERRORS = AUTH_ERRORS


class RuntimeSink:
    """An ``EventSink`` over the runtime: pools are served here at once and published, other
    events published; ``flush`` waits for the publisher (what it cannot deliver stays spooled)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def add(self, topic: str, key: str | None, event: Event) -> None:
        if isinstance(event, VariantPool) and topic == self._rt.topics.variants:
            self._rt.publish_pool(event)
        else:
            self._rt.publisher.publish(topic, key, event)

    def flush(self, timeout_s: float | None = None) -> None:
        self._rt.publisher.flush(30.0 if timeout_s is None else timeout_s)


def finetune_jobs(request: Request, rt: Annotated[Runtime, Depends(runtime)]) -> RoundJobs:
    """This worker's round jobs, made on first use (the round's modules load torch and TRL)."""
    with _JOBS_LOCK:
        jobs: RoundJobs | None = getattr(request.app.state, "finetune_jobs", None)
        if jobs is None:
            sink = RuntimeSink(rt)

            def run(products: Sequence[Product] | None) -> RoundResult:
                from service.finetune.kafka_rounds import live_round

                return live_round(rt.settings, products, sink=sink)

            jobs = round_jobs(rt.settings.data_dir / "finetune-jobs", run)
            request.app.state.finetune_jobs = jobs
    return jobs


@router.post("/reload", response_model=ReloadResult, dependencies=ADMIN, responses=ADMIN_ERRORS)
def reload(rt: Annotated[Runtime, Depends(runtime)]) -> ReloadResult:
    """Re-read the latest announced bandit snapshot and drop the loaded generator (in this
    worker), e.g. after a snapshot file was restored by hand."""
    return ReloadResult(**rt.reload())


@router.post(
    "/finetune",
    status_code=202,
    response_model=FinetuneAccepted,
    dependencies=ADMIN,
    responses={**ADMIN_ERRORS, 422: {"model": ErrorBody}, 429: {"model": ErrorBody}},
)
def start_finetune(
    jobs: Annotated[RoundJobs, Depends(finetune_jobs)], body: FinetuneRequest | None = None
) -> FinetuneAccepted:
    """Start a fine-tune round on the logged feedback (data, training, gate; on promotion the
    pools of the products trained for are refreshed); poll the job for its result."""
    job = jobs.submit(body.products if body is not None else None)
    return FinetuneAccepted(job_id=job.job_id, status_url=f"/v1/admin/finetune/{job.job_id}")


@router.get(
    "/finetune/{job_id}",
    response_model=FinetuneJobView,
    dependencies=ADMIN,
    responses={**ADMIN_ERRORS, 404: {"model": ErrorBody}},
)
def finetune_job(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    jobs: Annotated[RoundJobs, Depends(finetune_jobs)],
) -> FinetuneJobView:
    job = jobs.get(job_id)
    result = job.result or {}
    return FinetuneJobView(
        job_id=job.job_id,
        state=job.state,
        created_at=job.created_at,
        finished_at=job.finished_at,
        status=result.get("status"),
        reason=result.get("reason"),
        version=result.get("version"),
        examples=result.get("examples") or {},
        verdict=result.get("verdict"),
        refresh=result.get("refresh") or [],
        error=job.error,
    )


@router.post(
    "/generator/rollback",
    response_model=RollbackResult,
    dependencies=ADMIN,
    responses={**ADMIN_ERRORS, 409: {"model": ErrorBody}},
)
def rollback(rt: Annotated[Runtime, Depends(runtime)]) -> RollbackResult:
    """Serve the previous generator version again and restore the pools its successor's
    promotion replaced (409 when nothing was promoted or a round is running)."""
    from service.finetune.kafka_rounds import live_rollback

    versions = {pid: v for pid in rt.pools.product_ids() if (v := rt.pools.version(pid))}
    return RollbackResult(
        **live_rollback(rt.settings, sink=RuntimeSink(rt), versions=versions).to_dict()
    )

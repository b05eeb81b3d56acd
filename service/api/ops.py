"""Operations: Prometheus metrics, liveness and readiness (the dashboard: ``service.dashboard``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service.api.deps import runtime
from service.ranker.metrics import CONTENT_TYPE
from service.ranker.runtime import Runtime
from service.ranker.spool import SpoolFull

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response)
def metrics(rt: Annotated[Runtime, Depends(runtime)]) -> Response:
    """Prometheus text (catalog: ``docs/metrics.md``); with several workers, the sum over all
    of them whichever one answers (``service.ranker.metrics``)."""
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "still catching up, or not accepting records (`reason`)"}},
)
async def readyz(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
    reason = rt.not_ready_reason
    spool = rt.publisher.spool
    body = {
        "ready": reason is None,
        "reason": reason,
        "pools": len(rt.pools),
        "policy_version": rt.policy.version,
        "broker_ok": rt.publisher.broker_ok,
        "pending": rt.publisher.pending,
        "spool_bytes": spool.size_bytes,
        "spool_max_bytes": spool.max_bytes,
        "spool_skipped_lines": spool.skipped,
    }
    headers = None if reason is None else {"Retry-After": str(SpoolFull.retry_after_s)}
    return JSONResponse(body, status_code=200 if reason is None else 503, headers=headers)

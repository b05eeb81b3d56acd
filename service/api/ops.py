"""Operations: Prometheus metrics, liveness, readiness and the dashboard page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service.api.dashboard import render
from service.api.deps import runtime
from service.ranker.metrics import CONTENT_TYPE
from service.ranker.runtime import Runtime

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response)
def metrics(rt: Annotated[Runtime, Depends(runtime)]) -> Response:
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "still catching up"}})
async def readyz(rt: Annotated[Runtime, Depends(runtime)]) -> JSONResponse:
    body = {
        "ready": rt.ready,
        "pools": len(rt.pools),
        "policy_version": rt.policy.version,
        "broker_ok": rt.publisher.broker_ok,
        "pending": rt.publisher.pending,
    }
    return JSONResponse(body, status_code=200 if rt.ready else 503)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(rt: Annotated[Runtime, Depends(runtime)]) -> HTMLResponse:
    page = render(rt.pools, rt.stats, policy_version=rt.policy.version, ready=rt.ready)
    return HTMLResponse(page)

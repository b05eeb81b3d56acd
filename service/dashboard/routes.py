"""``GET /dashboard`` (the page) and ``GET /dashboard/data.json`` (what it refreshes from)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from service.api.deps import runtime
from service.dashboard.dashboard_data import dashboard_data
from service.dashboard.page import render
from service.dashboard.stats_feed import LatestStats
from service.ranker.runtime import Runtime

router = APIRouter(tags=["dashboard"])


def latest_stats(request: Request) -> LatestStats:
    stats: LatestStats = request.app.state.loop_stats
    return stats


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    rt: Annotated[Runtime, Depends(runtime)],
    stats: Annotated[LatestStats, Depends(latest_stats)],
) -> HTMLResponse:
    return HTMLResponse(render(dashboard_data(rt, stats.latest)))


@router.get("/dashboard/data.json")
def data(
    rt: Annotated[Runtime, Depends(runtime)],
    stats: Annotated[LatestStats, Depends(latest_stats)],
) -> dict[str, Any]:
    return dashboard_data(rt, stats.latest)

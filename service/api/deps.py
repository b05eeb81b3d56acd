"""Shared dependencies of the routers."""

from __future__ import annotations

from fastapi import Request

from service.ranker.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    """The process's :class:`Runtime`, set on the app by its lifespan (async: a plain
    function would be run on a worker thread, a thread hop per request)."""
    found: Runtime = request.app.state.runtime
    return found

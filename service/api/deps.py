"""Shared dependencies of the routers."""

from __future__ import annotations

from fastapi import Request

from service.runtime import Runtime


def runtime(request: Request) -> Runtime:
    """The process's :class:`Runtime`, set on the app by its lifespan."""
    found: Runtime = request.app.state.runtime
    return found

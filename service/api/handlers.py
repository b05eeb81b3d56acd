"""One place where errors become HTTP answers.

Every domain error (``ServiceError``, a ``FeatureError`` from feature encoding, a validation
error of a body, path or query) becomes a 4xx whose body names the field:
``{"detail": "field `body.user.age`: ...", "field": "body.user.age"}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit.errors import FeatureError
from service.errors import ServiceError
from service.ranker.metrics import Metrics

log = logging.getLogger(__name__)


def _answer(
    status: int,
    detail: str,
    field: str | None,
    metrics: Metrics | None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    if metrics is not None:
        metrics.client_errors.labels(str(status)).inc()
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    first: str | None = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
        first = first or loc
        msg = str(err.get("msg", "invalid"))
        parts.append(f"field `{loc}`: {msg}")
    return "; ".join(parts[:10]) or "invalid request", first


def install_error_handlers(app: FastAPI, metrics: Metrics | None = None) -> None:
    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        exc = cast(ServiceError, exc)
        # an error may carry its own headers (a 429's ``Retry-After``)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return _answer(exc.status, str(exc), exc.field, metrics, headers or None)

    async def feature_error(request: Request, exc: Exception) -> JSONResponse:
        exc = cast(FeatureError, exc)
        return _answer(422, str(exc), exc.field, metrics)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        exc = cast(RequestValidationError, exc)
        detail, field = _validation_detail(exc)
        return _answer(422, detail, field, metrics)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        exc = cast(StarletteHTTPException, exc)
        field = "body" if exc.status_code == 413 else None
        return _answer(exc.status_code, str(exc.detail), field, metrics, exc.headers)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(FeatureError, feature_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


class BodyLimit:
    """413 for a body over ``max_bytes``: at once by its Content-Length, or while a chunked
    body streams in, so a large upload is never read into memory whole. (Starlette's own
    limit answers in plain text; this one answers like every other error, naming ``body``.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"`max_bytes` must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            detail = self._detail() if status == 413 else "`content-length` must be a number"
            await JSONResponse({"detail": detail, "field": "body"}, status)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # raised inside the route's body read, so the error handlers answer it
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)

    def _detail(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes"

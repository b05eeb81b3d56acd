"""The rank hot path as a thin ASGI layer in front of FastAPI.

``POST /v1/rank`` is most of the service's traffic, and FastAPI's per-request machinery
(dependency solving, parsing JSON in Python then validating, re-validating the response) cost
about as much CPU as choosing the variant itself. This layer answers that one route directly:
the body is parsed and validated in one step by pydantic-core (``model_validate_json``), the
runtime ranks, and the answer is written as bytes. The FastAPI route in ``service.api.rank``
stays as the documented operation (OpenAPI) and behaves the same; the tests drive both.

Errors answer exactly as the app's handlers do: 4xx ``{"detail", "field"}`` naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit.errors import FeatureError
from service.api.auth import keys_of, scope_header
from service.api.bodies import RankRequest, RankResponse
from service.api.rank import answer_json, explanation
from service.errors import ServiceError
from service.ranker.spool import SpoolFull

PATH = "/v1/rank"


def _validation(exc: ValidationError) -> tuple[str, str | None]:
    """Like FastAPI's: locations start with ``body``."""
    parts = []
    first: str | None = None
    for err in exc.errors(include_url=False):
        loc = ".".join(["body", *(str(p) for p in err["loc"])])
        first = first or loc
        parts.append(f"field `{loc}`: {err['msg']}")
    return "; ".join(parts[:10]) or "invalid request", first


class FastRank:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
        if runtime is None:  # not started (or an app without a runtime): FastAPI answers
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        try:
            denied = self._check_key(scope, runtime)
            body = b"" if denied is not None else await _read(receive)
        except HTTPException as exc:  # the body limit, while the body streamed in
            status, payload = _error(runtime.metrics, exc.status_code, str(exc.detail), "body")
        else:
            if denied is not None:
                status, payload = _error(runtime.metrics, denied.status, str(denied), denied.field)
                if denied.status == 401:
                    headers.append((b"www-authenticate", b"Bearer"))
            else:
                status, payload = await self._answer(runtime, body)
                if status == 503:  # the publisher refuses work for now (SpoolFull)
                    headers.append((b"retry-after", str(SpoolFull.retry_after_s).encode()))
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _check_key(scope: Scope, runtime: Any) -> ServiceError | None:
        """The route's API-key check (``service.api.auth``) on the raw headers: the error to
        answer, or None to go on."""
        keys = keys_of(scope["app"].state, runtime.settings)
        if not keys.api:
            return None
        headers = scope["headers"]
        try:
            keys.check_api(
                scope_header(headers, b"authorization"), scope_header(headers, b"x-api-key")
            )
        except ServiceError as exc:
            return exc
        return None

    @staticmethod
    async def _answer(runtime: Any, body: bytes) -> tuple[int, bytes]:
        metrics = runtime.metrics
        started = time.perf_counter()
        try:
            request = RankRequest.model_validate_json(body or b"null")
            ranked = runtime.rank(
                request.product_id,
                request.channel,
                request.user,
                request.context,
                request.language,
            )
            if ranked.durable is not None:  # COPYLOOP_DURABLE_ACK: on Kafka or on disk first
                await runtime.durable(ranked.durable)
        except ValidationError as exc:
            detail, field = _validation(exc)
            return _error(metrics, 422, detail, field)
        except FeatureError as exc:
            metrics.rank_rejected.inc()
            return _error(metrics, 422, str(exc), exc.field)
        except ServiceError as exc:
            metrics.rank_rejected.inc()
            return _error(metrics, exc.status, str(exc), exc.field)
        metrics.rank_latency.observe(time.perf_counter() - started)
        metrics.rank_ok.inc()
        d = ranked.decision
        answer = RankResponse(
            event_id=d.event_id,
            product_id=d.product_id,
            variant_id=ranked.variant_id,
            text=ranked.text,
            pscore=d.pscore,
            policy_version=d.policy_version,
            pool_version=d.pool_version,
            explain=explanation(runtime, d) if request.explain else None,
        )
        return 200, answer_json(answer).encode("utf-8")


def _error(metrics: Any, status: int, detail: str, field: str | None) -> tuple[int, bytes]:
    metrics.client_errors.labels(str(status)).inc()
    return status, json.dumps({"detail": detail, "field": field}).encode("utf-8")


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            return b"".join(chunks)

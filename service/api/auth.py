"""Who may call what (docs/security.md).

- Product registration (``PUT /v1/products/{id}``) needs the write key (``COPYLOOP_WRITE_KEY``)
  or the admin key as ``Authorization: Bearer <key>``; with neither configured product writes
  are refused (403) unless ``COPYLOOP_OPEN_PRODUCT_WRITES`` opens them for local use. A product
  record decides which prices and brands its copy may state, so whoever can write it can put
  claims in front of shoppers.
- ``/v1/rank`` and ``/v1/feedback`` need one of ``COPYLOOP_API_KEYS`` when that is set, as
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``: feedback steers learning.
- Generation jobs are CPU-heavy, so each key (or, with open writes, each client address) may
  start ``COPYLOOP_JOBS_PER_MINUTE`` of them per minute per worker (a token bucket); past it
  the answer is 429 with ``Retry-After``.

Missing credentials are 401 (with ``WWW-Authenticate: Bearer``), wrong ones 403. Keys are held
as SHA-256 digests and a presented key is compared by its digest, so neither a log of this
object nor the time a comparison takes tells anything about a key."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import SecretStr

from service.api.bodies import ErrorBody
from service.api.deps import runtime
from service.errors import Busy, Forbidden, Unauthorized
from service.ranker.runtime import Runtime
from service.settings import Settings

_HEADER_MAX = 1024
#: the answers a route guarded here may give, for its OpenAPI description
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
}


class RateLimited(Busy):
    """429 with the seconds to wait, which the error handlers send as ``Retry-After``."""

    def __init__(self, field: str | None, message: str, retry_after_s: float) -> None:
        super().__init__(field, message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


class TokenBuckets:
    """One token bucket per caller: ``per_minute`` tokens, refilled evenly over a minute, so a
    caller may start a minute's worth at once and then one every ``60 / per_minute`` s. At most
    ``max_callers`` buckets are kept; when full, the full (idle) ones are dropped first."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"`per_minute` must be >= 1, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, as of)
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is there (none taken)."""
        now = self._clock()
        with self._lock:
            tokens, since = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - since) * self.rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                return (1.0 - tokens) / self.rate
            if caller not in self._buckets and len(self._buckets) >= self._max:
                self._forget_idle(now)
            self._buckets[caller] = (tokens - 1.0, now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        full = [
            c for c, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.capacity
        ]
        for caller in full or list(self._buckets)[: self._max // 10 or 1]:
            del self._buckets[caller]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _digests(keys: Iterable[SecretStr | None]) -> frozenset[bytes]:
    return frozenset(_digest(v) for k in keys if k is not None and (v := k.get_secret_value()))


def _bearer(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>``; None when the header is absent."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authorization", "must be `Bearer <key>`")
    return token.strip()


class Keys:
    """The keys of one app, digested once from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.write = _digests((settings.write_key, settings.admin_key))
        listed = settings.api_keys.get_secret_value().split(",") if settings.api_keys else []
        self.api = frozenset(_digest(k.strip()) for k in listed if k.strip())
        self.open_writes = settings.open_product_writes
        self.jobs = TokenBuckets(settings.jobs_per_minute)

    def check_api(self, authorization: str | None, x_api_key: str | None) -> None:
        """Pass when no API keys are configured or one of them is presented."""
        if not self.api:
            return
        token = x_api_key.strip() if x_api_key else _bearer(authorization)
        if not token:
            raise Unauthorized(
                "authorization", "is missing: send `Authorization: Bearer <key>` or `X-API-Key`"
            )
        if _digest(token) not in self.api:
            raise Forbidden("authorization", "the API key is wrong")

    def check_write(self, authorization: str | None, client: str) -> str:
        """The caller a product write is counted against: the key's digest (a prefix), or the
        client's address when writes are open. Raises unless the caller may write."""
        if self.open_writes:
            return f"open:{client}"
        if not self.write:
            raise Forbidden(
                "authorization",
                "product writes are disabled: no write key is configured (set "
                "COPYLOOP_WRITE_KEY, or COPYLOOP_OPEN_PRODUCT_WRITES=true for local use)",
            )
        token = _bearer(authorization)
        if token is None:
            raise Unauthorized("authorization", "is missing: send `Authorization: Bearer <key>`")
        digest = _digest(token)
        if digest not in self.write:
            raise Forbidden("authorization", "the write key is wrong")
        return f"key:{digest.hex()[:16]}"

    def take_job(self, caller: str) -> None:
        """Count one generation job against ``caller``; 429 with ``Retry-After`` past its rate."""
        wait = self.jobs.take(caller)
        if wait > 0:
            raise RateLimited(
                "authorization",
                f"starts at most {self.settings.jobs_per_minute} generation jobs per minute; "
                f"retry in {math.ceil(wait)} s",
                wait,
            )


def keys_of(state: Any, settings: Settings) -> Keys:
    """The app's :class:`Keys`, made on first use (``state`` is the app's ``state``)."""
    found: Keys | None = getattr(state, "keys", None)
    if found is None or found.settings is not settings:
        found = Keys(settings)
        state.keys = found
    return found


def scope_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first header ``name`` (lower case) of an ASGI scope, decoded; None when absent."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")[:_HEADER_MAX]
    return None


async def require_api_key(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    authorization: Annotated[str | None, Header(max_length=_HEADER_MAX)] = None,
    x_api_key: Annotated[str | None, Header(max_length=_HEADER_MAX)] = None,
) -> None:
    """For rank and feedback: one of ``COPYLOOP_API_KEYS`` when any is configured."""
    keys_of(request.app.state, rt.settings).check_api(authorization, x_api_key)


async def require_write_key(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    authorization: Annotated[str | None, Header(max_length=_HEADER_MAX)] = None,
) -> str:
    """For product writes: the write or admin key (or open writes); returns the caller."""
    client = request.client.host if request.client else "unknown"
    return keys_of(request.app.state, rt.settings).check_write(authorization, client)

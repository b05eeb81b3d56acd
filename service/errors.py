"""The service's exception root. Every domain error names the field at fault and carries its
HTTP status, so one handler in ``service.api.handlers`` turns any of them into a 4xx body."""

from __future__ import annotations


class ServiceError(Exception):
    """Root of the errors raised by ``service``. ``field`` names the offending input, as
    ``product_id`` or ``body.user.age``; ``status`` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"`{field}` {message}" if field else message)
        self.field = field
        self.message = message


class BadRequest(ServiceError):
    status = 422


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class TooLarge(ServiceError):
    status = 413


class Busy(ServiceError):
    """Too much queued work (a 4xx the client can retry, never a 5xx)."""

    status = 429

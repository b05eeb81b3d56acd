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


class Busy(ServiceError):
    """Too much queued work (a 4xx the client can retry, never a 5xx)."""

    status = 429


class SimulationError(ServiceError):
    """The simulator could not run: a bad scenario, no pool for a product, a broken loop."""


class ScenarioError(SimulationError):
    """A scenario file that cannot be read or does not validate; ``field`` names the culprit
    (``segments.0.weight``), so the command line can print one actionable line."""


class ReplayError(ServiceError):
    """A log that cannot be replayed: missing, malformed, empty, or an unusable policy."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(field, message)


class DemoError(ServiceError):
    """The demo could not start or drive one of its parts; the message says which."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class SpoolError(ServiceError):
    """The spool folder is unusable (unreadable, or corrupt beyond a torn last line)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(None, message)

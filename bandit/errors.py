"""One exception root for the decision side; foreign errors (VW's, the file system's) are wrapped
and kept as ``__cause__``."""

from __future__ import annotations


class BanditError(Exception):
    """Root of the errors raised by ``bandit``."""


class FeatureError(BanditError, ValueError):
    """Bad shopper, context or variant input. ``field`` names the offending field, as
    ``user.age`` or ``context.hour``, so an HTTP handler can answer 4xx with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"`{field}` {message}")
        self.field = field
        self.message = message


class ConfigError(BanditError, ValueError):
    """An invalid policy, reward or learner setting."""


class ModelError(BanditError):
    """A model refused an example or could not be saved or loaded."""


class CheckpointError(BanditError):
    """A checkpoint or snapshot is missing, torn or of another format."""


def check(ok: bool, name: str, rule: str, value: object) -> None:
    """Raise ``ConfigError("`name` must be rule, got value")`` unless ``ok``: one wording for
    every setting a config dataclass validates."""
    if not ok:
        raise ConfigError(f"`{name}` must be {rule}, got {value!r}")

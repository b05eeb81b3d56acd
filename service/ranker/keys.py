"""Keys: the keyed hash of user ids and free-text context, and the admin bearer key.

The hash key comes from ``COPYLOOP_HASH_KEY`` or, when unset, from a random key created once
under ``data_dir`` (mode 0600) and reused, so hashed ids stay stable across restarts and every
worker of one deployment agrees. There is never a fixed default: a known key would let anyone
who sees a decision log test guesses of user ids against it. A key made under ``data_dir`` is
one host's: in a deployment of several hosts each would hash one shopper differently, silently
splitting what the bandit learns, so there a missing ``COPYLOOP_HASH_KEY`` stops the start
unless ``COPYLOOP_ALLOW_LOCAL_HASH_KEY`` accepts it (:func:`hash_key_for`).

The free-text fields of a request (``context.category``, ``context.placement``,
``user.recent_categories``) could carry anything a caller puts there, a user id or a name
included; :class:`ContextText` turns them into a keyed hash (the default) or a configured
vocabulary before they are encoded, so no decision, checkpoint or snapshot holds them verbatim."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bandit.features import hash_user
from service.errors import Forbidden, ServiceError, Unauthorized
from service.settings import Settings

HASH_KEY_FILE = "hash.key"
_KEY_BYTES = 32


def load_hash_key(given: SecretStr | None, data_dir: Path) -> bytes:
    """The configured key, or the one stored under ``data_dir`` (created on first use)."""
    if given is not None:
        value = given.get_secret_value()
        if not value:
            raise ServiceError("hash_key", "must not be empty")
        return value.encode("utf-8")
    path = data_dir / HASH_KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(_KEY_BYTES).encode("ascii")
    try:
        # O_EXCL: when several workers start at once, exactly one creates the key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _read_key(path: Path) -> bytes:
    for _ in range(50):  # another worker may be between create and write
        key = path.read_bytes().strip()
        if key:
            return key
        time.sleep(0.01)
    raise ServiceError("hash_key", f"the key file {path} is empty")


def check_admin(authorization: str | None, admin_key: SecretStr | None) -> None:
    """Raise unless ``authorization`` is ``Bearer <admin key>``. With no admin key configured
    the admin endpoints are disabled (403 for everyone)."""
    if admin_key is None or not admin_key.get_secret_value():
        raise Forbidden("authorization", "admin endpoints are disabled (no admin key configured)")
    if not authorization:
        raise Unauthorized("authorization", "is missing: send `Authorization: Bearer <key>`")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authorization", "must be `Bearer <key>`")
    expected = admin_key.get_secret_value().encode("utf-8")
    # compare_digest: the time taken does not reveal how many leading bytes matched
    if not hmac.compare_digest(token.strip().encode("utf-8"), expected):
        raise Forbidden("authorization", "the admin key is wrong")


def _loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_multi_host(settings: Settings) -> bool:
    """``COPYLOOP_MULTI_HOST`` when set; else whether the Kafka bootstrap names a host other
    than loopback (a broker on another machine means rankers may run on several)."""
    if settings.multi_host is not None:
        return settings.multi_host
    hosts = [a.strip().rpartition(":")[0] for a in settings.kafka_bootstrap.split(",")]
    return not all(_loopback(h) for h in hosts if h)


def hash_key_for(settings: Settings) -> bytes:
    """The hash key of this deployment (see the module's docstring); raises naming
    ``hash_key`` when a multi-host deployment has none configured."""
    if settings.hash_key is None and is_multi_host(settings) and not settings.allow_local_hash_key:
        raise ServiceError(
            "hash_key",
            "is required when several hosts serve one deployment (Kafka at "
            f"{settings.kafka_bootstrap}): set COPYLOOP_HASH_KEY to the same secret on every "
            "host, or COPYLOOP_ALLOW_LOCAL_HASH_KEY=true to use a key made on this host, or "
            "COPYLOOP_MULTI_HOST=false for a single host",
        )
    return load_hash_key(settings.hash_key, settings.data_dir)


#: the free-text fields of a request's context (``user.recent_categories`` is the list one)
TEXT_FIELDS = ("category", "placement")
#: the longest free-text value kept (the feature encoder's bound); longer ones it rejects
MAX_TEXT = 64
OTHER = "other"
_SEEN_MAX = 65_536


class ContextText:
    """What the free-text fields become in a decision (``COPYLOOP_CONTEXT_TEXT``):

    - ``hash`` (default): ``h`` and 16 hex digits of an HMAC-SHA256 of the value (stripped,
      lower case) under the hash key, so equal values still make one feature and the bandit
      learns as before, but the value itself is never stored;
    - ``vocabulary``: the value when ``COPYLOOP_CONTEXT_VOCABULARY`` lists it, else ``other``.

    Values that are not non-empty strings of at most :data:`MAX_TEXT` characters pass
    through unchanged, for the feature encoder to reject naming the field."""

    def __init__(self, mode: str, vocabulary: str, hash_key: bytes) -> None:
        if mode not in ("hash", "vocabulary"):
            raise ServiceError("context_text", f"must be hash or vocabulary, got {mode!r}")
        words = {w.strip().lower() for w in vocabulary.split(",") if w.strip()}
        if mode == "vocabulary" and not words:
            raise ServiceError(
                "context_vocabulary", "must list at least one value when context_text=vocabulary"
            )
        self.mode = mode
        self.vocabulary = frozenset(words)
        self._key = hash_key
        self._seen: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, hash_key: bytes) -> ContextText:
        return cls(settings.context_text, settings.context_vocabulary, hash_key)

    def value(self, raw: Any) -> Any:
        if type(raw) is not str:
            return raw
        found = self._seen.get(raw)
        if found is not None:  # the common case: a handful of categories and placements
            return found
        text = raw.strip().lower()
        if not text or len(raw) > MAX_TEXT:
            return raw
        if self.mode == "vocabulary":
            token = text if text in self.vocabulary else OTHER
        else:
            token = "h" + hash_user(f"ctx:{text}", self._key)
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()  # bounded; refilled by what is common
        self._seen[raw] = token
        return token

    def __call__(
        self, user: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """``user`` and ``context`` with their free-text values replaced (copies only when
        there is something to replace)."""
        if any(context.get(name) is not None for name in TEXT_FIELDS):
            context = dict(context)
            for name in TEXT_FIELDS:
                if context.get(name) is not None:
                    context[name] = self.value(context[name])
        if (cats := user.get("recent_categories")) is not None and type(cats) is list:
            user = {**user, "recent_categories": [self.value(c) for c in cats]}
        return user, context

"""Keys: the keyed hash of user ids and the admin bearer key.

The hash key comes from ``COPYLOOP_HASH_KEY`` or, when unset, from a random key created once
under ``data_dir`` (mode 0600) and reused, so hashed ids stay stable across restarts and every
worker of one deployment agrees. There is never a fixed default: a known key would let anyone
who sees a decision log test guesses of user ids against it."""

from __future__ import annotations

import hmac
import os
import secrets
import time
from pathlib import Path

from pydantic import SecretStr

from service.errors import Forbidden, ServiceError, Unauthorized

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

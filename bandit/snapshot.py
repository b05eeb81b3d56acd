"""Model snapshots: the files the learner announces on ``copyloop.models``, and the
:class:`PolicyHolder` a ranker keeps its current policy in.

A hot swap replaces one reference under a lock; a request that already took the old policy
finishes with it (Python keeps it alive until then), so no request is dropped or sees a half
loaded model.

The learner names the snapshot rankers should serve in ``serving.json`` beside the snapshots:
with the promotion gate (``bandit.promotion``) that is not always the newest one, and a restart
re-announces it. Pruning never removes it, so a ranker that starts later can still load it."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse
from uuid import UUID

from bandit.checkpoint import write_atomic
from bandit.errors import BanditError, CheckpointError
from bandit.policy import Actions, Policy
from streams.schemas import Channel, Decision, FeatureValue, ModelAnnouncement

SUFFIX = ".policy"
SERVING = "serving.json"


def snapshot_path(directory: Path, version: str) -> Path:
    return directory / f"{version}{SUFFIX}"


def write_snapshot(policy: Policy, directory: Path, *, keep: int = 10) -> Path:
    """Write ``policy`` as ``directory/<version>.policy`` and keep only the newest ``keep``,
    besides the one ``serving.json`` names."""
    if keep < 1:
        raise BanditError(f"`keep` must be >= 1, got {keep}")
    path = snapshot_path(directory, policy.version)
    write_atomic(path, policy.to_bytes())
    kept = {path}
    serving = read_serving(directory)
    if serving is not None:
        kept.add(snapshot_path(directory, serving))
    snapshots = sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
    for old in snapshots[:-keep]:
        if old not in kept:
            old.unlink(missing_ok=True)
    return path


def write_serving(directory: Path, version: str) -> None:
    """Record ``version`` as the snapshot rankers should serve (atomically)."""
    write_atomic(directory / SERVING, json.dumps({"version": version}).encode("utf-8"))


def read_serving(directory: Path) -> str | None:
    """The version ``serving.json`` names (None: no record, as in a data dir never announced)."""
    path = directory / SERVING
    try:
        version = json.loads(path.read_bytes())["version"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"reading {path} failed: {exc}") from exc
    if not isinstance(version, str) or not version:
        raise CheckpointError(f"{path}: `version` must be a non-empty string, got {version!r}")
    return version


def snapshot_file(uri: str) -> Path:
    """The local path of a snapshot ``uri`` (``file://...`` or a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a bare or Windows-style path
        return Path(uri)
    raise CheckpointError(f"`uri` scheme {parsed.scheme!r} is not supported (file only)")


def load_snapshot(uri: str, *, seed: int | None = None) -> Policy:
    path = snapshot_file(uri)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"reading snapshot {path} failed: {exc}") from exc
    return Policy.from_bytes(data, seed=seed)


class PolicyHolder:
    """The ranker's current policy, swapped atomically when a new snapshot is announced."""

    def __init__(self, policy: Policy | None = None, *, seed: int | None = None) -> None:
        self._policy = policy if policy is not None else Policy(seed=seed or 0)
        self._seed = seed
        self._lock = threading.Lock()
        self._announced_at: datetime | None = None
        self.swaps = 0

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def version(self) -> str:
        return self._policy.version

    def swap(self, policy: Policy) -> Policy:
        """Make ``policy`` current; returns the one it replaced."""
        with self._lock:
            old, self._policy = self._policy, policy
            self.swaps += 1
        return old

    def load(self, announcement: ModelAnnouncement) -> bool:
        """Load and swap to the announced snapshot. Returns False (and keeps the current model)
        for generator models, the version already held, or an announcement older than the
        last one loaded."""
        if announcement.kind != "bandit" or announcement.version == self._policy.version:
            return False
        if self._announced_at is not None and announcement.created_at < self._announced_at:
            return False
        policy = load_snapshot(announcement.uri, seed=self._seed)  # outside the lock: slow
        with self._lock:
            if self._announced_at is not None and announcement.created_at < self._announced_at:
                return False
            self._policy = policy
            self._announced_at = announcement.created_at
            self.swaps += 1
        return True

    def choose(
        self,
        context: Mapping[str, FeatureValue],
        actions: Actions,
        *,
        event_id: UUID,
        product_id: str,
        channel: Channel,
        pool_version: int,
        ts: datetime | None = None,
    ) -> Decision:
        policy = self._policy  # one read: the whole request uses one model
        return policy.choose(
            context,
            actions,
            event_id=event_id,
            product_id=product_id,
            channel=channel,
            pool_version=pool_version,
            ts=ts,
        )

from __future__ import annotations

import random
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from bandit.errors import CheckpointError
from bandit.policy import Policy
from bandit.snapshot import PolicyHolder, load_snapshot, snapshot_file, write_snapshot
from streams.schemas import ModelAnnouncement, utc_now

from . import synth


def _trained(version: str, favour: int, n: int = 80) -> Policy:
    policy = Policy(seed=1)
    ctx = {"u_age": "18-24"}
    for i in range(n):
        d = policy.choose(
            ctx,
            synth.ACTIONS,
            event_id=uuid.UUID(int=i),
            product_id="p1",
            channel="ad_headline",
            pool_version=1,
        )
        policy.learn(d, 1.0 if d.action == favour else 0.0)
    policy.version = version
    return policy


def _announce(path: Path, version: str, **kw: object) -> ModelAnnouncement:
    return ModelAnnouncement(kind="bandit", version=version, uri=path.resolve().as_uri(), **kw)  # type: ignore[arg-type]


def test_write_and_load_snapshot(tmp_path: Path) -> None:
    policy = _trained("v-1", favour=1)
    path = write_snapshot(policy, tmp_path)
    assert path == tmp_path / "v-1.policy"
    loaded = load_snapshot(path.resolve().as_uri())
    assert loaded.version == "v-1" and loaded.learned == 80
    assert snapshot_file(str(path)) == path


def test_old_snapshots_are_pruned(tmp_path: Path) -> None:
    policy = Policy()
    for i in range(5):
        policy.version = f"v-{i}"
        write_snapshot(policy, tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v-3.policy", "v-4.policy"]


def test_unsupported_uri() -> None:
    with pytest.raises(CheckpointError, match="scheme"):
        load_snapshot("s3://bucket/model.policy")


def test_holder_swaps_on_announcement_and_ignores_stale_ones(tmp_path: Path) -> None:
    holder = PolicyHolder()
    first = write_snapshot(_trained("v-1", favour=1), tmp_path)
    second = write_snapshot(_trained("v-2", favour=2), tmp_path)
    now = utc_now()
    assert holder.load(_announce(first, "v-1", created_at=now))
    assert holder.version == "v-1"
    assert not holder.load(_announce(first, "v-1", created_at=now))  # already held
    assert not holder.load(ModelAnnouncement(kind="generator", version="g-1", uri=first.as_uri()))
    assert not holder.load(_announce(second, "v-2", created_at=now - timedelta(seconds=5)))
    assert holder.load(_announce(second, "v-2", created_at=now + timedelta(seconds=1)))
    assert holder.version == "v-2"


def test_hot_swap_drops_no_request(tmp_path: Path) -> None:
    """Rankers keep choosing on several threads while the model is swapped underneath."""
    paths = [write_snapshot(_trained(f"v-{k}", favour=k % 4, n=30), tmp_path) for k in range(6)]
    holder = PolicyHolder()
    errors: list[BaseException] = []
    seen_versions: set[str] = set()
    served = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def rank(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                s = synth.shopper(rng, rng.randrange(1000))
                d = holder.choose(
                    synth.context(s),
                    synth.ACTIONS,
                    event_id=uuid.uuid4(),
                    product_id="p1",
                    channel="ad_headline",
                    pool_version=1,
                )
                assert abs(sum(d.action_dist) - 1) < 1e-6
                with lock:
                    served[0] += 1
                    seen_versions.add(d.policy_version)
            except BaseException as exc:  # collected and re-raised by the test thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    start = utc_now()
    for k, path in enumerate(paths):
        assert holder.load(_announce(path, f"v-{k}", created_at=start + timedelta(seconds=k)))
        before = served[0]
        while served[0] < before + 20 and not errors:
            threading.Event().wait(0.001)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert holder.version == "v-5" and holder.swaps == 6
    assert {f"v-{k}" for k in range(6)} <= seen_versions

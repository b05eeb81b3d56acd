from __future__ import annotations

from pathlib import Path

import pytest

from bandit.checkpoint import Checkpoint, peek_learned, write_atomic
from bandit.errors import CheckpointError


def _ck(**kw: object) -> Checkpoint:
    values: dict = {
        "policy": b"\x00model-bytes\xff",
        "offsets": {("t.decisions", 0): 17, ("t.feedback", 1): 4},
        "joiner": b'{"format":1}',
        "learned": 12,
        "seq": 3,
        "lineage": "abcd1234",
        "version": "abcd1234-000003",
    }
    values.update(kw)
    return Checkpoint(**values)


def test_round_trip(tmp_path: Path) -> None:
    ck = _ck()
    path = tmp_path / "c" / "learner.ckpt"
    ck.save(path)
    assert Checkpoint.load(path) == ck
    assert peek_learned(path) == 12
    assert [p.name for p in path.parent.iterdir()] == ["learner.ckpt"]  # no temp file left


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert Checkpoint.load(tmp_path / "none.ckpt") is None
    assert peek_learned(tmp_path / "none.ckpt") is None


@pytest.mark.parametrize("cut", [5, 40, -3])
def test_torn_or_foreign_files_are_refused(tmp_path: Path, cut: int) -> None:
    data = _ck().to_bytes()
    with pytest.raises(CheckpointError):
        Checkpoint.from_bytes(data[:cut])


def test_flipped_byte_fails_the_checksum() -> None:
    data = bytearray(_ck().to_bytes())
    data[-5] ^= 0xFF
    with pytest.raises(CheckpointError, match="checksum"):
        Checkpoint.from_bytes(bytes(data))


def test_write_atomic_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"

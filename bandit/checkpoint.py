"""The learner's checkpoint: the model, the consumer offsets it reflects, the joiner state and the
learned count, in one file written atomically (temp file, fsync, rename, fsync of the folder).
Restoring all four together is what makes a restart learn every joined event exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bandit.errors import CheckpointError
from streams.schemas import utc_now

_MAGIC = b"COPYLOOP-CKPT\x01"

#: ``(topic, partition)`` → the next offset to read
Offsets = dict[tuple[str, int], int]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader (or a crash) sees the old file or the new one,
    never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"writing {path} failed: {exc}") from exc


@dataclass(frozen=True)
class Checkpoint:
    policy: bytes
    offsets: Offsets
    joiner: bytes
    learned: int
    seq: int
    lineage: str
    version: str
    created_at: datetime = field(default_factory=utc_now)

    def to_bytes(self) -> bytes:
        header = {
            "learned": self.learned,
            "seq": self.seq,
            "lineage": self.lineage,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
            "policy_size": len(self.policy),
            "joiner_size": len(self.joiner),
            "sha256": hashlib.sha256(self.policy + self.joiner).hexdigest(),
        }
        raw = json.dumps(header).encode("utf-8")
        return _MAGIC + struct.pack("<I", len(raw)) + raw + self.policy + self.joiner

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        header, body_at = _header(data)
        try:
            p_end = body_at + int(header["policy_size"])
            j_end = p_end + int(header["joiner_size"])
            policy, joiner = data[body_at:p_end], data[p_end:j_end]
            if (
                len(data) != j_end
                or hashlib.sha256(policy + joiner).hexdigest() != header["sha256"]
            ):
                raise CheckpointError("checkpoint body does not match its checksum")
            return cls(
                policy=policy,
                offsets={(str(t), int(p)): int(o) for t, p, o in header["offsets"]},
                joiner=joiner,
                learned=int(header["learned"]),
                seq=int(header["seq"]),
                lineage=str(header["lineage"]),
                version=str(header["version"]),
                created_at=datetime.fromisoformat(header["created_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"unreadable checkpoint header: {exc}") from exc

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at ``path``, or ``None`` when there is none yet."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"reading {path} failed: {exc}") from exc
        return cls.from_bytes(data)


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    start = len(_MAGIC) + 4
    if not data.startswith(_MAGIC) or len(data) < start:
        raise CheckpointError("not a copyloop learner checkpoint (bad magic bytes)")
    (size,) = struct.unpack("<I", data[len(_MAGIC) : start])
    try:
        header = json.loads(data[start : start + size])
    except ValueError as exc:
        raise CheckpointError(f"unreadable checkpoint header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError("unreadable checkpoint header: not an object")
    return header, start + size


def peek_learned(path: Path) -> int | None:
    """The learned count of the checkpoint at ``path`` without loading the model."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    header, _ = _header(data)
    return int(header["learned"])

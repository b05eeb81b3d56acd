"""Generator versions on disk: ``DATA_DIR/models/generator/VERSION/`` is a candidate's model folder
(so its ``model_version`` reads ``v0003-<hash>``) with its training data under ``data/`` and
``metadata.json`` (parent, data, metrics, gate verdict);
``current`` names the version that serves. No ``current``: the configured base model serves.

Pointer updates are atomic (write a temporary file, then ``os.replace``), so a reader sees the
old version or the new one, never half a name. A rejected candidate keeps its record and data
but not its weights."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import Conflict, NotFound

METADATA = "metadata.json"
CURRENT = "current"
_VERSION = re.compile(r"^v(\d{4,})$")
_WEIGHTS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class Version:
    name: str
    path: Path
    metadata: dict[str, Any]

    @property
    def parent(self) -> str | None:
        parent = self.metadata.get("parent")
        return parent if isinstance(parent, str) and _VERSION.match(parent) else None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Registry:
    """The versions under ``root`` (``DATA_DIR/models/generator``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def under(cls, data_dir: Path) -> Registry:
        return cls(data_dir / "models" / "generator")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def new_version(self) -> tuple[str, Path]:
        """A fresh, empty version folder (numbers only grow, even past removed ones)."""
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        number = int(existing[-1][1:]) + 1 if existing else 1
        while True:
            name = f"v{number:04d}"
            path = self.root / name
            try:
                path.mkdir()
            except FileExistsError:  # another round took it first
                number += 1
                continue
            return name, path

    def get(self, name: str) -> Version:
        if not _VERSION.match(name):
            raise NotFound("version", f"{name!r} is not a generator version name")
        path = self.root / name
        try:
            meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound("version", f"no generator version {name!r}") from None
        return Version(name, path, meta)

    def record(self, name: str, metadata: dict[str, Any]) -> Version:
        path = self.root / name
        _write_json(path / METADATA, metadata)
        return Version(name, path, metadata)

    def current(self) -> Version | None:
        pointer = self.root / CURRENT
        if not pointer.is_file():
            return None
        return self.get(pointer.read_text(encoding="utf-8").strip())

    def model_path(self, default: Path) -> Path:
        """The folder of the serving generator: the current version's, else ``default``."""
        cur = self.current()
        return default if cur is None else cur.path

    def promote(self, name: str) -> Version:
        version = self.get(name)
        weights = [f for pattern in _WEIGHTS for f in version.path.glob(pattern)]
        if not (version.path / "config.json").is_file() or not weights:
            raise Conflict("version", f"{name} has no model to serve")
        self._point(name)
        return version

    def discard(self, name: str) -> None:
        """Drop a rejected candidate's weights; its record and data stay for the history."""
        for pattern in _WEIGHTS:
            for f in (self.root / name).glob(pattern):
                f.unlink()

    def rollback(self) -> Version | None:
        """Serve the current version's parent again (``None``: the base model, when the current
        version was trained on it). Raises when nothing has been promoted."""
        cur = self.current()
        if cur is None:
            raise Conflict("version", "no promoted generator to roll back from")
        parent = cur.parent
        if parent is None:
            (self.root / CURRENT).unlink()
            return None
        self._point(parent)
        return self.get(parent)

    def _point(self, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{CURRENT}.{os.getpid()}.tmp"
        tmp.write_text(name + "\n", encoding="utf-8")
        os.replace(tmp, self.root / CURRENT)

    def remove(self, name: str) -> None:
        """Delete a version that never got a record (a round that failed half-way)."""
        path = self.root / name
        if path.is_dir() and not (path / METADATA).is_file():
            shutil.rmtree(path)

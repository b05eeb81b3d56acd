"""Generator versions on disk: promotion, the current pointer, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import Conflict, NotFound
from service.finetune.registry import Registry


def _candidate(registry: Registry, parent: str | None, *, weights: bool = True) -> str:
    name, folder = registry.new_version()
    if weights:
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"weights")
    registry.record(name, {"version": name, "parent": parent or "/base/model"})
    return name


def test_rollback_restores_the_previous_version(tmp_path: Path) -> None:
    registry = Registry.under(tmp_path)
    base = tmp_path / "base"
    assert registry.model_path(base) == base
    first = _candidate(registry, None)
    registry.promote(first)
    second = _candidate(registry, first)
    registry.promote(second)
    assert registry.model_path(base) == registry.root / second
    back = registry.rollback()
    assert back is not None and back.name == first
    assert registry.model_path(base) == registry.root / first
    assert registry.rollback() is None  # the first was trained on the base model
    assert registry.model_path(base) == base
    with pytest.raises(Conflict, match="no promoted generator"):
        registry.rollback()


def test_a_discarded_candidate_keeps_its_record_but_not_its_weights(tmp_path: Path) -> None:
    registry = Registry.under(tmp_path)
    name = _candidate(registry, None)
    registry.discard(name)
    assert not (registry.root / name / "model.safetensors").exists()
    assert registry.get(name).metadata["version"] == name
    with pytest.raises(Conflict, match="no model"):
        registry.promote(name)
    assert registry.current() is None


def test_versions_count_up_and_names_are_checked(tmp_path: Path) -> None:
    registry = Registry.under(tmp_path)
    names = [_candidate(registry, None) for _ in range(3)]
    assert names == ["v0001", "v0002", "v0003"] == registry.versions()
    with pytest.raises(NotFound, match="version"):
        registry.get("../etc")
    with pytest.raises(NotFound, match="no generator version"):
        registry.get("v0099")

"""``copyloop finetune``: bad use ends with a message and exit 2; rollback moves the pointer
and announces the previous generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.finetune.registry import Registry
from streams.schemas import ModelAnnouncement
from streams.topics import Topics
from tests.service.api.api_helpers import read_topic


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "COPYLOOP_FINETUNE_EVERY"),  # following the learner needs an interval
        (["--once", "--rollback"], "exclude each other"),
        (["--once"], "--products"),  # no catalog given and none stored
    ],
)
def test_bad_use_names_the_option(args: list[str], message: str, tmp_path: Path) -> None:
    env = {"COPYLOOP_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["finetune", *args], env=env)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.kafka
def test_rollback_from_the_command_line(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics
) -> None:
    registry = Registry.under(tmp_path)
    name, folder = registry.new_version()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    registry.record(name, {"parent": "/base", "parent_model_version": "base-0123456789"})
    registry.promote(name)
    env = {
        "COPYLOOP_DATA_DIR": str(tmp_path),
        "COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "COPYLOOP_TOPIC_PREFIX": topics.prefix,
        "COPYLOOP_GENERATOR_MODEL": "/base",
    }
    result = CliRunner().invoke(app, ["finetune", "--rollback"], env=env)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["from_version"] == name and out["current"] is None
    assert out["pools_restored"] == {}  # that promotion refreshed no pool
    assert registry.current() is None
    (announced,) = read_topic(kafka_bootstrap, topics.models, ModelAnnouncement, 1)
    assert announced.kind == "generator" and announced.version == "base-0123456789"
    assert announced.uri == "/base"
    again = CliRunner().invoke(app, ["finetune", "--rollback"], env=env)
    assert again.exit_code == 2 and "no promoted generator" in again.output

"""``--preset`` on learn, serve, simulate and demo: an unknown name ends with exit 2 and a line
listing the names, before any broker, server or generator is touched; older options map to
presets; the settings refuse an unknown preset by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bandit.errors import ConfigError
from bandit.presets import PRESETS, preset
from bandit.vw import VWConfig
from service.cli import app
from service.commands.cmd_learn import learner_policy
from service.settings import Settings

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["learn", "--preset", "nope"],
        ["serve", "--preset", "nope"],
        ["demo", "--preset", "nope"],
        ["simulate", "--scenario", "x.json", "--out", "o", "--preset", "nope"],
    ],
    ids=["learn", "serve", "demo", "simulate"],
)
def test_an_unknown_preset_exits_2_listing_the_names(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COPYLOOP_DATA_DIR", str(tmp_path / "var"))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "`preset`" in text and all(name in text for name in PRESETS)


def test_simulate_refuses_bandit_and_preset_together(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", "--scenario", "x.json", "--out", str(tmp_path), "--bandit", "vw",
         "--preset", "refit"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--preset" in result.output


def test_learner_policy_from_its_options() -> None:
    assert learner_policy(None) == preset("refit")
    assert learner_policy("vw-bag") == preset("vw-bag")
    assert learner_policy(None, model="vw") == preset("vw-squarecb")
    assert learner_policy(None, model="refit") == preset("refit")
    tuned = learner_policy("vw-squarecb", exploration="epsilon", epsilon=0.2)
    assert tuned.model == VWConfig(exploration="epsilon", epsilon=0.2)
    assert learner_policy("refit", epsilon=0.1).model.epsilon == 0.1
    with pytest.raises(ConfigError, match="--exploration"):
        learner_policy("refit", exploration="bag")
    with pytest.raises(ConfigError, match="--model"):
        learner_policy("refit", model="vw")
    with pytest.raises(ConfigError, match="--model"):
        learner_policy(None, model="bayes")


def test_settings_name_the_preset_they_refuse() -> None:
    assert Settings(bandit_preset="vw-bag").bandit_preset == "vw-bag"
    assert Settings().bandit_preset is None  # the default preset
    with pytest.raises(ValidationError, match="bandit_preset"):
        Settings(bandit_preset="nope")

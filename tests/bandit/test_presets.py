"""Named presets: each builds a policy that chooses, learns, saves and is hot-swapped into a
ranker's holder; the default is the validated batch refit; an unknown name lists the names."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bandit.errors import ConfigError
from bandit.policy import Policy, PolicyConfig
from bandit.presets import DEFAULT_PRESET, PRESETS, preset, preset_name
from bandit.refit import RefitConfig
from bandit.snapshot import PolicyHolder, write_snapshot
from streams.schemas import ModelAnnouncement

from . import synth


def test_the_default_is_the_batch_refit_the_simulator_validated() -> None:
    assert DEFAULT_PRESET in PRESETS
    default = preset(DEFAULT_PRESET)
    assert isinstance(default.model, RefitConfig)
    assert (default.model.members, default.model.spread, default.model.every) == (5, 0.5, 500)
    assert default.model.crosses == ("U",) and default.model.epsilon == 0.0
    assert PolicyConfig() == default  # what a policy built without settings runs


def test_an_unknown_name_is_refused_with_the_names() -> None:
    with pytest.raises(ConfigError, match="`preset`") as info:
        preset("fastest")
    assert all(name in str(info.value) for name in PRESETS)


def test_a_config_is_named_by_its_preset() -> None:
    for name, config in PRESETS.items():
        assert preset_name(config) == name
    assert preset_name(PolicyConfig(RefitConfig(every=7))) is None


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_learns_saves_and_swaps_into_a_ranker(name: str, tmp_path: Path) -> None:
    policy = Policy(preset(name), seed=3)
    rng = random.Random(1)
    for i in range(600):  # past the refit's first fit
        s = synth.shopper(rng, i)
        d = policy.choose(
            synth.context(s), synth.ACTIONS, event_id=uuid.UUID(int=i), product_id="p1",
            channel="ad_headline", pool_version=1,
        )  # fmt: skip
        policy.learn(d, 1.0 if synth.clicked(rng, s, d.actions[d.action]) else 0.0)
    policy.version = f"{name}-000001"
    path = write_snapshot(policy, tmp_path)
    holder = PolicyHolder(Policy(preset(name), seed=3), seed=3)
    assert holder.load(
        ModelAnnouncement(
            kind="bandit", version=policy.version, uri=path.resolve().as_uri(),
            learned_events=600, created_at=datetime.now(UTC),
        )
    )  # fmt: skip
    assert holder.version == policy.version and holder.policy.config == preset(name)
    ctx = synth.context(synth.shopper(random.Random(9), 9))
    assert holder.policy.pmf(ctx, synth.ACTIONS) == policy.pmf(ctx, synth.ACTIONS)
    assert holder.policy.pmf(ctx, synth.ACTIONS) != [0.25] * 4  # it learned something

from __future__ import annotations

import pytest

from bandit.errors import ConfigError
from bandit.reward import RewardConfig, reward


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([], None),
        (["click"], None),  # never seen: not learned
        (["impression"], 0.0),
        (["impression", "click"], 1.0),
        (["impression", "click", "add_to_cart"], 1.5),
        (["impression", "click", "add_to_cart", "purchase"], 3.5),
        (["impression", "click", "click", "impression"], 1.0),  # each kind once
    ],
)
def test_default_reward(kinds: list[str], expected: float | None) -> None:
    assert reward(kinds) == expected


def test_configured_reward() -> None:
    config = RewardConfig(click=2.0, purchase=10.0, default=-0.1)
    assert reward(["impression"], config) == -0.1
    assert reward(["impression", "purchase"], config) == 10.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"click": float("nan")}, "click"),
        ({"window_s": 0}, "window_s"),
        ({"default": "x"}, "default"),
    ],
)
def test_invalid_config_names_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"`{name}`"):
        RewardConfig(**kwargs)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="kinds"):
        reward(["impression", "like"])

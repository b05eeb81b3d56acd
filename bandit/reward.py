"""The reward of one shown decision (CONTRACT.md §2): a function of the feedback kinds seen for
its event inside the reward window. Pure and small, so the learner, the offline replay and the
simulator agree on it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from bandit.errors import ConfigError
from streams.schemas import FEEDBACK_KINDS


@dataclass(frozen=True)
class RewardConfig:
    """Weights per feedback kind; each kind counts once per event, however often it is sent.
    An impression with nothing after it earns ``default``."""

    click: float = 1.0
    add_to_cart: float = 0.5
    purchase: float = 2.0
    default: float = 0.0
    window_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("click", "add_to_cart", "purchase", "default"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"`{name}` must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"`{name}` must be finite, got {value!r}")
        if not (isinstance(self.window_s, int | float) and 0 < self.window_s < math.inf):
            raise ConfigError(f"`window_s` must be > 0 and finite, got {self.window_s!r}")

    def reward(self, kinds: Iterable[str]) -> float | None:
        """``None`` when there was no impression (the copy was never seen: not learned)."""
        seen = set(kinds)
        unknown = seen.difference(FEEDBACK_KINDS)
        if unknown:
            raise ConfigError(f"`kinds` holds unknown feedback kinds {sorted(unknown)}")
        if "impression" not in seen:
            return None
        total = 0.0
        hit = False
        if "click" in seen:
            total += self.click
            hit = True
        if "add_to_cart" in seen:
            total += self.add_to_cart
            hit = True
        if "purchase" in seen:
            total += self.purchase
            hit = True
        return total if hit else self.default


DEFAULT_REWARD = RewardConfig()


def reward(kinds: Iterable[str], config: RewardConfig = DEFAULT_REWARD) -> float | None:
    """The reward of an event whose feedback kinds are ``kinds`` (see :class:`RewardConfig`)."""
    return config.reward(kinds)

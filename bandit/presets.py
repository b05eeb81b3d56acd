"""Named policy settings: what ``copyloop learn``, ``serve``, ``simulate`` and ``demo`` select with
``--preset``, so the policy a user runs is the one the simulator measured.

The default is the setting that measured best (docs/experiments/2026-batch-refit.md): the batch
refit beat every VW online setting tried on random and held-out worlds. The VW presets stay for
comparison and for deployments that want VW's online updates."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bandit.errors import ConfigError
from bandit.policy import PolicyConfig
from bandit.refit import RefitConfig
from bandit.vw import VWConfig

#: The validated default: a logistic model of shopper x trait crosses refitted every 500
#: events, 5 posterior draws at half the posterior's spread, no epsilon floor.
REFIT = PolicyConfig(
    RefitConfig(members=5, epsilon=0.0, crosses=("U",), every=500, l2=1.0, spread=0.5)
)

#: VW's best online settings on random worlds (docs/experiments/2026-vw-online-settings.md):
#: bag exploration keeps every shown propensity >= 1/5, a constant normalised rate avoids
#: huge steps on rare features, and only shopper x variant crosses carry signal.
VW_BAG = PolicyConfig(
    VWConfig(
        exploration="bag",
        bag_size=5,
        epsilon=0.0,
        learning_rate=0.1,
        power_t=0.0,
        interactions=("UA",),
    )
)

#: VW's SquareCB at its library defaults: the service's default before the presets, never
#: measured on learning quality; kept so older set-ups can ask for it by name.
VW_SQUARECB = PolicyConfig(VWConfig())

PRESETS: Mapping[str, PolicyConfig] = MappingProxyType(
    {"refit": REFIT, "vw-bag": VW_BAG, "vw-squarecb": VW_SQUARECB}
)
DEFAULT_PRESET = "refit"


def preset(name: str) -> PolicyConfig:
    """The settings named ``name``; a :class:`ConfigError` listing the names otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"`preset` must be one of {', '.join(PRESETS)}, got {name!r}") from None


def preset_name(config: PolicyConfig) -> str | None:
    """The name of the preset equal to ``config`` (None: custom settings)."""
    return next((name for name, known in PRESETS.items() if known == config), None)

"""The contextual-bandit policy behind two verbs, ``choose`` and ``learn``, over a scoring model
(``bandit.scoring``): VW's online learner (``bandit.vw``) or the batch-refit logistic model
(``bandit.refit``), as its config says. ``choose`` is the rank hot path: it encodes nothing
itself (the context arrives encoded), lets the model reuse what it prepared per action set, and
draws from the model's probability vector with a per-event uniform derived from
``(seed, event_id)``, so the same event id gives the same draw."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from bandit.errors import ConfigError, FeatureError, ModelError
from bandit.features import check_encoded
from bandit.refit import Contribution, RefitConfig
from bandit.scoring import MAX_ACTIONS, ActionSet, Example, ScoringModel
from bandit.vw import VWConfig
from bandit.wire import AnyDecision, assemble
from streams.schemas import (
    CHANNELS,
    IDENTIFIER_RE,
    ActionFeatures,
    Channel,
    Decision,
    FeatureValue,
    utc_now,
)

__all__ = [
    "MAX_ACTIONS",
    "MODELS",
    "ActionSet",
    "Actions",
    "Contribution",
    "ModelSettings",
    "Policy",
    "PolicyConfig",
    "event_uniform",
    "normalise",
    "sample",
]

ModelSettings = VWConfig | RefitConfig
#: the models a policy can hold, by the name a saved policy gives them
MODELS: dict[str, type[VWConfig] | type[RefitConfig]] = {
    VWConfig.name: VWConfig,
    RefitConfig.name: RefitConfig,
}

_MAGIC = b"COPYLOOP-POLICY\x01"
_LOGGED_MAX = 10_000
_new = tuple.__new__


@dataclass(frozen=True)
class PolicyConfig:
    """Which model the policy holds, with that model's own settings. The default is the batch
    refit at the settings the simulator validated (``bandit.presets``: the default preset)."""

    model: ModelSettings = field(default_factory=RefitConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, VWConfig | RefitConfig):
            raise ConfigError(
                f"`model` must be one of {', '.join(MODELS)} settings "
                f"(VWConfig or RefitConfig), got {self.model!r}"
            )

    @property
    def name(self) -> str:
        """The model's name (``vw`` or ``refit``)."""
        return self.model.name

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.name, "settings": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """A config saved by :meth:`to_dict`, or by the single flat config of earlier versions
        (VW and refit settings side by side), so their snapshots and checkpoints still load."""
        name = data.get("model", VWConfig.name)
        if name not in MODELS:
            raise ConfigError(f"`model` must be one of {', '.join(MODELS)}, got {name!r}")
        if "settings" in data:
            return cls(_settings(MODELS[name], data["settings"]))
        return cls(_from_flat(name, data))


def _settings(kind: type[VWConfig] | type[RefitConfig], values: Mapping[str, Any]) -> ModelSettings:
    if not isinstance(values, Mapping):
        raise ConfigError(f"`settings` must be an object, got {values!r}")
    known = {f.name for f in fields(kind)}
    kept = {k: v for k, v in values.items() if k in known}
    for key in ("interactions", "crosses"):
        if key in kept and isinstance(kept[key], list):
            kept[key] = tuple(kept[key])
    return kind(**kept)


def _from_flat(name: str, data: Mapping[str, Any]) -> ModelSettings:
    """The flat config of earlier versions: its refit settings carried a ``refit_`` prefix
    and shared ``bag_size`` (members), ``epsilon`` and ``interactions`` with VW's."""
    if name == VWConfig.name:
        return _settings(VWConfig, data)
    values: dict[str, Any] = {
        new: data[old]
        for old, new in (
            ("bag_size", "members"),
            ("epsilon", "epsilon"),
            ("refit_every", "every"),
            ("refit_window", "window"),
            ("refit_l2", "l2"),
            ("refit_spread", "spread"),
        )
        if old in data
    }
    # the old defaults where they differ from today's: plain Thompson sampling, a 5 % floor
    values.setdefault("spread", 1.0)
    values.setdefault("epsilon", 0.05)
    if "interactions" in data:
        pairs = data["interactions"]
        values["crosses"] = tuple(sorted({ns for p in pairs if p.endswith("A") for ns in p[:-1]}))
    else:
        values["crosses"] = ("C", "U")  # the old default pairs: UA and CA
    return _settings(RefitConfig, values)


def event_uniform(seed: int, event_id: UUID) -> float:
    """A uniform in [0, 1) fixed by ``(seed, event_id)``: a hash, so each event has its own
    reproducible draw without keeping RNG state between requests."""
    digest = hashlib.blake2b(event_id.bytes, digest_size=8, key=struct.pack("<q", seed)).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def sample(pmf: Sequence[float], u: float) -> int:
    """The index at cumulative mass ``u``, never an index of zero probability."""
    total = 0.0
    last = -1
    for i, p in enumerate(pmf):
        if p > 0:
            total += p
            last = i
            if u < total:
                return i
    if last < 0:
        raise ModelError("the model returned a probability vector with no positive entry")
    return last


def normalise(pmf: Sequence[float]) -> list[float]:
    clipped = [p if p > 0 and math.isfinite(p) else 0.0 for p in pmf]
    total = sum(clipped)
    if total <= 0:
        return [1.0 / len(pmf)] * len(pmf)
    return [p / total for p in clipped]


Actions = Sequence[tuple[str, ActionFeatures]] | ActionSet


class Policy:
    """``choose(context, actions) -> Decision`` and ``learn(decision, reward)`` over a
    scoring model."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        seed: int = 0,
        *,
        version: str = "init",
        learned: int = 0,
        model: bytes | None = None,
    ) -> None:
        self.config = config if config is not None else PolicyConfig()
        if not isinstance(self.config, PolicyConfig):
            raise ConfigError(f"`config` must be a PolicyConfig, got {config!r}")
        if not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
            raise ConfigError(f"`seed` must be a 64-bit integer, got {seed!r}")
        self.seed = seed
        self.version = version
        self.learned = learned
        self.model: ScoringModel = self.config.model.build(seed, model)
        #: the action sets of logged decisions, by their ids (decisions of one pool share one)
        self._logged: dict[tuple[str, ...], ActionSet] = {}
        #: the lists of the decision last looked up, and their action set
        self._last_logged: tuple[list[str], list[ActionFeatures], ActionSet] | None = None

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise ConfigError(f"`version` must be a string of 1-128 chars, got {value!r}")
        self._version = value

    # -- the two verbs --------------------------------------------------------------------
    def pmf(self, context: Mapping[str, FeatureValue], actions: Actions) -> list[float]:
        """The exploration distribution over ``actions`` (normalised), without drawing."""
        acts = actions if isinstance(actions, ActionSet) else ActionSet(actions)
        return normalise(self.model.pmf(context, acts))

    def choose(
        self,
        context: Mapping[str, FeatureValue],
        actions: Actions,
        *,
        event_id: UUID,
        product_id: str,
        channel: Channel,
        pool_version: int,
        ts: datetime | None = None,
    ) -> Decision:
        """Score ``actions`` (``(variant_id, features)`` pairs or an :class:`ActionSet`) for
        ``context`` and draw one. The context is logged as given, plus ``c_channel`` when it
        lacks one."""
        if not isinstance(event_id, UUID):
            raise FeatureError("event_id", f"must be a UUID, got {event_id!r}")
        if type(product_id) is not str or not IDENTIFIER_RE.match(product_id):
            raise FeatureError(
                "product_id", f"must be 1-128 of A-Z a-z 0-9 . _ : -, got {product_id!r}"
            )
        if channel not in CHANNELS:
            raise FeatureError("channel", f"must be one of {', '.join(CHANNELS)}, got {channel!r}")
        if type(pool_version) is not int or pool_version < 1:
            raise FeatureError("pool_version", f"must be an integer >= 1, got {pool_version!r}")
        if ts is None:
            ts = utc_now()
        elif not isinstance(ts, datetime) or ts.tzinfo is None:
            raise FeatureError("ts", f"must be a timezone-aware datetime, got {ts!r}")
        else:
            ts = ts.astimezone(UTC)
        if "c_channel" not in context:
            context = {**context, "c_channel": channel}
        checked = check_encoded(context)
        acts = actions if isinstance(actions, ActionSet) else ActionSet(actions)
        dist = normalise(self.model.pmf(checked, acts))
        action = sample(dist, event_uniform(self.seed, event_id))
        # every field is checked above or holds by construction (a normalised distribution, a
        # drawn action of positive mass), so the Decision is assembled without pydantic going
        # over it again, which would cost as much as the model's scoring (tests compare the two)
        decision: Decision = assemble(
            Decision,
            {
                "schema_version": 1,
                "event_id": event_id,
                "ts": ts,
                "product_id": product_id,
                "channel": channel,
                "pool_version": pool_version,
                "policy_version": self._version,
                "context": checked,
                "actions": list(acts.ids),
                "action_features": list(acts.features),
                "action": action,
                "pscore": dist[action],
                "action_dist": dist,
            },
        )
        return decision

    def learn(self, decision: AnyDecision, reward: float) -> None:
        """Learn that ``decision``'s chosen action earned ``reward`` (higher is better)."""
        self.learn_many([(decision, reward)])

    def learn_many(self, items: Iterable[tuple[AnyDecision, float]]) -> int:
        """Learn joined events in order; returns how many were learned."""
        n = self.model.learn(self._examples(items))
        self.learned += n
        return n

    def _examples(self, items: Iterable[tuple[AnyDecision, float]]) -> Iterator[Example]:
        isfinite = math.isfinite
        for decision, reward in items:
            if not isfinite(reward):
                raise FeatureError("reward", f"must be finite, got {reward!r}")
            acts = self._logged_actions(decision)
            # a named tuple built without its Python-level __new__ (one per learned event)
            yield _new(Example, (decision.context, acts, decision.action, reward, decision.pscore))

    def _logged_actions(self, decision: AnyDecision) -> ActionSet:
        """The action set of a logged decision; decisions of one pool share it (and what the
        model prepared for it)."""
        ids, feats = decision.actions, decision.action_features
        last = self._last_logged
        # decoded decisions of one pool share its lists (bandit.wire): the same lists, the
        # same action set
        if last is not None and ids is last[0] and feats is last[1]:
            return last[2]
        key = tuple(ids)
        hit = self._logged.get(key)
        # list equality checks identity first, element by element, so a pool's shared
        # feature objects compare at C speed
        if hit is None or hit.features != feats:
            if len(self._logged) >= _LOGGED_MAX:
                self._logged.clear()
            hit = self._logged[key] = ActionSet(list(zip(key, feats, strict=True)))
        self._last_logged = (ids, feats, hit)
        return hit

    def pmf_logged(self, decision: AnyDecision) -> list[float]:
        """This policy's distribution over a logged decision's own actions (for off-policy
        estimates: the decisions of one pool share the prepared action set)."""
        return normalise(self.model.pmf(decision.context, self._logged_actions(decision)))

    # -- why ------------------------------------------------------------------------------
    def explain(self, decision: AnyDecision, top: int = 5) -> list[Contribution] | None:
        """The ``top`` features that moved ``decision``'s chosen variant's score most, by this
        policy's model; None when the model cannot say (VW keeps hashed weights, not named
        ones: its answer is the decision's probabilities alone)."""
        explain = getattr(self.model, "explain", None)
        if explain is None:
            return None
        found: list[Contribution] = explain(
            decision.context, self._logged_actions(decision), decision.action, top
        )
        return found

    def weights(self) -> dict[str, float] | None:
        """The model's named weights (token -> weight), what :meth:`explain` reads; None for a
        model without named weights (VW)."""
        weights = getattr(self.model, "weights", None)
        if weights is None:
            return None
        out: dict[str, float] = weights()
        return out

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The model with its version, seed, config and learned count."""
        header = json.dumps(
            {
                "version": self._version,
                "seed": self.seed,
                "learned": self.learned,
                "config": self.config.to_dict(),
            }
        ).encode("utf-8")
        return _MAGIC + struct.pack("<I", len(header)) + header + self.model.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, seed: int | None = None) -> Policy:
        """A policy saved by :meth:`to_bytes`; ``seed`` overrides the saved one for draws."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise ModelError("not a copyloop policy (bad magic bytes)")
        start = len(_MAGIC) + 4
        (size,) = struct.unpack("<I", data[len(_MAGIC) : start])
        try:
            header = json.loads(data[start : start + size].decode("utf-8"))
            config = PolicyConfig.from_dict(header["config"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"unreadable policy header: {exc}") from exc
        return cls(
            config,
            header["seed"] if seed is None else seed,
            version=header["version"],
            learned=int(header.get("learned", 0)),
            model=data[start + size :],
        )

    def close(self) -> None:
        self.model.close()

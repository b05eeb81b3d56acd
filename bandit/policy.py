"""The contextual-bandit policy: VW ``--cb_explore_adf`` behind two verbs, ``choose`` and
``learn``. ``choose`` is the rank hot path: it encodes nothing itself (the context arrives
encoded), caches each action's VW line, and draws from VW's probability vector with a
per-event uniform derived from ``(seed, event_id)``, so the same event id gives the same draw."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from bandit.errors import ConfigError, FeatureError, ModelError
from bandit.features import check_encoded
from bandit.refit import RefitModel
from bandit.vw import VWModel, action_line, example_text, shared_line, vw_arguments
from bandit.wire import assemble
from streams.schemas import CHANNELS, ActionFeatures, Channel, Decision, FeatureValue, utc_now

Exploration = Literal["squarecb", "epsilon", "bag", "cover", "softmax"]
EXPLORATIONS: tuple[str, ...] = ("squarecb", "epsilon", "bag", "cover", "softmax")
CB_TYPES: tuple[str, ...] = ("mtr", "ips", "dr")
LOSSES: tuple[str, ...] = ("squared", "logistic")
MODELS: tuple[str, ...] = ("vw", "refit")

_MAGIC = b"COPYLOOP-POLICY\x01"
_IDENTIFIER = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # streams.schemas.Identifier
MAX_ACTIONS = 256
_LINE_CACHE_MAX = 200_000


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"`{name}` must be {rule}, got {value!r}")


@dataclass(frozen=True)
class PolicyConfig:
    """How the policy explores and learns. Only the exploration's own parameters matter:
    ``epsilon`` for epsilon and bag, ``gamma_*`` for SquareCB, ``bag_size``, ``cover_size``
    and ``psi``, ``softmax_lambda``."""

    exploration: Exploration = "squarecb"
    epsilon: float = 0.05
    gamma_scale: float = 10.0
    gamma_exponent: float = 0.5
    bag_size: int = 5
    #: bag: the first member learns every example (the others a bootstrap share of them)
    greedify: bool = False
    cover_size: int = 5
    psi: float = 1.0
    softmax_lambda: float = 10.0
    #: VW interactions between namespaces: U shopper, C context, A action. Without a pair
    #: with A the shopper and context cannot change which action scores best.
    interactions: tuple[str, ...] = ("UA", "CA")
    learning_rate: float = 0.5
    power_t: float = 0.5
    #: per-feature adaptive rates (VW's default: each feature's rate decays with its own
    #: squared gradients, to the power ``power_t``); off, one global rate decays as
    #: ``t ** -power_t`` over examples (updates stay normalised and importance-invariant)
    adaptive: bool = True
    l2: float = 0.0
    bits: int = 18
    cb_type: Literal["mtr", "ips", "dr"] = "mtr"
    #: also learn a weight per variant id (beyond its traits); new ids start at zero
    variant_id_feature: bool = True
    #: ``squared``: regress the reward itself; ``logistic``: the log-odds that a shown variant
    #: earns any reward (a click or more), its size not used (``bandit.vw.cost``)
    loss: Literal["squared", "logistic"] = "squared"
    #: ``vw``: VW's online learner (``--cb_explore_adf``, the exploration above); ``refit``: a
    #: logistic model refitted to convergence every ``refit_every`` events on the last
    #: ``refit_window``, explored by ``bag_size`` draws from its posterior and an ``epsilon`` floor
    #: (``bandit.refit``; the other exploration and learning-rate settings are VW's)
    model: Literal["vw", "refit"] = "vw"
    refit_every: int = 500
    refit_window: int = 200_000
    #: the refit's L2 penalty on each weight: a N(0, 1/refit_l2) prior on every effect
    refit_l2: float = 1.0
    #: the refit's draws: mode + refit_spread x a posterior deviation (1: Thompson sampling;
    #: below 1 explores less, as Chapelle & Li found better for click models)
    refit_spread: float = 1.0

    def __post_init__(self) -> None:
        _check(
            self.exploration in EXPLORATIONS,
            "exploration",
            f"one of {EXPLORATIONS}",
            self.exploration,
        )
        _check(0.0 <= self.epsilon <= 1.0, "epsilon", "in [0, 1]", self.epsilon)
        _check(self.gamma_scale > 0, "gamma_scale", "> 0", self.gamma_scale)
        _check(self.gamma_exponent >= 0, "gamma_exponent", ">= 0", self.gamma_exponent)
        _check(1 <= self.bag_size <= 64, "bag_size", "in [1, 64]", self.bag_size)
        _check(1 <= self.cover_size <= 64, "cover_size", "in [1, 64]", self.cover_size)
        _check(self.psi > 0, "psi", "> 0", self.psi)
        _check(self.softmax_lambda > 0, "softmax_lambda", "> 0", self.softmax_lambda)
        _check(
            isinstance(self.interactions, tuple)
            and all(len(p) >= 2 and set(p) <= {"U", "C", "A"} for p in self.interactions),
            "interactions",
            "a tuple of namespace strings over U, C, A such as ('UA', 'CA')",
            self.interactions,
        )
        _check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            "> 0",
            self.learning_rate,
        )
        _check(0.0 <= self.power_t <= 1.0, "power_t", "in [0, 1]", self.power_t)
        _check(self.l2 >= 0, "l2", ">= 0", self.l2)
        _check(
            isinstance(self.bits, int) and 10 <= self.bits <= 30, "bits", "in [10, 30]", self.bits
        )
        _check(self.cb_type in CB_TYPES, "cb_type", f"one of {CB_TYPES}", self.cb_type)
        _check(self.loss in LOSSES, "loss", f"one of {LOSSES}", self.loss)
        _check(self.model in MODELS, "model", f"one of {MODELS}", self.model)
        _check(
            isinstance(self.refit_every, int) and self.refit_every >= 1,
            "refit_every",
            "an integer >= 1",
            self.refit_every,
        )
        _check(
            isinstance(self.refit_window, int) and self.refit_window >= 1,
            "refit_window",
            "an integer >= 1",
            self.refit_window,
        )
        _check(math.isfinite(self.refit_l2) and self.refit_l2 > 0, "refit_l2", "> 0", self.refit_l2)
        _check(
            math.isfinite(self.refit_spread) and self.refit_spread >= 0,
            "refit_spread",
            ">= 0",
            self.refit_spread,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interactions"] = list(self.interactions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "interactions" in values:
            values["interactions"] = tuple(values["interactions"])
        return cls(**values)


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
        raise ModelError("VW returned a probability vector with no positive entry")
    return last


def normalise(pmf: Sequence[float]) -> list[float]:
    clipped = [p if p > 0 and math.isfinite(p) else 0.0 for p in pmf]
    total = sum(clipped)
    if total <= 0:
        return [1.0 / len(pmf)] * len(pmf)
    return [p / total for p in clipped]


class ActionSet:
    """A pool's actions prepared once for scoring: ids, features and their VW text. Rankers
    build one per pool version; ``choose`` also takes plain ``(variant_id, features)`` pairs."""

    __slots__ = ("_text", "features", "ids")

    def __init__(self, actions: Sequence[tuple[str, ActionFeatures]]) -> None:
        if not actions:
            raise FeatureError("actions", "must hold at least one action")
        if len(actions) > MAX_ACTIONS:
            raise FeatureError("actions", f"must hold at most {MAX_ACTIONS} actions")
        for i, pair in enumerate(actions):
            if not (
                isinstance(pair, tuple | list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], ActionFeatures)
            ):
                raise FeatureError(f"actions.{i}", "must be a (variant_id, ActionFeatures) pair")
        self.ids = [a[0] for a in actions]
        self.features = [a[1] for a in actions]
        #: the joined action lines, with and without variant-id features
        self._text: dict[bool, str] = {}

    def __len__(self) -> int:
        return len(self.ids)


Actions = Sequence[tuple[str, ActionFeatures]] | ActionSet


class Policy:
    """``choose(context, actions) -> Decision`` and ``learn(decision, reward)`` over VW."""

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
        if not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
            raise ConfigError(f"`seed` must be a 64-bit integer, got {seed!r}")
        self.seed = seed
        self.version = version
        self.learned = learned
        self._model: VWModel | RefitModel
        if self.config.model == "refit":
            self._model = RefitModel(self.config, seed, model=model)
        else:
            self._model = VWModel(vw_arguments(self.config, seed), model=model)
        self._lines: dict[tuple[Any, ...], str] = {}
        self._logged: dict[tuple[str, ...], tuple[list[ActionFeatures], list[str]]] = {}

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise ConfigError(f"`version` must be a string of 1-128 chars, got {value!r}")
        self._version = value

    # -- features -> VW text --------------------------------------------------------------
    def _action_line(self, variant_id: str, features: ActionFeatures) -> str:
        key = (
            variant_id if self.config.variant_id_feature else None,
            tuple(features.traits),
            features.language,
            features.length_bucket,
            features.generator_version,
        )
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) >= _LINE_CACHE_MAX:
                self._lines.clear()  # pools turn over; a full rebuild is cheap and rare
            line = action_line(features, key[0])
            self._lines[key] = line
        return line

    def _actions_text(self, acts: ActionSet) -> str:
        with_ids = self.config.variant_id_feature
        text = acts._text.get(with_ids)
        if text is None:
            lines = [self._action_line(i, f) for i, f in zip(acts.ids, acts.features, strict=True)]
            text = acts._text[with_ids] = "\n".join(lines)
        return text

    def _text(self, context: Mapping[str, FeatureValue], acts: ActionSet) -> str:
        return shared_line(context) + "\n" + self._actions_text(acts)

    # -- the two verbs --------------------------------------------------------------------
    def pmf(self, context: Mapping[str, FeatureValue], actions: Actions) -> list[float]:
        """The exploration distribution over ``actions`` (normalised), without drawing."""
        acts = actions if isinstance(actions, ActionSet) else ActionSet(actions)
        return normalise(self._model.pmf(self._text(context, acts)))

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
        if type(product_id) is not str or not _IDENTIFIER.fullmatch(product_id):
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
        dist = normalise(self._model.pmf(self._text(checked, acts)))
        action = sample(dist, event_uniform(self.seed, event_id))
        # every field is checked above or holds by construction (a normalised distribution, a
        # drawn action of positive mass), so the Decision is assembled without pydantic going
        # over it again, which would cost as much as the VW prediction (tests compare the two)
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

    def learn(self, decision: Decision, reward: float) -> None:
        """Learn that ``decision``'s chosen action earned ``reward`` (higher is better)."""
        self.learn_many([(decision, reward)])

    def learn_many(self, items: Iterable[tuple[Decision, float]]) -> int:
        """Learn joined events in order; returns how many were learned."""
        n = self._model.learn(self._labelled(items))
        self.learned += n
        return n

    def _labelled(self, items: Iterable[tuple[Decision, float]]) -> Iterable[str]:
        for decision, reward in items:
            if not math.isfinite(reward):
                raise FeatureError("reward", f"must be finite, got {reward!r}")
            lines = self._logged_lines(decision)
            label = (decision.action, reward, decision.pscore)
            yield example_text(shared_line(decision.context), lines, label, self.config.loss)

    def _logged_lines(self, decision: Decision) -> Sequence[str]:
        """The action lines of a logged decision; decisions of one pool share them."""
        key = tuple(decision.actions)
        feats = decision.action_features
        hit = self._logged.get(key)
        # list equality checks identity first, element by element, so a pool's shared
        # feature objects compare at C speed
        if hit is not None and hit[0] == feats:
            return hit[1]
        if len(self._logged) >= _LINE_CACHE_MAX:
            self._logged.clear()
        lines = [self._action_line(i, f) for i, f in zip(key, feats, strict=True)]
        self._logged[key] = (list(feats), lines)
        return lines

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
        return _MAGIC + struct.pack("<I", len(header)) + header + self._model.to_bytes()

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
        self._model.close()

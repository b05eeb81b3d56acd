"""What the policy asks of a scoring model, and the data it hands one.

The policy (``bandit.policy``) validates, draws and logs; a model scores and learns. Each model
module (``bandit.vw``, ``bandit.refit``) owns its config dataclass and its feature format and
depends only on this module, so models never import the policy nor each other."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

from bandit.errors import FeatureError
from streams.schemas import ActionFeatures, FeatureValue

MAX_ACTIONS = 256
_T = TypeVar("_T")


class ActionSet:
    """A pool's actions prepared once for scoring: ids and features, plus what each model derives
    from them (its text, its token lists), kept here so a ranker that builds one set per pool
    version pays for that once, not per request."""

    __slots__ = ("_prepared", "features", "ids")

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
        self._prepared: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def prepared(self, key: Hashable, build: Callable[[ActionSet], _T]) -> _T:
        """``build(self)``, computed once per ``key`` (a model's name and the options that
        shape what it builds)."""
        hit = self._prepared.get(key)
        if hit is None:
            hit = self._prepared[key] = build(self)
        return hit


class Example(NamedTuple):
    """One joined event as a model learns it: the logged context and actions, the index of the
    shown action, its reward (higher is better) and the propensity it was shown with."""

    context: Mapping[str, FeatureValue]
    actions: ActionSet
    action: int
    reward: float
    pscore: float


class ScoringModel(Protocol):
    """A model the policy draws from. ``pmf`` may return an unnormalised vector (the policy
    normalises it); calls may come from several threads at once."""

    def pmf(self, context: Mapping[str, FeatureValue], actions: ActionSet) -> list[float]: ...

    def learn(self, examples: Iterable[Example]) -> int:
        """Learn the examples in order; returns how many were learned."""
        ...

    def to_bytes(self) -> bytes: ...

    def close(self) -> None: ...


class ModelConfig(Protocol):
    """A model's own settings: a frozen dataclass that validates itself and builds its model.
    ``name`` is how a saved policy names the model it holds."""

    name: ClassVar[str]

    def build(self, seed: int, state: bytes | None = None) -> ScoringModel:
        """A fresh model, or the one saved as ``state`` by its ``to_bytes``."""
        ...

    def to_dict(self) -> dict[str, Any]: ...

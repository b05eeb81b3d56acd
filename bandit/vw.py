"""The one module that imports ``vowpalwabbit``: VW's online learner (``--cb_explore_adf``) as a
scoring model. It owns its settings (:class:`VWConfig`), the VW argument list, the conversion of
features to VW's text format, the reward→cost sign flip (VW minimises cost) and saving a model
as bytes.

Examples go through pylibvw's own parse/learn/predict calls rather than ``Workspace.learn`` with
strings: the Python wrapper builds an ``Example`` object per line, which costs more than VW's
learning itself (measured in ``benchmarks/bench_learner.py``)."""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pylibvw
import vowpalwabbit

from bandit.errors import ModelError, check
from bandit.scoring import ActionSet, Example
from bandit.tokens import ACTION_NS, CONTEXT_NS, USER_NS, action_tokens, context_tokens
from streams.schemas import ActionFeatures, FeatureValue

Exploration = Literal["squarecb", "epsilon", "bag", "cover", "softmax"]
EXPLORATIONS: tuple[str, ...] = ("squarecb", "epsilon", "bag", "cover", "softmax")
CB_TYPES: tuple[str, ...] = ("mtr", "ips", "dr")
LOSSES: tuple[str, ...] = ("squared", "logistic")
_LINE_CACHE_MAX = 200_000


@dataclass(frozen=True)
class VWConfig:
    """How VW explores and learns. Only the exploration's own parameters matter: ``epsilon``
    for epsilon and bag, ``gamma_*`` for SquareCB, ``bag_size`` (VW's ``--bag``),
    ``cover_size`` and ``psi``, ``softmax_lambda``."""

    name: ClassVar[str] = "vw"

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
    #: earns any reward (a click or more), its size not used (:func:`cost`)
    loss: Literal["squared", "logistic"] = "squared"

    def __post_init__(self) -> None:
        check(
            self.exploration in EXPLORATIONS,
            "exploration",
            f"one of {EXPLORATIONS}",
            self.exploration,
        )
        check(0.0 <= self.epsilon <= 1.0, "epsilon", "in [0, 1]", self.epsilon)
        check(self.gamma_scale > 0, "gamma_scale", "> 0", self.gamma_scale)
        check(self.gamma_exponent >= 0, "gamma_exponent", ">= 0", self.gamma_exponent)
        check(1 <= self.bag_size <= 64, "bag_size", "in [1, 64]", self.bag_size)
        check(1 <= self.cover_size <= 64, "cover_size", "in [1, 64]", self.cover_size)
        check(self.psi > 0, "psi", "> 0", self.psi)
        check(self.softmax_lambda > 0, "softmax_lambda", "> 0", self.softmax_lambda)
        check(
            isinstance(self.interactions, tuple)
            and all(len(p) >= 2 and set(p) <= {"U", "C", "A"} for p in self.interactions),
            "interactions",
            "a tuple of namespace strings over U, C, A such as ('UA', 'CA')",
            self.interactions,
        )
        check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            "> 0",
            self.learning_rate,
        )
        check(0.0 <= self.power_t <= 1.0, "power_t", "in [0, 1]", self.power_t)
        check(self.l2 >= 0, "l2", ">= 0", self.l2)
        check(
            isinstance(self.bits, int) and 10 <= self.bits <= 30, "bits", "in [10, 30]", self.bits
        )
        check(self.cb_type in CB_TYPES, "cb_type", f"one of {CB_TYPES}", self.cb_type)
        check(self.loss in LOSSES, "loss", f"one of {LOSSES}", self.loss)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interactions"] = list(self.interactions)
        return out

    def build(self, seed: int, state: bytes | None = None) -> VWModel:
        return VWModel(self, seed, model=state)


_TOKEN_CACHE: dict[tuple[str, FeatureValue], tuple[str, str]] = {}
_TOKEN_CACHE_MAX = 500_000


def _context_item(key: str, value: FeatureValue) -> tuple[str, str]:
    ns, tokens = context_tokens(key, value)
    return ns, " ".join(tokens)


def shared_line(context: Mapping[str, FeatureValue]) -> str:
    """``shared |U ... |C ...`` from an encoded context (``u_``/``c_`` prefixed keys)."""
    user: list[str] = []
    ctx: list[str] = []
    cache = _TOKEN_CACHE
    for item in context.items():
        # bucketed values repeat, so their tokens are memoised (rank and learn hot paths);
        # not floats (1.0 == 1 would share a key, yet `x:1` is not `x=1`) nor lists (unhashable);
        # True == 1 do share a key, harmlessly: both are the token `x=1`
        kind = type(item[1])
        if kind is not float and kind is not list:
            hit = cache.get(item)
            if hit is None:
                if len(cache) >= _TOKEN_CACHE_MAX:
                    cache.clear()
                hit = cache[item] = _context_item(*item)
        else:
            hit = _context_item(*item)
        if hit[0] == USER_NS:
            user.append(hit[1])
        else:
            ctx.append(hit[1])
    return f"shared |{USER_NS} {' '.join(user)} |{CONTEXT_NS} {' '.join(ctx)}"


def action_line(features: ActionFeatures, variant_id: str | None = None) -> str:
    """``|A t=urgency ... lang=zh len=short gv=... [id=...]`` for one action."""
    return f"|{ACTION_NS} {' '.join(action_tokens(features, variant_id))}"


def cost(reward: float, loss: str = "squared") -> float:
    """VW's cost (lower is better) for ``reward``: ``-reward`` under squared loss; under logistic
    loss the label of a success (any positive reward) is -1 and of a failure +1, so the model
    learns the log-odds of a shown variant earning nothing."""
    if loss == "logistic":
        return -1.0 if reward > 0 else 1.0
    return -reward


def example_text(
    shared: str,
    actions: Sequence[str],
    label: tuple[int, float, float] | None = None,
    loss: str = "squared",
) -> str:
    """One multi-line example; ``label`` is ``(chosen, reward, pscore)``, turned into VW's
    ``0:cost:probability`` on the chosen action with :func:`cost`."""
    if label is None:
        return shared + "\n" + "\n".join(actions)
    chosen, reward, pscore = label
    c = cost(reward, loss)
    lines = [shared]
    for i, line in enumerate(actions):
        lines.append(f"0:{c:.6g}:{pscore:.6g} {line}" if i == chosen else line)
    return "\n".join(lines)


def vw_arguments(config: VWConfig, seed: int) -> list[str]:
    """VW's command line for ``config``: ``--cb_explore_adf`` with the chosen exploration."""
    args = ["--cb_explore_adf", "--quiet", "--cb_type", config.cb_type]
    exploration = {
        "squarecb": [
            "--squarecb",
            "--gamma_scale",
            str(config.gamma_scale),
            "--gamma_exponent",
            str(config.gamma_exponent),
        ],
        "epsilon": ["--epsilon", str(config.epsilon)],
        "bag": [
            "--bag",
            str(config.bag_size),
            "--epsilon",
            str(config.epsilon),
            *(["--greedify"] if config.greedify else []),
        ],
        "cover": ["--cover", str(config.cover_size), "--psi", str(config.psi)],
        "softmax": ["--softmax", "--lambda", str(config.softmax_lambda)],
    }
    args += exploration[config.exploration]
    for pair in config.interactions:
        args += ["--interactions", pair]
    args += ["--learning_rate", str(config.learning_rate), "--power_t", str(config.power_t)]
    if not config.adaptive:
        args += ["--normalized", "--invariant"]
    args += ["--bit_precision", str(config.bits), "--random_seed", str(seed)]
    if config.l2 > 0:
        args += ["--l2", str(config.l2)]
    if config.loss == "logistic":
        args += ["--loss_function", "logistic"]
    return args


class VWModel:
    """A ``--cb_explore_adf`` workspace behind the scoring-model verbs. VW is not thread-safe,
    so calls into it are serialised by a lock (uncontended in the learner, brief in a
    ranker)."""

    def __init__(self, config: VWConfig, seed: int, *, model: bytes | None = None) -> None:
        self.config = config
        self.args = vw_arguments(config, seed)
        self._lock = threading.Lock()
        #: each action's line, by what it is made of (pools share features across versions)
        self._lines: dict[tuple[Any, ...], str] = {}
        try:
            if model is None:
                self._ws = vowpalwabbit.Workspace(arg_list=self.args)
            else:
                self._ws = _load(model, _not_kept(self.args))
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"VW refused arguments {self.args}: {exc}") from exc

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
            line = self._lines[key] = action_line(features, key[0])
        return line

    def _action_lines(self, actions: ActionSet) -> list[str]:
        return actions.prepared(
            ("vw-lines", self.config.variant_id_feature),
            lambda acts: [
                self._action_line(i, f) for i, f in zip(acts.ids, acts.features, strict=True)
            ],
        )

    def _actions_text(self, actions: ActionSet) -> str:
        return actions.prepared(
            ("vw-text", self.config.variant_id_feature),
            lambda acts: "\n".join(self._action_lines(acts)),
        )

    # -- the verbs ------------------------------------------------------------------------
    def pmf(self, context: Mapping[str, FeatureValue], actions: ActionSet) -> list[float]:
        """VW's exploration distribution over ``actions`` for ``context``."""
        return self.predict_text(shared_line(context) + "\n" + self._actions_text(actions))

    def learn(self, examples: Iterable[Example]) -> int:
        loss = self.config.loss
        return self.learn_texts(
            example_text(
                shared_line(ex.context),
                self._action_lines(ex.actions),
                (ex.action, ex.reward, ex.pscore),
                loss,
            )
            for ex in examples
        )

    def predict_text(self, text: str) -> list[float]:
        """The exploration distribution over the actions of an unlabelled example in VW text."""
        ws = self._ws
        with self._lock:
            exs = pylibvw.vw._parse(ws, text)
            try:
                pylibvw.vw.predict_multi(ws, exs)
                probs: list[float] = exs[0].get_action_scores()
            finally:
                pylibvw.vw._finish_example_multi_ex(ws, exs)
        return probs

    def learn_texts(self, texts: Iterable[str]) -> int:
        """Learn labelled examples in VW text, in order; returns how many were learned."""
        ws = self._ws
        n = 0
        with self._lock:
            for text in texts:
                exs = pylibvw.vw._parse(ws, text)
                try:
                    pylibvw.vw.learn_multi(ws, exs)
                finally:
                    pylibvw.vw._finish_example_multi_ex(ws, exs)
                n += 1
        return n

    def to_bytes(self) -> bytes:
        fd, name = tempfile.mkstemp(prefix="copyloop-vw-", suffix=".model")
        os.close(fd)
        try:
            with self._lock:
                self._ws.save(name)
            return Path(name).read_bytes()
        except (RuntimeError, OSError) as exc:
            raise ModelError(f"saving the VW model failed: {exc}") from exc
        finally:
            Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._ws.finish()


#: options a VW model file does not keep: given again when a model is loaded
_NOT_KEPT = ("--loss_function",)


def _not_kept(args: Sequence[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args[:-1]):
        if arg in _NOT_KEPT:
            out += [arg, args[i + 1]]
    return out


def _load(model: bytes, extra: Sequence[str] = ()) -> vowpalwabbit.Workspace:
    if not model:
        raise ModelError("empty VW model bytes")
    fd, name = tempfile.mkstemp(prefix="copyloop-vw-", suffix=".model")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model)
        # the model file keeps the reductions, learning rate, power_t and seed, not the loss
        # function (checked in tests: a reloaded model continues learning exactly as the
        # original would)
        return vowpalwabbit.Workspace(arg_list=["--quiet", "--initial_regressor", name, *extra])
    finally:
        Path(name).unlink(missing_ok=True)

"""The one module that imports ``vowpalwabbit``: it owns the VW argument list, the conversion of
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
from pathlib import Path
from typing import TYPE_CHECKING

import pylibvw
import vowpalwabbit

from bandit.errors import ModelError
from streams.schemas import ActionFeatures, FeatureValue

if TYPE_CHECKING:
    from bandit.policy import PolicyConfig

#: Namespace of each encoded-context key prefix (see ``bandit.features``); other keys go to C.
USER_NS = "U"
CONTEXT_NS = "C"
ACTION_NS = "A"

# VW's text format splits on whitespace, '|' starts a namespace and ':' a value.
_ESCAPE = str.maketrans({" ": "_", "\t": "_", "\n": "_", "\r": "_", "|": "/", ":": ";"})


def _token(name: str, value: FeatureValue) -> str:
    if isinstance(value, bool):
        return f"{name}={'1' if value else '0'}"
    if isinstance(value, float):
        # a float is a magnitude (numeric feature); bucketed values arrive as strings or ints
        return f"{name}:{value:.6g}" if math.isfinite(value) else f"{name}=nan"
    if isinstance(value, list):
        return " ".join(f"{name}={str(v).translate(_ESCAPE)}" for v in value) or f"{name}=none"
    return f"{name}={str(value).translate(_ESCAPE)}"


_TOKEN_CACHE: dict[tuple[str, FeatureValue], tuple[bool, str]] = {}
_TOKEN_CACHE_MAX = 500_000


def _context_token(key: str, value: FeatureValue) -> tuple[bool, str]:
    """``(is_user_feature, token)`` for one encoded-context entry."""
    name = key.translate(_ESCAPE)
    if name.startswith("u_"):
        return True, _token(name[2:], value)
    if name.startswith("c_"):
        return False, _token(name[2:], value)
    return False, _token(name, value)


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
                hit = cache[item] = _context_token(*item)
        else:
            hit = _context_token(*item)
        if hit[0]:
            user.append(hit[1])
        else:
            ctx.append(hit[1])
    return f"shared |{USER_NS} {' '.join(user)} |{CONTEXT_NS} {' '.join(ctx)}"


def action_line(features: ActionFeatures, variant_id: str | None = None) -> str:
    """``|A t=urgency ... lang=zh len=short gv=... [id=...]`` for one action."""
    parts = [f"t={t.translate(_ESCAPE)}" for t in features.traits]
    parts.append(f"lang={features.language}")
    parts.append(f"len={features.length_bucket.translate(_ESCAPE)}")
    parts.append(f"gv={features.generator_version.translate(_ESCAPE)}")
    if variant_id is not None:
        parts.append(f"id={variant_id.translate(_ESCAPE)}")
    return f"|{ACTION_NS} {' '.join(parts)}"


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


def vw_arguments(config: PolicyConfig, seed: int) -> list[str]:
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
    """A ``--cb_explore_adf`` workspace. VW is not thread-safe, so calls are serialised by a
    lock (uncontended in the learner, brief in a ranker)."""

    def __init__(self, args: Sequence[str], *, model: bytes | None = None) -> None:
        self.args = list(args)
        self._lock = threading.Lock()
        try:
            if model is None:
                self._ws = vowpalwabbit.Workspace(arg_list=self.args)
            else:
                self._ws = _load(model, _not_kept(self.args))
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"VW refused arguments {self.args}: {exc}") from exc

    def pmf(self, text: str) -> list[float]:
        """The exploration distribution over the actions of an unlabelled example."""
        ws = self._ws
        with self._lock:
            exs = pylibvw.vw._parse(ws, text)
            try:
                pylibvw.vw.predict_multi(ws, exs)
                probs: list[float] = exs[0].get_action_scores()
            finally:
                pylibvw.vw._finish_example_multi_ex(ws, exs)
        return probs

    def learn(self, texts: Iterable[str]) -> int:
        """Learn labelled examples in order; returns how many were learned."""
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

"""A reward model refitted in batches and explored by Thompson sampling (:class:`RefitConfig`).

Why: at click rates of a few percent, VW's one small online step per event leaves its ranking
noisy for long; a logistic fit to convergence on the same features ranks far better (measured in
docs/experiments/2026-batch-refit.md, which also records the variants tried and not taken).

- every ``every`` learned events it fits a logistic regression of "the shown variant earned a
  reward" (any reward > 0; its size and the propensity are not used: a correct model is
  unbiased under any logging policy) to the last ``window`` events (``bandit.logistic``), with
  a N(0, 1/l2) prior on every weight but the intercept;
- around that mode it takes the Laplace approximation of the posterior and draws ``members``
  weight vectors from it, each ``spread`` x a posterior deviation from the mode (1: Thompson
  sampling; narrower explores less, as Chapelle & Li found better for click models). The
  exploration distribution is the share of draws that rank each variant first, plus an
  ``epsilon`` floor: the form of VW's ``--bag``, so a logged propensity is exact and
  >= 1/members where it is neither zero nor the floor;
- until the first fit with both outcomes seen, every variant is equally likely.

Features (``bandit.tokens``): each action token (traits, language, length, generator) and each
token of the ``crosses`` namespaces (U: shopper, C: context) crossed with them. The shopper's
hashed id and the variant id are left out by design (memorised noise; a variant weight shared
by every shopper leaks one segment's taste into the others'). Weights of tokens absent from the
window are 0, the prior mean.

Scoring works on arrays: an action set's tokens are prepared once, a context's crossed tokens
are memoised per entry, and the distribution for one (shopper tokens, action set) pair is
computed with numpy once per fit and then reused, since shoppers share bucketed features.
Identical rows of the window are counted together, so a refit costs milliseconds to a
fraction of a second however long the window.

Fits are due every ``every`` learned events but made when their result is first needed (a
``pmf``, ``to_bytes``): ``learn`` keeps only the latest due fit's counts and draw index, since a
later due fit replaces an earlier one whole. The model is the same as if every due fit had run
at once (its draws are seeded by their index), while a learner reading a backlog, whose
snapshots are taken seconds apart, fits once per snapshot rather than every 500 events.

Saved, the window is its distinct rows once each plus one packed integer per event (row index
and outcome), so its size is bounded by ``window``, never by the traffic or a reward window."""

from __future__ import annotations

import base64
import json
import math
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

from bandit.errors import ModelError, check
from bandit.logistic import fit_logistic, laplace_precision
from bandit.scoring import ActionSet, Example
from bandit.tokens import action_tokens, context_tokens
from streams.schemas import FeatureValue

_FORMAT = "copyloop-refit/2"
#: the first format, with the window as a list of [row, outcome] pairs: still read
_FORMAT_V1 = "copyloop-refit/1"
_INTERCEPT_PRECISION = 1e-4
#: shopper / context tokens never crossed (nor used alone): the hashed shopper id
_SKIP_CROSS = ("id=",)
_CACHE_MAX = 100_000
_DIST_SETS_MAX = 4096
Row = tuple[str, ...]
#: an action set's tokens per action (the variant id left out)
_Tokens = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Contribution:
    """One feature's share of a variant's score: the weight of ``namespace`` token
    ``feature`` (``age=25-29``; empty for the variant's own term) crossed with the variant's
    ``action`` token (``t=urgency``). Features are binary, so the contribution is the weight."""

    namespace: str
    feature: str
    action: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def contribution_of(token: str, weight: float) -> Contribution:
    """``U^age=25-29^t=urgency`` (a cross) or ``A^t=urgency`` (the variant's own term)."""
    parts = token.split("^", 2)
    if len(parts) == 3:
        return Contribution(parts[0], parts[1], parts[2], weight)
    return Contribution(parts[0], "", parts[-1], weight)


@dataclass(frozen=True)
class RefitConfig:
    """The batch-refit model's settings; the defaults are the ones the simulator validated
    (``bandit.presets``)."""

    name: ClassVar[str] = "refit"

    #: posterior draws per fit: the exploration distribution's resolution (1/members)
    members: int = 5
    #: probability mass spread evenly over every action, beneath the draws' votes
    epsilon: float = 0.0
    #: namespaces crossed with the action's tokens: U shopper, C request context
    crosses: tuple[str, ...] = ("U",)
    #: learned events between refits
    every: int = 500
    #: the latest events a refit is fitted to
    window: int = 200_000
    #: the L2 penalty on each weight: a N(0, 1/l2) prior on every effect
    l2: float = 1.0
    #: each draw is mode + spread x a posterior deviation (1: Thompson sampling)
    spread: float = 0.5

    def __post_init__(self) -> None:
        check(
            isinstance(self.members, int) and 1 <= self.members <= 64,
            "members",
            "an integer in [1, 64]",
            self.members,
        )
        check(0.0 <= self.epsilon <= 1.0, "epsilon", "in [0, 1]", self.epsilon)
        check(
            isinstance(self.crosses, tuple) and set(self.crosses) <= {"U", "C"},
            "crosses",
            "a tuple of namespaces among 'U' and 'C'",
            self.crosses,
        )
        check(
            isinstance(self.every, int) and self.every >= 1,
            "every",
            "an integer >= 1",
            self.every,
        )
        check(
            isinstance(self.window, int) and self.window >= 1,
            "window",
            "an integer >= 1",
            self.window,
        )
        check(math.isfinite(self.l2) and self.l2 > 0, "l2", "> 0", self.l2)
        check(math.isfinite(self.spread) and self.spread >= 0, "spread", ">= 0", self.spread)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["crosses"] = list(self.crosses)
        return out

    def build(self, seed: int, state: bytes | None = None) -> RefitModel:
        return RefitModel(self, seed, model=state)


def _action_set_tokens(actions: ActionSet) -> _Tokens:
    return tuple(tuple(action_tokens(f)) for f in actions.features)


class RefitModel:
    """The scoring-model verbs over a logistic model refitted in batches (see the module)."""

    def __init__(self, config: RefitConfig, seed: int, *, model: bytes | None = None) -> None:
        self.config = config
        self.seed = seed
        self._cross = tuple(sorted(set(config.crosses)))
        self._lock = threading.Lock()
        self._window: deque[tuple[Row, bool]] = deque()
        #: the window's rows counted: [failures, successes] (what a refit fits)
        self._counts: dict[Row, list[int]] = {}
        self._since = 0
        self._refits = 0
        #: outcomes in the window: [failures, successes] (a fit needs both)
        self._outcomes = [0, 0]
        #: the latest due fit not made yet: the window's counts then and its draw index
        self._pending: tuple[list[tuple[Row, int, int]], int] | None = None
        #: serialises fits (a pmf that makes a due fit, a learner saving)
        self._fit_lock = threading.Lock()
        self._vocab: dict[str, int] = {}
        #: one row per member, one column per vocabulary token + a zero padding column
        self._coef: NDArray[np.float64] = np.zeros((0, 0))
        #: per action set (by id, kept alive beside its entry): shopper tokens -> distribution
        self._dists: dict[int, tuple[ActionSet, dict[Row, list[float]]]] = {}
        #: per (key, value) of a context: its crossed tokens ("U^age=18-24", ...)
        self._items: dict[tuple[str, FeatureValue], Row] = {}
        #: per context key set (in order): the keys to cross, in ``_cross`` order
        self._plans: dict[tuple[str, ...], tuple[tuple[str, bool], ...]] = {}
        #: interned window rows, by (shopper tokens, action tokens)
        self._rows: dict[tuple[Row, Row], Row] = {}
        if model is not None:
            self._restore(model)

    # -- features -------------------------------------------------------------------------
    def _item(self, key: str, value: FeatureValue) -> Row:
        ns, tokens = context_tokens(key, value)
        if ns not in self._cross:
            return ()
        return tuple(f"{ns}^{t}" for t in tokens if not t.startswith(_SKIP_CROSS))

    def _shared(self, context: Mapping[str, FeatureValue]) -> Row:
        """The context's crossed tokens, namespace by namespace in ``_cross`` order."""
        keys = tuple(context)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        items = self._items
        out: list[str] = []
        for key, idlike in plan:
            value = context[key]
            kind = type(value)
            if kind is float or kind is list:  # not memoised: see bandit.vw.shared_line
                out += self._item(key, value)
                continue
            if idlike:
                continue  # every token skipped (``_SKIP_CROSS``): nothing to look up or keep
            item = (key, value)
            hit = items.get(item)
            if hit is None:
                if len(items) >= _CACHE_MAX:
                    items.clear()
                hit = items[item] = self._item(key, value)
            out += hit
        return tuple(out)

    def _plan(self, keys: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
        """The keys of a context with these keys (in this order) whose namespace is crossed,
        namespace by namespace in ``_cross`` order (a key's namespace does not depend on its
        value); contexts from one encoder share their keys, so this is made once. Each key
        comes with whether all its tokens are skipped unless its value is a float (a shopper
        id: ``id=...``, where a float would give ``id:x``), so a new shopper's id is neither
        looked up nor cached."""
        found = {key: context_tokens(key, "") for key in keys}
        plan = tuple(
            (key, all(t.startswith(_SKIP_CROSS) for t in found[key][1]))
            for ns in self._cross
            for key in keys
            if found[key][0] == ns
        )
        if len(self._plans) >= _DIST_SETS_MAX:
            self._plans.clear()
        self._plans[keys] = plan
        return plan

    @staticmethod
    def _row_tokens(shared: Row, tokens: Row) -> Row:
        return (*(f"A^{a}" for a in tokens), *(f"{s}^{a}" for s in shared for a in tokens))

    def _row(self, shared: Row, tokens: Row) -> Row:
        key = (shared, tokens)
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= _CACHE_MAX:
                self._rows.clear()
            row = self._rows[key] = self._row_tokens(shared, tokens)
        return row

    # -- the verbs ------------------------------------------------------------------------
    def pmf(self, context: Mapping[str, FeatureValue], actions: ActionSet) -> list[float]:
        k = len(actions)
        if self._pending is not None:
            self._fit_pending()
        with self._lock:
            coef, vocab, dists = self._coef, self._vocab, self._dists
        if coef.shape[0] == 0:
            return [1.0 / k] * k
        shared = self._shared(context)
        entry = dists.get(id(actions))
        if entry is None or entry[0] is not actions:
            if len(dists) >= _DIST_SETS_MAX:
                dists.clear()
            entry = dists[id(actions)] = (actions, {})
        cache = entry[1]
        dist = cache.get(shared)
        if dist is None:
            tokens = actions.prepared(("refit-tokens",), _action_set_tokens)
            dist = self._dist(coef, vocab, shared, tokens)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[shared] = dist
        return dist

    def _dist(
        self, coef: NDArray[np.float64], vocab: dict[str, int], shared: Row, tokens: _Tokens
    ) -> list[float]:
        """The members' votes (+ the epsilon floor) for one shopper over one action set."""
        pad = coef.shape[1] - 1
        cols: list[int] = []
        starts: list[int] = []
        for toks in tokens:
            starts.append(len(cols))
            # the zero padding column first keeps every slice non-empty for reduceat
            cols.append(pad)
            cols += [c for c in map(vocab.get, self._row_tokens(shared, toks)) if c is not None]
        sums = np.add.reduceat(coef[:, cols], starts, axis=1)  # (members, actions)
        k = len(tokens)
        votes = np.bincount(np.argmax(sums, axis=1), minlength=k) / coef.shape[0]
        eps = self.config.epsilon
        out: list[float] = ((1.0 - eps) * votes + eps / k).tolist()
        return out

    def weights(self) -> dict[str, float]:
        """Each token's weight in the latest fit: the mean of the members' draws (the posterior
        mode, up to the draws' noise). What :meth:`explain` and the dashboard's segment view
        read, so the two agree. Empty before the first fit."""
        if self._pending is not None:
            self._fit_pending()
        with self._lock:
            coef, vocab = self._coef, self._vocab
        if coef.shape[0] == 0:
            return {}
        mean = coef.mean(axis=0)
        return {tok: float(mean[i]) for tok, i in vocab.items()}

    def explain(
        self, context: Mapping[str, FeatureValue], actions: ActionSet, action: int, top: int = 5
    ) -> list[Contribution]:
        """The ``top`` features that moved ``action``'s score most (largest absolute weights
        among the tokens its row holds for this context). The shopper's hashed id is never a
        feature (``_SKIP_CROSS``), so it never appears."""
        check(0 <= action < len(actions), "action", f"in [0, {len(actions)})", action)
        if self._pending is not None:
            self._fit_pending()
        with self._lock:
            coef, vocab = self._coef, self._vocab
        if coef.shape[0] == 0:
            return []
        tokens = actions.prepared(("refit-tokens",), _action_set_tokens)
        mean = coef.mean(axis=0)
        found = [
            contribution_of(tok, float(mean[i]))
            for tok in self._row_tokens(self._shared(context), tokens[action])
            if (i := vocab.get(tok)) is not None and "id=" not in tok
        ]
        found.sort(key=lambda c: (-abs(c.weight), c.namespace, c.feature, c.action))
        return found[: max(0, top)]

    def learn(self, examples: Iterable[Example]) -> int:
        n = 0
        window, counts, limit = self._window, self._counts, self.config.window
        outcomes, every = self._outcomes, self.config.every
        shared_of, row_of = self._shared, self._row
        acts: ActionSet | None = None
        tokens: _Tokens = ()
        with self._lock:
            for ex in examples:
                if ex.actions is not acts:  # a run of one pool's decisions: looked up once
                    acts = ex.actions
                    tokens = acts.prepared(("refit-tokens",), _action_set_tokens)
                row = row_of(shared_of(ex.context), tokens[ex.action])
                success = ex.reward > 0
                if len(window) >= limit:
                    self._forget(*window.popleft())
                window.append((row, success))
                c = counts.get(row)
                if c is None:
                    c = counts[row] = [0, 0]
                c[success] += 1
                outcomes[success] += 1
                n += 1
                self._since += 1
                if self._since >= every:
                    self._since = 0
                    # a fit of a single outcome changes nothing (see _fit); one of both
                    # replaces any earlier fit not made yet
                    if outcomes[0] and outcomes[1]:
                        self._pending = (self._window_counts(), self._refits)
                        self._refits += 1
        return n

    def _forget(self, row: Row, success: bool) -> None:
        c = self._counts[row]
        c[success] -= 1
        self._outcomes[success] -= 1
        if c[0] == 0 and c[1] == 0:
            del self._counts[row]

    def _window_counts(self) -> list[tuple[Row, int, int]]:
        return [(row, c[0], c[1]) for row, c in self._counts.items()]

    def _fit_pending(self) -> None:
        with self._fit_lock:
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                self._fit(*pending)

    def refit(self) -> bool:
        """Fit the window now and draw the members from the posterior; False (nothing changed)
        when the window holds a single outcome."""
        with self._fit_lock:
            with self._lock:
                counts = self._window_counts()
                self._since = 0
                self._pending = None
                index = self._refits
            if self._fit(counts, index):
                with self._lock:
                    self._refits += 1
                return True
            return False

    def _fit(self, counts: list[tuple[Row, int, int]], index: int) -> bool:
        """Fit ``counts`` (rows with their failures and successes) and draw the members with
        the ``index``-th seed; False (nothing changed) when they hold a single outcome."""
        vocab: dict[str, int] = {}
        indices: list[int] = []
        indptr = [0]
        labels: list[int] = []
        weights: list[int] = []
        for row, failures, successes in counts:
            cols = [vocab.setdefault(tok, len(vocab)) for tok in row]
            for label, weight in ((0, failures), (1, successes)):
                if weight:
                    indices += cols
                    indptr.append(len(indices))
                    labels.append(label)
                    weights.append(weight)
        x = csr_matrix(
            (np.ones(len(indices)), indices, indptr), shape=(len(labels), max(len(vocab), 1))
        )
        w = np.asarray(weights, dtype=np.float64)
        l2 = self.config.l2
        fit = fit_logistic(x, np.asarray(labels), l2=l2, weights=w)
        if fit is None:
            return False
        precision = laplace_precision(
            x, fit, l2=l2, intercept_precision=_INTERCEPT_PRECISION, weights=w
        )
        chol = np.linalg.cholesky(precision)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index])
        members = self.config.members
        # members: draws from N(mode, precision^-1), as mode + L^-T z with precision = L L'
        mode = fit.mode
        draws = mode[:, None] + self.config.spread * np.linalg.solve(
            chol.T, rng.standard_normal((len(mode), members))
        )
        coef = np.zeros((members, len(vocab) + 1))  # + a zero padding column
        coef[:, :-1] = draws[:-1].T  # the intercept is the same for every action: not kept
        with self._lock:
            self._vocab, self._coef, self._dists = vocab, coef, {}
        return True

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        self._fit_pending()  # a saved model holds its latest due fit
        with self._lock:
            rows: dict[Row, int] = {}
            codes = np.fromiter(
                ((rows.setdefault(row, len(rows)) << 1) | s for row, s in self._window),
                dtype="<u4",
                count=len(self._window),
            )
            state = {
                "format": _FORMAT,
                "vocab": sorted(self._vocab, key=self._vocab.__getitem__),
                "coef": self._coef.tolist(),
                "rows": [list(r) for r in rows],
                # one little-endian uint32 per event, oldest first: row index << 1 | success
                "window": base64.b64encode(codes.tobytes()).decode("ascii"),
                "since": self._since,
                "refits": self._refits,
            }
        return zlib.compress(json.dumps(state, separators=(",", ":")).encode("utf-8"))

    def _restore(self, model: bytes) -> None:
        try:
            state = json.loads(zlib.decompress(model).decode("utf-8"))
            if state.get("format") == _FORMAT:
                codes = np.frombuffer(base64.b64decode(state["window"]), dtype="<u4").tolist()
                pairs = [(c >> 1, c & 1) for c in codes]
            elif state.get("format") == _FORMAT_V1:
                pairs = state["window"]
            else:
                raise ValueError(f"format {state.get('format')!r}")
            rows = [tuple(r) for r in state["rows"]]
            for i, s in pairs[-self.config.window :]:
                row, success = rows[i], bool(s)
                self._window.append((row, success))
                c = self._counts.get(row)
                if c is None:
                    c = self._counts[row] = [0, 0]
                c[success] += 1
                self._outcomes[success] += 1
            self._vocab = {tok: i for i, tok in enumerate(state["vocab"])}
            coef = np.asarray(state["coef"], dtype=np.float64)
            width = len(self._vocab) + 1  # + the padding column
            self._coef = coef.reshape(len(coef), width) if len(coef) else np.zeros((0, 0))
            self._since = int(state["since"])
            self._refits = int(state["refits"])
        except (zlib.error, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(f"not a refit model: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._window.clear()
            self._counts.clear()
            self._outcomes[:] = [0, 0]
            self._pending = None
            self._dists = {}

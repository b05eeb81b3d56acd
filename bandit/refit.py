"""A reward model refitted in batches and explored by Thompson sampling: ``model="refit"``.

VW's online learner takes one small gradient step per event. At click rates of a few percent
that leaves its ranking noisy for a long time: trained on the same 10,000 uniformly explored
decisions of random simulator worlds, the greedy choice of the online model reached 0.83 x the
oracle's CTR over the next 10,000 (8 worlds), a logistic model fitted to convergence on the
same shopper x trait features 0.92-0.95 x (4 worlds; a learner told the true segments
0.95-0.97 x). This model is that fit, kept up to date, with the exploration it needs:

- every ``refit_every`` learned events it fits a logistic regression of "the shown variant
  earned a reward" to the events of its replay window (the last ``refit_window``), to
  convergence (scikit-learn, Newton steps), with a N(0, 1/l2) prior on every weight but the
  intercept;
- around that mode it takes the Laplace approximation of the posterior and draws ``members``
  weight vectors from it (Chapelle & Li's Thompson sampling for display ads, refitted in
  batches as theirs was), each ``spread`` x a posterior deviation from the mode (1: Thompson
  sampling; they found a narrower spread better for click models, and so did the simulator:
  README, "Learning quality"). The exploration distribution is the share of draws that rank each
  variant first, plus an ``epsilon`` floor: the form of VW's ``--bag``, so a logged
  propensity is exact and >= 1/members where it is not zero or the floor. Bootstrap members
  (refits on resampled windows) were tried first: they cannot express the uncertainty of what
  was rarely shown, and runs locked into a worse model (on one world, 0.86 x oracle greedy
  after 20,000 adaptive decisions against 0.95 x from 10,000 uniform ones);
- until the first fit with both outcomes seen, every variant is equally likely.

Features are read from the same VW text the online model gets (``bandit.vw``): each action
token (traits, language, length, generator), and each shopper / context token crossed with
them for every interaction pair ``XA`` of the policy (``UA``: shopper x variant). Left out by
design, with what they cost a fit to convergence on those worlds: the shopper's hashed id
(thousands of weights that memorise noise: 0.64 x oracle) and the variant id (its one weight
is shared by every shopper, so one segment's taste for a variant leaked into the others'
rankings: 0.84-0.94 x against 0.92-0.95 x without). A reward is a success when > 0; its size is
not used. Nor are propensities: the model is fitted to what was shown, not re-weighted (a
correct model is unbiased under any logging policy; 1/propensity weights only add variance).
Weights of tokens absent from the window are 0, the prior mean.

Events are aggregated before a fit (identical feature rows add up), so a refit takes
milliseconds to a fraction of a second however long the window; it runs inside ``learn``."""

from __future__ import annotations

import json
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix, hstack
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from bandit.errors import ModelError

if TYPE_CHECKING:
    from bandit.policy import PolicyConfig

_FORMAT = "copyloop-refit/1"
_MAX_ITER = 500
_INTERCEPT_PRECISION = 1e-4
#: shopper / context tokens never crossed (nor used alone): the hashed shopper id
_SKIP_CROSS = ("id=",)
Row = tuple[str, ...]


def _namespaces(line: str) -> dict[str, list[str]]:
    """``{"U": [...], "C": [...]}`` of one VW text line (``shared |U a b |C c`` or
    ``[label] |A t=x ...``)."""
    out: dict[str, list[str]] = {}
    for part in line.split("|")[1:]:
        if part:
            out[part[0]] = part[1:].split()
    return out


class RefitModel:
    """Same verbs as ``bandit.vw.VWModel``: ``pmf(text)``, ``learn(texts)``, ``to_bytes()``."""

    def __init__(self, config: PolicyConfig, seed: int, *, model: bytes | None = None) -> None:
        self.members = config.bag_size
        self.epsilon = config.epsilon
        self.every = config.refit_every
        self.l2 = config.refit_l2
        self.spread = config.refit_spread
        self.cross = tuple(
            sorted({ns for pair in config.interactions if pair.endswith("A") for ns in pair[:-1]})
        )
        self.seed = seed
        self._lock = threading.Lock()
        self._window: deque[tuple[Row, bool]] = deque(maxlen=config.refit_window)
        self._since = 0
        self._refits = 0
        self._vocab: dict[str, int] = {}
        self._coef: NDArray[np.float64] = np.zeros((0, 0))
        #: per (crossed shopper tokens, action lines): the vocabulary columns of each action
        self._columns: dict[tuple[Row, Row], tuple[NDArray[np.intp], NDArray[np.int64]]] = {}
        self._actions: dict[str, list[str]] = {}
        if model is not None:
            self._restore(model)

    # -- features -------------------------------------------------------------------------
    def _action(self, line: str) -> list[str]:
        """The tokens of an action line (label stripped), without the variant id."""
        bar = line.find("|")
        body = line[bar:] if bar >= 0 else line
        hit = self._actions.get(body)
        if hit is None:
            hit = [t for t in _namespaces(body).get("A", []) if not t.startswith("id=")]
            if len(self._actions) >= 100_000:
                self._actions.clear()
            self._actions[body] = hit
        return hit

    def _shared_tokens(self, line: str) -> list[str]:
        # not cached: the shared line carries the shopper id and the context, so it rarely repeats
        spaces = _namespaces(line)
        return [
            f"{ns}^{tok}"
            for ns in self.cross
            for tok in spaces.get(ns, [])
            if not tok.startswith(_SKIP_CROSS)
        ]

    def _row(self, shared: list[str], line: str) -> Row:
        tokens = self._action(line)
        return (*(f"A^{a}" for a in tokens), *(f"{s}^{a}" for s in shared for a in tokens))

    # -- the verbs ------------------------------------------------------------------------
    def pmf(self, text: str) -> list[float]:
        lines = text.split("\n")
        has_shared = lines[0].startswith("shared")
        actions = lines[1:] if has_shared else lines
        k = len(actions)
        with self._lock:
            coef, vocab, cache = self._coef, self._vocab, self._columns
        if coef.shape[0] == 0 or k == 0:
            return [1.0 / k] * k if k else []
        shared = self._shared_tokens(lines[0]) if has_shared else []
        key = (tuple(shared), tuple(actions))
        hit = cache.get(key)
        if hit is None:
            pad = coef.shape[1] - 1
            cols: list[int] = []
            starts: list[int] = []
            for line in actions:
                starts.append(len(cols))
                # the zero padding column first keeps every slice non-empty for reduceat
                cols.append(pad)
                cols += [c for c in map(vocab.get, self._row(shared, line)) if c is not None]
            hit = (np.asarray(cols, dtype=np.intp), np.asarray(starts))
            if len(cache) >= 100_000:
                cache.clear()
            cache[key] = hit
        sums = np.add.reduceat(coef[:, hit[0]], hit[1], axis=1)
        votes = np.bincount(np.argmax(sums, axis=1), minlength=k) / coef.shape[0]
        dist: list[float] = ((1.0 - self.epsilon) * votes + self.epsilon / k).tolist()
        return dist

    def learn(self, texts: Iterable[str]) -> int:
        n = 0
        for text in texts:
            lines = text.split("\n")
            has_shared = lines[0].startswith("shared")
            shared = self._shared_tokens(lines[0]) if has_shared else []
            chosen = None
            for line in lines[1:] if has_shared else lines:
                if not line.startswith("|"):  # the labelled line: "0:cost:probability |A ..."
                    chosen = line
                    break
            if chosen is None:
                raise ModelError("a learned example has no labelled action")
            try:
                cost = float(chosen.split(":", 2)[1])
            except (IndexError, ValueError) as exc:
                raise ModelError(f"unreadable label in {chosen[:80]!r}") from exc
            with self._lock:
                self._window.append((self._row(shared, chosen), cost < 0))
                self._since += 1
                due = self._since >= self.every
            n += 1
            if due:
                self.refit()
        return n

    def refit(self) -> bool:
        """Fit the window now and draw the members from the posterior; False (nothing changed)
        when the window holds a single outcome."""
        with self._lock:
            counts: dict[Row, list[int]] = {}
            for row, success in self._window:
                c = counts.get(row)
                if c is None:
                    c = counts[row] = [0, 0]
                c[success] += 1
            self._since = 0
        vocab: dict[str, int] = {}
        indices: list[int] = []
        indptr = [0]
        labels: list[int] = []
        weights: list[int] = []
        for row, (failures, successes) in counts.items():
            cols = [vocab.setdefault(tok, len(vocab)) for tok in row]
            for label, weight in ((0, failures), (1, successes)):
                if weight:
                    indices += cols
                    indptr.append(len(indices))
                    labels.append(label)
                    weights.append(weight)
        if len(set(labels)) < 2:
            return False
        x = csr_matrix(
            (np.ones(len(indices)), indices, indptr), shape=(len(labels), max(len(vocab), 1))
        )
        y = np.asarray(labels)
        w = np.asarray(weights, dtype=np.float64)
        # the posterior mode: Newton steps on a Cholesky factor, exact and fast for the few
        # hundred columns of aggregated rows (L-BFGS stopped short at its default tolerance)
        fit = LogisticRegression(C=1.0 / self.l2, solver="newton-cholesky", max_iter=_MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit.fit(x, y, sample_weight=w)
        mode = np.append(fit.coef_[0], fit.intercept_[0])
        # the Laplace approximation around it: precision = X' diag(w p (1 - p)) X + the prior's
        # (l2 on each weight, a nearly flat prior on the intercept)
        # (sparse products: the rows x columns matrix is never made dense)
        xi = hstack([x, np.ones((x.shape[0], 1))], format="csr")
        p = expit(xi @ mode)
        precision = np.asarray((xi.T @ xi.multiply((w * p * (1.0 - p))[:, None])).todense())
        precision[np.diag_indices_from(precision)] += np.append(
            np.full(len(vocab), self.l2), _INTERCEPT_PRECISION
        )
        chol = np.linalg.cholesky(precision)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self._refits])
        # members: draws from N(mode, precision^-1), as mode + L^-T z with precision = L L'
        draws = mode[:, None] + self.spread * np.linalg.solve(
            chol.T, rng.standard_normal((len(mode), self.members))
        )
        coef = np.zeros((self.members, len(vocab) + 1))  # + a zero padding column
        coef[:, :-1] = draws[:-1].T  # the intercept is the same for every action: not kept
        with self._lock:
            self._vocab, self._coef, self._columns = vocab, coef, {}
            self._refits += 1
        return True

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        with self._lock:
            rows: dict[Row, int] = {}
            window = [[rows.setdefault(row, len(rows)), int(s)] for row, s in self._window]
            state = {
                "format": _FORMAT,
                "vocab": sorted(self._vocab, key=self._vocab.__getitem__),
                "coef": self._coef.tolist(),
                "rows": [list(r) for r in rows],
                "window": window,
                "since": self._since,
                "refits": self._refits,
            }
        return zlib.compress(json.dumps(state, separators=(",", ":")).encode("utf-8"))

    def _restore(self, model: bytes) -> None:
        try:
            state = json.loads(zlib.decompress(model).decode("utf-8"))
            if state.get("format") != _FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
            rows = [tuple(r) for r in state["rows"]]
            self._window.extend((rows[i], bool(s)) for i, s in state["window"])
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

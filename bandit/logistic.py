"""The project's one logistic regression: an L2-penalised fit (scikit-learn's Newton solver) and
the Laplace approximation of its posterior. The batch-refit model, the simulator's informed
reference learner and the simulator's DR reward model all fit with it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix, hstack, issparse
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

FloatArray = NDArray[np.float64]
Matrix: TypeAlias = FloatArray | csr_matrix

_MAX_ITER = 500


@dataclass(frozen=True)
class LogisticFit:
    """The posterior mode: one weight per column of ``x`` and an intercept."""

    coef: FloatArray
    intercept: float

    @property
    def mode(self) -> FloatArray:
        """``coef`` with the intercept appended, the layout of :func:`laplace_precision`."""
        return np.append(self.coef, self.intercept)

    def predict(self, x: Matrix) -> FloatArray:
        """The fitted probability of each row of ``x``."""
        out: FloatArray = expit(x @ self.coef + self.intercept)
        return out


def fit_logistic(
    x: Matrix, y: NDArray[np.generic], *, l2: float = 1.0, weights: FloatArray | None = None
) -> LogisticFit | None:
    """The mode of a logistic regression of ``y`` (0/1) on ``x`` (dense or sparse rows), with
    a N(0, 1/l2) prior on every weight and a flat one on the intercept, optionally weighting
    each row (aggregated rows carry their counts); ``None`` when ``y`` holds a single outcome
    (no finite mode: the intercept would run off to infinity).

    Newton steps on a Cholesky factor (``newton-cholesky``) converge exactly and fast for the
    few hundred columns these fits have; L-BFGS stopped short at its default tolerance."""
    if np.unique(y).size < 2:
        return None
    fit = LogisticRegression(C=1.0 / l2, solver="newton-cholesky", max_iter=_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit.fit(x, y, sample_weight=weights)
    return LogisticFit(fit.coef_[0].astype(np.float64), float(fit.intercept_[0]))


def laplace_precision(
    x: Matrix,
    fit: LogisticFit,
    *,
    l2: float,
    intercept_precision: float,
    weights: FloatArray | None = None,
) -> FloatArray:
    """The posterior precision around ``fit.mode`` (Laplace): ``X' diag(w p (1 - p)) X`` plus
    the prior's (``l2`` on each weight, ``intercept_precision`` on the intercept, last), with
    ``X`` the rows of ``x`` and a column of ones. Sparse ``x`` stays sparse until the product,
    so a window of many rows never becomes a dense rows x columns matrix."""
    rows = x.shape[0]
    w = np.ones(rows) if weights is None else weights
    if issparse(x):
        xi = hstack([x, np.ones((rows, 1))], format="csr")
        p = expit(xi @ fit.mode)
        precision = np.asarray((xi.T @ xi.multiply((w * p * (1.0 - p))[:, None])).todense())
    else:
        xd = np.hstack([np.asarray(x, dtype=np.float64), np.ones((rows, 1))])
        p = expit(xd @ fit.mode)
        precision = (xd * (w * p * (1.0 - p))[:, None]).T @ xd
    precision[np.diag_indices_from(precision)] += np.append(
        np.full(precision.shape[0] - 1, l2), intercept_precision
    )
    return np.asarray(precision, dtype=np.float64)

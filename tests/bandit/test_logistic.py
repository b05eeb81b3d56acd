"""The project's one logistic fit (``bandit.logistic``): it recovers known effects, stays finite
where a plain Newton step would not, agrees on dense, sparse and aggregated rows, and its
Laplace precision is the penalised log-likelihood's curvature at the mode."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from bandit.logistic import fit_logistic, laplace_precision


def _data(n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, 2)).astype(float)
    true = np.array([1.0, -0.7])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ true - 2.5)))).astype(float)
    return x, y, true


def test_fit_recovers_known_effects_within_its_posterior_spread() -> None:
    x, y, true = _data()
    fit = fit_logistic(x, y, l2=1.0)
    assert fit is not None
    assert np.allclose(fit.coef, true, atol=0.1) and abs(fit.intercept + 2.5) < 0.1
    cov = np.linalg.inv(laplace_precision(x, fit, l2=1.0, intercept_precision=0.01))
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    err = fit.mode - np.append(true, -2.5)
    assert np.all(np.abs(err) < 4 * np.sqrt(np.diag(cov)))


def test_rare_clicks_stay_finite_at_the_mode() -> None:
    # a trait shown 150 times and never clicked, 3 % clicks elsewhere: a full Newton step
    # overshoots here (the reference learner once diverged to weights of -800 this way)
    rng = np.random.default_rng(1)
    x = np.zeros((4000, 2))
    x[:150, 0] = 1.0
    x[150:, 1] = rng.integers(0, 2, size=3850)
    y = np.where(np.arange(4000) < 150, 0.0, (rng.random(4000) < 0.03).astype(float))
    fit = fit_logistic(x, y, l2=1.0)
    assert fit is not None and np.all(np.isfinite(fit.mode))
    p = fit.predict(x)
    grad = x.T @ (p - y) + 1.0 * fit.coef
    # the gradient vanishes, to the solver's tolerance on the mean loss
    assert np.abs(grad).max() < 1e-5 * len(x) and abs(float(np.sum(p - y))) < 1e-5 * len(x)
    assert -4.5 < fit.intercept < -2.5 and fit.coef[0] < -0.5


def test_dense_sparse_and_aggregated_rows_agree() -> None:
    x, y, _ = _data(4000, seed=2)
    dense = fit_logistic(x, y, l2=1.0)
    sparse = fit_logistic(csr_matrix(x), y, l2=1.0)
    rows, which = np.unique(x, axis=0, return_inverse=True)
    which = which.ravel()
    clicks = np.bincount(which, weights=y)
    shown = np.bincount(which).astype(float)
    agg_x = np.vstack([rows, rows])
    agg_y = np.repeat([1.0, 0.0], len(rows))
    agg_w = np.concatenate([clicks, shown - clicks])
    aggregated = fit_logistic(agg_x, agg_y, l2=1.0, weights=agg_w)
    assert dense is not None and sparse is not None and aggregated is not None
    assert np.allclose(dense.mode, sparse.mode, atol=1e-6)
    assert np.allclose(dense.mode, aggregated.mode, atol=1e-5)
    p_dense = laplace_precision(x, dense, l2=1.0, intercept_precision=1e-4)
    p_sparse = laplace_precision(csr_matrix(x), dense, l2=1.0, intercept_precision=1e-4)
    p_agg = laplace_precision(agg_x, dense, l2=1.0, intercept_precision=1e-4, weights=agg_w)
    assert np.allclose(p_dense, p_sparse) and np.allclose(p_dense, p_agg)


def test_precision_is_the_curvature_at_the_mode() -> None:
    x, y, _ = _data(3000, seed=3)
    fit = fit_logistic(x, y, l2=2.0)
    assert fit is not None
    xi = np.hstack([x, np.ones((len(x), 1))])

    def loss(w: np.ndarray) -> float:
        z = xi @ w
        prior = 0.5 * 2.0 * float(w[:-1] @ w[:-1]) + 0.5 * 0.5 * float(w[-1] ** 2)
        return float(np.sum(np.logaddexp(0.0, z) - y * z)) + prior

    h, m, d = 1e-4, fit.mode, len(fit.mode)
    numeric = np.array(
        [
            [
                (loss(m + h * (np.eye(d)[i] + np.eye(d)[j])) - loss(m + h * np.eye(d)[i])
                 - loss(m + h * np.eye(d)[j]) + loss(m)) / h**2
                for j in range(d)
            ]
            for i in range(d)
        ]
    )  # fmt: skip
    analytic = laplace_precision(x, fit, l2=2.0, intercept_precision=0.5)
    assert np.allclose(analytic, numeric, rtol=1e-2, atol=1e-1)


def test_a_single_outcome_has_no_mode() -> None:
    assert fit_logistic(np.ones((10, 2)), np.zeros(10)) is None
    assert fit_logistic(np.ones((0, 2)), np.zeros(0)) is None

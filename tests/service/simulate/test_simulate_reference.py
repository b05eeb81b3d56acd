"""The informed reference learner of the simulator's sweeps: its logistic fit recovers known
effects, its trait columns are the shown texts', and on a small two-segment world it learns the
segments' opposite tastes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service.errors import SimulationError
from service.simulate import policies
from service.simulate.catalog import make_catalog
from service.simulate.reference import ReferenceConfig, fit_logistic, run_reference, trait_matrix
from service.simulate.report import plot_sweep
from service.simulate.world import Shoppers, World
from streams.schemas import TRAITS
from tests.service.simulate.test_simulate import _pools, _scenario


@pytest.fixture(scope="module")
def world() -> World:
    products = make_catalog(2, "zh", 3)
    return World.build(_scenario(), products, _pools(products))


@pytest.fixture(scope="module")
def shoppers(world: World) -> Shoppers:
    return Shoppers.draw(
        _scenario(), world, hash_key=b"k", start=datetime(2026, 1, 8, tzinfo=UTC),
        step_s=1.0, population=50, seed=3,
    )  # fmt: skip


def test_fit_recovers_known_effects() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(40_000), rng.integers(0, 2, size=(40_000, 2))]).astype(float)
    true = np.array([-2.5, 1.0, -0.7])
    y = (rng.random(40_000) < 1 / (1 + np.exp(-(x @ true)))).astype(float)
    mean, cov = fit_logistic(x, y, np.array([0.01, 1.0, 1.0]), np.zeros(3))
    assert np.allclose(mean, true, atol=0.1)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.all(np.abs(mean - true) < 4 * np.sqrt(np.diag(cov)))


def test_fit_does_not_diverge_on_rare_clicks_or_a_far_start() -> None:
    # a trait shown 150 times and never clicked, 3 % clicks elsewhere: a full Newton step from a
    # warm start overshoots (the reference once diverged to weights of -800 this way)
    rng = np.random.default_rng(1)
    x = np.zeros((4000, 3))
    x[:, 0] = 1.0
    x[:150, 1] = 1.0
    x[150:, 2] = rng.integers(0, 2, size=3850)
    y = np.where(np.arange(4000) < 150, 0.0, (rng.random(4000) < 0.03).astype(float))
    precision = np.array([0.01, 1.0, 1.0])
    for start in (np.zeros(3), np.array([-800.0, -700.0, 400.0]), np.array([np.nan, 0, 0])):
        mean, cov = fit_logistic(x, y, precision, start)
        p = 0.5 * (1 + np.tanh(0.5 * (x @ mean)))
        assert np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
        assert np.abs(x.T @ (p - y) + precision * mean).max() < 1e-4  # the mode: gradient 0
        assert -4.5 < mean[0] < -2.5 and mean[1] < -0.5


def test_trait_columns_are_the_shown_traits(world: World) -> None:
    feats = trait_matrix(world)
    assert [f.shape for f in feats] == [(int(n), len(TRAITS) + 1) for n in world.sizes]
    for x, shown in zip(feats, world.shown_traits, strict=True):
        assert np.all(x[:, 0] == 1)
        for row, traits in zip(x, shown, strict=True):
            assert {TRAITS[i - 1] for i in np.flatnonzero(row[1:]) + 1} == set(traits)


def test_reference_learns_each_segments_taste(world: World, shoppers: Shoppers) -> None:
    tr = run_reference(world, shoppers, seed=1)
    rows = world.prob[shoppers.segment, shoppers.product]
    assert np.allclose(tr.prob, rows[np.arange(shoppers.n), tr.action])
    assert np.array_equal(tr.click, shoppers.u < tr.prob)
    half = shoppers.n // 2
    uni = policies.uniform(world, shoppers).expected[half:].mean()
    orc = policies.oracle(world, shoppers).expected[half:].mean()
    assert tr.expected[half:].mean() > uni + 0.8 * (orc - uni)
    again = run_reference(world, shoppers, seed=1)
    assert np.array_equal(again.action, tr.action)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"refit_every": 0}, "refit_every"), ({"prior_precision": 0.0}, "prior_precision")],
)
def test_bad_reference_settings_name_the_field(changes: dict[str, float], field: str) -> None:
    with pytest.raises(SimulationError, match=field):
        ReferenceConfig(**changes)  # type: ignore[arg-type]


def test_sweep_plot_is_written(tmp_path: Path) -> None:
    rows = [
        {"seed": 1, "reference_vs_oracle_last_half": 0.95, "bandit_vs_oracle_last_half": 0.93,
         "meets_bars": True},
        {"seed": 2, "reference_vs_oracle_last_half": 0.85, "bandit_vs_oracle_last_half": 0.82,
         "meets_bars": False},
    ]  # fmt: skip
    path = plot_sweep(rows, tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000

"""The informed reference learner of the simulator's sweeps: its trait columns are the shown
texts', and on a small two-segment world it learns the segments' opposite tastes (its logistic
fit is ``bandit.logistic``'s, tested in tests/bandit/test_logistic.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service.errors import SimulationError
from service.simulate import policies
from service.simulate.catalog import make_catalog
from service.simulate.reference import ReferenceConfig, run_reference, trait_matrix
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

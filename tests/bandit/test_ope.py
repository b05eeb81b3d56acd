"""Off-policy estimators: hand-computed cases, statistical sanity on a seeded synthetic log,
input validation that names the parameter, and agreement with Open Bandit Pipeline's
estimators on the same arrays (skipped where obp is not installed; CI installs it)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from bandit import ope

Z95 = 1.959963984540054

# three rounds, two actions: small enough to compute every number by hand
REWARD = np.array([1.0, 0.0, 2.0])
ACTION = np.array([0, 1, 1])
PSCORE = np.array([0.5, 0.25, 0.5])
TARGET = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
QHAT = np.array([[0.5, 0.2], [0.1, 0.3], [0.4, 1.0]])
# w = [1/0.5, 0.5/0.25, 0.75/0.5] = [2, 2, 1.5]


def test_hand_computed_point_estimates() -> None:
    assert ope.importance_weights(ACTION, PSCORE, TARGET) == pytest.approx([2.0, 2.0, 1.5])
    assert ope.ips(REWARD, ACTION, PSCORE, TARGET) == pytest.approx(5.0 / 3.0)
    assert ope.snips(REWARD, ACTION, PSCORE, TARGET) == pytest.approx(5.0 / 5.5)
    # baseline [0.5, 0.2, 0.85] + residuals [2*0.5, 2*(-0.3), 1.5*1.0]
    assert ope.dr(REWARD, ACTION, PSCORE, TARGET, QHAT) == pytest.approx(3.45 / 3.0)
    assert ope.dm(TARGET, QHAT) == pytest.approx(1.55 / 3.0)
    assert ope.effective_sample_size([2.0, 2.0, 1.5]) == pytest.approx(5.5**2 / 10.25)


def test_hand_computed_normal_intervals() -> None:
    out = ope.estimate(REWARD, ACTION, PSCORE, TARGET, QHAT)
    ips = out["ips"]
    # IPS rounds [2, 0, 3]: sample variance 7/3
    half = Z95 * math.sqrt(7.0 / 3.0) / math.sqrt(3.0)
    assert ips.value == pytest.approx(5.0 / 3.0)
    assert (ips.ci.low, ips.ci.high) == pytest.approx((5.0 / 3.0 - half, 5.0 / 3.0 + half))
    assert ips.ess == pytest.approx(5.5**2 / 10.25)
    # DR rounds [1.5, -0.4, 2.35]
    dr_rounds = np.array([1.5, -0.4, 2.35])
    half = Z95 * dr_rounds.std(ddof=1) / math.sqrt(3.0)
    assert (out["dr"].ci.low, out["dr"].ci.high) == pytest.approx((1.15 - half, 1.15 + half))
    # SNIPS by the delta method: influence w (r - V) / mean(w)
    v = 5.0 / 5.5
    infl = np.array([2.0, 2.0, 1.5]) * (REWARD - v) / (5.5 / 3.0)
    half = Z95 * infl.std(ddof=1) / math.sqrt(3.0)
    snips = out["snips"]
    assert (snips.ci.low, snips.value, snips.ci.high) == pytest.approx((v - half, v, v + half))
    assert out["ips"].to_dict()["ci95"] == pytest.approx([ips.ci.low, ips.ci.high])


def test_on_policy_weights_are_one_and_estimates_are_the_mean_reward() -> None:
    rng = np.random.default_rng(1)
    n, k = 500, 4
    dist = rng.dirichlet(np.ones(k), size=n)
    action = np.array([rng.choice(k, p=row) for row in dist])
    pscore = dist[np.arange(n), action]
    reward = rng.binomial(1, 0.3, size=n).astype(float)
    w = ope.importance_weights(action, pscore, dist)
    assert np.allclose(w, 1.0)
    assert ope.ips(reward, action, pscore, dist) == pytest.approx(reward.mean())
    assert ope.snips(reward, action, pscore, dist) == pytest.approx(reward.mean())
    assert ope.effective_sample_size(w) == pytest.approx(n)


def _synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    """Uniform logging over 5 actions, Bernoulli rewards with known means, and a target policy
    that mostly picks the best action: its true value is known exactly."""
    rng = np.random.default_rng(seed)
    k = 5
    means = np.array([0.05, 0.10, 0.20, 0.08, 0.30])
    action = rng.integers(0, k, size=n)
    reward = rng.binomial(1, means[action]).astype(float)
    target = np.full((n, k), 0.05)
    target[:, 4] = 0.8
    return {
        "reward": reward,
        "action": action,
        "pscore": np.full(n, 1.0 / k),
        "action_dist": target,
        "true": np.array(float(target[0] @ means)),
        "q_true": np.tile(means, (n, 1)),
    }


def test_estimates_cover_the_true_value_on_a_seeded_log() -> None:
    d = _synthetic(20000, seed=3)
    q_noisy = d["q_true"] + 0.05  # a biased reward model; DR must still be consistent
    out = ope.estimate(d["reward"], d["action"], d["pscore"], d["action_dist"], q_noisy)
    truth = float(d["true"])
    for name in ("ips", "snips", "dr"):
        est = out[name]
        assert est.ci.low <= truth <= est.ci.high, (name, est)
        assert abs(est.value - truth) / truth < 0.1, (name, est.value, truth)
    # with the exact reward model DR's interval is narrower than IPS's
    exact = ope.estimate(d["reward"], d["action"], d["pscore"], d["action_dist"], d["q_true"])
    width = {k: v.ci.high - v.ci.low for k, v in exact.items()}
    assert width["dr"] < width["ips"]


def test_a_wrong_target_value_is_not_covered() -> None:
    # the estimators must be able to fail: a policy value far from the truth lies outside
    d = _synthetic(20000, seed=4)
    out = ope.estimate(d["reward"], d["action"], d["pscore"], d["action_dist"])
    assert not out["ips"].ci.low <= float(d["true"]) * 0.6 <= out["ips"].ci.high
    assert "dr" not in out  # no reward model, no DR


def test_two_and_three_dimensional_action_dist_agree_and_positions_select() -> None:
    rng = np.random.default_rng(5)
    n, k, slots = 300, 3, 2
    dist3 = rng.dirichlet(np.ones(k), size=(n, slots)).transpose(0, 2, 1)  # (n, k, slots)
    q3 = rng.random((n, k, slots))
    action = rng.integers(0, k, size=n)
    position = rng.integers(0, slots, size=n)
    pscore = np.full(n, 1.0 / k)
    reward = rng.random(n)
    expect_w = np.array([dist3[t, action[t], position[t]] * k for t in range(n)])
    got_w = ope.importance_weights(action, pscore, dist3, position)
    assert np.allclose(got_w, expect_w)
    expect_dr = np.mean(
        [
            q3[t, :, position[t]] @ dist3[t, :, position[t]]
            + expect_w[t] * (reward[t] - q3[t, action[t], position[t]])
            for t in range(n)
        ]
    )
    assert ope.dr(reward, action, pscore, dist3, q3, position) == pytest.approx(expect_dr)
    flat = dist3[:, :, 0]
    assert ope.ips(reward, action, pscore, flat) == pytest.approx(
        ope.ips(reward, action, pscore, flat[:, :, None])
    )
    # a non-contiguous view takes the fancy-index path and must give the same answer
    assert ope.ips(reward, action, pscore, dist3[:, :, :1]) == pytest.approx(
        ope.ips(reward, action, pscore, np.ascontiguousarray(dist3[:, :, :1]))
    )


def test_inputs_are_not_mutated() -> None:
    arrays = [REWARD.copy(), ACTION.copy(), PSCORE.copy(), TARGET.copy(), QHAT.copy()]
    ope.estimate(*arrays, interval="bootstrap", n_bootstrap_samples=50)
    for before, after in zip([REWARD, ACTION, PSCORE, TARGET, QHAT], arrays, strict=True):
        assert np.array_equal(before, after)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    d = _synthetic(2000, seed=6)
    args = (d["reward"], d["action"], d["pscore"], d["action_dist"], d["q_true"])
    a = ope.estimate(*args, interval="bootstrap", n_bootstrap_samples=300, seed=1)
    b = ope.estimate(*args, interval="bootstrap", n_bootstrap_samples=300, seed=1)
    c = ope.estimate(*args, interval="bootstrap", n_bootstrap_samples=300, seed=2)
    for name in ope.ESTIMATORS:
        assert a[name].ci == b[name].ci
        assert a[name].ci.method == "bootstrap"
        assert a[name].ci.low < a[name].value < a[name].ci.high
    assert a["ips"].ci != c["ips"].ci


def test_single_round_interval_is_nan_not_zero_width() -> None:
    out = ope.estimate([1.0], [0], [0.5], [[1.0, 0.0]])
    assert math.isnan(out["ips"].ci.low) and math.isnan(out["ips"].ci.high)
    assert out["ips"].to_dict()["ci95"] == [None, None]


GOOD = {"reward": REWARD, "action": ACTION, "pscore": PSCORE, "action_dist": TARGET}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reward": np.zeros((3, 1))}, "`reward`"),
        ({"reward": np.array([])}, "`reward`"),
        ({"reward": ["a", "b", "c"]}, "`reward`"),
        ({"reward": np.array([1.0, np.nan, 0.0])}, "`reward`"),
        ({"action": np.array([0.0, 1.0, 1.0])}, "`action`"),
        ({"action": np.array([0, 2, 1])}, "`action`"),
        ({"action": np.array([0, -1, 1])}, "`action`"),
        ({"action": np.array([0, 1])}, "`action`"),
        ({"pscore": np.array([0.5, 0.0, 0.5])}, "`pscore`"),
        ({"pscore": np.array([0.5, 1.5, 0.5])}, "`pscore`"),
        ({"pscore": np.array([0.5, np.nan, 0.5])}, "`pscore`"),
        ({"pscore": np.array([0.5, 0.5])}, "`pscore`"),
        ({"action_dist": np.array([[0.5, 0.4], [0.5, 0.5], [0.25, 0.75]])}, "`action_dist`"),
        ({"action_dist": np.array([[1.5, -0.5], [0.5, 0.5], [0.25, 0.75]])}, "`action_dist`"),
        ({"action_dist": np.ones(3)}, "`action_dist`"),
        ({"action_dist": TARGET[:2]}, "`action_dist`"),
        ({"action_dist": np.stack([TARGET, TARGET], axis=2)}, "`position`"),
    ],
)
def test_invalid_inputs_name_the_parameter(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ope.ips(**{**GOOD, **change})


@pytest.mark.parametrize(
    ("q", "field"),
    [
        (np.zeros((3, 3)), "`estimated_rewards_by_reg_model`"),
        (np.full((3, 2), np.inf), "`estimated_rewards_by_reg_model`"),
        (None, "`estimated_rewards_by_reg_model`"),
    ],
)
def test_dr_rejects_a_bad_reward_model(q: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ope.dr(REWARD, ACTION, PSCORE, TARGET, q)


def test_other_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="`alpha`"):
        ope.estimate(REWARD, ACTION, PSCORE, TARGET, alpha=1.5)
    with pytest.raises(ValueError, match="`estimators`"):
        ope.estimate(REWARD, ACTION, PSCORE, TARGET, estimators=["ipw"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="`interval`"):
        ope.estimate(REWARD, ACTION, PSCORE, TARGET, interval="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`n_bootstrap_samples`"):
        ope.bootstrap_interval([1.0, 2.0], n_bootstrap_samples=0)
    with pytest.raises(ValueError, match="`weights`"):
        ope.effective_sample_size([1.0, -1.0])


def test_diagnostics_warn_about_tiny_missing_and_wrong_propensities() -> None:
    n = 1000
    pscore = np.full(n, 0.25)
    clean = ope.diagnose(pscore, np.ones(n))
    assert clean.warnings == ()
    assert clean.ess == pytest.approx(n)
    tiny = pscore.copy()
    tiny[:3] = 1e-5
    got = ope.diagnose(tiny, np.ones(n), n_missing_pscore=7)
    assert got.n_tiny_pscore == 3
    assert any("pscore` < 0.001" in w for w in got.warnings)
    assert any("7 decisions had no `pscore`" in w for w in got.warnings)
    collapsed = np.zeros(n)
    collapsed[0] = 1000.0
    assert any("effective sample size" in w for w in ope.diagnose(pscore, collapsed).warnings)
    drifted = ope.diagnose(pscore, np.full(n, 2.0))
    assert any("mean importance weight is 2.000" in w for w in drifted.warnings)
    assert drifted.to_dict()["ess_ratio"] == pytest.approx(1.0)


# -- against Open Bandit Pipeline -------------------------------------------------------------
def _random_log(n: int, k: int, slots: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(k), size=n)
    action = (logging.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return {
        "reward": rng.binomial(1, 0.2, size=n).astype(float),
        "action": action,
        "pscore": logging[np.arange(n), action],
        "action_dist": rng.dirichlet(np.ones(k), size=(n, slots)).transpose(0, 2, 1).copy(),
        "estimated_rewards_by_reg_model": rng.random((n, k, slots)),
        "position": rng.integers(0, slots, size=n),
    }


@pytest.mark.parametrize("slots", [1, 3])
def test_point_estimates_match_obp(slots: int) -> None:
    obp_ope = pytest.importorskip("obp.ope")
    d = _random_log(5000, 6, slots, seed=slots)
    base: dict[str, Any] = {
        k: d[k] for k in ("reward", "action", "pscore", "action_dist", "position")
    }
    assert ope.ips(**base) == pytest.approx(
        obp_ope.InverseProbabilityWeighting().estimate_policy_value(**base), rel=1e-12
    )
    assert ope.snips(**base) == pytest.approx(
        obp_ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**base),
        rel=1e-12,
    )
    q = d["estimated_rewards_by_reg_model"]
    assert ope.dr(**base, estimated_rewards_by_reg_model=q) == pytest.approx(
        obp_ope.DoublyRobust().estimate_policy_value(**base, estimated_rewards_by_reg_model=q),
        rel=1e-12,
    )
    assert ope.dm(d["action_dist"], q, d["position"]) == pytest.approx(
        obp_ope.DirectMethod().estimate_policy_value(
            position=d["position"], action_dist=d["action_dist"], estimated_rewards_by_reg_model=q
        ),
        rel=1e-12,
    )


def test_bootstrap_intervals_match_obp_for_the_same_seed() -> None:
    obp_ope = pytest.importorskip("obp.ope")
    d = _random_log(800, 4, 1, seed=9)
    base: dict[str, Any] = {k: d[k] for k in ("reward", "action", "pscore", "action_dist")}
    q = d["estimated_rewards_by_reg_model"]
    ours = ope.estimate(
        **base,
        estimated_rewards_by_reg_model=q,
        interval="bootstrap",
        n_bootstrap_samples=400,
        seed=12,
    )
    theirs = {
        "ips": obp_ope.InverseProbabilityWeighting().estimate_interval(
            **base, n_bootstrap_samples=400, random_state=12
        ),
        "dr": obp_ope.DoublyRobust().estimate_interval(
            **base, estimated_rewards_by_reg_model=q, n_bootstrap_samples=400, random_state=12
        ),
        "snips": obp_ope.SelfNormalizedInverseProbabilityWeighting().estimate_interval(
            **base, n_bootstrap_samples=400, random_state=12
        ),
    }
    for name in ("ips", "dr"):
        assert ours[name].ci.low == pytest.approx(theirs[name]["95.0% CI (lower)"], rel=1e-12)
        assert ours[name].ci.high == pytest.approx(theirs[name]["95.0% CI (upper)"], rel=1e-12)
    # obp keeps SNIPS' normaliser fixed across resamples, we recompute it per resample: the
    # same resamples, so close but not identical
    width = theirs["snips"]["95.0% CI (upper)"] - theirs["snips"]["95.0% CI (lower)"]
    assert ours["snips"].ci.low == pytest.approx(
        theirs["snips"]["95.0% CI (lower)"], abs=0.2 * width
    )
    assert ours["snips"].ci.high == pytest.approx(
        theirs["snips"]["95.0% CI (upper)"], abs=0.2 * width
    )


def test_normal_interval_agrees_with_obp_bootstrap_on_a_large_log() -> None:
    obp_ope = pytest.importorskip("obp.ope")
    # uniform logging keeps the weights bounded, where the normal approximation holds
    d = _synthetic(20000, seed=10)
    base: dict[str, Any] = {k: d[k] for k in ("reward", "action", "pscore", "action_dist")}
    ours = ope.estimate(**base, estimators=["ips"])["ips"].ci
    base["action_dist"] = base["action_dist"][:, :, None]  # obp wants 3-D
    theirs = obp_ope.InverseProbabilityWeighting().estimate_interval(
        **base, n_bootstrap_samples=300, random_state=0
    )
    width = ours.high - ours.low
    assert ours.low == pytest.approx(theirs["95.0% CI (lower)"], abs=0.1 * width)
    assert ours.high == pytest.approx(theirs["95.0% CI (upper)"], abs=0.1 * width)


@pytest.mark.parametrize("slots", [1, 2])
def test_logs_longer_than_one_block_match_plain_numpy(slots: int) -> None:
    # row sums and DR's baseline run block by block; a log past one block must not notice
    d = _random_log(ope._BLOCK_ROWS + 1234, 3, slots, seed=20 + slots)
    dist, q, pos = d["action_dist"], d["estimated_rewards_by_reg_model"], d["position"]
    rows = np.arange(dist.shape[0])
    w = dist[rows, d["action"], pos] / d["pscore"]
    expect = np.mean(
        (q[rows, :, pos] * dist[rows, :, pos]).sum(axis=1)
        + w * (d["reward"] - q[rows, d["action"], pos])
    )
    got = ope.dr(d["reward"], d["action"], d["pscore"], dist, q, pos)
    assert got == pytest.approx(expect, rel=1e-12)
    bad = dist.copy()
    bad[-1, :, 0] *= 1.01  # the last row, in the last block
    with pytest.raises(ValueError, match="`action_dist` must sum to 1"):
        ope.ips(d["reward"], d["action"], d["pscore"], bad, pos)

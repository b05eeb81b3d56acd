"""The batch-refit model (``bandit.refit``) through the policy's own verbs, on the synthetic
two-segment world."""

from __future__ import annotations

import random
import uuid

import pytest

from bandit.errors import ModelError
from bandit.policy import Policy, PolicyConfig
from bandit.refit import RefitConfig, RefitModel
from bandit.scoring import ActionSet, Example

from . import synth
from .test_policy import _segment_probs, _train

REFIT = PolicyConfig(RefitConfig(members=5, epsilon=0.0, crosses=("U",), every=100))


def _model(policy: Policy) -> RefitModel:
    model = policy.model
    assert isinstance(model, RefitModel)
    return model


def test_uniform_until_the_first_fit_with_both_outcomes() -> None:
    policy = Policy(REFIT, seed=1)
    ctx = synth.context(synth.shopper(random.Random(0), 0))
    assert policy.pmf(ctx, synth.ACTIONS) == [0.25] * 4
    for i in range(150):  # past refit_every, but never a click: nothing to fit
        d = policy.choose(
            ctx, synth.ACTIONS, event_id=uuid.UUID(int=i), product_id="p1",
            channel="ad_headline", pool_version=1,
        )  # fmt: skip
        policy.learn(d, 0.0)
    assert policy.pmf(ctx, synth.ACTIONS) == [0.25] * 4
    assert _model(policy).refit() is False


def test_learns_each_segments_best_variant() -> None:
    policy = Policy(REFIT, seed=2)
    _train(policy, 1500)
    for segment, best in synth.BEST.items():
        k = synth.ACTIONS.ids.index(best)
        probs = _segment_probs(policy, segment)
        assert all(max(range(4), key=p.__getitem__) == k for p in probs), segment
        assert sum(p[k] for p in probs) / len(probs) > 0.9


def test_posterior_draws_disagree_on_little_data_and_agree_on_much() -> None:
    # every action with the same click rate: with few events the posterior is wide and its
    # draws rank different actions first; one action clearly better: every draw agrees
    early = Policy(REFIT, seed=3)
    rng = random.Random(3)
    ctx = {"u_age": "18-24", "u_gender": "f"}
    actions = synth.ACTIONS
    for i in range(200):
        d = early.choose(
            ctx, actions, event_id=uuid.UUID(int=i), product_id="p1", channel="ad_headline",
            pool_version=1,
        )  # fmt: skip
        early.learn(d, 1.0 if rng.random() < 0.1 else 0.0)
    split = early.pmf(ctx, actions)
    assert max(split) < 1.0 and sum(p > 0 for p in split) >= 2
    late = Policy(REFIT, seed=3)
    for i in range(2000):
        d = late.choose(
            ctx, actions, event_id=uuid.UUID(int=i), product_id="p1", channel="ad_headline",
            pool_version=1,
        )  # fmt: skip
        late.learn(d, 1.0 if rng.random() < (0.5 if d.action == 1 else 0.05) else 0.0)
    assert late.pmf(ctx, actions) == [0.0, 1.0, 0.0, 0.0]


def test_no_spread_is_greedy_on_the_posterior_mode() -> None:
    greedy = Policy(PolicyConfig(RefitConfig(every=100, spread=0.0)), seed=2)
    _train(greedy, 300)
    for segment in synth.BEST:
        assert all(sorted(p) == [0.0, 0.0, 0.0, 1.0] for p in _segment_probs(greedy, segment, 10))


def test_epsilon_is_a_floor_under_every_action() -> None:
    policy = Policy(PolicyConfig(RefitConfig(epsilon=0.08, every=100)), seed=2)
    _train(policy, 600)
    for probs in _segment_probs(policy, "young-f", 10):
        assert min(probs) >= 0.02 - 1e-12 and abs(sum(probs) - 1) < 1e-9


def test_ids_and_the_context_are_left_out() -> None:
    policy = Policy(REFIT, seed=2)
    _train(policy, 120)
    rows = [row for row, _ in _model(policy)._window]
    tokens = {tok for row in rows for tok in row}
    assert any(tok.startswith("U^age=") for tok in tokens)
    assert any(tok.startswith("A^t=") for tok in tokens)
    assert not any("id=" in tok for tok in tokens)  # neither the shopper's nor the variant's
    assert not any(tok.startswith("C^") for tok in tokens)


def test_a_reward_is_a_success_when_positive_whatever_its_size() -> None:
    ctx = {"u_age": "18-24"}
    acts = ActionSet(list(zip(synth.ACTIONS.ids[:2], synth.ACTIONS.features[:2], strict=True)))
    model = RefitModel(RefitConfig(), seed=1)
    model.learn([Example(ctx, acts, 0, 2.5, 0.5), Example(ctx, acts, 1, 0.0, 0.5)])
    model.learn([Example(ctx, acts, 0, 0.5, 0.5), Example(ctx, acts, 1, -1.0, 0.5)])
    assert [s for _, s in model._window] == [True, False, True, False]


def test_round_trip_keeps_the_fit_and_the_window() -> None:
    policy = Policy(REFIT, seed=4)
    _train(policy, 250)
    policy.version = "refit-000001"
    restored = Policy.from_bytes(policy.to_bytes())
    assert restored.config == policy.config and restored.learned == 250
    for segment in synth.BEST:
        assert _segment_probs(restored, segment, 5) == _segment_probs(policy, segment, 5)
    _train(policy, 150, seed=8)  # crosses a refit: the same window, the same posterior draws
    _train(restored, 150, seed=8)
    for segment in synth.BEST:
        assert _segment_probs(restored, segment, 5) == _segment_probs(policy, segment, 5)


def test_the_window_keeps_the_latest_events() -> None:
    policy = Policy(PolicyConfig(RefitConfig(window=50, every=1000)), seed=1)
    _train(policy, 120)
    assert len(_model(policy)._window) == 50


def test_bad_bytes_are_refused() -> None:
    with pytest.raises(ModelError, match="not a refit model"):
        RefitModel(RefitConfig(), seed=1, model=b"\x00garbage")


def _stream(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    policy = Policy(REFIT, seed=3)
    out = []
    for i in range(n):
        s = synth.shopper(rng, i)
        d = policy.choose(
            synth.context(s), synth.ACTIONS, event_id=uuid.UUID(int=i), product_id="p1",
            channel="ad_headline", pool_version=1,
        )  # fmt: skip
        out.append((d, 1.0 if rng.random() < 0.3 else 0.0))
    return out


def test_due_fits_are_made_when_needed_and_equal_eager_ones() -> None:
    """Learning in one batch, in small batches with pmf calls between, or across a save and a
    restore gives the same model: a due fit's draws depend on its index, not on when it ran."""
    events = _stream(730, seed=9)
    probe = [synth.context(synth.shopper(random.Random(2), i)) for i in range(8)]

    whole = Policy(REFIT, seed=3)
    whole.learn_many(events)
    assert _model(whole)._pending is not None  # seven fits due, none made yet
    expected = [whole.pmf(c, synth.ACTIONS) for c in probe]
    assert _model(whole)._pending is None and expected[0] != [0.25] * 4  # fitted

    stepwise = Policy(REFIT, seed=3)
    for i in range(0, len(events), 37):
        stepwise.learn_many(events[i : i + 37])
        stepwise.pmf(probe[0], synth.ACTIONS)  # makes each due fit as it comes
        if i == 370:
            stepwise = Policy.from_bytes(stepwise.to_bytes())
    assert [stepwise.pmf(c, synth.ACTIONS) for c in probe] == expected


def test_a_saved_window_is_packed_and_the_first_format_still_loads() -> None:
    import base64
    import json
    import zlib

    policy = Policy(REFIT, seed=3)
    policy.learn_many(_stream(250, seed=4))
    model = _model(policy)
    state = json.loads(zlib.decompress(model.to_bytes()))
    assert state["format"] == "copyloop-refit/2"
    assert len(base64.b64decode(state["window"])) == 4 * 250  # one uint32 per event
    # the same window in the first format: [row, outcome] pairs
    rows = {tuple(r): i for i, r in enumerate(state["rows"])}
    state["format"] = "copyloop-refit/1"
    state["window"] = [[rows[row], int(s)] for row, s in model._window]
    old = zlib.compress(json.dumps(state).encode())
    restored = RefitModel(REFIT.model, 3, model=old)  # type: ignore[arg-type]
    assert list(restored._window) == list(model._window)
    assert restored._counts == model._counts and restored._outcomes == model._outcomes


def test_a_shoppers_id_is_never_crossed_or_cached_unless_a_float() -> None:
    model = _model(Policy(REFIT, seed=1))
    context: dict = {"u_id": "s-123", "u_age": "18-24", "c_hour": "9", "u_vip": True}
    assert model._shared(context) == ("U^age=18-24", "U^vip=1")
    assert ("u_id", "s-123") not in model._items
    assert ("u_age", "18-24") in model._items
    # a float id is a magnitude, not an id token: crossed like any float (same order as keys)
    assert model._shared({**context, "u_id": 2.5}) == ("U^id:2.5", "U^age=18-24", "U^vip=1")
    assert model._shared({**context, "u_id": ["a", "b"]}) == ("U^age=18-24", "U^vip=1")

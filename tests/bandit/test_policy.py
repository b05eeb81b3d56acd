from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bandit.errors import ConfigError, FeatureError, ModelError
from bandit.features import action_features
from bandit.policy import ActionSet, Policy, PolicyConfig, event_uniform
from bandit.refit import RefitConfig
from bandit.vw import EXPLORATIONS, VWConfig
from streams.schemas import Decision, Variant

from . import synth

#: VW at its library defaults (SquareCB); the refit refitted often enough for small tests
VW = PolicyConfig(VWConfig())
REFIT = PolicyConfig(RefitConfig(every=100))
BOTH = pytest.mark.parametrize("config", [VW, REFIT], ids=["vw", "refit"])


def _train(policy: Policy, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(n):
        s = synth.shopper(rng, i)
        d = policy.choose(
            synth.context(s),
            synth.ACTIONS,
            event_id=uuid.UUID(int=rng.getrandbits(128)),
            product_id="p1",
            channel="ad_headline",
            pool_version=1,
        )
        policy.learn(d, 1.0 if synth.clicked(rng, s, d.actions[d.action]) else 0.0)


def _segment_probs(policy: Policy, segment: str, n: int = 40) -> list[list[float]]:
    rng = random.Random(99)
    out: list[list[float]] = []
    while len(out) < n:
        s = synth.shopper(rng, rng.randrange(10_000))
        if s.segment == segment:
            out.append(policy.pmf(synth.context(s), synth.ACTIONS))
    return out


def test_decision_carries_the_full_distribution() -> None:
    policy = Policy(seed=5)
    ctx = synth.context(synth.shopper(random.Random(0), 0))
    before = dict(ctx)
    d = policy.choose(
        ctx,
        synth.ACTIONS,
        event_id=uuid.uuid4(),
        product_id="p1",
        channel="ad_headline",
        pool_version=3,
    )
    assert ctx == before  # not mutated
    assert len(d.action_dist) == 4 and abs(sum(d.action_dist) - 1) < 1e-9
    assert d.pscore == d.action_dist[d.action] > 0
    assert d.actions == synth.ACTIONS.ids and d.action_features == synth.ACTIONS.features
    assert d.context == ctx and d.policy_version == "init" and d.pool_version == 3


def test_channel_is_logged_when_the_context_lacks_it() -> None:
    d = Policy().choose(
        {"u_age": "18-24"},
        synth.ACTIONS,
        event_id=uuid.uuid4(),
        product_id="p1",
        channel="push",
        pool_version=1,
    )
    assert d.context == {"u_age": "18-24", "c_channel": "push"}


def test_same_event_id_gives_the_same_draw() -> None:
    a, b, c = Policy(seed=11), Policy(seed=11), Policy(seed=12)
    ctx = {"u_age": "18-24"}
    kwargs: dict[str, Any] = {"product_id": "p1", "channel": "ad_headline", "pool_version": 1}
    ids = [uuid.UUID(int=i * 7919 + 1) for i in range(400)]
    draws_a = [a.choose(ctx, synth.ACTIONS, event_id=e, **kwargs).action for e in ids]
    draws_b = [b.choose(ctx, synth.ACTIONS, event_id=e, **kwargs).action for e in ids]
    draws_c = [c.choose(ctx, synth.ACTIONS, event_id=e, **kwargs).action for e in ids]
    assert draws_a == draws_b
    assert draws_a != draws_c
    # a fresh model is uniform: every action is drawn roughly a quarter of the time
    assert all(60 < draws_a.count(k) < 140 for k in range(4))


def test_event_uniform_is_in_unit_interval_and_spread() -> None:
    us = [event_uniform(3, uuid.UUID(int=i)) for i in range(2000)]
    assert all(0.0 <= u < 1.0 for u in us)
    assert 0.45 < sum(us) / len(us) < 0.55


def test_learning_moves_mass_to_the_rewarded_action() -> None:
    policy = Policy(VW, seed=1)
    ctx = {"u_age": "18-24"}
    start = policy.pmf(ctx, synth.ACTIONS)
    for i in range(60):
        d = policy.choose(
            ctx,
            synth.ACTIONS,
            event_id=uuid.UUID(int=i),
            product_id="p1",
            channel="ad_headline",
            pool_version=1,
        )
        policy.learn(d, 1.0 if d.action == 2 else 0.0)
    after = policy.pmf(ctx, synth.ACTIONS)
    assert after[2] > 0.5 > start[2]
    assert policy.learned == 60


@BOTH
def test_best_variant_depends_on_the_shopper(config: PolicyConfig) -> None:
    policy = Policy(config, seed=2)
    _train(policy, 1500)
    for segment, best in synth.BEST.items():
        k = synth.ACTIONS.ids.index(best)
        probs = _segment_probs(policy, segment)
        argmax = [max(range(4), key=p.__getitem__) for p in probs]
        assert argmax.count(k) >= 0.9 * len(probs), segment
        assert sum(p[k] for p in probs) / len(probs) > 0.6  # chance is 0.25


def test_logistic_loss_learns_each_segments_best_variant() -> None:
    # click rewards as a logistic regression: the same tastes found as with squared loss
    policy = Policy(PolicyConfig(VWConfig(loss="logistic", learning_rate=2.0)), seed=2)
    _train(policy, 1500)
    for segment, best in synth.BEST.items():
        k = synth.ACTIONS.ids.index(best)
        probs = _segment_probs(policy, segment)
        assert sum(max(range(4), key=p.__getitem__) == k for p in probs) >= 0.9 * len(probs)
    restored = Policy.from_bytes(policy.to_bytes())
    assert isinstance(restored.config.model, VWConfig) and restored.config.model.loss == "logistic"


def test_without_interactions_context_cannot_matter() -> None:
    policy = Policy(PolicyConfig(VWConfig(interactions=())), seed=2)
    _train(policy, 400)
    young = _segment_probs(policy, "young-f", 5)
    older = _segment_probs(policy, "older-m", 5)
    assert all(max(abs(x - y) for x, y in zip(p, older[0], strict=True)) < 1e-6 for p in young)


@BOTH
def test_a_new_variant_is_scored_from_its_features(config: PolicyConfig) -> None:
    policy = Policy(config, seed=2)
    _train(policy, 1500)
    fresh = [
        Variant(
            variant_id="new-urgent",
            text="马上抢 限时折扣",
            language="zh",
            channel="ad_headline",
            traits=["urgency", "discount"],
        ),
        Variant(
            variant_id="new-quality",
            text="面料品质 品牌之选",
            language="zh",
            channel="ad_headline",
            traits=["quality", "brand"],
        ),
    ]
    actions = ActionSet([(v.variant_id, action_features(v, "gen-1")) for v in fresh])
    young = _segment_probs_for(policy, actions, "young-f")
    older = _segment_probs_for(policy, actions, "older-m")
    assert young[0] > young[1] and older[1] > older[0]


def _segment_probs_for(policy: Policy, actions: ActionSet, segment: str) -> list[float]:
    rng = random.Random(5)
    for i in range(100):
        s = synth.shopper(rng, i)
        if s.segment == segment:
            return policy.pmf(synth.context(s), actions)
    raise AssertionError("no shopper of the segment")


@pytest.mark.parametrize(
    "config",
    [
        VW,
        REFIT,
        # the loss function is not kept in VW's model file: given again on load
        PolicyConfig(
            VWConfig(exploration="bag", greedify=True, loss="logistic", learning_rate=2.0)
        ),
    ],
)
def test_bytes_round_trip_keeps_version_count_and_learning(config: PolicyConfig) -> None:
    policy = Policy(config, seed=4)
    _train(policy, 200)
    policy.version = "abc-000001"
    restored = Policy.from_bytes(policy.to_bytes())
    assert (restored.version, restored.learned, restored.seed) == ("abc-000001", 200, 4)
    assert restored.config == policy.config
    ctx = synth.context(synth.shopper(random.Random(3), 3))
    assert restored.pmf(ctx, synth.ACTIONS) == policy.pmf(ctx, synth.ACTIONS)
    _train(policy, 100, seed=8)
    _train(restored, 100, seed=8)  # continues exactly as the original
    assert restored.pmf(ctx, synth.ACTIONS) == policy.pmf(ctx, synth.ACTIONS)


def test_foreign_bytes_are_refused() -> None:
    with pytest.raises(ModelError):
        Policy.from_bytes(b"not a policy")


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_every_exploration_chooses_and_learns(exploration: str) -> None:
    policy = Policy(PolicyConfig(VWConfig(exploration=exploration)), seed=1)  # type: ignore[arg-type]
    _train(policy, 50)
    d = policy.choose(
        {"u_age": "18-24"},
        synth.ACTIONS,
        event_id=uuid.uuid4(),
        product_id="p1",
        channel="ad_headline",
        pool_version=1,
    )
    assert abs(sum(d.action_dist) - 1) < 1e-6 and d.pscore > 0


@pytest.mark.parametrize(
    ("kind", "kwargs", "name"),
    [
        (VWConfig, {"exploration": "greedy"}, "exploration"),
        (VWConfig, {"epsilon": 1.5}, "epsilon"),
        (VWConfig, {"gamma_scale": 0}, "gamma_scale"),
        (VWConfig, {"bag_size": 0}, "bag_size"),
        (VWConfig, {"cover_size": 100}, "cover_size"),
        (VWConfig, {"softmax_lambda": -1}, "softmax_lambda"),
        (VWConfig, {"interactions": ("UX",)}, "interactions"),
        (VWConfig, {"interactions": ["UA"]}, "interactions"),
        (VWConfig, {"learning_rate": 0}, "learning_rate"),
        (VWConfig, {"power_t": 2}, "power_t"),
        (VWConfig, {"bits": 40}, "bits"),
        (VWConfig, {"cb_type": "sm"}, "cb_type"),
        (VWConfig, {"loss": "hinge"}, "loss"),
        (RefitConfig, {"members": 0}, "members"),
        (RefitConfig, {"epsilon": -0.1}, "epsilon"),
        (RefitConfig, {"crosses": ("A",)}, "crosses"),
        (RefitConfig, {"crosses": ["U"]}, "crosses"),
        (RefitConfig, {"every": 0}, "every"),
        (RefitConfig, {"window": 0}, "window"),
        (RefitConfig, {"l2": 0.0}, "l2"),
        (RefitConfig, {"l2": float("nan")}, "l2"),
        (RefitConfig, {"spread": -0.5}, "spread"),
        (PolicyConfig, {"model": "refit"}, "model"),
    ],
)
def test_invalid_config_names_the_parameter(kind: type, kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=f"`{name}`"):
        kind(**kwargs)


def test_the_default_is_the_validated_refit() -> None:
    assert PolicyConfig() == PolicyConfig(RefitConfig())
    assert Policy().config.name == "refit"


@pytest.mark.parametrize(
    ("flat", "expected"),
    [
        # a flat config as earlier versions saved it (every field, VW's and the refit's)
        (
            {"exploration": "bag", "epsilon": 0.0, "bag_size": 5, "learning_rate": 0.1,
             "power_t": 0.0, "interactions": ["UA"], "model": "vw", "refit_every": 500},
            PolicyConfig(VWConfig(exploration="bag", epsilon=0.0, learning_rate=0.1,
                                  power_t=0.0, interactions=("UA",))),
        ),
        (
            {"exploration": "squarecb", "epsilon": 0.0, "bag_size": 5, "interactions": ["UA"],
             "model": "refit", "refit_every": 500, "refit_window": 200000, "refit_l2": 1.0,
             "refit_spread": 0.5},
            PolicyConfig(RefitConfig()),
        ),
        ({"exploration": "epsilon", "epsilon": 0.1}, PolicyConfig(VWConfig("epsilon", 0.1))),
    ],
)  # fmt: skip
def test_configs_of_earlier_versions_still_load(flat: dict, expected: PolicyConfig) -> None:
    assert PolicyConfig.from_dict(flat) == expected
    assert PolicyConfig.from_dict(expected.to_dict()) == expected


def test_bad_calls_name_the_field() -> None:
    policy = Policy()
    with pytest.raises(FeatureError, match="actions"):
        policy.choose({}, [], event_id=uuid.uuid4(), product_id="p", channel="push", pool_version=1)
    with pytest.raises(FeatureError, match="event_id"):
        policy.choose(
            {},
            synth.ACTIONS,
            event_id="e1",  # type: ignore[arg-type]
            product_id="p",
            channel="push",
            pool_version=1,
        )
    with pytest.raises(FeatureError, match="context"):
        policy.choose(
            {"c_x": {"a": 1}},  # type: ignore[dict-item]
            synth.ACTIONS,
            event_id=uuid.uuid4(),
            product_id="p",
            channel="push",
            pool_version=1,
        )
    with pytest.raises(FeatureError, match=r"actions\.1"):
        ActionSet([("a", synth.ACTIONS.features[0]), ("b",)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="version"):
        policy.version = ""


def test_decision_is_what_pydantic_would_build() -> None:
    """choose assembles its Decision without a second validation: it must equal the validated
    model, serialise alike and survive the wire."""
    policy = Policy(seed=3)
    rng = random.Random(4)
    for i in range(50):
        ctx = {**synth.context(synth.shopper(rng, i)), "c_score": 0.5, "u_cats": ["a", "b"]}
        ts = datetime(2026, 5, 1, 20, tzinfo=timezone(timedelta(hours=8)))
        d = policy.choose(
            ctx,
            synth.ACTIONS,
            event_id=uuid.uuid4(),
            product_id="p-1:x",
            channel="push",
            pool_version=2,
            ts=ts,
        )
        validated = Decision.model_validate(d.model_dump())
        assert validated == d
        assert validated.model_dump_json() == d.model_dump_json()
        assert Decision.model_validate_json(d.model_dump_json()) == d
        assert d.ts.utcoffset() == timedelta(0)
        assert d.actions is not synth.ACTIONS.ids  # the shared pool is never aliased


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"product_id": "p 1"}, "product_id"),
        ({"product_id": "x" * 129}, "product_id"),
        ({"channel": "tv"}, "channel"),
        ({"pool_version": 0}, "pool_version"),
        ({"pool_version": "1"}, "pool_version"),
        ({"ts": datetime(2026, 5, 1)}, "ts"),
    ],
)
def test_choose_checks_what_it_logs(kwargs: dict, field: str) -> None:
    values: dict = {"product_id": "p1", "channel": "push", "pool_version": 1, **kwargs}
    with pytest.raises(FeatureError) as info:
        Policy().choose({}, synth.ACTIONS, event_id=uuid.uuid4(), **values)
    assert info.value.field == field

from __future__ import annotations

import itertools

import pytest

from bandit.errors import ModelError
from bandit.scoring import ActionSet, Example
from bandit.vw import (
    VWConfig,
    VWModel,
    action_line,
    cost,
    example_text,
    shared_line,
    vw_arguments,
)
from streams.schemas import ActionFeatures


def test_shared_line_puts_shopper_and_context_in_their_namespaces() -> None:
    line = shared_line(
        {"u_age": "18-24", "u_cats": ["a b", "c|d"], "c_hour": "20", "c_weekend": True, "x": 3}
    )
    assert line.startswith("shared |U ")
    user, ctx = line[len("shared |U ") :].split(" |C ")
    assert user.split() == ["age=18-24", "cats=a_b", "cats=c/d"]
    assert ctx.split() == ["hour=20", "weekend=1", "x=3"]


def test_values_cannot_break_the_vw_format() -> None:
    line = shared_line({"c_city": "a:b |X c\td", "c_score": 0.25})
    assert line.count("|") == 2  # only the two namespace markers
    assert "score:0.25" in line and "city=a;b_/X_c_d" in line


def test_action_line_and_label_sign_flip() -> None:
    f = ActionFeatures(
        traits=["urgency"], language="zh", length_bucket="short", generator_version="g 1"
    )
    a = action_line(f, "v1")
    assert a == "|A t=urgency lang=zh len=short gv=g_1 id=v1"
    text = example_text("shared |U |C", [a, a], (1, 2.0, 0.25))
    lines = text.split("\n")
    assert lines[1] == a
    assert lines[2] == f"0:-2:0.25 {a}"  # VW minimises cost: reward 2 is cost -2


def test_logistic_labels_success_and_failure() -> None:
    assert [cost(r, "logistic") for r in (0.0, 1.0, 3.5, -1.0)] == [1.0, -1.0, -1.0, 1.0]
    assert cost(2.0) == -2.0
    text = example_text("shared |U |C", ["|A t=x", "|A t=y"], (0, 0.0, 0.5), "logistic")
    assert text.split("\n")[1] == "0:1:0.5 |A t=x"  # no reward: the failure label +1
    args = vw_arguments(VWConfig(loss="logistic"), 0)
    assert args[args.index("--loss_function") + 1] == "logistic"
    assert "--loss_function" not in vw_arguments(VWConfig(), 0)


def test_a_reloaded_logistic_model_learns_as_the_original() -> None:
    # VW's model file does not keep --loss_function; without it a reload would continue with
    # squared loss. Softmax exploration exposes the scores (a greedy pmf would hide them).
    config = VWConfig(
        exploration="softmax", softmax_lambda=1.0, loss="logistic", interactions=("UA",)
    )
    examples = [
        example_text(f"shared |U u={u}", ["|A t=x", "|A t=y"], (k, float(r), 0.5), "logistic")
        for u, k, r in itertools.islice(
            itertools.cycle(itertools.product("ab", (0, 1), (0, 1))), 64
        )
    ]
    original = VWModel(config, 0)
    original.learn_texts(examples[:40])
    restored = VWModel(config, 0, model=original.to_bytes())
    original.learn_texts(examples[40:])
    restored.learn_texts(examples[40:])
    query = "shared |U u=a\n|A t=x\n|A t=y"
    assert restored.predict_text(query) == original.predict_text(query)
    assert len(set(original.predict_text(query))) == 2  # the scores differ: a real comparison


def test_adaptive_off_keeps_normalised_invariant_updates() -> None:
    config = VWConfig(adaptive=False)
    args = vw_arguments(config, 0)
    assert "--normalized" in args and "--invariant" in args and "--adaptive" not in args
    default = vw_arguments(VWConfig(), 0)  # VW's default update: all three
    assert not {"--normalized", "--invariant", "--adaptive"} & set(default)
    restored = VWModel(config, 0, model=VWModel(config, 0).to_bytes())
    assert restored.predict_text("shared |U a=1 |C\n|A t=x\n|A t=y") == [0.5, 0.5]


def test_greedify_is_a_bag_option() -> None:
    args = vw_arguments(VWConfig(exploration="bag", greedify=True), 0)
    assert args[args.index("--bag") : args.index("--bag") + 5] == [
        "--bag", "5", "--epsilon", "0.05", "--greedify",
    ]  # fmt: skip
    assert "--greedify" not in vw_arguments(VWConfig(exploration="bag"), 0)
    assert "--greedify" not in vw_arguments(VWConfig(greedify=True), 0)  # squarecb


@pytest.mark.parametrize("exploration", ["squarecb", "epsilon", "bag", "cover", "softmax"])
def test_each_exploration_builds_a_workspace(exploration: str) -> None:
    config = VWConfig(exploration=exploration)  # type: ignore[arg-type]
    args = vw_arguments(config, seed=3)
    assert "--cb_explore_adf" in args and "--interactions" in args
    model = VWModel(config, 3)
    probs = model.predict_text("shared |U a=1 |C b=2\n|A t=x\n|A t=y\n|A t=z")
    assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-4
    restored = VWModel(config, 3, model=model.to_bytes())
    assert restored.predict_text("shared |U a=1 |C b=2\n|A t=x\n|A t=y\n|A t=z") == probs


def test_bad_model_bytes_are_a_model_error() -> None:
    with pytest.raises(ModelError):
        VWModel(VWConfig(), 0, model=b"")


def test_the_model_verbs_speak_vw_text_underneath() -> None:
    # pmf and learn over (context, action set) give what the same text gives the workspace
    f = ActionFeatures(
        traits=["urgency"], language="zh", length_bucket="short", generator_version="g"
    )
    acts = ActionSet([("v1", f), ("v2", f.model_copy(update={"traits": ["quality"]}))])
    ctx = {"u_age": "18-24", "c_hour": "20"}
    config = VWConfig(exploration="softmax", softmax_lambda=1.0)
    ours, raw = VWModel(config, 1), VWModel(config, 1)
    ours.learn([Example(ctx, acts, 1, 1.0, 0.5)] * 5)
    lines = [action_line(f, "v1"), action_line(acts.features[1], "v2")]
    raw.learn_texts([example_text(shared_line(ctx), lines, (1, 1.0, 0.5))] * 5)
    assert ours.pmf(ctx, acts) == raw.predict_text("\n".join([shared_line(ctx), *lines]))
    assert ours.pmf(ctx, acts)[1] > ours.pmf(ctx, acts)[0]

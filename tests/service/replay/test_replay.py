"""``copyloop replay``: the join agrees with the learner's joiner, the estimates with hand
computation on a log whose true policy values are known, saved models score the log, and bad
input ends with a message naming the file, line and field, never a traceback."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bandit.join import RewardJoiner
from bandit.policy import Policy, PolicyConfig
from bandit.reward import RewardConfig
from bandit.vw import VWConfig
from service.cli import app
from service.replay.replay_eval import PolicySpec, ReplayConfig, evaluate_replay, join, reward_table
from service.replay.replay_log import (
    ReplayError,
    canonical_uuids,
    from_events,
    read_dir,
    read_kafka,
)
from streams.producer import KafkaEventSink
from streams.schemas import ActionFeatures, Decision, Feedback
from streams.topics import Topics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRAITS = [["urgency"], ["quality"], ["emotion"], ["discount", "urgency"]]
#: click probability by shopper segment and variant: the true values below follow from it
CTR = {"young": [0.30, 0.05, 0.05, 0.40], "old": [0.05, 0.35, 0.05, 0.05]}
FEATURES = [
    ActionFeatures(traits=t, language="zh", length_bucket="short", generator_version="g1")
    for t in TRAITS
]
runner = CliRunner()


def _decision(i: int, segment: str, action: int, t: float, event_id: uuid.UUID) -> Decision:
    k = len(TRAITS)
    return Decision(
        event_id=event_id,
        ts=T0 + timedelta(seconds=t),
        product_id=f"p{i % 3}",
        channel="ad_headline",
        pool_version=1,
        policy_version="log",
        context={"u_seg": segment, "c_channel": "ad_headline"},
        actions=[f"v{j}" for j in range(k)],
        action_features=FEATURES,
        action=action,
        pscore=1.0 / k,
        action_dist=[1.0 / k] * k,
    )


def _fb(eid: uuid.UUID, kind: str, t: float, fid: str | None = None) -> Feedback:
    return Feedback(
        feedback_id=fid or f"{eid.hex[:12]}-{kind}",
        event_id=eid,
        ts=T0 + timedelta(seconds=t),
        kind=kind,  # type: ignore[arg-type]
    )


def make_log(n: int, seed: int, *, noise: bool = True) -> tuple[list[Decision], list[Feedback]]:
    """Uniform logging over four variants; 90% of decisions shown; clicks by ``CTR``. With
    ``noise``: duplicate decisions, repeated and late feedback, feedback for unknown events,
    and clicks on decisions that were never shown."""
    rng = random.Random(seed)
    decisions: list[Decision] = []
    feedback: list[Feedback] = []
    for i in range(n):
        seg = "young" if rng.random() < 0.5 else "old"
        a = rng.randrange(len(TRAITS))
        eid = uuid.UUID(int=rng.getrandbits(128), version=4)
        t = 2.0 * i
        decisions.append(_decision(i, seg, a, t, eid))
        shown = rng.random() < 0.9
        if shown:
            feedback.append(_fb(eid, "impression", t + 1))
        clicked = rng.random() < CTR[seg][a]
        if clicked:
            feedback.append(_fb(eid, "click", t + 5))
            if rng.random() < 0.3:
                feedback.append(_fb(eid, "add_to_cart", t + 9))
        if not noise:
            continue
        if i % 17 == 0:
            feedback.append(_fb(eid, "impression", t + 2))  # repeated feedback id
        if i % 23 == 0:
            feedback.append(_fb(eid, "purchase", t + 1900))  # after the 30 min window
        if i % 29 == 0:
            feedback.append(_fb(uuid.uuid4(), "click", t + 3))  # unknown event
        if i % 31 == 0:
            decisions.append(decisions[-1].model_copy(update={"ts": T0 + timedelta(seconds=t + 1)}))
    return decisions, feedback


def write_log(folder: Path, decisions: list[Decision], feedback: list[Feedback]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "decisions.jsonl").write_text("".join(d.model_dump_json() + "\n" for d in decisions))
    (folder / "feedback.jsonl").write_text("".join(f.model_dump_json() + "\n" for f in feedback))
    return folder


def _joiner_rewards(decisions: list[Decision], feedback: list[Feedback]) -> dict[str, float]:
    joiner = RewardJoiner(RewardConfig())
    events: list[tuple[datetime, int, Decision | Feedback]] = [(d.ts, 0, d) for d in decisions]
    events += [(f.ts, 1, f) for f in feedback]
    for _, _, ev in sorted(events, key=lambda e: (e[0], e[1])):
        if isinstance(ev, Decision):
            joiner.add_decision(ev)
        else:
            joiner.add_feedback(ev)
    joined, _ = joiner.flush()
    return {str(j.decision.event_id): j.reward for j in joined}


def test_join_agrees_with_the_learners_joiner(tmp_path: Path) -> None:
    decisions, feedback = make_log(400, seed=1)
    log = read_dir(write_log(tmp_path, decisions, feedback))
    joined = join(log)
    ours = {log.decisions.event_ids[r]: v for r, v in zip(joined.rows, joined.reward, strict=True)}
    theirs = _joiner_rewards(decisions, feedback)
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == pytest.approx(theirs[k]) for k in ours)
    stats = joined.stats
    assert stats["duplicate_decisions"] == len(decisions) - len({d.event_id for d in decisions}) > 0
    assert stats["late_feedback"] > 0 and stats["unknown_feedback"] > 0
    assert stats["duplicate_feedback"] > 0
    assert stats["unseen"] > 0 and stats["joined"] == len(ours)
    # a click, add-to-cart and purchase each count once, on top of the impression
    assert reward_table(RewardConfig())[1 | 2 | 4] == pytest.approx(1.5)


def _true_values() -> dict[str, float]:
    uniform = float(np.mean([np.mean(v) for v in CTR.values()]))
    return {"logging": uniform, "uniform": uniform}


def test_replay_command_writes_json_report_and_plot(tmp_path: Path) -> None:
    decisions, feedback = make_log(3000, seed=2, noise=False)
    log_dir = write_log(tmp_path / "log", decisions, feedback)
    out = tmp_path / "out"
    result = runner.invoke(app, ["replay", "--log", str(log_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ope.json").read_text())
    assert (out / "report.html").read_text().count("<tr>") >= 3
    assert (out / "ope.png").read_bytes()[:4] == b"\x89PNG"
    assert set(data["policies"]) == {"logging", "uniform"}
    # the logging policy on its own log: every weight is 1, IPS is the mean reward
    joined = join(read_dir(log_dir))
    logging = data["policies"]["logging"]
    assert logging["ips"]["value"] == pytest.approx(float(joined.reward.mean()))
    assert logging["diagnostics"]["ess"] == pytest.approx(joined.rows.shape[0])
    assert data["join"]["joined"] == joined.rows.shape[0]
    assert data["events"] == len(decisions) + len(feedback)
    truth = _true_values()
    for name, entry in data["policies"].items():
        for est in ("ips", "snips", "dr"):
            lo, hi = entry[est]["ci95"]
            # rewards are click 1 + add_to_cart 0.5 (30% of clicks): scale the CTR truth
            assert lo <= truth[name] * 1.15 <= hi, (name, est, entry[est])
    assert data["warnings"] == []


def _trained_model(path: Path) -> Policy:
    """A policy that has learned the segments' preferences from a separate log."""
    decisions, feedback = make_log(3000, seed=3, noise=False)
    rewards = _joiner_rewards(decisions, feedback)
    policy = Policy(PolicyConfig(VWConfig(exploration="epsilon", epsilon=0.1)), seed=0)
    for _ in range(3):
        policy.learn_many(
            (d, rewards[str(d.event_id)]) for d in decisions if str(d.event_id) in rewards
        )
    path.write_bytes(policy.to_bytes())
    return policy


def test_saved_models_score_each_logged_decision(tmp_path: Path) -> None:
    model = tmp_path / "bandit.policy"
    policy = _trained_model(model)
    decisions, feedback = make_log(1500, seed=4, noise=False)
    log_dir = write_log(tmp_path / "log", decisions, feedback)
    out = tmp_path / "out"
    args = ["replay", "--log", str(log_dir), "--out", str(out)]
    result = runner.invoke(app, [*args, "--policy", f"greedy:{model}", "--policy", f"vw:{model}"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ope.json").read_text())
    assert set(data["policies"]) == {"logging", f"greedy:{model}", f"vw:{model}"}
    # the greedy estimate by hand, with the same model, on the same joined rows
    log = read_dir(log_dir)
    joined = join(log)
    by_id = {str(d.event_id): d for d in decisions}
    total = 0.0
    for row, r in zip(joined.rows, joined.reward, strict=True):
        d = by_id[log.decisions.event_ids[row]]
        pmf = policy.pmf(d.context, list(zip(d.actions, d.action_features, strict=True)))
        total += (int(np.argmax(pmf)) == d.action) * r / d.pscore
    greedy = data["policies"][f"greedy:{model}"]
    assert greedy["ips"]["value"] == pytest.approx(total / joined.rows.shape[0])
    # the learned policy beats uniform logging: best per segment is (0.4 + 0.35) / 2
    assert greedy["dr"]["value"] > data["policies"]["logging"]["dr"]["value"]
    assert greedy["diagnostics"]["ess"] < data["policies"]["logging"]["diagnostics"]["ess"]


def _run(args: list[str]) -> Any:
    result = runner.invoke(app, ["replay", *args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return " ".join(result.output.split())  # rich wraps long lines


def _broken(tmp_path: Path, line_no: int, mutate: Any) -> Path:
    decisions, feedback = make_log(5, seed=5, noise=False)
    log_dir = write_log(tmp_path / "log", decisions, feedback)
    lines = (log_dir / "decisions.jsonl").read_text().splitlines()
    lines[line_no - 1] = mutate(lines[line_no - 1])
    (log_dir / "decisions.jsonl").write_text("\n".join(lines) + "\n")
    return log_dir


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda s: s[:40], "not JSON"),
        (lambda s: s.replace('"action":', '"action":"x","y":'), "field `action`"),
        (lambda s: s.replace('"pscore":0.25', '"pscore":0.5'), "`pscore`"),
        (lambda s: s.replace('"pscore":0.25', '"pscore":-1'), "field `pscore`"),
        (lambda s: s.replace('"ts":"2026-03-01T12:00:04Z"', '"ts":"yesterday"'), "field `ts`"),
        (lambda s: json.dumps({**json.loads(s), "event_id": "nope"}), "field `event_id`"),
        (lambda s: json.dumps({**json.loads(s), "action": 9}), "`action`"),
        (lambda s: json.dumps({**json.loads(s), "action_dist": [0.25] * 3}), "`action_dist`"),
        (lambda s: json.dumps({**json.loads(s), "actions": ["v0", 3, "v2", "v3"]}), "`actions.1`"),
        (lambda s: json.dumps({**json.loads(s), "actions": ["v0", "v1"]}), "`action_features`"),
    ],
)
def test_a_malformed_line_names_file_line_and_field(
    tmp_path: Path, mutate: Any, expect: str
) -> None:
    log_dir = _broken(tmp_path, 3, mutate)
    message = _run(["--log", str(log_dir), "--out", str(tmp_path / "out")])
    assert "decisions.jsonl:3" in message
    assert expect in message


def test_a_malformed_feedback_line_is_named_too(tmp_path: Path) -> None:
    decisions, feedback = make_log(5, seed=6, noise=False)
    log_dir = write_log(tmp_path / "log", decisions, feedback)
    with (log_dir / "feedback.jsonl").open("a") as fh:
        fh.write("\n" + feedback[0].model_dump_json().replace("impression", "glance") + "\n")
    message = _run(["--log", str(log_dir), "--out", str(tmp_path / "out")])
    assert f"feedback.jsonl:{len(feedback) + 2}" in message and "field `kind`" in message


def test_missing_dir_no_decisions_no_impressions_and_bad_policy_fail_cleanly(
    tmp_path: Path,
) -> None:
    out = str(tmp_path / "out")
    assert "is not a directory" in _run(["--log", str(tmp_path / "nowhere"), "--out", out])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no decision logs" in _run(["--log", str(empty), "--out", out])
    (empty / "decisions.jsonl").write_text("\n\n")
    assert "no decisions in decisions.jsonl" in _run(["--log", str(empty), "--out", out])
    decisions, _ = make_log(5, seed=7, noise=False)
    unseen = write_log(tmp_path / "unseen", decisions, [])
    assert "no decision was seen" in _run(["--log", str(unseen), "--out", out])
    log_dir = write_log(tmp_path / "log", *make_log(5, seed=7, noise=False))
    assert "not a policy" in _run(["--log", str(log_dir), "--out", out, "--policy", "best"])
    missing = f"vw:{tmp_path / 'none.policy'}"
    assert "is not a file" in _run(["--log", str(log_dir), "--out", out, "--policy", missing])
    junk = tmp_path / "junk.policy"
    junk.write_bytes(b"not a model")
    assert "cannot load" in _run(["--log", str(log_dir), "--out", out, "--policy", f"vw:{junk}"])
    assert "exactly one of" in _run(["--out", out])


def test_missing_and_tiny_propensities_are_warned_about(tmp_path: Path) -> None:
    decisions, feedback = make_log(400, seed=8, noise=False)
    k = len(TRAITS)
    tiny = [1e-4] + [(1 - 1e-4) / (k - 1)] * (k - 1)
    decisions[0] = decisions[0].model_copy(
        update={"action": 0, "pscore": 1e-4, "action_dist": tiny}
    )
    log_dir = write_log(tmp_path / "log", decisions, feedback)
    lines = (log_dir / "decisions.jsonl").read_text().splitlines()
    for i in (1, 2):
        obj = json.loads(lines[i])
        del obj["pscore"]
        lines[i] = json.dumps(obj)
    (log_dir / "decisions.jsonl").write_text("\n".join(lines) + "\n")
    log = read_dir(log_dir)
    assert log.decisions.missing_pscore == 2
    assert log.decisions.pscore[1] == pytest.approx(0.25)
    result = evaluate_replay(log, ReplayConfig())
    text = " ".join(result.warnings)
    assert "2 decisions had no `pscore`" in text
    assert "`pscore` < 0.001" in text
    assert result.join["missing_pscore"] == 2


def test_strict_mode_checks_fields_replay_does_not_read(tmp_path: Path) -> None:
    log_dir = _broken(tmp_path, 2, lambda s: s.replace('"ad_headline","pool', '"banner","pool'))
    assert len(read_dir(log_dir).decisions) == 5  # the fast path does not read `channel`
    with pytest.raises(ReplayError, match=r"decisions.jsonl:2: .*field `channel`"):
        read_dir(log_dir, strict=True)


def test_canonical_uuids_normalise_and_find_the_bad_one(tmp_path: Path) -> None:
    u = uuid.uuid4()
    ids = [str(u), str(u).upper(), u.hex, f"urn:uuid:{u}"]
    out, bad = canonical_uuids(ids)
    assert bad is None and out == [str(u)] * 4
    out, bad = canonical_uuids([str(u), "zz", str(u)])
    assert bad == 1
    # the same event written by two producers in two spellings still joins
    decisions, feedback = make_log(50, seed=9, noise=False)
    expected = join(from_events(decisions, feedback)).stats
    log_dir = write_log(tmp_path, decisions, feedback)
    text = (log_dir / "feedback.jsonl").read_text()
    for f in feedback:
        text = text.replace(str(f.event_id), f.event_id.hex.upper())
    (log_dir / "feedback.jsonl").write_text(text)
    assert join(read_dir(log_dir)).stats == expected


def test_bootstrap_intervals_are_seeded(tmp_path: Path) -> None:
    decisions, feedback = make_log(600, seed=10, noise=False)
    log = from_events(decisions, feedback)
    config = ReplayConfig(
        policies=(PolicySpec("logging"), PolicySpec("uniform")),
        interval="bootstrap",
        n_bootstrap_samples=200,
        seed=4,
    )
    a, b = evaluate_replay(log, config), evaluate_replay(log, config)
    assert a.policies["uniform"]["snips"] == b.policies["uniform"]["snips"]
    assert a.policies["uniform"]["dr"]["interval"] == "bootstrap"


@pytest.mark.kafka
def test_from_kafka_reads_the_topics_like_the_files(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics
) -> None:
    decisions, feedback = make_log(300, seed=11)
    sink = KafkaEventSink(kafka_bootstrap)
    for d in decisions:
        sink.add(topics.decisions, str(d.event_id), d)
    for f in feedback:
        sink.add(topics.feedback, str(f.event_id), f)
    sink.add_raw(topics.feedback, b"k", b"{not json")
    sink.flush(30)
    sink.close()
    log = read_kafka(kafka_bootstrap, topics, idle_s=10)
    assert len(log.decisions) == len(decisions) and len(log.skipped) == 1
    from_files = join(read_dir(write_log(tmp_path / "log", decisions, feedback)))
    from_topics = join(log)
    assert from_topics.stats == from_files.stats
    assert sorted(from_topics.reward.tolist()) == sorted(from_files.reward.tolist())
    out = tmp_path / "out"
    env = {"COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap, "COPYLOOP_TOPIC_PREFIX": topics.prefix}
    result = runner.invoke(app, ["replay", "--from-kafka", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ope.json").read_text())
    assert data["join"]["joined"] == from_files.rows.shape[0]
    assert any("skipped undecodable" in w for w in data["warnings"])

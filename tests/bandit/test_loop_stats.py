"""The learner's loop-wide figures (``bandit.loop_stats``) and the refit model's explanations:
counts that a rewind or a restart never doubles, the off-policy estimate with its interval,
a record that travels as JSON, and contributions that are the model's own weights."""

from __future__ import annotations

import pytest

from bandit.loop_stats import LoopCounts, StatsPublisher, explored, segment_of
from bandit.policy import Policy, PolicyConfig
from bandit.promotion import Serving
from bandit.snapshot import write_snapshot
from bandit.vw import VWConfig
from streams.schemas import LoopStats
from streams.serde import decode, encode
from tests.service.dashboard.dash_helpers import (
    as_records,
    joined_of,
    pool,
    traffic,
    trained_policy,
)


@pytest.fixture(scope="module")
def trained() -> Policy:
    return trained_policy(pool())


@pytest.fixture(scope="module")
def events(trained):
    return list(traffic(trained, pool(), 300, seed=7))


def _expected(events):
    kinds = [f.kind for _, fb, _ in events for f in fb]
    return {
        "decisions": len(events),
        "impressions": kinds.count("impression"),
        "clicks": kinds.count("click"),
        "purchases": kinds.count("purchase"),
    }


def test_counts_are_per_event_and_a_rewind_counts_nothing_twice(events):
    counts = LoopCounts()
    records = as_records(events)
    counts.read(records[:400])
    counts.read(records)  # the first 400 again, as after a rewind, then the rest
    counts.read(records[100:200])
    want = _expected(events)
    got = {k: counts.totals[k] for k in want}
    assert got == want
    assert want["clicks"] > 20  # the tastes make clicks common enough to see
    assert counts.totals["explored"] == sum(explored(d) for d, _, _ in events)
    per_variant = sum(c[0] for c in counts.variants.values())
    assert per_variant == len(events)
    figures = counts.figures()
    assert sum(b["decisions"] for b in figures["buckets"]) == len(events)
    assert len(figures["buckets"]) == 5  # 300 decisions a second apart: five minutes


def test_feedback_before_its_decision_and_repeats_count_once(events):
    counts = LoopCounts()
    records = as_records(events)
    feedback = [r for r in records if r.topic.endswith("feedback")]
    decisions = [r for r in records if r.topic.endswith("decisions")]
    counts.read(feedback)  # feedback first (another topic, read ahead)
    counts.read(decisions)
    for d, fb, _ in events[:10]:  # repeated messages (new offsets, same events)
        counts.add_decision(d)
        for f in fb:
            counts.add_feedback(f)
    want = _expected(events)
    assert {k: counts.totals[k] for k in want} == want
    assert counts.totals["duplicates"] == 10


def test_joined_rewards_give_segments_and_an_off_policy_estimate(trained):
    # logged by an untrained (uniform) policy, judged for the trained one
    events = list(traffic(Policy(seed=3), pool(), 300, seed=8))
    counts = LoopCounts()
    counts.read(as_records(events))
    counts.joined(joined_of(events))
    counts.joined(joined_of(events[:50]))  # joined again after a rewind: once
    counts.score(trained)
    figures = counts.figures({"lag": 3})
    assert counts.totals["joined"] == len(events)
    ope = figures["ope"]
    assert ope["rounds"] == len(events)
    for name in ("policy", "uniform", "logging"):
        e = ope[name]
        assert e["low"] <= e["value"] <= e["high"]
    clicks = _expected(events)["clicks"]
    assert ope["logging"]["value"] == pytest.approx(clicks / len(events))
    # the trained policy shows what its shoppers click: better than choosing uniformly
    assert ope["policy"]["value"] > ope["uniform"]["high"]
    assert ope["uniform"]["value"] == pytest.approx(ope["logging"]["value"])
    shown: dict[str, int] = {}
    for s in figures["segments"]:
        shown[s["segment"]] = shown.get(s["segment"], 0) + s["shown"]
    segs = {segment_of(d.context) for d, _, _ in events}
    assert set(shown) == segs
    assert figures["health"] == {"lag": 3}
    assert any(b["policy_ctr"] is not None for b in figures["buckets"])


def test_saved_counts_resume_without_doubling(events, trained, tmp_path):
    records = as_records(events)
    first = LoopCounts()
    first.read(records[:500])
    path = tmp_path / "stats.json"
    first.save(path)
    again = LoopCounts.load(path)
    assert again.figures() == first.figures()
    again.read(records)  # a restart re-reads from an older checkpoint's offsets
    assert again.totals["decisions"] == len(events)
    path.write_text("{not json", encoding="utf-8")
    assert LoopCounts.load(path).totals["decisions"] == 0  # unreadable: starts afresh


class _Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, object]] = []

    def add(self, topic: str, key: str | None, event: object) -> None:
        self.sent.append((topic, key, event))

    def flush(self, timeout_s: float | None = None) -> None:
        return None


def test_the_published_record_travels_as_json(trained, tmp_path):
    # logged uniformly; scored by the snapshot rankers serve (none yet: the uniform policy)
    events = list(traffic(Policy(seed=3), pool(), 300, seed=8))
    sink = _Sink()
    clock = iter([0.0, 1.0, 10.0]).__next__
    pub = StatsPublisher(LoopCounts(), sink, "t.stats", tmp_path / "s.json", every_s=5, clock=clock)
    pub.read(as_records(events))
    pub.joined(joined_of(events[:150]))
    untrained = Serving("init", None, 0)
    pub.stepped(untrained, lambda: {"lag": 0})  # due (never published)
    pub.joined(joined_of(events[150:]))
    served = Serving(trained.version, write_snapshot(trained, tmp_path / "models"), 1)
    pub.stepped(served, lambda: {"lag": 0})  # 1 s later: not due
    pub.stepped(served, lambda: {"lag": 0})  # 10 s: due, the trained snapshot now serves
    assert [key for _, key, _ in sink.sent] == ["loop", "loop"]
    first, record = (sent[2] for sent in sink.sent)
    assert isinstance(first, LoopStats) and isinstance(record, LoopStats)
    ope = first.figures["ope"]
    assert ope["rounds"] == 150 and ope["policy"] == ope["uniform"]  # untrained: uniform
    back = decode(LoopStats, encode(record))
    assert back.figures["totals"]["decisions"] == len(events)
    ope = back.figures["ope"]
    assert ope["rounds"] == len(events)
    assert ope["policy"]["value"] > ope["uniform"]["value"]
    pub.saving()
    assert (tmp_path / "s.json").exists()


def test_explain_names_the_model_weights_and_no_shopper_id(trained, events):
    weights = trained.weights()
    assert weights
    for d, _, _ in events[:20]:
        found = trained.explain(d, 5)
        assert found is not None and 0 < len(found) <= 5
        magnitudes = [abs(c.weight) for c in found]
        assert magnitudes == sorted(magnitudes, reverse=True)
        for c in found:
            token = "^".join(x for x in (c.namespace, c.feature, c.action) if x)
            assert weights[token] == pytest.approx(c.weight)  # the dashboard's numbers
            assert "id=" not in token and d.context["u_id"] not in token
            assert "secret-user" not in token
    # the young shoppers' strongest urgency cross is positive, the older ones' negative or less
    assert weights["U^age=18-24^t=urgency"] > weights.get("U^age=40-49^t=urgency", 0.0)


def test_vw_cannot_name_its_weights():
    policy = Policy(PolicyConfig(VWConfig()), seed=1)
    d = next(traffic(policy, pool(), 1, seed=2))[0]
    assert policy.explain(d) is None and policy.weights() is None

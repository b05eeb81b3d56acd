"""Automatic rounds: one every ``finetune_every`` joined rewards, as the learner counts them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.finetune.trigger import Trigger, follow, learned_of
from streams.producer import KafkaEventSink
from streams.schemas import ModelAnnouncement
from streams.topics import Topics


def _bandit(learned: int) -> ModelAnnouncement:
    return ModelAnnouncement(
        kind="bandit", version=f"p{learned}", uri="file:///x", learned_events=learned
    )


def test_a_round_is_due_every_interval_and_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "trigger.json"
    trigger = Trigger(100, state)
    assert not trigger.observe(99)
    assert trigger.observe(100)
    trigger.mark()
    assert not trigger.observe(150)
    again = Trigger(100, state)  # a restart resumes from the last round's count
    assert again.last == 100 and not again.observe(199) and again.observe(200)
    assert not again.observe(20)  # the learner started over: so does the interval
    assert again.last == 20 and again.observe(120)


def test_only_bandit_announcements_count() -> None:
    gen = ModelAnnouncement(kind="generator", version="g", uri="/m")
    assert learned_of(gen) is None
    assert learned_of(_bandit(7)) == 7
    legacy = ModelAnnouncement(kind="bandit", version="p", uri="/p", metrics={"joined": 12.0})
    assert learned_of(legacy) == 12


@pytest.mark.parametrize("every", [0, -5])
def test_bad_interval_names_the_field(every: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`every`"):
        Trigger(every, tmp_path / "t.json")


@pytest.mark.kafka
def test_follow_runs_a_round_when_enough_rewards_joined(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    sink = KafkaEventSink(kafka_bootstrap, client_id="test-trigger")
    for learned in (40, 90, 130):
        sink.add(topics.models, "bandit", _bandit(learned))
    sink.add(topics.models, "generator", ModelAnnouncement(kind="generator", version="g", uri="/m"))
    sink.flush()
    sink.close()
    stop = threading.Event()
    ran: list[int] = []
    trigger = Trigger(100, tmp_path / "trigger.json")

    def run() -> None:
        ran.append(trigger.last)
        stop.set()

    guard = threading.Timer(30.0, stop.set)  # a trigger that never fires must not hang the test
    guard.start()
    try:
        rounds = follow(kafka_bootstrap, topics, trigger, run, stop, poll_s=0.5)
    finally:
        guard.cancel()
    assert rounds == 1 and ran == [130]
    assert Trigger(100, tmp_path / "trigger.json").last == 130

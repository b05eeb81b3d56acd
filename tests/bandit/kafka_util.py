"""Small helpers for the learner's integration tests against the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from bandit.learner import Learner
from streams.consumer import EventConsumer, Received
from streams.producer import KafkaEventSink
from streams.schemas import DeadLetter, Decision, Event, Feedback, ModelAnnouncement
from streams.topics import Topics

E = TypeVar("E", bound=Event)


def publish(
    bootstrap: str,
    topics: Topics,
    events: list[Event],
    raw: list[bytes] = (),  # type: ignore[assignment]
    raw_topic: str | None = None,
) -> None:
    """``events`` each on its topic, keyed by event id; then ``raw`` values as they are, on
    ``raw_topic`` (default the feedback topic)."""
    sink = KafkaEventSink(bootstrap)
    for e in events:
        if isinstance(e, Decision):
            sink.add(topics.decisions, str(e.event_id), e)
        elif isinstance(e, Feedback):
            sink.add(topics.feedback, str(e.event_id), e)
    for value in raw:
        sink.add_raw(raw_topic or topics.feedback, b"bad-key", value)
    sink.flush(30)
    sink.close()


def drive(learner: Learner, done: Callable[[], bool], max_steps: int = 300) -> None:
    """Step the learner until ``done()``; fails after ``max_steps`` polls (bounded)."""
    for _ in range(max_steps):
        learner.step()
        if done():
            return
    raise AssertionError(f"learner did not get there: {learner.stats}")


def read_all(
    bootstrap: str, topic: str, model: type[E], expect: int, timeout_s: float = 30
) -> list[E]:
    """Everything on ``topic`` (at least ``expect`` records, or what came in ``timeout_s``)."""
    consumer = EventConsumer(bootstrap, {topic: model}, group_id=None)
    consumer.assign()
    out: list[E] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        out += _of_type(consumer.poll(0.5), model)
    # a short extra poll catches records beyond the expected count
    out += _of_type(consumer.poll(0.5), model)
    consumer.close()
    return out


def _of_type(records: list[Received[Event]], model: type[E]) -> list[E]:
    """The consumer yields the ``Event`` base; a topic read with one model holds only that."""
    events = [r.event for r in records]
    assert all(isinstance(e, model) for e in events), f"not all {model.__name__}: {events}"
    return [e for e in events if isinstance(e, model)]


def dead_letters(bootstrap: str, topics: Topics, expect: int) -> list[DeadLetter]:
    return read_all(bootstrap, topics.deadletter, DeadLetter, expect)


def announcements(bootstrap: str, topics: Topics, expect: int) -> list[ModelAnnouncement]:
    return read_all(bootstrap, topics.models, ModelAnnouncement, expect)

"""Against the real broker: every event round-trips, bad messages are dead-lettered and the
consumer goes on, a group resumes after its committed offsets, topics are made as specified."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from streams.consumer import EventConsumer, Received
from streams.deadletter import DeadLetterWriter
from streams.producer import KafkaEventSink
from streams.schemas import DeadLetter, Feedback
from streams.topics import TopicAdmin, Topics
from tests.conftest import scoped_topics
from tests.streams.samples import sample_events

pytestmark = pytest.mark.kafka


def drain(consumer: EventConsumer, want: int, timeout_s: float = 30.0) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


def test_topics_have_partitions_and_compaction(kafka_bootstrap: str, topics: Topics) -> None:
    admin = TopicAdmin(kafka_bootstrap)
    assert set(topics.all()) <= admin.existing()
    assert admin.partitions(topics.feedback) == 2
    assert admin.describe_configs(topics.variants)["cleanup.policy"] == "compact"
    assert admin.describe_configs(topics.decisions).get("cleanup.policy", "delete") == "delete"
    assert admin.ensure(topics, partitions=2) == []  # idempotent
    admin.close()


def test_every_event_model_round_trips_through_kafka(kafka_bootstrap: str, topics: Topics) -> None:
    sent = sample_events()
    names = {type(e).__name__: f"{topics.prefix}rt.{type(e).__name__}" for e in sent}
    admin = TopicAdmin(kafka_bootstrap)
    admin.create({name: {} for name in names.values()}, partitions=1)
    admin.close()
    sink = KafkaEventSink(kafka_bootstrap)
    for event in sent:
        sink.add(names[type(event).__name__], "k", event)
    sink.flush(30)
    sink.close()
    consumer = EventConsumer(
        kafka_bootstrap, {names[type(e).__name__]: type(e) for e in sent}, group_id=None
    )
    got = {type(r.event).__name__: r.event for r in drain(consumer, len(sent))}
    consumer.close()
    assert got == {type(e).__name__: e for e in sent}


def test_malformed_messages_are_dead_lettered_and_consumer_goes_on(
    kafka_bootstrap: str, topics: Topics
) -> None:
    sink = KafkaEventSink(kafka_bootstrap)
    good_before = Feedback(feedback_id="a", event_id=uuid.uuid4(), kind="impression")
    good_after = Feedback(feedback_id="b", event_id=uuid.uuid4(), kind="click")
    sink.add(topics.feedback, "same", good_before)
    sink.add_raw(topics.feedback, b"same", b'{"feedback_id": "x", "kind": "click"}')
    sink.add_raw(topics.feedback, b"same", b"\x00\x01 not json")
    sink.add(topics.feedback, "same", good_after)
    sink.flush(30)

    consumer = EventConsumer(
        kafka_bootstrap,
        {topics.feedback: Feedback},
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        deadletter=DeadLetterWriter(sink, topics.deadletter),
    )
    got = drain(consumer, 2)
    consumer.commit()
    consumer.close()
    assert [r.event for r in got] == [good_before, good_after]
    assert consumer.dead_lettered == 2

    letters = EventConsumer(kafka_bootstrap, {topics.deadletter: DeadLetter}, group_id=None)
    dead = sorted(drain(letters, 2), key=lambda r: r.event.offset)
    letters.close()
    sink.close()
    assert [d.event.offset for d in dead] == [1, 2]
    first, second = dead[0].event, dead[1].event
    assert first.source_topic == topics.feedback
    assert "event_id" in first.reason and "Field required" in first.reason
    assert base64.b64decode(first.raw) == b'{"feedback_id": "x", "kind": "click"}'
    assert base64.b64decode(second.raw) == b"\x00\x01 not json"
    assert "Invalid JSON" in second.reason
    assert dead[0].key == "same"  # keyed by the original key


def test_group_resumes_after_committed_offsets(kafka_bootstrap: str, topics: Topics) -> None:
    sink = KafkaEventSink(kafka_bootstrap)
    ids = [f"f{i}" for i in range(10)]
    for fid in ids:
        sink.add(
            topics.feedback,
            "one-key",
            Feedback(feedback_id=fid, event_id=uuid.uuid4(), kind="impression"),
        )
    sink.flush(30)
    group = f"g-{uuid.uuid4().hex[:6]}"

    first = EventConsumer(kafka_bootstrap, {topics.feedback: Feedback}, group_id=group)
    got = drain(first, 10)
    assert len(got) == 10
    # commit only the first four, as a process that crashed after its fourth message would
    key = (got[3].topic, got[3].partition)
    first.commit({key: got[3].offset + 1})
    first.close()

    second = EventConsumer(kafka_bootstrap, {topics.feedback: Feedback}, group_id=group)
    rest = drain(second, 6)
    time.sleep(1.0)
    rest.extend(second.poll(1.0))  # nothing beyond the six should arrive
    assert second.committed(key) == 4
    second.commit()
    second.close()
    assert [r.event.feedback_id for r in rest] == ids[4:]

    third = EventConsumer(kafka_bootstrap, {topics.feedback: Feedback}, group_id=group)
    assert third.poll(3.0) == []
    third.close()
    sink.close()


def test_assign_seeks_to_given_offsets(kafka_bootstrap: str, topics: Topics) -> None:
    sink = KafkaEventSink(kafka_bootstrap)
    for i in range(5):
        sink.add(
            topics.feedback, "k", Feedback(feedback_id=f"f{i}", event_id=uuid.uuid4(), kind="click")
        )
    sink.flush(30)
    probe = EventConsumer(kafka_bootstrap, {topics.feedback: Feedback}, group_id=None)
    ends = probe.end_offsets()
    probe.close()
    (key,) = [k for k, end in ends.items() if end == 5]
    consumer = EventConsumer(kafka_bootstrap, {topics.feedback: Feedback}, group_id=None)
    consumer.assign({key: 3})
    got = drain(consumer, 2)
    consumer.close()
    sink.close()
    assert [r.event.feedback_id for r in got] == ["f3", "f4"]


def test_a_producer_that_stops_settling_is_abandoned_and_replaced(
    kafka_bootstrap: str, topics: Topics
) -> None:
    # kafka-python's idempotent producer can stall for good after a broker restart; a flush
    # that passes the settle timeout gives the producer up, failing what it held, and the
    # next delivery uses a fresh producer. A zero settle timeout forces that path here.
    TopicAdmin(kafka_bootstrap).ensure(topics, partitions=1)
    sink = KafkaEventSink(kafka_bootstrap)
    assert sink.settle_timeout_s == pytest.approx(120 + 30 + 5)
    feedback = next(e for e in sample_events() if isinstance(e, Feedback))
    record = (topics.feedback, b"k", feedback.model_dump_json().encode())
    sink.settle_timeout_s = 0.0
    # enough records that some are still in flight when the zero timeout gives up (with 20,
    # all were sometimes acknowledged in the instant between)
    outcomes = sink.deliver([record] * 2000)
    assert sink.abandoned == 1
    assert any(o is not None for o in outcomes)  # failed, not left unknown
    sink.settle_timeout_s = 30.0
    assert sink.deliver([record] * 5) == [None] * 5
    sink.close()


def test_a_tests_topics_are_deleted_when_it_ends(kafka_bootstrap: str) -> None:
    admin = TopicAdmin(kafka_bootstrap)
    with scoped_topics(kafka_bootstrap) as t:
        admin.create({f"{t.prefix}extra": {}}, partitions=1)  # a test's own topic, too
        assert {*t.all(), f"{t.prefix}extra"} <= admin.existing()
    deadline = time.monotonic() + 15
    left = [n for n in admin.existing() if n.startswith(t.prefix)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [n for n in admin.existing() if n.startswith(t.prefix)]
    admin.close()
    assert left == []

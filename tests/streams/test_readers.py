"""Against the real broker: the librdkafka reader behind an EventConsumer behaves as the
kafka-python one does (assign at offsets, resume a group's commits, read end offsets, dead-letter
bad messages), and a seek hands out nothing the old places had fetched ahead."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from streams.consumer import EventConsumer, Received
from streams.deadletter import DeadLetterWriter
from streams.errors import StreamsError
from streams.producer import KafkaEventSink
from streams.readers import KAFKA_CLIENTS, open_reader
from streams.schemas import Feedback
from streams.topics import Topics

pytestmark = pytest.mark.kafka

CLIENTS = pytest.mark.parametrize("client", KAFKA_CLIENTS)


def _publish(bootstrap: str, topic: str, n: int, key: str = "one-key") -> None:
    sink = KafkaEventSink(bootstrap)
    for i in range(n):
        sink.add(topic, key, Feedback(feedback_id=f"f{i}", event_id=uuid.uuid4(), kind="click"))
    sink.flush(30)
    sink.close()


def _drain(consumer: EventConsumer, want: int, timeout_s: float = 30.0) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5, 1000))
    return got


def _assigned_at(
    bootstrap: str, topics: Topics, client: str, n: int, start: int
) -> tuple[EventConsumer, tuple[str, int]]:
    """``n`` feedback records on one partition, and a consumer assigned there at ``start``."""
    _publish(bootstrap, topics.feedback, n)
    consumer = EventConsumer(bootstrap, {topics.feedback: Feedback}, group_id=None, client=client)
    (key,) = [k for k, end in consumer.end_offsets().items() if end == n]
    consumer.assign({key: start})
    return consumer, key


@CLIENTS
def test_assigned_reading_starts_at_given_offsets_and_ends_are_read(
    kafka_bootstrap: str, topics: Topics, client: str
) -> None:
    consumer, key = _assigned_at(kafka_bootstrap, topics, client, 12, 7)
    got = _drain(consumer, 5)
    time.sleep(0.5)
    got += consumer.poll(0.5, 1000)  # nothing more
    consumer.close()
    assert [r.event.feedback_id for r in got] == [f"f{i}" for i in range(7, 12)]
    assert [r.offset for r in got] == list(range(7, 12))
    assert consumer.positions[key] == 12


@CLIENTS
def test_a_seek_back_reads_again_from_there_and_nothing_fetched_ahead_leaks(
    kafka_bootstrap: str, topics: Topics, client: str
) -> None:
    consumer, key = _assigned_at(kafka_bootstrap, topics, client, 400, 0)
    first = consumer.poll(10.0, 50)
    while not first:
        first = consumer.poll(10.0, 50)
    # the client has fetched far past these 50 by now; a rewind must hand out 10.. again
    consumer.rewind({key: 10})
    again = _drain(consumer, 390)
    consumer.close()
    offsets = [r.offset for r in again]
    assert offsets == list(range(10, 400))


@CLIENTS
def test_a_group_resumes_after_its_committed_offsets(
    kafka_bootstrap: str, topics: Topics, client: str
) -> None:
    _publish(kafka_bootstrap, topics.feedback, 10)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = EventConsumer(
        kafka_bootstrap, {topics.feedback: Feedback}, group_id=group, client=client
    )
    first.assign()
    got = _drain(first, 10)
    key = (got[3].topic, got[3].partition)
    first.commit({key: got[3].offset + 1})
    first.close()
    second = EventConsumer(
        kafka_bootstrap, {topics.feedback: Feedback}, group_id=group, client=client
    )
    second.assign()
    rest = _drain(second, 6)
    assert second.committed(key) == 4
    second.close()
    assert [r.event.feedback_id for r in rest] == [f"f{i}" for i in range(4, 10)]


def test_bad_messages_are_dead_lettered_by_the_librdkafka_reader_too(
    kafka_bootstrap: str, topics: Topics
) -> None:
    from kafka import KafkaProducer

    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    raw.send(topics.feedback, key=b"k", value=b"{not json")
    raw.flush()
    raw.close()
    _publish(kafka_bootstrap, topics.feedback, 3, key="k")
    sink = KafkaEventSink(kafka_bootstrap)
    letters = DeadLetterWriter(sink, topics.deadletter)
    consumer = EventConsumer(
        kafka_bootstrap,
        {topics.feedback: Feedback},
        group_id=None,
        deadletter=letters,
        client="librdkafka",
    )
    consumer.assign()
    got = _drain(consumer, 3)
    letters.flush()
    consumer.close()
    sink.close()
    assert [r.event.feedback_id for r in got] == ["f0", "f1", "f2"]
    assert consumer.dead_lettered == 1


def test_the_librdkafka_reader_reads_assigned_partitions_only(kafka_bootstrap: str) -> None:
    reader = open_reader("librdkafka", {"bootstrap_servers": kafka_bootstrap})
    with pytest.raises(StreamsError, match="assign"):
        reader.subscribe(["any"])
    reader.close()


def test_an_unknown_client_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="kafka_client"):
        EventConsumer("127.0.0.1:1", {"t": Feedback}, group_id=None, client="java")


def test_the_learner_client_setting_is_checked_by_name(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bandit.errors import ConfigError
    from bandit.learner import LearnerConfig
    from service.settings import Settings

    with pytest.raises(ConfigError, match="kafka_client"):
        LearnerConfig(topics=Topics("r."), data_dir=tmp_path, kafka_client="java")
    with pytest.raises(ValidationError, match="learner_kafka_client"):
        Settings(learner_kafka_client="java")  # type: ignore[arg-type]
    assert Settings().learner_kafka_client == "librdkafka"


def test_the_feedback_lead_setting_is_checked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    assert Settings().learner_feedback_lead_s == 1.0
    monkeypatch.setenv("COPYLOOP_LEARNER_FEEDBACK_LEAD_S", "2.5")
    assert Settings().learner_feedback_lead_s == 2.5
    for bad in ("-1", "inf", "soon"):
        monkeypatch.setenv("COPYLOOP_LEARNER_FEEDBACK_LEAD_S", bad)
        with pytest.raises(ValidationError, match="learner_feedback_lead_s"):
            Settings()


def test_a_paused_partition_hands_out_nothing_until_resumed_then_goes_on_where_it_stopped(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """librdkafka: records it had fetched ahead for a paused partition are not handed out;
    after resume() the partition goes on from the next record not handed out (no gap, no
    repeat), and a rewind while paused keeps it paused."""
    consumer, key = _assigned_at(kafka_bootstrap, topics, "librdkafka", 600, 0)
    first = consumer.poll(10.0, 50)
    while not first:
        first = consumer.poll(10.0, 50)
    consumer.pause([key])
    assert consumer.paused == {key}
    held: list[Received] = []
    for _ in range(4):  # the client has fetched far ahead; none of it comes while paused
        held += consumer.poll(0.3, 1000)
    consumer.rewind({key: consumer.positions[key]})  # a fresh client, still paused
    held += consumer.poll(0.5, 1000)
    consumer.resume([key])
    assert consumer.paused == set()
    rest = _drain(consumer, 600 - len(first))
    consumer.close()
    assert held == []
    assert [r.offset for r in first + rest] == list(range(600))


def test_the_kafka_python_reader_refuses_to_pause(kafka_bootstrap: str, topics: Topics) -> None:
    consumer, key = _assigned_at(kafka_bootstrap, topics, "kafka-python", 3, 0)
    with pytest.raises(StreamsError, match="does not pause"):
        consumer.pause([key])
    assert consumer.paused == set()
    consumer.close()

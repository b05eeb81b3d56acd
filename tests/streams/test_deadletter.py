"""A stream error never skips a message, and dead letters are bounded (against the real broker
for the consumer; the letter's bounds and the agreed size limits are pure logic)."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from pathlib import Path

import pytest

from streams.consumer import EventConsumer, Received
from streams.deadletter import DEFAULT_RAW_PREFIX_BYTES, KEY_PREFIX_BYTES, DeadLetterWriter
from streams.errors import ProduceError
from streams.kafka_local import LocalKafka
from streams.producer import MAX_MESSAGE_BYTES, KafkaEventSink, MemorySink
from streams.schemas import DeadLetter, Event, Feedback
from streams.serde import encode
from streams.topics import Topics
from tests.streams.faults import FailingSink

#: an ad server's bad message: as large as the broker takes, far over the old 1 MiB letters
OVERSIZED = b"{" + b"x" * (3 * 1024 * 1024 // 2)


def _feedback(fid: str) -> Feedback:
    return Feedback(feedback_id=fid, event_id=uuid.uuid4(), kind="impression")


def _drain(consumer: EventConsumer, want: int, timeout_s: float = 30.0) -> list[Received[Event]]:
    got: list[Received[Event]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


def _letters(bootstrap: str, topics: Topics, want: int) -> list[DeadLetter]:
    reader = EventConsumer(bootstrap, {topics.deadletter: DeadLetter}, group_id=None)
    reader.assign()
    got = [r.event for r in _drain(reader, want)]
    got += [r.event for r in reader.poll(0.5)]  # anything beyond the expected count
    reader.close()
    return [x for x in got if isinstance(x, DeadLetter)]


def _one_partition(bootstrap: str, topics: Topics, values: list[bytes]) -> None:
    sink = KafkaEventSink(bootstrap)
    for value in values:
        sink.add_raw(topics.feedback, b"one-key", value)  # one key: one partition, in order
    sink.flush(30)
    sink.close()


# -- bounds (no broker) -------------------------------------------------------------------------
def test_a_letter_keeps_a_prefix_the_size_and_the_digest() -> None:
    sink = MemorySink()
    writer = DeadLetterWriter(sink, "x.deadletter")
    key = b"k" * (KEY_PREFIX_BYTES + 10)
    letter = writer.send(
        source_topic="x.feedback",
        partition=0,
        offset=7,
        key=key,
        value=OVERSIZED,
        reason="r" * 5000,
    )
    assert base64.b64decode(letter.raw) == OVERSIZED[:DEFAULT_RAW_PREFIX_BYTES]
    assert letter.raw_size == len(OVERSIZED)
    assert letter.raw_sha256 == hashlib.sha256(OVERSIZED).hexdigest()
    assert base64.b64decode(letter.key or "") == key[:KEY_PREFIX_BYTES]
    assert len(encode(letter)) < MAX_MESSAGE_BYTES // 10
    small = writer.send(
        source_topic="x.feedback", partition=0, offset=8, key=None, value=b"{}", reason="r"
    )
    assert base64.b64decode(small.raw) == b"{}" and small.raw_size == 2


def test_a_prefix_too_large_for_a_record_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="max_raw_bytes"):
        DeadLetterWriter(MemorySink(), "x.deadletter", max_raw_bytes=MAX_MESSAGE_BYTES)


def test_the_producer_and_the_broker_agree_on_the_largest_record(tmp_path: Path) -> None:
    kafka = LocalKafka(home=tmp_path)
    tmp_path.mkdir(exist_ok=True)
    kafka._write_config()
    props = (tmp_path / "server.properties").read_text()
    match = re.search(r"^message\.max\.bytes=(\d+)$", props, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == MAX_MESSAGE_BYTES
    sink = KafkaEventSink("127.0.0.1:1")  # no client is made until the first send
    assert sink._config["max_request_size"] == MAX_MESSAGE_BYTES


# -- against the broker ---------------------------------------------------------------------------
@pytest.mark.kafka
def test_an_oversized_malformed_message_is_dead_lettered_and_nothing_skipped(
    kafka_bootstrap: str, topics: Topics
) -> None:
    before, after = _feedback("before"), _feedback("after")
    _one_partition(kafka_bootstrap, topics, [encode(before), OVERSIZED, encode(after)])
    sink = KafkaEventSink(kafka_bootstrap)
    consumer = EventConsumer(
        kafka_bootstrap,
        {topics.feedback: Feedback},
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        deadletter=DeadLetterWriter(sink, topics.deadletter),
    )
    got = _drain(consumer, 2)
    consumer.commit()  # flushes the letter: it must be delivered
    consumer.close()
    sink.close()
    assert [r.event for r in got] == [before, after]
    [letter] = _letters(kafka_bootstrap, topics, 1)
    assert letter.offset == 1 and letter.raw_size == len(OVERSIZED)
    assert letter.raw_sha256 == hashlib.sha256(OVERSIZED).hexdigest()
    assert base64.b64decode(letter.raw) == OVERSIZED[:DEFAULT_RAW_PREFIX_BYTES]


@pytest.mark.kafka
def test_a_refused_dead_letter_mid_batch_leaves_the_batch_to_be_read_again(
    kafka_bootstrap: str, topics: Topics
) -> None:
    good = [_feedback(f"g{i}") for i in range(4)]
    values = [encode(good[0]), encode(good[1]), b"{bad", encode(good[2]), encode(good[3])]
    _one_partition(kafka_bootstrap, topics, values)
    sink = KafkaEventSink(kafka_bootstrap)
    consumer = EventConsumer(
        kafka_bootstrap,
        {topics.feedback: Feedback},
        group_id=None,
        deadletter=DeadLetterWriter(FailingSink(sink, refuse=1), topics.deadletter),
    )
    consumer.assign()
    handed: list[Received[Event]] = []  # what came before the failure (nothing, in practice)
    with pytest.raises(ProduceError):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            handed += consumer.poll(0.5)
    assert all(r.offset < 2 for r in handed)
    got = handed + _drain(consumer, 4 - len(handed))
    consumer.commit()
    consumer.close()
    sink.close()
    assert [r.event for r in got] == good  # nothing skipped, nothing twice
    [letter] = _letters(kafka_bootstrap, topics, 1)
    assert letter.offset == 2


@pytest.mark.kafka
def test_an_undelivered_dead_letter_rewinds_to_the_last_commit(
    kafka_bootstrap: str, topics: Topics
) -> None:
    first, second = _feedback("first"), _feedback("second")
    _one_partition(kafka_bootstrap, topics, [encode(first), b"{bad-1"])
    sink = KafkaEventSink(kafka_bootstrap)
    consumer = EventConsumer(
        kafka_bootstrap,
        {topics.feedback: Feedback},
        group_id=f"g-{uuid.uuid4().hex[:6]}",
        deadletter=DeadLetterWriter(FailingSink(sink, lose=1), topics.deadletter),
    )
    got = _drain(consumer, 1)
    deadline = time.monotonic() + 30
    while consumer.dead_lettered < 1 and time.monotonic() < deadline:
        got += consumer.poll(0.5)
    assert [r.event for r in got] == [first]
    with pytest.raises(ProduceError):
        consumer.commit()  # the letter for offset 1 was lost: nothing may be committed past it
    _one_partition(kafka_bootstrap, topics, [encode(second)])
    again = _drain(consumer, 2)
    consumer.commit()
    key = (topics.feedback, again[-1].partition)
    assert consumer.committed(key) == 3
    consumer.close()
    sink.close()
    assert [r.event for r in again] == [first, second]  # read again from the last commit
    assert [x.offset for x in _letters(kafka_bootstrap, topics, 1)] == [1]

"""The spooling publisher: pure logic with a scripted sink, then a real broker stopped for 30 s."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from service.ranker.spool import DiskSpool, SpoolingPublisher
from streams.consumer import EventConsumer, Received
from streams.errors import BrokerUnavailable
from streams.kafka_local import LocalKafka
from streams.producer import KafkaEventSink
from streams.schemas import Event, Feedback
from streams.topics import TopicAdmin, Topics
from tests.ports import free_broker_port


class FlakySink:
    """Acknowledges records unless ``down``; remembers what it acknowledged, in order."""

    def __init__(self) -> None:
        self.down = False
        self.acked: list[bytes] = []
        self.lock = threading.Lock()

    def deliver(self, records):
        with self.lock:
            if self.down:
                raise BrokerUnavailable("scripted outage")
            self.acked.extend(v for _, _, v in records)
            return [None] * len(records)


def _feedback_ids(records: list[Received[Event]]) -> list[str]:
    """The consumer yields the ``Event`` base; every record on the feedback topic is feedback."""
    assert all(isinstance(r.event, Feedback) for r in records)
    return [r.event.feedback_id for r in records if isinstance(r.event, Feedback)]


def fb(i: int) -> Feedback:
    return Feedback(feedback_id=f"f{i}", event_id=uuid.uuid4(), kind="impression")


def test_outage_spools_then_delivers_in_order_exactly_once(tmp_path: Path) -> None:
    sink = FlakySink()
    pub = SpoolingPublisher(sink.deliver, tmp_path, batch_max=7, probe_every_s=0.05).start()
    events = [fb(i) for i in range(300)]
    for i, e in enumerate(events):
        if i == 100:
            assert pub.flush(10)
            sink.down = True
        if i == 200:
            sink.down = False
        pub.publish("t", str(e.event_id), e)
        if 100 <= i < 200:
            time.sleep(0.001)
    assert pub.flush(20)
    assert pub.stats.spooled > 0
    pub.close()
    got = [Feedback.model_validate_json(v).feedback_id for v in sink.acked]
    assert got == [e.feedback_id for e in events]


def test_close_out_of_time_spools_the_queue_and_the_next_start_delivers_it(tmp_path: Path) -> None:
    sink = FlakySink()

    def slow(records):
        time.sleep(0.2)  # a slow broker: one record per round
        return sink.deliver(records)

    pub = SpoolingPublisher(slow, tmp_path, batch_max=1).start()
    for i in range(40):
        pub.publish("t", None, fb(i))
    pub.close(timeout_s=0.3)  # far less than 40 rounds: the rest must go to disk, not be lost
    spooled = DiskSpool(tmp_path).pending
    assert spooled > 0
    assert len(sink.acked) + spooled == 40
    again = SpoolingPublisher(sink.deliver, tmp_path, probe_every_s=0.01).start()
    assert again.flush(10)
    again.close()
    assert [Feedback.model_validate_json(v).feedback_id for v in sink.acked] == [
        f"f{i}" for i in range(40)
    ]


def test_spool_survives_a_restart_and_delivers_once(tmp_path: Path) -> None:
    sink = FlakySink()
    sink.down = True
    pub = SpoolingPublisher(sink.deliver, tmp_path, probe_every_s=60).start()
    for i in range(20):
        pub.publish("t", None, fb(i))
    time.sleep(0.5)
    pub.close()
    assert DiskSpool(tmp_path).pending == 20
    sink.down = False
    again = SpoolingPublisher(sink.deliver, tmp_path, probe_every_s=0.01).start()
    assert again.flush(10)
    again.close()
    assert [Feedback.model_validate_json(v).feedback_id for v in sink.acked] == [
        f"f{i}" for i in range(20)
    ]
    assert DiskSpool(tmp_path).pending == 0


def test_partial_drain_is_recorded_without_duplicates(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append([("t", None, f'"{i}"'.encode()) for i in range(5)])
    spool.mark_delivered([1, 3])  # delivered out of line (another partition got through)
    assert [i for i, _ in spool.read(10)] == [0, 2, 4]
    spool.close()
    reopened = DiskSpool(tmp_path)
    assert [i for i, _ in reopened.read(10)] == [0, 2, 4]
    reopened.mark_delivered([0, 2, 4])
    assert reopened.pending == 0 and len(reopened) == 0


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.append([("t", b"k", b'{"a":1}')])
    spool.close()
    with open(tmp_path / "spool.jsonl", "ab") as fh:
        fh.write(b'{"t": "t", "k": nu')
    assert DiskSpool(tmp_path).pending == 1


@pytest.mark.kafka
@pytest.mark.slow
def test_broker_stopped_30s_every_record_arrives_exactly_once(tmp_path: Path) -> None:
    kafka = LocalKafka(home=tmp_path / "kafka", port=free_broker_port())
    bootstrap = kafka.up(timeout_s=180)
    topics = Topics(prefix="outage.")
    try:
        TopicAdmin(bootstrap).ensure(topics, partitions=2)
        sink = KafkaEventSink(
            bootstrap,
            delivery_timeout_ms=15000,
            request_timeout_ms=10000,
            max_block_ms=1500,
            reconnect_backoff_max_ms=500,
        )
        pub = SpoolingPublisher(sink.deliver, tmp_path / "spool", probe_every_s=0.5).start()
        sent: list[str] = []

        def publish_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                e = fb(len(sent))
                pub.publish(topics.feedback, str(e.event_id), e)  # never blocks, never raises
                sent.append(e.feedback_id)
                time.sleep(0.01)

        publish_for(3)
        kafka.down()
        publish_for(30)
        assert pub.pending > 0
        kafka.up(timeout_s=180)
        publish_for(3)
        assert pub.flush(120), f"{pub.pending} records still pending"
        pub.close()
        sink.close()

        consumer = EventConsumer(bootstrap, {topics.feedback: Feedback}, group_id=None)
        got: list[str] = []
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            got.extend(_feedback_ids(consumer.poll(1.0)))
        got.extend(_feedback_ids(consumer.poll(2.0)))
        consumer.close()
        assert len(got) == len(sent)
        assert sorted(got) == sorted(sent)  # each exactly once
        assert pub.stats.spooled > 0
    finally:
        kafka.down()

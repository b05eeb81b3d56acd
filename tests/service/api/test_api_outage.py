"""Kafka stopped for 30 s while rank requests flow through the HTTP API: every answer succeeds,
and once the broker is back every decision is on the topic exactly once.

The broker here is a dedicated one on a free port (never the shared development broker)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from streams.kafka_local import LocalKafka
from streams.producer import KafkaEventSink
from streams.schemas import Decision
from streams.topics import TopicAdmin, Topics
from tests.ports import free_broker_port
from tests.service.api.api_helpers import make_pool, read_topic, settings_for, wait_ready


@pytest.mark.kafka
@pytest.mark.slow
def test_rank_answers_through_a_30s_outage_and_decisions_arrive_once(tmp_path: Path) -> None:
    kafka = LocalKafka(home=tmp_path / "kafka", port=free_broker_port())
    bootstrap = kafka.up(timeout_s=180)
    topics = Topics(prefix="outage.")
    try:
        TopicAdmin(bootstrap).ensure(topics, partitions=2)
        sink = KafkaEventSink(bootstrap)
        sink.add(topics.variants, "scarf-1", make_pool("scarf-1"))
        sink.flush(10)
        sink.close()
        settings = settings_for(bootstrap, topics, tmp_path / "data")
        answered: list[str] = []
        failures: list[str] = []
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            runtime = client.app.state.runtime  # type: ignore[attr-defined]

            def rank_for(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    r = client.post(
                        "/v1/rank",
                        json={
                            "product_id": "scarf-1",
                            "channel": "ad_headline",
                            "user": {"user_id": f"u{len(answered)}", "age": 33},
                        },
                    )
                    if r.status_code == 200:
                        answered.append(r.json()["event_id"])
                    else:
                        failures.append(f"{r.status_code} {r.text}")
                    time.sleep(0.01)

            rank_for(3)
            kafka.down()
            during = len(answered)
            rank_for(30)
            assert len(answered) - during > 100  # requests kept flowing, and answered
            assert runtime.publisher.stats.spooled > 0  # the outage was felt: decisions spooled
            assert not runtime.publisher.broker_ok
            kafka.up(timeout_s=180)
            rank_for(3)
            assert runtime.publisher.flush(120), f"{runtime.publisher.pending} still pending"
        assert failures == []
        decisions = read_topic(bootstrap, topics.decisions, Decision, len(answered), 120)
        ids = [str(d.event_id) for d in decisions]
        assert len(ids) == len(answered)
        assert sorted(ids) == sorted(answered)  # every answer's decision, exactly once
    finally:
        kafka.down()

"""Shared fixtures. Integration tests run against a real single-node Apache Kafka broker,
started once per session by the project's own launcher (or the one named by
``COPYLOOP_KAFKA_BOOTSTRAP``); each test gets its own topic prefix so tests never see each
other's messages."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka_local import LocalKafka
from streams.topics import TopicAdmin, Topics

REPO = Path(__file__).resolve().parents[1]
TEST_KAFKA_PORT = 19192


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("COPYLOOP_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    kafka = LocalKafka(home=REPO / "var" / "test-kafka", port=TEST_KAFKA_PORT)
    kafka.reset()  # a fresh cluster per session
    bootstrap = kafka.up(timeout_s=180)
    try:
        yield bootstrap
    finally:
        kafka.down()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """The five project topics under a prefix unique to this test, created on the broker."""
    t = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    admin = TopicAdmin(kafka_bootstrap)
    admin.ensure(t, partitions=2)
    admin.close()
    yield t

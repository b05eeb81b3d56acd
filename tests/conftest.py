"""Shared fixtures. Integration tests run against a real single-node Apache Kafka broker: the
one named by ``COPYLOOP_KAFKA_BOOTSTRAP``, else the project's own launcher's, shared with any
other test session in this checkout and stopped only by the session that started it. Each test
gets its own topic prefix, so tests never see each other's messages, and its topics are deleted
when it ends.

Tests never see the caller's ``COPYLOOP_*`` settings (an admin key set in the shell would
change what the API does); only ``COPYLOOP_KAFKA_BOOTSTRAP`` is kept, which names the broker."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka_local import LocalKafka
from streams.topics import TopicAdmin, Topics

REPO = Path(__file__).resolve().parents[1]
TEST_KAFKA_PORT = 19192
#: the one setting a test session takes from its environment
KEPT_SETTINGS = frozenset({"COPYLOOP_KAFKA_BOOTSTRAP"})


@pytest.fixture(autouse=True)
def _no_caller_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear the caller's ``COPYLOOP_*`` variables (but the broker's address) for each test."""
    for name in list(os.environ):
        if name.startswith("COPYLOOP_") and name not in KEPT_SETTINGS:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("COPYLOOP_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    kafka = LocalKafka(home=REPO / "var" / "test-kafka", port=TEST_KAFKA_PORT)
    with kafka.shared(timeout_s=180) as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def scoped_topics(bootstrap: str, *, partitions: int = 2) -> Iterator[Topics]:
    """The five project topics under a fresh prefix, created on the broker; every topic under
    that prefix (a test may add its own) is deleted at the end."""
    t = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    admin = TopicAdmin(bootstrap)
    try:
        admin.ensure(t, partitions=partitions)
        yield t
    finally:
        try:
            admin.delete(sorted(n for n in admin.existing() if n.startswith(t.prefix)))
        finally:
            admin.close()


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """The five project topics under a prefix unique to this test, deleted after it."""
    with scoped_topics(kafka_bootstrap) as t:
        yield t

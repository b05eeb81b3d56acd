"""The launcher through the command line: `kafka up` twice leaves one broker with the contract's
topics; `down` then `status` reports it stopped. Test sessions sharing one broker stop only
one they started. Runs brokers of their own on free ports and folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.errors import LocalKafkaError, ProduceError
from streams.kafka_local import LocalKafka
from streams.producer import KafkaEventSink
from streams.topics import TopicAdmin, Topics
from tests.ports import free_broker_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _brokers_using(props: Path) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in cmd and str(props).encode() in cmd:
            count += 1
    return count


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _assert_contract_topics(bootstrap: str, topics: Topics, partitions: int) -> None:
    """The topics of CONTRACT.md §1 are there, as specified, and an outside client can write
    feedback before any copyloop process has run; nothing else is created on first use."""
    admin = TopicAdmin(bootstrap)
    try:
        assert set(topics.all()) <= admin.existing()
        assert {admin.partitions(t) for t in topics.all()} == {partitions}
        assert admin.describe_configs(topics.variants)["cleanup.policy"] == "compact"
        assert admin.describe_configs(topics.feedback).get("cleanup.policy", "delete") == "delete"
        feedback_ts = admin.describe_configs(topics.feedback)["message.timestamp.type"]
        assert feedback_ts == "LogAppendTime"
        sink = KafkaEventSink(bootstrap, max_block_ms=3000)
        sink.add_raw(topics.feedback, b"e1", b'{"schema_version": 1}')
        sink.flush(30)
        with pytest.raises(ProduceError):  # auto-creation stays off
            sink.add_raw(f"{topics.prefix}not-a-topic", b"e1", b"{}")
            sink.flush(30)
        sink.close()
        assert f"{topics.prefix}not-a-topic" not in admin.existing()
    finally:
        admin.close()


def test_up_twice_leaves_one_broker_with_the_topics_and_down_stops_it(tmp_path: Path) -> None:
    port = free_broker_port()
    env = os.environ | {
        "COPYLOOP_DATA_DIR": str(tmp_path),
        "COPYLOOP_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "COPYLOOP_TOPIC_PREFIX": "shop1.",
        "COPYLOOP_TOPIC_PARTITIONS": "3",
    }
    props = (tmp_path / "kafka" / "server.properties").resolve()
    try:
        first = _cli(env, "kafka", "up")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"127.0.0.1:{port}"
        assert "created topics: shop1.variants" in " ".join(first.stderr.split())
        _assert_contract_topics(f"127.0.0.1:{port}", Topics("shop1."), partitions=3)
        second = _cli(env, "kafka", "up")
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == f"127.0.0.1:{port}"
        assert "created topics" not in second.stderr  # idempotent
        assert _brokers_using(props) == 1
        running = _cli(env, "kafka", "status")
        assert running.returncode == 0
        assert running.stdout.startswith("running")
    finally:
        down = _cli(env, "kafka", "down")
    assert down.returncode == 0, down.stderr
    stopped = _cli(env, "kafka", "status")
    assert stopped.returncode == 1
    assert stopped.stdout.startswith("stopped")
    assert _brokers_using(props) == 0
    assert "Kafka was not running" in _cli(env, "kafka", "down").stderr


def test_a_session_never_stops_a_broker_it_did_not_start(tmp_path: Path) -> None:
    kafka = LocalKafka(home=tmp_path / "kafka", port=free_broker_port())
    try:
        first = kafka.shared(timeout_s=180)  # a test session that starts the broker
        bootstrap = first.__enter__()
        second = kafka.shared(timeout_s=180)  # a concurrent one in the same checkout
        assert second.__enter__() == bootstrap
        first.__exit__(None, None, None)
        assert kafka.status().running  # still in use by the second
        second.__exit__(None, None, None)
        assert kafka.status().running  # the second did not start it
        with kafka.shared(timeout_s=180):  # one started outside: used as it is
            pass
        assert kafka.status().running
        assert kafka.down()
        with kafka.shared(timeout_s=180):  # started and held alone: stopped at the end
            assert kafka.status().running
        assert not kafka.status().running
    finally:
        kafka.down()


def test_launcher_refuses_a_remote_bootstrap(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="loopback"):
        LocalKafka.from_bootstrap("10.1.2.3:9092", tmp_path)


def test_cli_reports_a_bad_bootstrap_without_a_traceback(tmp_path: Path) -> None:
    env = os.environ | {
        "COPYLOOP_KAFKA_BOOTSTRAP": "kafka.example:9092",
        "COPYLOOP_DATA_DIR": str(tmp_path),
    }
    out = _cli(env, "kafka", "status")
    assert out.returncode == 2
    assert "loopback" in out.stderr
    assert "Traceback" not in out.stderr


def test_storage_formats_when_the_cluster_id_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # urlsafe base64 of a first byte 0xF8 starts with '-', which the storage tool's argument
    # parser once read as an option (one start in 64 failed)
    import uuid

    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xf8" + b"\x00" * 15))
    kafka = LocalKafka(home=tmp_path / "kafka", port=free_broker_port())
    kafka.home.mkdir(parents=True)
    cp = kafka._classpath(kafka.resolve_jars())
    kafka._write_config()
    kafka._format(kafka._java(), cp, lambda _: None)
    meta = (kafka._log_dirs / "meta.properties").read_text()
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA" in meta

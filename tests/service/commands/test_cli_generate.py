"""``copyloop generate`` / ``copyloop check`` as a user runs them, and pools published to a real
Kafka broker and read back unchanged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generator.model import BOOTSTRAP_MODEL, CopyGenerator
from generator.sampling import generate
from service.cli import app
from streams.consumer import EventConsumer
from streams.producer import KafkaEventSink
from streams.schemas import Product, VariantPool
from streams.topics import Topics

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "products"
runner = CliRunner()


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_generate_prints_eight_checked_variants(path: Path) -> None:
    result = runner.invoke(app, ["generate", "--product", str(path), "-n", "8", "--seed", "3"])
    assert result.exit_code == 0, result.stderr
    rows = _lines(result.stdout)
    assert len(rows) == 8
    assert len({r["text"] for r in rows}) == 8
    traits: set[str] = set()
    for r in rows:
        assert set(r) == {"variant_id", "text", "language", "channel", "traits", "checks"}
        checks = r["checks"]
        assert isinstance(checks, dict) and checks["passed"] is True and checks["violations"] == []
        assert "ad_law_absolute" in checks["rules"]
        assert r["channel"] == "ad_headline"
        traits.update(r["traits"])  # type: ignore[arg-type]
    assert len(traits) >= 4


def test_check_exit_codes_and_violations() -> None:
    scarf = str(EXAMPLES / "scarf-zh.json")
    ok = runner.invoke(app, ["check", "--product", scarf, "--text", "限时8折 羊毛围巾仅需¥159"])
    assert ok.exit_code == 0, ok.stdout
    assert json.loads(ok.stdout) == {"passed": True, "violations": []}
    bad = runner.invoke(app, ["check", "--product", scarf, "--text", "全网最佳 羊毛围巾7折"])
    assert bad.exit_code == 1
    body = json.loads(bad.stdout)
    assert body["passed"] is False
    assert {v["rule"] for v in body["violations"]} == {"ad_law_absolute", "price_truth"}
    assert all(set(v) == {"rule", "span", "message"} for v in body["violations"])
    echo = runner.invoke(
        app,
        [
            "check",
            "--product",
            scarf,
            "--text",
            "杭州的你 羊毛围巾",
            "--channel",
            "push",
            "--shopper",
            '{"city": "杭州"}',
        ],
    )
    assert echo.exit_code == 1 and "personal_echo" in echo.stdout


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"product_id": "x", "title": "t", "category": "c", "brand": "b"}', "field `price`"),
        (
            '{"product_id": "x", "title": "t", "category": "c", "brand": "b", "price": -1}',
            "field `price`",
        ),
        (
            '{"product_id": "x y", "title": "t", "category": "c", "brand": "b", "price": 1}',
            "field `product_id`",
        ),
        (
            '{"product_id": "x", "title": "t", "category": "c", "brand": "b", "price": 1, '
            '"sale_price": 2}',
            "`sale_price`",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_product_files_name_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    for args in (
        ["generate", "--product", str(path)],
        ["check", "--product", str(path), "--text", "x"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert needle in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_file_and_bad_channel(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["check", "--product", str(tmp_path / "nope.json"), "--text", "x"])
    assert missing.exit_code == 2 and "cannot read product file" in missing.stderr
    scarf = str(EXAMPLES / "scarf-zh.json")
    bad = runner.invoke(app, ["check", "--product", scarf, "--text", "x", "--channel", "tv"])
    assert bad.exit_code == 2 and "`--channel`" in bad.stderr


def _read_pools(bootstrap: str, topic: str, want: int, timeout_s: float = 30) -> list[VariantPool]:
    consumer = EventConsumer(bootstrap, {topic: VariantPool}, group_id=None)
    consumer.assign()
    got: list[VariantPool] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            for rec in consumer.poll(timeout_s=1.0):
                assert rec.key == rec.event.product_id  # type: ignore[attr-defined]
                got.append(rec.event)  # type: ignore[arg-type]
    finally:
        consumer.close()
    return got


@pytest.mark.kafka
def test_published_pool_reads_back_unchanged(kafka_bootstrap: str, topics: Topics) -> None:
    bootstrap = CopyGenerator.from_path(BOOTSTRAP_MODEL, device="cpu")
    product = Product.model_validate_json((EXAMPLES / "mug-en.json").read_text())
    pool = generate(bootstrap, product, "push", 5, seed=2, pool_version=3).pool
    sink = KafkaEventSink(kafka_bootstrap)
    sink.add(topics.variants, pool.product_id, pool)
    sink.flush(timeout_s=30)
    sink.close()
    (back,) = _read_pools(kafka_bootstrap, topics.variants, 1)
    assert back == pool
    assert back.model_dump_json() == pool.model_dump_json()


@pytest.mark.kafka
def test_generate_publish_sends_the_printed_pool(kafka_bootstrap: str, topics: Topics) -> None:
    path = EXAMPLES / "tea-zh.json"
    env = {"COPYLOOP_KAFKA_BOOTSTRAP": kafka_bootstrap, "COPYLOOP_TOPIC_PREFIX": topics.prefix}
    result = runner.invoke(
        app,
        ["generate", "--product", str(path), "-n", "6", "--publish", "--pool-version", "2"],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    assert topics.variants in result.stderr
    rows = _lines(result.stdout)
    (pool,) = _read_pools(kafka_bootstrap, topics.variants, 1)
    assert pool.pool_version == 2 and pool.product_id == "tea-002"
    assert [v.variant_id for v in pool.variants] == [r["variant_id"] for r in rows]
    assert [v.text for v in pool.variants] == [r["text"] for r in rows]
    assert [v.traits for v in pool.variants] == [r["traits"] for r in rows]

"""Helpers shared by the API tests: a pool, a running app (on Kafka, or on memory with no
broker), reading a topic back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.ranker.record_sinks import MemoryRecordSink
from service.ranker.runtime import Runtime
from service.settings import Settings
from streams.consumer import EventConsumer
from streams.schemas import Channel, Event, Product, Variant, VariantPool
from streams.topics import TopicAdmin, Topics

#: a product as a client PUTs it
PRODUCT = {
    "product_id": "scarf-9",
    "title": "羊毛围巾",
    "category": "服饰",
    "brand": "暖织",
    "price": 199,
    "sale_price": 159,
    "attributes": {"面料": "羊毛"},
    "language": "zh",
}


def make_pool(
    product_id: str = "scarf-1", version: int = 1, channels: tuple[Channel, ...] = ("ad_headline",)
) -> VariantPool:
    texts = {
        "ad_headline": ["限时8折 羊毛围巾", "冬季暖心之选 羊毛围巾", "爆款围巾 您值得拥有"],
        "push": ["您关注的围巾降价啦", "仅剩3小时 围巾立减50"],
    }
    traits = [["urgency", "discount"], ["festive", "emotion"], ["social_proof", "second_person"]]
    variants = []
    for channel in channels:
        for i, text in enumerate(texts[channel]):
            variants.append(
                Variant(
                    variant_id=f"{channel[:2]}{i}",
                    text=text,
                    language="zh",
                    channel=channel,
                    traits=traits[i % len(traits)],
                )
            )
    return VariantPool(
        product_id=product_id, pool_version=version, generator_version="g-test", variants=variants
    )


def new_topics(bootstrap: str) -> Topics:
    t = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    admin = TopicAdmin(bootstrap)
    admin.ensure(t, partitions=2)
    admin.close()
    return t


def settings_for(bootstrap: str, topics: Topics, data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=topics.prefix,
        topic_partitions=2,
        data_dir=data_dir,
        **extra,
    )


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s, "/readyz")


def read_topic(
    bootstrap: str, topic: str, model: type[Event], expect: int, timeout_s: float = 60.0
) -> list:
    """Everything on ``topic`` once at least ``expect`` events arrived (then one more poll, so
    duplicates would show)."""
    consumer = EventConsumer(bootstrap, {topic: model}, group_id=None)
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expect and time.monotonic() < deadline:
            got.extend(r.event for r in consumer.poll(0.5))
        got.extend(r.event for r in consumer.poll(1.0))
    finally:
        consumer.close()
    return got


#: a bootstrap nothing listens on: an app on memory must never reach for a broker
NO_BROKER = "127.0.0.1:9"


@contextmanager
def memory_app(
    data_dir: Path, *pools: VariantPool, settings: dict[str, Any] | None = None, **options: Any
) -> Iterator[tuple[TestClient, MemoryRecordSink, Runtime]]:
    """The app on an in-memory sink with no Kafka feeds, its ``pools`` published: the whole
    HTTP surface without a broker. ``options`` go to ``create_app``."""
    sink = MemoryRecordSink()
    config = Settings(
        kafka_bootstrap=NO_BROKER,
        topic_prefix=f"mem{uuid.uuid4().hex[:8]}.",
        data_dir=data_dir,
        **(settings or {}),
    )
    with TestClient(create_app(config, sink=sink, feeds=False, **options)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        for pool in pools:
            runtime.publish_pool(pool)
        yield client, sink, runtime


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class StubGenerator:
    """Writes a two-variant pool and remembers the product record each call was given;
    ``gate`` (when set) holds each call until it is set."""

    def __init__(self) -> None:
        self.seen: list[Product] = []
        self.gate: threading.Event | None = None

    def __call__(self, product: Product, channel: Channel, n: int, seed: int) -> VariantPool:
        if self.gate is not None:
            self.gate.wait(10)
        self.seen.append(product)
        variants = [
            Variant(
                variant_id=f"v{i}",
                text=f"暖织围巾 款{i}",
                language="zh",
                channel=channel,
                traits=[],
            )
            for i in range(2)
        ]
        return VariantPool(
            product_id=product.product_id,
            pool_version=1,
            generator_version="stub",
            variants=variants,
        )

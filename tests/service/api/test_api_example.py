"""The example ad server against the running API and a real broker: it mirrors the pools from
the topic, ranks through the API, and its feedback shows up in the API's counts."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from streams.producer import KafkaEventSink
from tests.conftest import REPO
from tests.service.api.api_helpers import (
    make_pool,
    new_topics,
    settings_for,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.kafka


def _load_example():
    spec = importlib.util.spec_from_file_location("ad_server", REPO / "examples" / "ad_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ad_server"] = module
    spec.loader.exec_module(module)
    return module


def test_example_ad_server_serves_and_reports(kafka_bootstrap, tmp_path):
    ad = _load_example()
    topics = new_topics(kafka_bootstrap)
    sink = KafkaEventSink(kafka_bootstrap)
    for pid in ("scarf-1", "scarf-2"):
        sink.add(topics.variants, pid, make_pool(pid))
    sink.flush(10)
    sink.close()
    with TestClient(create_app(settings_for(kafka_bootstrap, topics, tmp_path))) as client:
        wait_ready(client)
        mirror = ad.PoolMirror(kafka_bootstrap, topics.variants).start()
        try:
            wait_until(lambda: len(mirror.pools) == 2, 30, "the mirror")
            tally = ad.run(ad.AdServer(client, mirror), 40, "ad_headline", seed=1)
        finally:
            mirror.close()
        assert tally.errors == 0 and tally.shown == 40
        assert set(tally.by_variant) <= {"ad0", "ad1", "ad2"}

        def counted() -> tuple[int, int]:
            rows = [
                row
                for pid in ("scarf-1", "scarf-2")
                for row in client.get(f"/v1/products/{pid}/variants").json()["variants"]
            ]
            return sum(r["impressions"] for r in rows), sum(r["clicks"] for r in rows)

        wait_until(lambda: counted() == (tally.shown, tally.clicks), 30, "the example's feedback")

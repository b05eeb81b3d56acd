"""Products through the API with the real copy generator: ``PUT`` starts a job, the job writes a
checked pool and publishes it on the variants topic, and the pool is then served by rank and
``GET .../variants``. (Requests refused before any job starts are in test_api_http.py.)

The model is the shipped bootstrap model when it is there, else a tiny one trained here from
the project's own synthetic corpus (a few seconds; its copy is poor, but every variant still
passes the guardrails, which is what the service relies on)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from streams.schemas import CHANNEL_LIMITS, VariantPool
from tests.service.api.api_helpers import (
    PRODUCT,
    new_topics,
    read_topic,
    settings_for,
    wait_ready,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WRITE_KEY = "products-write-key"
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from generator.model import BOOTSTRAP_MODEL

    if (BOOTSTRAP_MODEL / "config.json").is_file():
        return BOOTSTRAP_MODEL
    from generator.bootstrap.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-model")
    config = TrainConfig(
        seed=0,
        examples=2000,
        steps=80,
        hidden_size=48,
        layers=1,
        heads=2,
        intermediate_size=96,
        vocab_size=700,
        warmup=5,
    )
    train(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def env(
    kafka_bootstrap: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    topics = new_topics(kafka_bootstrap)
    data = tmp_path_factory.mktemp("products")
    settings = settings_for(
        kafka_bootstrap, topics, data, generator_model=model_dir, write_key=WRITE_KEY
    )
    with TestClient(create_app(settings, seed=5)) as client:
        wait_ready(client)
        yield {"client": client, "topics": topics}


def _finish(client: TestClient, job_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_put_product_generates_publishes_and_serves_the_pool(env, kafka_bootstrap):
    client, topics = env["client"], env["topics"]
    r = client.put(
        "/v1/products/scarf-9",
        params={"channel": ["ad_headline", "push"], "n": 4, "seed": 3},
        json=PRODUCT,
        headers=WRITE,
    )
    assert r.status_code == 202, r.text
    job = _finish(client, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    assert job["pool_version"] == 1 and job["variants"] >= 1

    view = client.get("/v1/products/scarf-9/variants").json()
    assert view["pool_version"] == 1 and len(view["variants"]) == job["variants"]
    for v in view["variants"]:
        assert v["ai_generated"] is True
        assert v["channel"] in ("ad_headline", "push")
        assert len(v["text"]) <= CHANNEL_LIMITS[v["channel"]]["zh"]
        assert (v["impressions"], v["clicks"]) == (0, 0)

    published = [
        p
        for p in read_topic(kafka_bootstrap, topics.variants, VariantPool, 1, 60)
        if p.product_id == "scarf-9"
    ]
    assert len(published) == 1
    assert [v.variant_id for v in published[0].variants] == [
        v["variant_id"] for v in view["variants"]
    ]

    channel = view["variants"][0]["channel"]
    ranked = client.post("/v1/rank", json={"product_id": "scarf-9", "channel": channel})
    assert ranked.status_code == 200
    assert ranked.json()["variant_id"] in {v["variant_id"] for v in view["variants"]}

    again = client.put(
        "/v1/products/scarf-9", params={"channel": "push", "n": 2}, json=PRODUCT, headers=WRITE
    )
    job2 = _finish(client, again.json()["job_id"])
    assert job2["state"] == "succeeded" and job2["pool_version"] == 2

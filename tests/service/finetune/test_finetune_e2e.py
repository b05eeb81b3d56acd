"""A fine-tune round end to end through the HTTP API, on a real broker and a tiny model:
shoppers rank and report through ``/v1/rank`` and ``/v1/feedback``, ``POST
/v1/admin/finetune`` answers 202 with a job to poll, the round reads what the service logged,
its outcome lands in the registry (a version, or the gate's reason why not) and in the rounds'
history, and a promoted round changes the pool ``/v1/rank`` serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from generator.finetune import FinetuneConfig
from service.api.app import create_app
from service.finetune import rounds
from service.finetune.registry import Registry
from service.finetune.rounds import RoundConfig
from service.finetune.trigger import round_history, round_running
from service.ranker.runtime import Runtime
from streams.topics import Topics
from tests.service.api.api_helpers import settings_for, wait_ready, wait_until
from tests.service.finetune.finetune_world import PRODUCT, TEXTS, UNLAWFUL, pool, scenario
from tests.service.finetune.test_finetune_refresh import _forced_promotion

pytestmark = pytest.mark.kafka

KEY = "e2e-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SHOPPERS = 3000  # enough for confident estimates in the one segment (the round needs >= 200)


def _small_round() -> RoundConfig:
    """The round's defaults but for a short training on the CPU (a tiny model learns nothing
    from more steps)."""
    return RoundConfig(
        train=FinetuneConfig(max_steps=2, batch_size=4, progress=False, device="cpu"),
        device="cpu",
    )


@pytest.fixture
def service(
    tmp_path: Path,
    tiny_slots_model: Path,
    kafka_bootstrap: str,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, Runtime]]:
    monkeypatch.setattr(rounds, "RoundConfig", _small_round)  # what a round given none uses
    settings = settings_for(
        kafka_bootstrap, topics, tmp_path, admin_key=KEY, generator_model=tiny_slots_model
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.publish_pool(pool())
        yield client, runtime


def _shop(client: TestClient, n: int, seed: int = 0) -> list[dict]:
    """``n`` shoppers of the test world rank, and click by its click model; their feedback goes
    through the API in batches. Returns the rank answers."""
    world = scenario(n)
    traits = {v.text: v.traits for v in pool().variants}
    rng = np.random.default_rng(seed)
    answers, feedback = [], []
    for i in range(n):
        user, device = world.draw_user(0, i % 200, seed=seed, prefix="e2e")
        r = client.post(
            "/v1/rank",
            json={
                "product_id": PRODUCT.product_id,
                "channel": "ad_headline",
                "user": user,
                "context": {"device": device},
            },
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        answers.append(answer)
        eid = answer["event_id"]
        feedback.append({"feedback_id": f"{eid}-i", "event_id": eid, "kind": "impression"})
        if rng.random() < world.click_probability(0, tuple(traits[answer["text"]])):
            feedback.append({"feedback_id": f"{eid}-c", "event_id": eid, "kind": "click"})
    for start in range(0, len(feedback), 1000):
        r = client.post("/v1/feedback", json=feedback[start : start + 1000])
        assert r.status_code == 202, r.text
    return answers


def _round(client: TestClient) -> dict:
    r = client.post("/v1/admin/finetune", json={"products": [PRODUCT.model_dump()]}, headers=AUTH)
    assert r.status_code == 202, r.text
    url = r.json()["status_url"]
    assert url == f"/v1/admin/finetune/{r.json()['job_id']}"

    def done() -> bool:
        return client.get(url, headers=AUTH).json()["state"] in ("succeeded", "failed")

    wait_until(done, timeout_s=120.0, what="the fine-tune job")
    job = client.get(url, headers=AUTH).json()
    assert job["state"] == "succeeded", job
    return dict(job)


def test_a_round_through_the_api_then_a_promotion_swaps_the_served_pool(
    service: tuple[TestClient, Runtime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, runtime = service
    served = _shop(client, SHOPPERS)
    assert {a["pool_version"] for a in served} == {1}
    assert len({a["variant_id"] for a in served}) == len(TEXTS)  # the cold bandit explores
    runtime.publisher.flush(30.0)  # what the round reads is on the topics
    registry = Registry.under(tmp_path)

    # a real round: the gate judges the tiny model's copy
    first = _round(client)
    assert first["examples"]["trained_on"] >= 4, first
    assert first["status"] in ("promoted", "rejected"), first
    version = registry.get(first["version"])  # the registry keeps its record either way
    assert version.metadata["status"] == first["status"]
    assert version.metadata["gate"]["reason"] == first["reason"] == first["verdict"]["reason"]
    if first["status"] == "rejected":  # the verdict names a failed check
        failed = [name for name, ok in first["verdict"]["checks"].items() if not ok]
        assert failed and all(name in first["reason"] for name in failed), first
        assert registry.current() is None
    # what the round learned from came through the API: the unlawful favourite is no example
    data = (version.path / "data" / "kto.jsonl").read_text(encoding="utf-8")
    assert UNLAWFUL not in data and data.strip()

    # a promoted round: the service serves the refreshed pool at once
    monkeypatch.setattr(rounds, "gate", _forced_promotion)
    before = client.get(f"/v1/products/{PRODUCT.product_id}/variants").json()["pool_version"]
    second = _round(client)
    assert second["status"] == "promoted" and second["reason"] == "promoted: forced by the test"
    current = registry.current()
    assert current is not None and current.name == second["version"] != first["version"]
    (refreshed,) = second["refresh"]
    assert refreshed["pool_version_after"] == before + 1 and refreshed["retired"], refreshed
    after = _shop(client, 60, seed=1)
    assert {a["pool_version"] for a in after} == {before + 1}
    assert not {a["variant_id"] for a in after} & set(refreshed["retired"])

    history = round_history(registry.root)  # what the demo's live table reads
    assert [(r.round, r.status, r.version) for r in history] == [
        (1, first["status"], first["version"]),
        (2, "promoted", second["version"]),
    ]
    assert history[-1].generator_version == current.metadata["model_version"]
    assert not round_running(registry.root)

"""The fine-tune admin endpoints without a broker: they refuse without the admin key, a round
runs as a job (202, then poll it), and rollback restores the previous generator and its pools
in this ranker at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from service.finetune.refresh import POOLS_BEFORE, save_pools
from service.finetune.registry import Registry
from service.finetune.round_jobs import round_jobs
from service.ranker.record_sinks import MemoryRecordSink
from service.ranker.runtime import Runtime
from streams.schemas import ModelAnnouncement, Product, VariantPool
from tests.service.api.api_helpers import PRODUCT, make_pool, memory_app, wait_until

ADMIN_KEY = "finetune-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
BEFORE = make_pool("scarf-1", 1, ("ad_headline", "push"))
REFRESHED = make_pool("scarf-1", 2, ("ad_headline",))


@dataclass
class _Result:
    """What a round returns, as far as the job reads it (``to_dict``)."""

    products: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "rejected",
            "reason": "not promoted: expected_reward 0.05 vs 0.05",
            "version": "v0001",
            "examples": {"kto": 6, "trained_on": 6},
            "verdict": {"promote": False},
            "refresh": [],
            "products": self.products,
        }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryRecordSink, Runtime]]:
    settings = {"admin_key": ADMIN_KEY, "generator_model": tmp_path / "base"}
    with memory_app(tmp_path, REFRESHED, settings=settings) as running:
        yield running


def _fake_round(client: TestClient, release: threading.Event) -> list[Any]:
    """Replace this app's round runner by one that waits for ``release``."""
    calls: list[Any] = []

    def run(products: Sequence[Product] | None) -> Any:
        calls.append(products)
        release.wait(10)
        return _Result([p.product_id for p in products or ()])

    folder = Path(client.app.state.runtime.settings.data_dir) / "finetune-jobs"  # type: ignore[attr-defined]
    client.app.state.finetune_jobs = round_jobs(folder, cast(Any, run))  # type: ignore[attr-defined]
    return calls


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/admin/finetune"),
        ("get", "/v1/admin/finetune/00000000-0000-4000-8000-000000000000"),
        ("post", "/v1/admin/generator/rollback"),
    ],
)
def test_the_endpoints_refuse_without_the_key(
    app: tuple[TestClient, MemoryRecordSink, Runtime], method: str, path: str
) -> None:
    client = app[0]
    _fake_round(client, threading.Event())
    missing = getattr(client, method)(path)
    assert missing.status_code == 401 and missing.json()["field"] == "authorization"
    wrong = getattr(client, method)(path, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    assert not list((Path(app[2].settings.data_dir) / "finetune-jobs").glob("*.json"))


def test_a_round_runs_as_a_job_to_poll(app: tuple[TestClient, MemoryRecordSink, Runtime]) -> None:
    client = app[0]
    release = threading.Event()
    calls = _fake_round(client, release)
    r = client.post("/v1/admin/finetune", json={"products": [PRODUCT]}, headers=AUTH)
    assert r.status_code == 202, r.text
    url = r.json()["status_url"]
    assert url == f"/v1/admin/finetune/{r.json()['job_id']}"
    busy = client.post("/v1/admin/finetune", headers=AUTH)  # one round at a time
    assert busy.status_code == 429 and busy.json()["field"] == "finetune"
    assert client.get(url, headers=AUTH).json()["state"] in ("queued", "running")
    release.set()
    wait_until(lambda: client.get(url, headers=AUTH).json()["state"] == "succeeded")
    job = client.get(url, headers=AUTH).json()
    assert job["status"] == "rejected" and job["version"] == "v0001"
    assert job["examples"]["kto"] == 6 and job["verdict"] == {"promote": False}
    assert job["reason"].startswith("not promoted") and job["finished_at"]
    assert [[p.product_id for p in c] for c in calls] == [[PRODUCT["product_id"]]]


def test_a_bad_catalog_names_the_field(app: tuple[TestClient, MemoryRecordSink, Runtime]) -> None:
    client = app[0]
    _fake_round(client, threading.Event())
    r = client.post("/v1/admin/finetune", json={"products": [{"title": "x"}]}, headers=AUTH)
    assert r.status_code == 422 and "products" in r.text
    assert client.get("/v1/admin/finetune/nope", headers=AUTH).status_code == 404


def test_rollback_restores_the_previous_generator_and_pools(
    app: tuple[TestClient, MemoryRecordSink, Runtime], tmp_path: Path
) -> None:
    client, sink, rt = app
    nothing = client.post("/v1/admin/generator/rollback", headers=AUTH)
    assert nothing.status_code == 409 and "no promoted generator" in nothing.json()["detail"]
    registry = Registry.under(tmp_path)
    name, folder = registry.new_version()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    registry.record(name, {"parent": str(tmp_path / "base"), "parent_model_version": "base-1"})
    registry.promote(name)
    save_pools(folder / POOLS_BEFORE, [BEFORE])
    assert rt.pools.get("scarf-1").pool.pool_version == 2
    r = client.post("/v1/admin/generator/rollback", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "from_version": name,
        "current": None,
        "generator_version": "base-1",
        "pools_restored": {"scarf-1": 3},
    }
    assert registry.current() is None
    served = rt.pools.get("scarf-1").pool  # this ranker serves the restored pool at once
    assert served.pool_version == 3 and served.variants == BEFORE.variants
    rt.publisher.flush(10)
    (announced,) = sink.events(rt.topics.models, ModelAnnouncement)
    assert announced.kind == "generator" and announced.uri == str(tmp_path / "base")
    published = sink.events(rt.topics.variants, VariantPool)
    assert published[-1].pool_version == 3

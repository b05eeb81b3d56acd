"""Fuzzing from the OpenAPI spec (schemathesis): valid and invalid requests to every operation
never get a 5xx. HTTP behaviour only, so the app runs on an in-memory sink without a broker.

Bounded: a fixed number of examples per operation and mode, so the run stays near a minute."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.python import asgi

from service.api.app import create_app
from service.ranker.record_sinks import MemoryRecordSink
from service.settings import Settings
from tests.service.api.api_helpers import NO_BROKER, make_pool

pytestmark = pytest.mark.slow

EXAMPLES = 25


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    cfg = Settings(
        kafka_bootstrap=NO_BROKER,
        data_dir=data,
        admin_key=SecretStr("fuzz-admin"),
        generator_model=data / "no-model-here",  # generation jobs fail fast, as jobs (not 5xx)
    )
    application = create_app(cfg, sink=MemoryRecordSink(), feeds=False)
    # starts the lifespan, kept for the module (schemathesis types its app narrower than ASGI)
    with asgi.get_client(application) as client:  # type: ignore[arg-type]
        application.state.runtime.publish_pool(make_pool("scarf-1", 1, ("ad_headline", "push")))
        assert client.get("/readyz").status_code == 200
    yield application
    asgi.shutdown_lifespans()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx(app: FastAPI, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 9
    seen: dict[str, set[int]] = {}
    for operation in operations:
        statuses = seen.setdefault(operation.label, set())

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            started = time.monotonic()
            response = case.call()
            statuses.add(response.status_code)  # noqa: B023 - used within this iteration only
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]}\n{case.as_curl_command()}"
            )
            assert time.monotonic() - started < 10, "a request hung"

        try:
            call()
        except Unsatisfiable:
            # an operation with no parameters and no body has no invalid form to send
            assert mode == GenerationMode.NEGATIVE, operation.label
    if mode == GenerationMode.POSITIVE:  # the fuzzing reached the handlers, not only validation
        assert any(s & {200, 202} for s in seen.values()), seen

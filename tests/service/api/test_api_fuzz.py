"""Fuzzing from the OpenAPI spec (schemathesis): valid and invalid requests to every operation
never get a 5xx. HTTP behaviour only, so the app runs on an in-memory sink without a broker.

Every key is configured and sent (the write key for product registration, the admin key for
the admin endpoints, an API key for rank and feedback), so the fuzzing reaches the handlers
behind them: registering a product starts a generation job (a stub generator, so jobs finish
in milliseconds and publish their pool) and fine-tuning fails fast, as a job, for want of a
model.

Bounded: a fixed number of examples per operation and mode, so this run stays well under a
minute; the fault suite (tests/faults/test_api_fuzz_faults.py) runs the same with more."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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
from tests.service.api.api_helpers import NO_BROKER, StubGenerator, bearer, make_pool

pytestmark = pytest.mark.slow

EXAMPLES = 25
ADMIN_KEY, WRITE_KEY, API_KEY = "fuzz-admin", "fuzz-write", "fuzz-api"


@contextmanager
def fuzz_app(data: Path) -> Iterator[FastAPI]:
    """The app with every key set and a stub generator, its lifespan running for the block."""
    cfg = Settings(
        kafka_bootstrap=NO_BROKER,
        data_dir=data,
        admin_key=SecretStr(ADMIN_KEY),
        write_key=SecretStr(WRITE_KEY),
        api_keys=SecretStr(API_KEY),
        jobs_per_minute=10_000,  # the fuzzing reaches generation, not only the rate limit
        generator_model=data / "no-model-here",  # fine-tune jobs fail fast, as jobs (not 5xx)
    )
    application = create_app(cfg, sink=MemoryRecordSink(), feeds=False, generator=StubGenerator())
    # starts the lifespan, kept for the block (schemathesis types its app narrower than ASGI)
    with asgi.get_client(application) as client:  # type: ignore[arg-type]
        application.state.runtime.publish_pool(make_pool("scarf-1", 1, ("ad_headline", "push")))
        assert client.get("/readyz").status_code == 200
    try:
        yield application
    finally:
        asgi.shutdown_lifespans()


def keys_for(path: str) -> dict[str, str]:
    """The headers a legitimate client of ``path`` sends: the admin key for admin endpoints,
    else the write key; the API key always (rank and feedback read it first)."""
    return {
        **bearer(ADMIN_KEY if path.startswith("/v1/admin") else WRITE_KEY),
        "X-API-Key": API_KEY,
    }


def fuzz(app: FastAPI, mode: GenerationMode, examples: int) -> dict[str, Counter[int]]:
    """``examples`` generated requests per operation in ``mode``; fails on any 5xx. Returns the
    count of each status per operation."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 9
    seen: dict[str, Counter[int]] = {}
    for operation in operations:
        statuses = seen.setdefault(operation.label, Counter())
        headers = keys_for(operation.path)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)  # noqa: B023 - used within this iteration only
            statuses[response.status_code] += 1  # noqa: B023
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]}\n{case.as_curl_command()}"
            )

        try:
            call()
        except Unsatisfiable:
            # an operation with no parameters and no body has no invalid form to send
            assert mode == GenerationMode.NEGATIVE, operation.label
    if mode == GenerationMode.POSITIVE:  # the fuzzing reached the handlers, not only validation
        assert any(s[200] or s[202] for s in seen.values()), seen
        put = seen["PUT /v1/products/{product_id}"]
        assert put[200] or put[202], seen  # registration ran, and started generation
    return seen


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    with fuzz_app(tmp_path_factory.mktemp("fuzz")) as application:
        yield application


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx(app: FastAPI, mode: GenerationMode) -> None:
    fuzz(app, mode, EXAMPLES)

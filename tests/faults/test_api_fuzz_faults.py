"""The API fuzzed from its OpenAPI spec with more examples than the everyday run
(tests/service/api/test_api_fuzz.py), every key sent and the generation path on: no operation
answers 5xx. Its counts, per mode: the requests sent and how they were answered (no 5xx)."""

from __future__ import annotations

from pathlib import Path

import pytest
from schemathesis import GenerationMode

from tests.faults.counts import report_counts
from tests.service.api.test_api_fuzz import fuzz, fuzz_app

pytestmark = pytest.mark.slow

#: examples per operation and mode: four times the everyday run's, within about a minute
EXAMPLES = 100


def test_no_operation_answers_5xx_with_more_examples(tmp_path: Path) -> None:
    with fuzz_app(tmp_path) as app:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            by_status: dict[int, int] = {}
            for statuses in fuzz(app, mode, EXAMPLES).values():
                for status, n in statuses.items():
                    by_status[status // 100] = by_status.get(status // 100, 0) + n
            report_counts(
                f"schemathesis-{mode.value}",
                examples_per_operation=EXAMPLES,
                requests=sum(by_status.values()),
                answered_2xx=by_status.get(2, 0),
                answered_4xx=by_status.get(4, 0),
                server_errors=by_status.get(5, 0),  # fuzz() fails on the first one
            )

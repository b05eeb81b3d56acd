"""The fault suite's evidence: each fault test ends by reporting what it sent and what arrived,
as one machine-readable line on stdout (``FAULT-COUNTS {json}``, seen with ``pytest -s``) and as
a JSON file under ``var/test-artifacts/fault-counts/`` (one per fault, overwritten by each run),
so a release note can quote the figures of the run it ships from:

    cat var/test-artifacts/fault-counts/*.json

The report is written before the test's own assertions on the counts, so a failing run leaves
its figures behind too."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: where the counts go (``FAULT_COUNTS_DIR`` moves them, for a CI job that keeps artifacts)
COUNTS_DIR = Path(
    os.environ.get("FAULT_COUNTS_DIR", REPO / "var" / "test-artifacts" / "fault-counts")
)


def report_counts(fault: str, **counts: int | str) -> dict[str, int | str]:
    """Print and save ``counts`` for ``fault`` (a short slug such as ``learner-sigkill``)."""
    record: dict[str, int | str] = {"fault": fault, **counts}
    line = json.dumps(record, ensure_ascii=False)
    print(f"\nFAULT-COUNTS {line}")
    COUNTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = COUNTS_DIR / f".{fault}.json.tmp"
    tmp.write_text(line + "\n", encoding="utf-8")
    tmp.replace(COUNTS_DIR / f"{fault}.json")
    return record

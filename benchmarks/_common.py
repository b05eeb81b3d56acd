"""What every benchmark does with its result: write it as JSON (folders made) and show it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(path: Path, result: dict[str, Any], shown: dict[str, Any] | None = None) -> None:
    """Write ``result`` to ``path`` and print ``shown`` (default: the whole result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result if shown is None else shown, indent=2))

"""The ``/dashboard`` page: one static HTML file (package data, ``static/dashboard.html``)
whose own script draws the charts as inline SVG and refreshes them from
``/dashboard/data.json`` without reloading. The first figures are embedded in the page, so it
shows data at once and works with nothing else reachable (no outside scripts or fonts)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

#: where the page's script takes its first figures from
PLACEHOLDER = "/*INITIAL_DATA*/null"


@lru_cache(maxsize=1)
def template() -> str:
    text = (files("service.dashboard") / "static" / "dashboard.html").read_text(encoding="utf-8")
    if PLACEHOLDER not in text:
        raise RuntimeError(f"dashboard.html lacks its data placeholder {PLACEHOLDER!r}")
    return text


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>``: no ``</script>`` or HTML comment can close it early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render(data: Any) -> str:
    return template().replace(PLACEHOLDER, script_json(data), 1)

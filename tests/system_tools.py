"""Debian packages some tests drive as real parts (``scripts/system-tools.sh`` installs them).

``scripts/test.sh`` sets ``REQUIRE_SYSTEM_TOOLS=1`` once that script has succeeded, so in CI a
missing tool fails its test; elsewhere (no root to install them) the test is skipped with the
reason."""

from __future__ import annotations

import os
import shutil

import pytest


def system_tool(name: str) -> str:
    """The path of ``name`` on PATH; a failure (when required) or a skip when it is absent."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (scripts/system-tools.sh installs it)"
    if os.environ.get("REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)

#!/usr/bin/env bash
# Installs Open Bandit Pipeline 0.4.1 into the project venv as a test/benchmark reference only.
# obp 0.5.x declares Python < 3.11 and 0.4.1 pins old versions of its dependencies, so it goes in
# without them (--no-deps); its runtime needs come from the `ope-ref` dependency group
# (run `uv sync --all-groups` first). copyloop itself never imports obp.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
uv pip install --python "$VENV/bin/python" --no-deps "obp==0.4.1"
"$VENV/bin/python" -c "import obp.ope; print('obp', obp.__version__, 'ready')"

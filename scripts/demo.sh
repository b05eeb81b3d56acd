#!/usr/bin/env bash
# The main job: set up (scripts/bootstrap.sh), then `copyloop demo` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PATH="$PWD/.cache/tools/bin:$PATH"
export UV_PYTHON_DOWNLOADS=never
exec uv run --no-sync copyloop demo "$@"

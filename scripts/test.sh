#!/usr/bin/env bash
# The test command: set up (scripts/bootstrap.sh), lint and type-check, then the whole suite
# against a real single-node Kafka that the test session starts and stops itself (or the broker
# named by COPYLOOP_KAFKA_BOOTSTRAP). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
PATH="$PWD/.cache/tools/bin:$PATH"
export UV_PYTHON_DOWNLOADS=never

if scripts/system-tools.sh; then export REQUIRE_SYSTEM_TOOLS=1; fi

echo "== ruff" && uv run --no-sync ruff check .
uv run --no-sync ruff format --check .
echo "== mypy" && uv run --no-sync mypy
echo "== pytest"
set +e
uv run --no-sync pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: no tests were collected" >&2
fi
exit "$rc"

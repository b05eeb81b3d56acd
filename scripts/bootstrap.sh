#!/usr/bin/env bash
# Installs everything copyloop needs on a fresh machine with Python 3.11, Java 17 and Maven:
# uv (if missing), then the locked environment in .venv. Package caches (uv's, Maven's) are kept
# in their default places so later installs and CI reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never

if ! command -v uv >/dev/null 2>&1; then
  if [ ! -x .cache/tools/bin/uv ]; then
    echo "installing uv into .cache/tools" >&2
    python3 -m venv .cache/tools
    .cache/tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.9,<0.14"
  fi
  export PATH="$PWD/.cache/tools/bin:$PATH"
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required (Java 17 and Maven)" >&2; exit 2; }
done

uv sync --frozen --all-groups --python python3.11 "$@"
if [ -x scripts/install-obp.sh ]; then
  scripts/install-obp.sh
fi

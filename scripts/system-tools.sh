#!/usr/bin/env bash
# Debian packages the tests drive as real parts: prometheus (a server that scrapes the service
# and the learner), chromium with fonts-noto-cjk (the dashboard loaded headless, Chinese
# rendered) and wrk (a compiled load generator). Installed with apt-get when missing and this
# runs as root; otherwise it says what is missing and exits 1, and the tests that need a missing
# tool are skipped (scripts/test.sh makes them required when this script succeeds).
set -uo pipefail
declare -A PACKAGE=([prometheus]=prometheus [chromium]=chromium [wrk]=wrk)
missing=()
for tool in "${!PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE[$tool]}")
done
if ! fc-list 2>/dev/null | grep -qi "noto.*cjk"; then
  missing+=(fonts-noto-cjk)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so these Debian packages are not installed: ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
  apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine, then run every test.
# Debian's prometheus package brings the real Prometheus and promtool for the end-to-end and rule
# tests; chromium and chromium-driver drive the live page in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for tool in prometheus promtool chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
      prometheus chromium chromium-driver
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
python3 -m pytest "$@"

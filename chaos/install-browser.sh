#!/usr/bin/env bash
# Install a headless browser (Debian's chromium) to render the chaos run's report.html in tests.
# Debian packages only: no browser download of its own. Needs root (or sudo) and apt.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium || command -v chromium-browser)"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# fonts-dejavu-core: without a font the report's text renders as empty boxes.
$sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "chromium installed: $(command -v chromium)"

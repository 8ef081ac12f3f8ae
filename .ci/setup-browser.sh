#!/usr/bin/env bash
# Debian's chromium for the archive browser test: Playwright (python) drives it with
# executable_path=/usr/bin/chromium, since Playwright cannot download its own browsers here.
# Idempotent: does nothing when chromium is already installed.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "setup-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
echo "setup-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"

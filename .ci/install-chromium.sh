#!/usr/bin/env bash
# Install Debian's Chromium for the rating-page browser test (tests/test_rating_page_browser.py),
# if it is missing. Idempotent. The test drives it through the `playwright` Python package
# (a test extra); never run `playwright install`, which downloads a browser of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
command -v chromium >/dev/null

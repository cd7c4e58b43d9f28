#!/usr/bin/env bash
# Installs Debian's Chromium (and its WebDriver) for the dashboard's browser tests (tests/e2e/test_dashboard_browser.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (CI and these machines run as root);
# without root or apt it says so and leaves the browser tests to skip themselves.
# Playwright drives this Chromium (executable_path); its own browser download is never used.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-browser: not root or no apt-get: install chromium and chromium-driver yourself to run the browser tests" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q chromium chromium-driver >/dev/null
/usr/bin/chromium --version 2>/dev/null | head -1

#!/usr/bin/env bash
# Make sure the real-browser test (tests/test_browser.py) has a browser: Debian's chromium at /usr/bin/chromium,
# driven by Playwright with executable_path (Playwright's own browser download is never used).
# Installs it when it is missing and this machine allows it (root with apt-get, as in CI); otherwise says how.
# Never fails `make test` by itself: the browser test decides (it skips with this advice, or fails when CI is set).
set -uo pipefail
CHROMIUM=${TLCOURSE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$CHROMIUM" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== tlcourse: installing Debian's chromium for the browser test (one time, about 290 MB) =="
  start=$(date +%s)
  if apt-get update -q >/dev/null && \
     DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null && \
     [ -x "$CHROMIUM" ]; then
    echo "== tlcourse: chromium installed in $(( $(date +%s) - start )) s: $("$CHROMIUM" --version 2>/dev/null) =="
    exit 0
  fi
  echo "tlcourse: installing chromium with apt-get failed (see the messages above); the browser test will skip" \
       "(or fail when CI is set)." >&2
  exit 0
fi
echo "tlcourse: no browser at $CHROMIUM, so tests/test_browser.py will be skipped. To enable it, install Debian's" \
     "chromium as root (sudo apt-get install --no-install-recommends chromium), or point TLCOURSE_CHROMIUM at a" \
     "Chromium 156 binary. Do not run 'playwright install': the test drives the system browser." >&2
exit 0

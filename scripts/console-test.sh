#!/usr/bin/env bash
# The web console in a real browser: Debian's headless `chromium` driven by playwright-core
# (npm, as locked in tests/console-browser/package-lock.json; no browser download), against the
# real binary and the fake provider (tests/console.rs, `the_console_in_chromium`, ignored by
# default). Screenshots and page-load figures land in target/console-shots/.
# Installs chromium, Node.js and npm with apt when missing (as root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/console-test.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
(cd tests/console-browser && npm ci --no-audit --no-fund --loglevel=error)
cargo test ${CONSOLE_RELEASE:+--release} --locked --test console -- --ignored the_console_in_chromium

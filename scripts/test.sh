#!/usr/bin/env bash
# Runs every test on a fresh machine. The tests start the real binary on free loopback ports and
# bring their own doubles of the outside world; one of them is a real OpenID Connect provider
# (npm's oidc-provider, tests/oidc/), which needs Node.js 18+ and npm: installed here with apt
# when missing and run as root, then its packages with `npm ci` (as locked in
# tests/oidc/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "scripts/test.sh: Node.js and npm are needed (tests/oidc/); install them (apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
cargo test --all-targets --locked

#!/usr/bin/env bash
# CI-only steps that need root or a system service, run by .ci/run after the default tests:
# delivery through a real Postfix (scripts/postfix-test.sh installs and configures it), and the
# web console in headless Chromium (scripts/console-test.sh installs it).
# Idempotent; on a fresh Debian 12 machine as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/postfix-test.sh
bash scripts/console-test.sh

#!/usr/bin/env bash
# Installs what the benchmarks need on a fresh Debian machine, idempotently:
# - wrk (HTTP load) from Debian;
# - Postfix's smtp-source and smtp-sink, extracted from the Debian package into bench/.tools;
# - Postfix itself (Debian's package, "No configuration": nothing is started or configured) for
#   the durable-path peer, which bench/run.py runs as a private instance of its own (needs root);
# - a Python venv in bench/.venv with aiosmtpd and aiogram, the Python peers.
set -euo pipefail
cd "$(dirname "$0")"

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
if ! command -v wrk >/dev/null; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq wrk >/dev/null
fi

if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo_cmd debconf-set-selections
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postfix >/dev/null
fi

if [ ! -x .tools/usr/sbin/smtp-source ]; then
    mkdir -p .tools/deb
    (cd .tools/deb && apt-get download postfix >/dev/null)
    dpkg-deb -x .tools/deb/postfix_*.deb .tools
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q "aiosmtpd==1.4.6" "aiogram==3.22.0"
echo "bench tools ready"

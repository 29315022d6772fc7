#!/usr/bin/env bash
# Runs every benchmark and rewrites BENCHMARKS.md. On a fresh machine: installs the tools
# (bench/install.sh), builds the release binary and the fake Bot API, then bench/run.py measures.
# `bash bench/run.sh rest smtp` runs only those rows; BENCH_QUICK=1 shortens every run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/install.sh
cargo build --release --locked --bin cockpit --example fake_bot_api
cargo bench --locked --bench jwt_verify --no-run
python3 bench/run.py "$@"

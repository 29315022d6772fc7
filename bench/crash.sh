#!/usr/bin/env bash
# The crash test (bench/crash.py): kill -9 the server at 30 random moments under load, restart it,
# check at-least-once and no overlap. Builds the release binary first. Arguments go to crash.py:
# `bash bench/crash.sh --seed 7 --kills 10`, `--record` writes its section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same build as bench/run.sh (with the example, so dev-dependency features match and the
# dependencies are not rebuilt twice).
cargo build --release --locked --bin cockpit --example fake_bot_api
exec nice -n 10 python3 bench/crash.py --bin target/release/cockpit "$@"

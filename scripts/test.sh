#!/usr/bin/env bash
# Runs every test on a fresh machine. The tests need only the Rust toolchain: they start the real
# binary on free loopback ports and bring their own doubles of the outside world.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets --locked

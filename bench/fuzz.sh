#!/usr/bin/env bash
# Fuzzes the request-authentication path (fuzz/fuzz_targets/request_auth.rs: bearer/cookie
# choice, the cookie's same-site rule, JWT header and ES384 parsing) for FUZZ_RUNS executions
# (10 million by default) with cargo-fuzz (libFuzzer) on the stable toolchain, and prints
# libFuzzer's summary. Installs cargo-fuzz from crates.io when it is missing.
#
#   bash bench/fuzz.sh                 # 10 000 000 runs, one job
#   FUZZ_RUNS=100000 bash bench/fuzz.sh  # fewer runs; FUZZ_SECONDS bounds the time (2 h)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -Cpasses=sancov-module); stable accepts them
# with RUSTC_BOOTSTRAP. No sanitizer: the target is safe Rust, so a panic is what we look for.
export RUSTC_BOOTSTRAP=1
corpus=target/fuzz-corpus/request_auth
mkdir -p "$corpus"
# Seeds: a bearer token, a cookie with a same-site Origin, garbage.
printf 'Bearer eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCJ9.e30.AAAA' > "$corpus/seed-bearer"
printf '\x01\xff\xffjwt\xffhttp://h:1\xff\xffh:1\xffapplication/json' > "$corpus/seed-cookie"
start=$(date +%s)
nice cargo fuzz run --sanitizer none --release request_auth "$corpus" -- \
  -runs="${FUZZ_RUNS:-10000000}" -max_total_time="${FUZZ_SECONDS:-7200}" -max_len=4096 \
  -print_final_stats=1 2>&1 | tail -25
echo "elapsed: $(( $(date +%s) - start )) s"

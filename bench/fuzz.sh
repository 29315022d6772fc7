#!/usr/bin/env bash
# Fuzzes the SMTP receiver: `smtp_session` (whole conversations: the protocol, then the session
# driver with its DATA reader) and `mime_event` (MIME into the `email` payload), and the HTTP
# door's `request_auth` (bearer/cookie choice, the cookie's same-site rule, JWT header and ES384
# parsing), each for
# FUZZ_RUNS executions (default 10 000 000) or FUZZ_SECONDS (default: no limit), whichever
# comes first, with libFuzzer through cargo-fuzz.
#
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. No
# sanitizer (safe Rust; it would halve the rate). The corpus grows in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>); crashes land in fuzz/artifacts/<target>/ and the script
# fails. The last lines of each run go to bench/.fuzz-<target>.log (stats for BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
runs="${FUZZ_RUNS:-10000000}"
seconds="${FUZZ_SECONDS:-0}"
# libFuzzer's per-input timeout is wall-clock time: a run paused (SIGSTOP) while a benchmark
# measures reports a false timeout unless this is raised (FUZZ_TIMEOUT=300).
timeout="${FUZZ_TIMEOUT:-10}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(smtp_session mime_event request_auth)
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target, $runs runs"
    started=$(date +%s)
    nice cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" \
        "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -runs="$runs" -max_total_time="$seconds" -max_len=16384 -timeout="$timeout" \
        -print_final_stats=1 \
        > "bench/.fuzz-$target.full.log" 2>&1 || {
        tail -40 "bench/.fuzz-$target.full.log"
        exit 1
    }
    {
        echo "seconds: $(( $(date +%s) - started ))"
        grep -E '^(stat::|Done|#[0-9]+ +DONE)' "bench/.fuzz-$target.full.log" | tail -20
    } > "bench/.fuzz-$target.log"
    cat "bench/.fuzz-$target.log"
done

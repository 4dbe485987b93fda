#!/usr/bin/env bash
# Fuzzes every target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS_PER_TARGET seconds each
# (default 15: the short CI run) and prints the executions each one reached. Needs the
# nightly toolchain; installs cargo-fuzz when it is missing. Inputs that found new paths
# stay in fuzz/corpus/<target> (not committed); fuzz/seeds/<target> are the committed
# starting points. A crash stops the script; libFuzzer names the input it saved in
# fuzz/artifacts/<target>/ (replay it with `cargo +nightly fuzz run <target> <file>`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-15}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
# Build everything first, so the time budget goes to fuzzing.
cargo +nightly fuzz build
failed=()
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    if cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)"
        echo "$target: ${runs:-?} executions in ${seconds} s, ${cov:-cov: ?}"
    else
        grep -v '^\s*[0-9]*,$' "$log" | tail -n 40
        echo "$target: FAILED (input saved under fuzz/artifacts/$target/)"
        failed+=("$target")
    fi
    rm -f "$log"
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: ${failed[*]} failed" >&2
    exit 1
fi

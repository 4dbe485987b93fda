#!/usr/bin/env bash
# The full matrix of the Linux personality, which the README's test command covers only
# dimension by dimension: every test program of host-vmm/tests/linux that compares with a
# plain native run, from every compiler, on 1, 2 and 4 nodes, with the software and the
# offload fabric, with and without a lossy wire. Each cvmm run's stdout and exit status
# must equal the same binary's native run. Prints one line per run and a summary; exits
# 1 if any run differs. Takes 10-20 minutes on a 2-core machine.
#
#   scripts/linux-matrix.sh            # everything
#   PROGRAMS="threads-gcc timers" scripts/linux-matrix.sh   # a subset (names below)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --bin cvmm
cvmm=$PWD/target/release/cvmm
src=host-vmm/tests/linux
work=$(mktemp -d /tmp/cvmm-linux-matrix.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== building the programs in $work" >&2
build() { # name compiler source flags...
    local name=$1 cc=$2 file=$3
    shift 3
    "$cc" "$@" -o "$work/$name" "$src/$file"
}
build threads-gcc gcc threads.c -static -pthread -O2
build threads-musl musl-gcc threads.c -static -O2
build threads-cpp g++ threads.cpp -static -pthread -O2
build signals-gcc gcc signals.c -static -O2 2>/dev/null
build thread-signals gcc thread_signals.c -static -pthread -O2
build timers gcc timers.c -static -O2
build abi-musl musl-gcc abi.c -static -O2
rustc -O --edition 2021 -C target-feature=+crt-static -o "$work/threads-rust" "$src/threads.rs"

all="threads-gcc threads-musl threads-cpp threads-rust signals-gcc thread-signals timers abi-musl"
programs=${PROGRAMS:-$all}
pass=0
fail=0
failed=""
for program in $programs; do
    bin=$work/$program
    [ -x "$bin" ] || { echo "unknown program $program (one of: $all)" >&2; exit 2; }
    set +e
    env -i A=1 "$bin" >"$work/want.out" 2>/dev/null
    want_status=$?
    set -e
    for nodes in 1 2 4; do
        # glibc reserves 64 MiB per malloc arena: 1 GiB of logical memory in all.
        mem=$((1024 / nodes))
        for fabric in software offload; do
            for loss in 0 0.05; do
                [ "$nodes" = 1 ] && [ "$fabric" = offload ] && continue
                [ "$nodes" = 1 ] && [ "$loss" != 0 ] && continue
                vps=1
                [ "$nodes" = 1 ] && vps=2
                set +e
                "$cvmm" run --nodes "$nodes" --vps-per-node "$vps" --mem-mib "$mem" \
                    --fabric "$fabric" --wire-loss "$loss" --env A=1 -- "$bin" \
                    >"$work/got.out" 2>"$work/got.err"
                status=$?
                set -e
                what="$program on ${nodes}x$vps $fabric, loss $loss"
                if [ "$status" = "$want_status" ] && cmp -s "$work/want.out" "$work/got.out"; then
                    pass=$((pass + 1))
                    echo "same    $what"
                else
                    fail=$((fail + 1))
                    failed="$failed\n  $what (exit $status, native $want_status)"
                    echo "DIFFERS $what (exit $status, native $want_status)"
                    diff "$work/want.out" "$work/got.out" | head -5 || true
                    head -3 "$work/got.err" || true
                fi
            done
        done
    done
done
echo "linux matrix: $pass same, $fail different"
if [ "$fail" != 0 ]; then
    printf "different:%b\n" "$failed"
    exit 1
fi

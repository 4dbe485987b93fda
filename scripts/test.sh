#!/usr/bin/env bash
# The whole test suite: unit, property and whole-cluster tests of every crate, and the
# guest's own checks. Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --for test
echo "== guest kernel: unit tests" >&2
cargo test --manifest-path guest/Cargo.toml
echo "== workspace: build" >&2
cargo build --workspace --all-targets
echo "== workspace: tests (unit, property, KVM, whole clusters)" >&2
cargo test --workspace --no-fail-fast
echo "== FPGA pipeline RTL: Verilator simulation checked against the engine" >&2
cargo test -p hdl-models --features hdl-sim
echo "== fuzzing: a short run of every target (wire, ViMA calls, config, TOML, packets)" >&2
scripts/fuzz.sh 10

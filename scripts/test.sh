#!/usr/bin/env bash
# The whole test suite: unit, property and whole-cluster tests of every crate, and the
# guest's own checks. Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast

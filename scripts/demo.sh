#!/usr/bin/env bash
# The main job: builds cvmm and runs a guest workload on a 2-node cluster (two node
# processes, 2 VPs each) on this machine; counters go to target/demo-stats.json.
# Extra arguments replace the default workload, e.g. scripts/demo.sh sort 1000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --bin cvmm
workload=("$@")
[ "${#workload[@]}" -gt 0 ] || workload=(matmul 64)
exec target/release/cvmm run --nodes 2 --vps-per-node 2 --stats-json target/demo-stats.json -- "${workload[@]}"

#!/usr/bin/env bash
# Installs the Debian packages cvmm needs when they are missing, saying so.
# Usage: scripts/ensure-deps.sh [--for test|run]
set -euo pipefail

# package -> a file or command that shows it is installed
declare -A need=(
  [pkg-config]=/usr/bin/pkg-config
  [iproute2]=/usr/sbin/ip
  [verilator]=/usr/bin/verilator
  [dpdk]=/usr/bin/dpdk-devbind.py
  [libdpdk-dev]=/usr/include/dpdk/rte_eal.h
  # The Linux personality's test programs: built with Debian's own compilers, static.
  [libc6-dev]=/usr/lib/x86_64-linux-gnu/libc.a
  [musl-tools]=/usr/bin/musl-gcc
  [g++]=/usr/bin/g++
  [busybox-static]=/bin/busybox
)

# Only the test suite needs these: curl and promtool (Debian's prometheus package) check
# the management API as operators' tools would.
if [ "${1:-}" = "--for" ] && [ "${2:-}" = "test" ]; then
  need[curl]=/usr/bin/curl
  need[prometheus]=/usr/bin/promtool
fi

missing=()
for pkg in "${!need[@]}"; do
  [ -e "${need[$pkg]}" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "cvmm: installing missing system packages: ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "cvmm: need root to install packages (run as root or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

for dev in /dev/kvm /dev/userfaultfd; do
  [ -e "$dev" ] || echo "cvmm: warning: $dev is missing; virtual servers cannot run here" >&2
done

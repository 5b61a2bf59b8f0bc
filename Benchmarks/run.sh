#!/usr/bin/env bash
# Runs the benchmark table on this machine: installs QEMU (for the comparison columns) if missing,
# builds Swiftlet in release mode, and runs swiftlet-bench. Arguments go to swiftlet-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
swift build -c release --product swiftlet
swift run -c release swiftlet-bench "$@"

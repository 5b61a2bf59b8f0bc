#!/usr/bin/env bash
# Linux boot time, Swiftlet against QEMU microvm, side by side in one run: the project's guest
# kernel (vmlinux by PVH) and the test initramfs under both, at 1 and 4 vCPUs, from process start
# to /init's "swiftlet-init: ready" line, with the kernel's own timestamps of each phase, the
# clock source each guest chose, and Swiftlet's exits by kind. Needs /dev/kvm; installs QEMU if
# missing. Usage: Benchmarks/linux-boot.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-system-x86_64 >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; }
pack=$(mktemp -d "${TMPDIR:-/tmp}/swiftlet-linux-boot.XXXXXX")
Linux/pack.sh "$pack" --with-qemu >/dev/null
"$pack/run.sh" --only bench --bench-runs "${1:-3}"

#!/usr/bin/env bash
# Runs the virtio guest (Guests/virtio) under QEMU's microvm with modern virtio-mmio block and
# entropy devices: a second implementation of VIRTIO 1.2 that the guest's driver must work with,
# so that a failure under Swiftlet points at Swiftlet, not at the test driver.
#
#   Guests/tools/virtio-qemu.sh GUEST_ELF [IMAGE]      prints the guest's report; status 0 if no FAIL
#
# The image follows the guest's convention (every byte of sector n is n ^ 0xA5); one is made if
# none is given. QEMU's PVH boot does not add microvm's virtio_mmio.device= words to the command
# line, so this script writes them for all 24 of microvm's transports (512 bytes each from
# 0xfeb00000); the guest skips the empty ones (DeviceID 0).
set -euo pipefail
guest=${1:?usage: virtio-qemu.sh GUEST_ELF [IMAGE]}
image=${2:-}
command -v qemu-system-x86_64 >/dev/null || { echo "virtio-qemu.sh: qemu-system-x86_64 is not installed" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$image" ]; then
    image=$work/disk.img
    python3 -c "
import sys
open(sys.argv[1], 'wb').write(b''.join(bytes([(n ^ 0xA5) & 0xFF]) * 512 for n in range(64)))" "$image"
fi
words=$(python3 -c "print(' '.join('virtio_mmio.device=512@0x%x:%d' % (0xfeb00000 + i * 512, 16 + i) for i in range(24)))")
# Signals unblocked first: a caller's thread may block them all (libdispatch workers do), and
# QEMU's timers, and timeout's own TERM, need them.
python3 -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp(sys.argv[1], sys.argv[1:])' \
timeout 60 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off -nodefaults -no-user-config -display none \
    -serial "file:$work/out" -m 64 -kernel "$guest" -append "console=ttyS0 $words" \
    -global virtio-mmio.force-legacy=false \
    -drive "id=d0,file=$image,format=raw,if=none" -device virtio-blk-device,drive=d0,serial=qemu-disk \
    -device virtio-rng-device &
qemu=$!
# The guest's power-off port is Swiftlet's: under QEMU it halts after its summary line.
for _ in $(seq 600); do grep -q '^summary ' "$work/out" 2>/dev/null && break; sleep 0.1; done
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
cat "$work/out"
grep -q '^summary [0-9]* 0$' "$work/out"

#!/usr/bin/env bash
# Runs the virtio guest (Guests/virtio) with every kind of virtio device, in a network namespace
# of its own with a TAP device and Guests/tools/virtio-host.py on the host side:
#   virtio-run.sh qemu GUEST_ELF            QEMU's microvm (TCG or KVM): block, entropy, network,
#                                           console (output only: QEMU's file back end takes no input)
#   virtio-run.sh swiftlet GUEST_ELF SWIFTLET   the same under Swiftlet, and vsock (QEMU's needs vhost)
#   virtio-run.sh exec COMMAND...           COMMAND in the same set-up (the TAP is swtap0, its host
#                                           side 10.0.2.1/24; the vsock socket is $VIRTIO_WORK/v.sock)
# Prints the guest's report, then "--- console" and what the virtio console wrote (QEMU; under
# Swiftlet it is in the report's stream), then "--- host" and the helper's log. Exit status 0 if
# the guest's summary has no failure; 4 if no network namespace or TAP device can be made here.
set -euo pipefail
vmm=${1:?usage: virtio-run.sh qemu|swiftlet GUEST_ELF [SWIFTLET]}
guest=${2:?usage: virtio-run.sh qemu|swiftlet GUEST_ELF [SWIFTLET] or virtio-run.sh exec COMMAND...}
swiftlet=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${VIRTIO_RUN_NETNS:-}" ]; then
    unshare -n true 2>/dev/null || { echo "virtio-run.sh: cannot make a network namespace here (needs CAP_SYS_ADMIN)" >&2; exit 4; }
    exec unshare -n env VIRTIO_RUN_NETNS=1 "$0" "$@"
fi
work=$(mktemp -d)
helper=
cleanup() { [ -n "$helper" ] && kill "$helper" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ip link set lo up
ip tuntap add dev swtap0 mode tap 2>/dev/null || { echo "virtio-run.sh: cannot make a TAP device here" >&2; exit 4; }
echo 1 >/proc/sys/net/ipv6/conf/swtap0/disable_ipv6 2>/dev/null || true
ip link set swtap0 up
ip addr add 10.0.2.1/24 dev swtap0
python3 -c "
import sys
open(sys.argv[1], 'wb').write(b''.join(bytes([(n ^ 0xA5) & 0xFF]) * 512 for n in range(64)))
open(sys.argv[2], 'wb').write(b''.join(bytes([(n ^ 0xA5) & 0xFF]) * 512 for n in range(8)))" "$work/disk.img" "$work/ro.img"
printf 'typed\n' >"$work/input"
: >"$work/console"
# Processes started from some threads inherit a mask that blocks every signal: clear it. (exec:
# the background job's pid is then the program's own, for kill.)
unmask() { exec python3 -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp(sys.argv[1], sys.argv[1:])' "$@"; }
case $vmm in
qemu)
    command -v qemu-system-x86_64 >/dev/null || { echo "virtio-run.sh: qemu-system-x86_64 is not installed" >&2; exit 3; }
    (unmask python3 "$here/virtio-host.py" swtap0 "$work/host.log") &
    helper=$!
    words=$(python3 -c "print(' '.join('virtio_mmio.device=512@0x%x:%d' % (0xfeb00000 + i * 512, 16 + i) for i in range(24)))")
    (unmask timeout 120 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off -nodefaults -no-user-config -display none \
        -serial "file:$work/out" -m 64 -kernel "$guest" -append "console=ttyS0 $words" \
        -global virtio-mmio.force-legacy=false \
        -drive "id=d0,file=$work/disk.img,format=raw,if=none" -device virtio-blk-device,drive=d0,serial=qemu-disk \
        -drive "id=d1,file=$work/ro.img,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=d1,serial=qemu-ro \
        -device virtio-rng-device \
        -netdev tap,id=n0,ifname=swtap0,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=02:53:57:00:00:02 \
        -device virtio-serial-device -chardev "file,id=c0,path=$work/console" -device virtconsole,chardev=c0) &
    vm=$!
    for _ in $(seq 1200); do grep -q '^summary ' "$work/out" 2>/dev/null && break; sleep 0.1; done
    kill $vm 2>/dev/null || true
    wait $vm 2>/dev/null || true
    ;;
swiftlet)
    [ -x "$swiftlet" ] || { echo "virtio-run.sh: give the swiftlet binary as the third argument" >&2; exit 2; }
    (unmask python3 "$here/virtio-host.py" swtap0 "$work/host.log" "$work/v.sock") &
    helper=$!
    (unmask timeout 300 "$swiftlet" run --kernel "$guest" --memory 64M \
        --drive "path=$work/disk.img,id=swiftlet-disk" --drive "path=$work/ro.img,readonly=on" --entropy \
        --net tap=swtap0,mac=02:53:57:00:00:02 --vsock "cid=3,uds=$work/v.sock" --console virtio \
        <"$work/input" >"$work/out" 2>"$work/err") || true
    cat "$work/err" >&2
    ;;
exec)
    shift
    (unmask python3 "$here/virtio-host.py" swtap0 "$work/host.log" "$work/v.sock") &
    helper=$!
    status=0
    VIRTIO_WORK=$work "$@" || status=$?
    echo "--- host"
    cat "$work/host.log" 2>/dev/null || true
    exit $status
    ;;
*) echo "virtio-run.sh: the first argument is qemu, swiftlet or exec" >&2; exit 2 ;;
esac
cat "$work/out"
echo "--- console"
cat "$work/console"
echo "--- host"
cat "$work/host.log" 2>/dev/null || true
grep -q '^summary [0-9]* 0$' "$work/out"

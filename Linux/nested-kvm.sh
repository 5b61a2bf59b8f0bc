#!/usr/bin/env bash
# Runs a command where there is a real KVM, on a machine that has none: inside an L1 Linux (Debian's
# stock kernel) booted under QEMU's software emulation (TCG) of an AMD CPU with SVM and nested
# paging, which loads kvm-amd and so gives a working /dev/kvm: in-kernel LAPIC and IOAPIC, ioeventfd,
# irqfd, dirty logging, everything Swiftlet uses.
#
# The L1 sees this machine's whole file system over virtio-9p and runs COMMAND (with bash -c) as
# root in the current folder, with its own /proc, /sys and /dev and a fresh tmpfs on /tmp (Unix
# sockets cannot live on 9p; a current folder under /tmp is carried through). COMMAND's output
# comes on this script's standard output; the script exits with COMMAND's status, or 125 if the L1
# died before COMMAND finished (that platform's emulation is slow and not flawless: rerun).
#
# Slow: a guest's kernel mode runs about 50 times slower than on hardware. Build on this machine
# first (`swift build --build-tests`, `make -C Guests`); never build inside the L1.
#
# usage: Linux/nested-kvm.sh [--cpus N] [--memory SIZE] [--timeout SECONDS] [--cpu MODEL] COMMAND...
# example: Linux/nested-kvm.sh .build/debug/SwiftletPackageTests.xctest \
#              --testing-library swift-testing --no-parallel --filter APILaunchTests
#
# Needs qemu-system-x86_64, apt-get (with package lists), dpkg-deb and cpio. The L1's kernel and
# initramfs are made once into $SWIFTLET_CACHE/nested. Exit status 3: it cannot be had here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
# -npt: TCG's walk of nested page tables corrupted the L1 (README). -xsave: TCG's SVM does not
# intercept XSETBV (QEMU 7.2), so the L1's KVM never learns the XCR0 its guest sets.
cpus=2 memory=8G timeout=3600 cpu=EPYC-Rome,+svm,-npt,-xsave
while [ $# -gt 0 ]; do
    case $1 in
        --cpus) cpus=${2:?--cpus needs a count}; shift 2 ;;
        --memory) memory=${2:?--memory needs a size such as 8G}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
        --cpu) cpu=${2:?--cpu needs a QEMU CPU model with svm}; shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "nested-kvm.sh: unknown option $1" >&2; usage 2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "nested-kvm.sh: no command given" >&2; usage 2; }
command -v qemu-system-x86_64 >/dev/null || unavailable "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
command -v cpio >/dev/null || unavailable "cpio is not installed"

# The L1's kernel and initramfs: the kernel of Debian's linux-image-amd64, and an initramfs of
# busybox and the modules for KVM, virtio-9p and TAP from the same package.
modules="irqbypass kvm ccp kvm-amd virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
         virtio_pci 9pnet 9pnet_virtio netfs fscache 9p tun"
make_l1() {
    hold_lock nested-kvm
    local package version
    package=$(stock_kernel_package)
    version=$(candidate_version "$package")
    l1="$swiftlet_cache/nested/$package-$version"
    [ -s "$l1/initrd.cpio" ] && return
    local kernel_deb busybox_deb work
    kernel_deb=$(fetch_deb "$package")
    busybox_deb=$(fetch_deb busybox-static)
    work=$(mktemp -d)
    dpkg-deb -x "$kernel_deb" "$work/kernel"
    dpkg-deb -x "$busybox_deb" "$work/busybox"
    local root=$work/root
    mkdir -p "$root"/{bin,dev,proc,sys,host,mods,orig-tmp}
    cp "$work/busybox/bin/busybox" "$root/bin/"
    for applet in sh mount umount insmod mkdir chroot ip sync poweroff cat echo ls; do
        ln -s busybox "$root/bin/$applet"
    done
    local name file
    for name in $modules; do
        file=$(find "$work/kernel/lib/modules" -name "$name.ko*" | head -n 1)
        [ -n "$file" ] || die "$package has no module $name"
        case $file in
            *.xz) xz -dc "$file" > "$root/mods/$name.ko" ;;
            *.zst) zstd -qdc "$file" > "$root/mods/$name.ko" ;;
            *) cp "$file" "$root/mods/$name.ko" ;;
        esac
    done
    cat > "$root/init" <<EOF
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(echo $modules); do insmod /mods/\$m.ko || echo "nested-kvm: insmod \$m failed"; done
[ -e /dev/kvm ] || echo "nested-kvm: no /dev/kvm in the L1 (does this QEMU emulate SVM?)"
ip link set lo up
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,cache=loose hostroot /host
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mount --bind /host/tmp /orig-tmp
mount -t tmpfs tmp /host/tmp
read -r run < /proc/cmdline
run=\${run##*nested.run=}; run=\${run%% *}
chroot /host /bin/bash "\$run/command"
echo "nested-kvm: status \$?"
sync
poweroff -f
EOF
    chmod +x "$root/init"
    mkdir -p "$l1.tmp"
    cp "$work"/kernel/boot/vmlinuz-* "$l1.tmp/vmlinuz"
    (cd "$root" && find . | cpio -o -H newc --quiet) > "$l1.tmp/initrd.cpio"
    rm -rf "$work" "$l1" && mv "$l1.tmp" "$l1"
}
make_l1
exec {lock_fd}>&-

# The command, as a script the L1 runs in this machine's root. A current folder under /tmp is
# bound back over the L1's fresh /tmp.
runs="$swiftlet_cache/nested/runs"
mkdir -p "$runs"
run=$(mktemp -d "$runs/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
{
    echo "export PATH=$(printf %q "$PATH") HOME=$(printf %q "$HOME")"
    { env | grep -E '^(CI|SWIFTLET_[A-Z_]*)=' || true; } | while IFS='=' read -r key value; do
        echo "export $key=$(printf %q "$value")"
    done
    case $PWD in
        /tmp/*) rel=${PWD#/tmp/}; top=${rel%%/*}
                # /orig-tmp is in the L1's own root, outside the chroot: reached through PID 1's root.
                echo "mkdir -p /tmp/$(printf %q "$top") && mount --bind /proc/1/root/orig-tmp/$(printf %q "$top") /tmp/$(printf %q "$top")" ;;
    esac
    echo "cd $(printf %q "$PWD") || exit 126"
    printf 'exec bash -c %q' "$(printf '%q ' "$@")"
} > "$run/command"

# The L1's console carries COMMAND's output; QEMU's and the firmware's chatter is left out.
timeout "$timeout" qemu-system-x86_64 -accel tcg,thread=multi -cpu "$cpu" \
    -smp "$cpus" -m "$memory" -nographic -no-reboot \
    -kernel "$l1/vmlinuz" -initrd "$l1/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 nested.run=$run" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,id=hostroot,multidevs=remap" \
    2>&1 </dev/null | sed -u 's/\r$//' | tee "$run/console" \
    | grep --line-buffered -v -E "^nested-kvm: status [0-9]+$|TCG doesn't support|SeaBIOS|iPXE|Press Ctrl-B|Booting from ROM" \
    || true
result=$(sed -n 's/^nested-kvm: status \([0-9]*\)$/\1/p' "$run/console" | tail -n 1)
if [ -z "$result" ]; then
    mv "$run/console" "$runs/last-console.txt"
    echo "nested-kvm.sh: the L1 stopped before the command finished (timeout ${timeout} s, or the emulation failed;" \
         "its console is in $runs/last-console.txt); rerun" >&2
    exit 125
fi
exit "$result"

#!/usr/bin/env bash
# Packs a full Linux boot check into one folder that runs on another machine with /dev/kvm and no
# Swift toolchain: a statically linked `swiftlet` (--static-swift-stdlib), the project's guest
# kernel built for that machine's kind of KVM, Debian's stock kernel unchanged (vmlinuz, and
# vmlinux as vmlinux.xz), the test initramfs, optionally QEMU with its libraries for the
# boot-time comparison, and Linux/pack/run.sh as run.sh, which boots them all and prints every
# milestone. On hardware virtualisation (VMX/SVM) Debian's kernel boots fully there.
#
# Usage: Linux/pack.sh OUT_DIR [--workarounds auto|on|off] [--with-qemu]
#   --workarounds   which guest kernel to pack: on for a KVM that emulates guest kernel mode,
#                   off for hardware-assisted KVM; auto (the default) packs the one for this host.
#   --with-qemu     adds this host's qemu-system-x86_64, its libraries (not glibc's) and microvm
#                   firmware, so run.sh can time Swiftlet against QEMU microvm side by side.
# Then copy OUT_DIR to the machine and run OUT_DIR/run.sh there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${1:?usage: Linux/pack.sh OUT_DIR [--workarounds auto|on|off] [--with-qemu]}
shift
workarounds=auto with_qemu=0
while [ $# -gt 0 ]; do
    case $1 in
        --workarounds) workarounds=$2; shift 2 ;;
        --with-qemu) with_qemu=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$out/guest" "$out/debian"
echo "building a static swiftlet (release)" >&2
(cd "$root" && swift build -c release --static-swift-stdlib --product swiftlet --scratch-path .build-static >&2)
cp "$root/.build-static/release/swiftlet" "$out/swiftlet"
strip "$out/swiftlet"
guest=$("$here/build-kernel.sh" --workarounds "$workarounds")
cp "$guest/vmlinux" "$guest/bzImage" "$guest/BUILD-INFO" "$out/guest/"
debian=$("$here/debian-kernel.sh")
cp "$debian/vmlinuz" "$debian/VERSION" "$out/debian/"
xz -T0 -6 -c "$debian/vmlinux" > "$out/debian/vmlinux.xz"
cp "$("$here/build-initramfs.sh")" "$out/initramfs.cpio"
cp "$here/pack/run.sh" "$out/run.sh"
if [ $with_qemu = 1 ]; then
    qemu=$(command -v qemu-system-x86_64) || { echo "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)" >&2; exit 1; }
    mkdir -p "$out/qemu/lib" "$out/qemu/share"
    cp "$qemu" "$out/qemu/"
    # Its shared libraries, less glibc's own (the target's glibc serves those).
    ldd "$qemu" | awk '$3 ~ /^\// { print $3 }' | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' \
        | xargs -I{} cp -L {} "$out/qemu/lib/"
    for f in bios-microvm.bin pvh.bin linuxboot_dma.bin kvmvapic.bin; do cp "/usr/share/qemu/$f" "$out/qemu/share/"; done
fi
chmod +x "$out/run.sh" "$out/swiftlet"
du -sh "$out" >&2
echo "$out"

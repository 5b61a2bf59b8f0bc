#!/usr/bin/env bash
# Builds Swiftlet's test initramfs and prints its path: an uncompressed newc cpio holding Debian's
# busybox-static, applet links, /dev/console and Linux/initramfs/init. Uncompressed, since the
# guest unpacks it in kernel mode (which KVM's emulator runs slowly on our machines); the kernel
# accepts either. Cached under $SWIFTLET_CACHE by busybox version and init script.
# Needs apt-get (with package lists), dpkg-deb and python3. Exit status 3: busybox-static cannot
# be downloaded here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
hold_lock initramfs

version=$(candidate_version busybox-static)
[ -n "$version" ] || unavailable "apt knows no package busybox-static (run 'apt-get update' first)"
key=$( { echo "busybox-static $version"; cat "$here/initramfs/init" "$here/initramfs/mkcpio.py" "$here/initramfs/vsock-helper.c"; } | sha256sum | cut -c1-16)
out="$swiftlet_cache/initramfs/initramfs-$key.cpio"
if [ -s "$out" ]; then echo "$out"; exit 0; fi

deb=$(fetch_deb busybox-static)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
mkdir -p "$(dirname "$out")"
gcc -static -O2 -o "$work/vsock-helper" "$here/initramfs/vsock-helper.c" || unavailable "gcc cannot link a static program (libc6-dev?)"
python3 "$here/initramfs/mkcpio.py" --busybox "$work/pkg/bin/busybox" --init "$here/initramfs/init" \
    --program "$work/vsock-helper" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"

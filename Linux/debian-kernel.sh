#!/usr/bin/env bash
# Prints the folder holding Debian's stock amd64 kernel, unchanged: `vmlinuz` (the bzImage from
# the linux-image package that linux-image-amd64 depends on) and `vmlinux` (the ELF kernel inside
# it, decompressed: Debian ships it xz-compressed), with `VERSION` naming the package.
# Downloaded and extracted once into $SWIFTLET_CACHE (default ~/.cache/swiftlet).
# Needs apt-get (with package lists), dpkg-deb and python3. Exit status 3: it cannot be
# downloaded here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
hold_lock debian-kernel

package=$(stock_kernel_package)
version=$(candidate_version "$package")
out="$swiftlet_cache/debian/$package-$version"
if [ -s "$out/vmlinux" ] && [ -s "$out/vmlinuz" ]; then echo "$out"; exit 0; fi

deb=$(fetch_deb "$package")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
mkdir -p "$out.tmp"
cp "$work"/pkg/boot/vmlinuz-* "$out.tmp/vmlinuz"
python3 - "$out.tmp/vmlinuz" "$out.tmp/vmlinux" <<'PY'
import lzma, sys
image = open(sys.argv[1], "rb").read()
start = image.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("vmlinuz: no xz payload found")
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(image[start:]))
PY
echo "$package $version" > "$out.tmp/VERSION"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"

#!/usr/bin/env bash
# Builds Swiftlet's microVM guest kernel (Linux 6.12 from Debian's linux-source-6.12 with
# Linux/microvm-6.12.config) and prints the folder that holds vmlinux, bzImage and config.
#
# Usage: Linux/build-kernel.sh [--workarounds auto|on|off]
#   auto (the default, or $SWIFTLET_KVM_WORKAROUNDS): apply Linux/patches/emulated-kvm when this
#   host's CPU has no VMX or SVM, that is when /dev/kvm executes guest kernel mode in KVM's
#   instruction emulator; on hardware-assisted KVM the kernel is built unpatched.
#
# The result is cached under $SWIFTLET_CACHE (default ~/.cache/swiftlet) by a key made of the
# source package version, the configuration fragment and the patches applied: a second run prints
# the cached folder at once, and only a change to one of those rebuilds (about 9 minutes on two
# cores). Needs apt-get (with package lists), gcc, make, flex, bison, bc, libelf-dev, xz.
# Exit status 3: the source package cannot be downloaded here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

workarounds=${SWIFTLET_KVM_WORKAROUNDS:-auto}
while [ $# -gt 0 ]; do
    case $1 in
        --workarounds) workarounds=${2:?--workarounds needs auto, on or off}; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
if [ "$workarounds" = auto ]; then
    if grep -qwE 'vmx|svm' /proc/cpuinfo; then workarounds=off; else workarounds=on; fi
fi
case $workarounds in on|off) ;; *) die "--workarounds $workarounds: use auto, on or off" ;; esac

config="$here/microvm-6.12.config"
patches=()
[ "$workarounds" = on ] && patches=("$here"/patches/emulated-kvm/*.patch)

hold_lock "kernel-workarounds-$workarounds"
version=$(candidate_version linux-source-6.12)
[ -n "$version" ] || unavailable "apt knows no package linux-source-6.12 (run 'apt-get update' first)"
key=$( { echo "linux-source-6.12 $version"; cat "$config"; for p in "${patches[@]}"; do cat "$p"; done; } \
       | sha256sum | cut -c1-16)
out="$swiftlet_cache/kernels/6.12-$key"
if [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
    echo "$out"
    exit 0
fi

for tool in gcc make flex bison bc xz patch; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install gcc make flex bison bc xz-utils patch libelf-dev)"
done
[ -e /usr/include/libelf.h ] || [ -e /usr/include/libelf/libelf.h ] || die "libelf headers are missing (apt-get install libelf-dev)"

deb=$(fetch_deb linux-source-6.12)
tree="$swiftlet_cache/src/linux-6.12-$version-workarounds-$workarounds"
if [ ! -f "$tree/.swiftlet-ready" ]; then
    echo "extracting $(basename "$deb") (workarounds $workarounds)" >&2
    rm -rf "$tree" && mkdir -p "$tree"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-6.12.tar.xz' \
        | xz -dc | tar -x -C "$tree" --strip-components=1
    for p in "${patches[@]}"; do
        echo "applying $(basename "$p")" >&2
        patch -d "$tree" -p1 --quiet --forward < "$p" || die "$(basename "$p") does not apply to linux-source-6.12 $version"
    done
    touch "$tree/.swiftlet-ready"
fi

echo "configuring Linux $version (tinyconfig + $(basename "$config"))" >&2
make -C "$tree" -s tinyconfig >/dev/null
"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$config" >/dev/null
make -C "$tree" -s olddefconfig >/dev/null
dropped=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$config" | while read -r line; do grep -qxF "$line" "$tree/.config" || echo "$line"; done)
[ -z "$dropped" ] || die "Kconfig dropped these lines of $(basename "$config") (a missing dependency?): $(echo $dropped)"

echo "building vmlinux and bzImage with make -j$(nproc) (about 9 minutes on two cores)" >&2
start=$(date +%s)
make -C "$tree" -j"$(nproc)" bzImage > "$tree/build.log" 2>&1 || { tail -n 30 "$tree/build.log" >&2; die "kernel build failed (log: $tree/build.log)"; }
mkdir -p "$out.tmp"
cp "$tree/vmlinux" "$tree/arch/x86/boot/bzImage" "$out.tmp/"
cp "$tree/.config" "$out.tmp/config"
cat > "$out.tmp/BUILD-INFO" <<EOF
source: Debian linux-source-6.12 $version
config: tinyconfig + $(basename "$config")
workarounds: $workarounds ${patches[*]:+($(for p in "${patches[@]}"; do basename "$p"; done | tr '\n' ' '))}
built: $(date -u +%FT%TZ) in $(( $(date +%s) - start )) s with make -j$(nproc)
EOF
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"

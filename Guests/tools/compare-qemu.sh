#!/bin/sh
# Runs the Multiboot guest under QEMU (the reference) and under Swiftlet with the same kernel,
# command line, modules, vCPUs and memory, and prints both exit statuses, the guest's summary and
# FAIL lines, and the facts that differ.
#
#   Guests/tools/compare-qemu.sh [-c CPUS] [-m MEM] [-x EXIT] [-a EXTRA] [-o OUTDIR]
#
#   -c CPUS   vCPUs (default 2)                     -m MEM    memory, NNNM or NNG (default 64M)
#   -x EXIT   the guest's exit code, mb.exit= (default 5: status 11)
#   -a EXTRA  more words for the command line       -o OUTDIR where the images are built (default: a
#                                                             temporary directory)
#
# Environment: QEMU (default qemu-system-x86_64), QEMU_ACCEL (default kvm), SWIFTLET (default
# .build/debug/swiftlet in the package root; build it first with `swift build`).
#
# The command line is "mb.exit=EXIT expect.cpus=CPUS expect.ram=BYTES expect.mods=2 EXTRA"; the
# modules are the same two files for both: module 0 (QEMU -initrd, Swiftlet --initrd) with its path
# as the string, module 1 with the string "PATH with args" (QEMU: -initrd "A,B with args";
# Swiftlet: --module "B,B with args"). mboot64.elf is run under QEMU too, which refuses ELF64
# Multiboot kernels ("Cannot load x86-64 image, give a 32bit one.", status 1).
#
# Exit status 0 when every image gave the expected status under both (QEMU: refusal for
# mboot64.elf), 1 otherwise.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cpus=2 mem=64M code=5 extra= out=
while getopts c:m:x:a:o: opt; do
    case $opt in
    c) cpus=$OPTARG ;;
    m) mem=$OPTARG ;;
    x) code=$OPTARG ;;
    a) extra=$OPTARG ;;
    o) out=$OPTARG ;;
    *) sed -n '2,25s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
    esac
done
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_ACCEL=${QEMU_ACCEL:-kvm}
SWIFTLET=${SWIFTLET:-$root/.build/debug/swiftlet}

case $mem in
*[Mm]) bytes=$(( ${mem%?} * 1048576 )) ;;
*[Gg]) bytes=$(( ${mem%?} * 1073741824 )) ;;
*) echo "memory must be NNNM or NNG" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "$out" ] || out=$work/out
make -s -C "$root/Guests" OUT="$out" mboot || exit 2
out=$(cd "$out" && pwd)
printf 'module A: a few bytes\n' > "$work/modA"
i=0
while [ $i -lt 300 ]; do printf 'module B line %d\n' $i; i=$((i + 1)); done > "$work/modB"

cmdline="mb.exit=$code expect.cpus=$cpus expect.ram=$bytes expect.mods=2${extra:+ $extra}"
want=$(( (code << 1) | 1 ))
command -v "$QEMU" > /dev/null || { echo "$QEMU not found (apt-get install qemu-system-x86)" >&2; exit 2; }
[ -x "$SWIFTLET" ] || { echo "$SWIFTLET not found (swift build)" >&2; exit 2; }

# Facts that differ by design: where the loader puts things, its name and MBI flags, the
# firmware's memory map and fw_cfg files (SeaBIOS under QEMU), timing.
volatile='^(mb\.info|mb\.flags|mb\.boot_device|mb\.loader|mb\.mmap[^ ]*|mb\.mem_upper|mb\.mod\.[0-9]+\.start|fwcfg\.id|fwcfg\.files|fwcfg\.file\.[0-9]+|fwcfg\.cmdline[^ ]*|tsc_[^ ]*|smp\.wait_us|smp\.trampoline) '

result=0
for image in mboot.elf mboot-aout.bin mboot64.elf; do
    timeout 120 "$QEMU" -accel "$QEMU_ACCEL" -M pc -m "$mem" -smp "$cpus" -display none -serial stdio -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$out/$image" -append "$cmdline" \
        -initrd "$work/modA,$work/modB with args" > "$work/qemu.out" 2> "$work/qemu.err"
    qs=$?
    timeout 120 "$SWIFTLET" run --kernel "$out/$image" --boot multiboot --cpus "$cpus" --memory "$mem" \
        --cmdline "$cmdline" --initrd "$work/modA" --module "$work/modB,$work/modB with args" --no-stdin \
        > "$work/swiftlet.out" 2> "$work/swiftlet.err"
    ss=$?
    if [ "$image" = mboot64.elf ]; then qwant=1; else qwant=$want; fi
    verdict=ok
    [ $qs -eq $qwant ] && [ $ss -eq $want ] || { verdict=MISMATCH; result=1; }
    echo "== $image: qemu status $qs (want $qwant), swiftlet status $ss (want $want): $verdict"
    echo "   qemu:     $(grep -E '^summary ' "$work/qemu.out" || tail -n 1 "$work/qemu.err")"
    echo "   swiftlet: $(grep -E '^summary ' "$work/swiftlet.out" || tail -n 1 "$work/swiftlet.err")"
    grep -E '^FAIL ' "$work/qemu.out" | sed 's/^/   qemu:     /'
    grep -E '^FAIL ' "$work/swiftlet.out" | sed 's/^/   swiftlet: /'
    if [ "$image" != mboot64.elf ]; then
        grep -E '^fact ' "$work/qemu.out" | cut -c6- | grep -Ev "$volatile" | sort > "$work/qemu.facts"
        grep -E '^fact ' "$work/swiftlet.out" | cut -c6- | grep -Ev "$volatile" | sort > "$work/swiftlet.facts"
        if ! cmp -s "$work/qemu.facts" "$work/swiftlet.facts"; then
            echo "   facts that differ (< qemu, > swiftlet):"
            diff "$work/qemu.facts" "$work/swiftlet.facts" | grep '^[<>]' | sed 's/^/     /'
            result=1
        fi
        grep -E '^fact ' "$work/qemu.out" | cut -c6- | grep -E "$volatile" | grep -Ev '^(fwcfg\.file\.|mb\.mmap\.[0-9]|mb\.mmap_length|tsc_|smp\.wait_us)' |
            sed 's/^/   qemu     (by design): /'
        grep -E '^fact ' "$work/swiftlet.out" | cut -c6- | grep -E "$volatile" | grep -Ev '^(fwcfg\.file\.|mb\.mmap\.[0-9]|mb\.mmap_length|tsc_|smp\.wait_us)' |
            sed 's/^/   swiftlet (by design): /'
    fi
done
exit $result

#!/usr/bin/env bash
# run.sh of a folder made by Linux/pack.sh: boots Linux with the packed static `swiftlet` on this
# machine's /dev/kvm, checks every milestone in the kernel's log, and ends with a line
# "N passed, N failed". No Swift toolchain needed: bash, grep, sed, timeout, xz.
#
#   guest/    the project's microVM kernel (vmlinux, bzImage), built for this kind of KVM
#   debian/   Debian's stock kernel, unchanged (vmlinuz; vmlinux.xz)
#   initramfs.cpio, swiftlet
#   qemu/     optional: qemu-system-x86_64 with its libraries, for the boot-time comparison
#
# On a KVM that executes guest kernel mode in its instruction emulator (no VMX/SVM flag) the boots
# use the x86-64-v1 CPU template, and Debian's kernel is expected to stop on an instruction the
# emulator lacks (its last milestone and the instruction are reported); with hardware
# virtualisation every kernel must reach /init and power off.
# Usage: run.sh [--bench-runs N] [--only guest|debian|bench]
set -uo pipefail
cd "$(dirname "$0")"
bench_runs=1 only=""
while [ $# -gt 0 ]; do
    case $1 in
        --bench-runs) bench_runs=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "usage: run.sh [--bench-runs N] [--only guest|debian|bench]"; exit 2 ;;
    esac
done
logs=${LOGS:-logs}
mkdir -p "$logs"
[ -w /dev/kvm ] || { echo "no usable /dev/kvm here"; exit 2; }
if grep -qwE 'vmx|svm' /proc/cpuinfo; then emulated=0; template=(); echo "platform: hardware-assisted KVM (vmx/svm)"
else emulated=1; template=(--cpu-template x86-64-v1); echo "platform: KVM without vmx/svm (kernel mode emulated)"; fi
memory_mib=256

# The e820 lines Linux prints for Swiftlet's map of memory_mib (below 3 GiB).
expected_e820() {
    printf 'BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n'
    printf 'BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved\n'
    printf 'BIOS-e820: [mem 0x0000000000100000-0x%016x] usable\n' $(( (memory_mib << 20) - 1 ))
}
strip_times() { sed -e 's/\r$//' -e 's/^\[ *[0-9.]*\] //' "$1"; }
complaints='checksum|Firmware Bug|FW_BUG|BIOS bug|ACPI BIOS (Error|Warning)|ACPI (Error|Warning)|WARNING: CPU:|BUG:|Call Trace|Oops|i8042: Can.t|MP-BIOS bug'
# Said on every boot, not complaints; a caller may allow more in $allow (a regular expression).
notices='Early table checksum verification'

# check NAME LOG STATUS EXPECTED_STATUS MILESTONE...: milestones in order, e820, no complaints.
check() {
    local name=$1 log=$2 status=$3 want=$4; shift 4
    local text; text=$(strip_times "$log")
    local ok=1 last=0 line m
    for m in "$@"; do
        line=$(grep -nF -- "$m" <<<"$text" | head -n 1 | cut -d: -f1)
        if [ -z "$line" ]; then echo "  MISSING  $m"; ok=0; break; fi
        if [ "$line" -le "$last" ]; then echo "  ORDER    $m"; ok=0; fi
        last=$line
    done
    if [ "$(grep '^BIOS-e820: ' <<<"$text")" != "$(expected_e820)" ]; then echo "  E820 differs:"; grep '^BIOS-e820: ' <<<"$text" | sed 's/^/    /'; ok=0; fi
    local bad; bad=$(grep -E "$complaints" <<<"$text" | grep -vE "$notices${allow:+|$allow}")
    if [ -n "$bad" ]; then echo "  COMPLAINT"; sed 's/^/    /' <<<"$bad"; ok=0; fi
    if [ "$status" != "$want" ]; then echo "  STATUS   $status, expected $want: $(tail -n 2 "$log.err" | head -c 400)"; ok=0; fi
    if [ $ok = 1 ]; then echo "ok     $name ($(grep -c . <<<"$text") log lines)"; echo pass >> "$logs/results"
    else echo "FAIL   $name"; tail -n 15 "$log" | sed 's/^/    | /'; echo fail >> "$logs/results"; fi
}

# guest_boot NAME IMAGE PROTOCOL CPUS BOOTCPU EXTRA...: the project's kernel, as the Swift tests boot it.
guest_boot() {
    local name=$1 image=$2 protocol=$3 cpus=$4 bootcpu=$5; shift 5
    local log="$logs/$name.log" cmdline="console=ttyS0 panic=-1 pci=off" shell=0 acpi=1 prev="" a
    for a in "$@"; do [ "$a" = off ] && [ "$prev" = --acpi ] && acpi=0; prev=$a; done
    [ "${SHELL_TEST:-}" = "$name" ] && { cmdline="$cmdline swiftlet.shell"; shell=1; }
    local args=(run --kernel "guest/$image" --initrd initramfs.cpio --boot "$protocol" --cpus "$cpus" --boot-cpu "$bootcpu"
                --memory "${memory_mib}M" --cmdline "$cmdline" --report "$logs/$name.json" "${template[@]}" "$@")
    if [ $shell = 1 ]; then
        { until grep -q 'swiftlet-shell# ' "$log" 2>/dev/null; do sleep 0.2; done
          printf 'echo typed-$((6*7))\n'
          until [ "$(grep -o 'swiftlet-shell# ' "$log" | wc -l)" -ge 2 ]; do sleep 0.2; done
          printf 'exit\n'; sleep 30; } | timeout 600 ./swiftlet "${args[@]}" > "$log" 2> "$log.err"
    else
        timeout 600 ./swiftlet "${args[@]}" --no-stdin < /dev/null > "$log" 2> "$log.err"
    fi
    local status=$? online=0 s=""
    [ "$cpus" -gt 1 ] && { online="0-$((cpus - 1))"; s=s; }
    local tables=("ACPI: RSDP 0x00000000000E0000" "ACPI: APIC 0x")
    local end=("swiftlet-init: done, powering off" "reboot: Power down") want=0 allow=""
    if [ $acpi = 0 ]; then tables=("Intel MultiProcessor Specification v1.4" "Processor #$bootcpu (Bootup-CPU)")
        end=("swiftlet-init: done, rebooting" "reboot: Restarting system"); want=32
        allow='A valid RSDP was not found'; fi   # ACPICA saying there are no tables, as asked
    local extra=(); [ $shell = 1 ] && extra=("typed-42")
    check "$name" "$log" "$status" "$want" "BIOS-e820: " "${tables[@]}" "CPU topo: Allowing $cpus present CPUs plus 0 hotplug CPUs" \
        "smp: Brought up 1 node, $cpus CPU$s" "clocksource: Switched to clocksource kvm-clock" \
        "Unpacking initramfs..." "Freeing initrd memory:" "Run /init as init process" "swiftlet-init: cpus online $online, nproc $cpus" \
        "swiftlet-init: cmdline $cmdline" "${extra[@]}" "${end[@]}"
    # COM1 and the i8042 on I/O APIC pins 4 and 1 (/init's report from /proc/interrupts), by the
    # IRQ numbers Linux gave them (its own: dynamic on a hardware-reduced ACPI platform).
    local uirq kirq
    uirq=$(sed -n 's/^swiftlet-init: irq \([0-9]*\) IO-APIC 4-edge ttyS0, [1-9][0-9]* interrupts.*/\1/p' "$log" | head -n 1)
    kirq=$(sed -n 's/^swiftlet-init: irq \([0-9]*\) IO-APIC 1-edge i8042, [0-9]* interrupts.*/\1/p' "$log" | head -n 1)
    if [ -n "$uirq" ] && [ -n "$kirq" ] && grep -qF "ttyS0 at I/O 0x3f8 (irq = $uirq, base_baud = 115200) is a 16550A" "$log" \
        && grep -qF "serio: i8042 KBD port at 0x60,0x64 irq $kirq" "$log" && grep -qF "input: AT Translated Set 2 keyboard" "$log"; then
        echo pass >> "$logs/results"; else echo "FAIL   $name: no 16550A on I/O APIC pin 4 or no i8042 keyboard on pin 1"; echo fail >> "$logs/results"; fi
    local ups; ups=$(grep -cE '"bringUp" ?: ?"INIT-SIPI"' "$logs/$name.json" 2>/dev/null)
    if [ "${ups:-0}" = $((cpus - 1)) ]; then echo pass >> "$logs/results"; else echo "FAIL   $name: ${ups:-0} APs brought up by INIT-SIPI, expected $((cpus - 1))"; echo fail >> "$logs/results"; fi
}

# debian_boot NAME FILE FLOOR EXTRA...: Debian's kernel; on an emulating KVM it must reach FLOOR
# and stop with an emulation failure; elsewhere it must boot fully.
debian_boot() {
    local name=$1 file=$2 floor=$3; shift 3
    local log="$logs/$name.log"
    timeout 900 ./swiftlet run --kernel "debian/$file" --initrd initramfs.cpio --boot linux --cpus 2 --memory "${memory_mib}M" \
        --cmdline "console=ttyS0 panic=-1 pci=off" --no-stdin "$@" < /dev/null > "$log" 2> "$log.err"
    local status=$?
    local all=("Linux version 6." "BIOS-e820: " "ACPI: RSDP 0x00000000000E0000" "ACPI: APIC 0x" "smpboot: Allowing 2 CPUs, 0 hotplug CPUs"
               "Memory: " "smp: Brought up 1 node, 2 CPUs" "clocksource: Switched to clocksource kvm-clock"
               "ttyS0 at I/O 0x3f8 (irq = "
               "Run /init as init process" "swiftlet-init: cpus online 0-1, nproc 2" "reboot: Power down")
    if [ $emulated = 0 ] || [ $status = 0 ]; then check "$name" "$log" "$status" 0 "${all[@]}"; return; fi
    local text reached=() m; text=$(strip_times "$log")
    for m in "${all[@]}"; do grep -qF -- "$m" <<<"$text" || break; reached+=("$m"); done
    check "$name (to its last milestone)" "$log" "$status" 36 "${reached[@]}"
    if printf '%s\n' "${reached[@]}" | grep -qF -- "$floor" && grep -q 'emulation failure' "$log.err"; then echo pass >> "$logs/results"
    else echo "FAIL   $name: stopped before \"$floor\" or not by an emulation failure"; echo fail >> "$logs/results"; fi
    echo "       $name: last milestone \"${reached[-1]:-none}\" (${#reached[@]} of ${#all[@]}); $(grep -m1 KVM_EXIT_INTERNAL_ERROR "$log.err")"
    grep -m1 -A1 ' rip 0x' "$log.err" | sed 's/^/       /'
}

# bench CPUS: process start to /init's "ready" line, Swiftlet and QEMU microvm side by side.
bench() {
    local cpus=$1 run
    for run in $(seq "$bench_runs"); do
        local sl="$logs/bench-swiftlet-$cpus-$run.log" ql="$logs/bench-qemu-$cpus-$run.log"
        stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
        local t0
        t0=$(date +%s.%N)
        ( timeout 300 ./swiftlet run --kernel guest/vmlinux --initrd initramfs.cpio --boot pvh --cpus "$cpus" --memory "${memory_mib}M" \
            --cmdline "console=ttyS0 panic=-1 pci=off" --no-stdin --report "$logs/bench-swiftlet-$cpus-$run.json" "${template[@]}" < /dev/null | stamp > "$sl" ) &
        local qemu_cpu=host
        [ $emulated = 1 ] && qemu_cpu="host,-cx16,-popcnt,-xsave,-sse4.1,-sse4.2,-ssse3,-pni,-lahf-lm,-movbe,-avx,-avx2,-fma,-f16c,-bmi1,-bmi2,-abm"
        ( LD_LIBRARY_PATH=qemu/lib timeout 300 qemu/qemu-system-x86_64 -L qemu/share -M microvm,acpi=on -enable-kvm -cpu "$qemu_cpu" \
            -smp "$cpus" -m "${memory_mib}M" -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel guest/vmlinux -initrd initramfs.cpio -append "console=ttyS0 panic=-1 pci=off" < /dev/null 2> "$ql.err" | stamp > "$ql" ) &
        wait
        for who in swiftlet qemu; do
            local l="$logs/bench-$who-$cpus-$run.log"
            local ready; ready=$(grep -m1 'swiftlet-init: ready' "$l" | cut -d' ' -f1)
            local init; init=$(grep -m1 'Run /init' "$l" | sed -n 's/^[0-9.]* \[ *\([0-9.]*\)\].*/\1/p')
            local smp; smp=$(grep -m1 'smp: Brought up' "$l" | sed -n 's/^[0-9.]* \[ *\([0-9.]*\)\].*/\1/p')
            local ttys; ttys=$(grep -m1 'ttyS0 at I/O' "$l" | sed -n 's/^[0-9.]* \[ *\([0-9.]*\)\].*/\1/p')
            local freed; freed=$(grep -m1 'Freeing initrd memory' "$l" | sed -n 's/^[0-9.]* \[ *\([0-9.]*\)\].*/\1/p')
            local cs; cs=$(grep 'Switched to clocksource' "$l" | sed 's/.*clocksource //' | tr '\n' ' ')
            printf 'bench %-8s %d vCPU run %d: start->ready %6s s | guest time: smp up %s, initrd freed %s, ttyS0 %s, /init %s | clocksource: %s\n' \
                "$who" "$cpus" "$run" "$( [ -n "$ready" ] && awk "BEGIN { printf \"%.2f\", $ready - $t0 }" || echo -)" "${smp:--}" "${freed:--}" "${ttys:--}" "${init:--}" "$cs"
        done
        grep -h -A12 '"exitCounts"' "$logs/bench-swiftlet-$cpus-$run.json" 2>/dev/null | tr -d ' \n' | sed 's/"exitCounts"/\n  swiftlet exits:/g'; echo
    done
}

rm -f "$logs/results"
if [ -z "$only" ] || [ "$only" = guest ]; then
    if [ -f guest/vmlinux ]; then
        echo "== the project's guest kernel ($(cat guest/BUILD-INFO 2>/dev/null | grep workarounds))"
        SHELL_TEST=vmlinux-linux-1cpu-shell
        guest_boot vmlinux-linux-1cpu-shell vmlinux linux 1 0 > "$logs/out.1" &
        guest_boot bzImage-linux-2cpus-boot1 bzImage linux 2 1 > "$logs/out.2" &
        guest_boot vmlinux-pvh-4cpus vmlinux pvh 4 0 > "$logs/out.3" &
        guest_boot bzImage-linux-4cpus-boot2-noacpi bzImage linux 4 2 --acpi off > "$logs/out.4" &
        guest_boot vmlinux-pvh-2cpus-nomptable vmlinux pvh 2 0 --mptable off > "$logs/out.5" &
        wait; cat "$logs"/out.[1-5]
    fi
fi
if [ -z "$only" ] || [ "$only" = debian ]; then
    if [ -f debian/vmlinuz ]; then
        echo "== Debian's stock kernel ($(cat debian/VERSION 2>/dev/null))"
        [ -f debian/vmlinux ] || { [ -f debian/vmlinux.xz ] && xz -dk debian/vmlinux.xz; }
        if [ $emulated = 1 ]; then
            debian_boot debian-vmlinux vmlinux "Memory: " > "$logs/out.d1" &
            debian_boot debian-vmlinux-v1 vmlinux "Memory: " --cpu-template x86-64-v1 > "$logs/out.d2" &
        else
            debian_boot debian-vmlinuz vmlinuz "" > "$logs/out.d1" &
            debian_boot debian-vmlinux vmlinux "" > "$logs/out.d2" &
        fi
        wait; cat "$logs"/out.d[12]
    fi
fi
if [ -z "$only" ] || [ "$only" = bench ]; then
    if [ -x qemu/qemu-system-x86_64 ] && [ -f guest/vmlinux ]; then
        echo "== boot time: process start to /init's ready line, same kernel and initramfs, side by side"
        bench 1; bench 4
    fi
fi
echo "$(grep -c pass "$logs/results" 2>/dev/null || echo 0) passed, $(grep -c fail "$logs/results" 2>/dev/null || echo 0) failed"
! grep -q fail "$logs/results" 2>/dev/null

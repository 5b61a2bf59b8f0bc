#!/usr/bin/env python3
"""virtio benchmarks: the virtio guest's bench mode (`virtio.bench`) under Swiftlet and QEMU's
microvm, one run each, the same guest driver and the same disk file, timed on the host by when
each of the guest's `bench ... start` / `bench ... done N` lines arrives.

Run it inside Guests/tools/virtio-run.sh (which makes the TAP device swtap0):
    Guests/tools/virtio-run.sh exec python3 Guests/tools/virtio-bench.py GUEST_ELF \
        [--swiftlet BIN] [--qemu] [--accel kvm|tcg]

Prints a table: 4 KiB read round trip (us), 64 KiB sequential reads (MiB/s), 64-byte frames guest
to TAP (frames/s), and, for Swiftlet, the vCPU's exits by kind from its report: with ioeventfd a
queue notification is not among them.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SIZES = {"blk-4k-read": 4096, "blk-64k-read": 65536}


def timed_run(command, deadline=600):
    """Runs `command`, returns {name: (seconds, count)} from its bench lines, and its output."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    starts, results, lines = {}, {}, []
    end = time.monotonic() + deadline
    for raw in process.stdout:
        now = time.monotonic()
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        words = line.split()
        if len(words) >= 3 and words[0] == "bench" and words[2] == "start":
            starts[words[1]] = now
        elif len(words) >= 4 and words[0] == "bench" and words[2] == "done" and words[1] in starts:
            results[words[1]] = (now - starts[words[1]], int(words[3]))
        if line == "bench end" or now > end:
            break
    process.kill()
    process.wait()
    return results, lines


def row(results, name):
    if name not in results:
        return "-"
    seconds, count = results[name]
    if name == "blk-4k-read":
        return "%.1f us" % (seconds / count * 1e6)
    if name == "blk-64k-read":
        return "%.0f MiB/s" % (count * 65536 / seconds / (1 << 20))
    return "%.0f frames/s" % (count / seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("guest")
    parser.add_argument("--swiftlet")
    parser.add_argument("--qemu", action="store_true")
    parser.add_argument("--accel", default="kvm")
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    disk = os.path.join(work, "bench.img")
    with open(disk, "wb") as f:   # 128 MiB of real data (not a hole), the same file for both
        block = bytes(range(256)) * 4096
        for _ in range(128):
            f.write(block)
    columns = {}
    if args.swiftlet:
        report = os.path.join(work, "report.json")
        results, lines = timed_run([args.swiftlet, "run", "--kernel", args.guest, "--memory", "64M", "--no-stdin",
                                    "--cmdline", "virtio.bench", "--drive", "path=" + disk,
                                    "--net", "tap=swtap0", "--report", report])
        exits = {}
        try:
            for vcpu in json.load(open(report))["vcpus"]:
                for kind, n in vcpu.get("exitCounts", {}).items():
                    exits[kind] = exits.get(kind, 0) + n
        except (OSError, ValueError, KeyError):
            pass
        columns["Swiftlet"] = (results, exits, lines)
    if args.qemu:
        words = " ".join("virtio_mmio.device=512@0x%x:%d" % (0xFEB00000 + i * 512, 16 + i) for i in range(24))
        results, lines = timed_run(["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off", "-accel", args.accel,
                                    "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-m", "64",
                                    "-kernel", args.guest, "-append", "virtio.bench " + words,
                                    "-global", "virtio-mmio.force-legacy=false",
                                    "-drive", "id=d0,file=%s,format=raw,if=none" % disk,
                                    "-device", "virtio-blk-device,drive=d0",
                                    "-netdev", "tap,id=n0,ifname=swtap0,script=no,downscript=no",
                                    "-device", "virtio-net-device,netdev=n0"])
        columns["QEMU microvm (%s)" % args.accel] = (results, None, lines)
    names = list(columns)
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for name, label in [("blk-4k-read", "4 KiB read, round trip"), ("blk-64k-read", "64 KiB sequential reads"),
                        ("net-tx", "64-byte frames, guest to TAP")]:
        print("| %s | %s |" % (label, " | ".join(row(columns[n][0], name) for n in names)))
    for name in names:
        results, exits, lines = columns[name]
        if exits is not None:
            print("%s: vCPU exits by kind: %s" % (name, json.dumps(exits, sort_keys=True)))
        if len(results) < 3:
            print("%s: incomplete run; its last lines:\n  %s" % (name, "\n  ".join(lines[-8:])), file=sys.stderr)


if __name__ == "__main__":
    main()

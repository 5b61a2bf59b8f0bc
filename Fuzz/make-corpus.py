#!/usr/bin/env python3
"""Writes the seed corpora of Swiftlet's fuzz targets (Fuzz/README.md) from the test kernels.

    make -C Guests OUT=/tmp/fz-guests
    python3 Fuzz/make-corpus.py /tmp/fz-guests [--vmlinux PATH] [--out Fuzz/corpus]

Every seed has a name that says where it came from. The output is deterministic: running it
again on the same kernels rewrites the same files. With --vmlinux (the path printed by
Linux/debian-kernel.sh, plus /vmlinux) the real kernel's note section and a compacted copy of its
headers are added; the 65 MB kernel itself is never written.
"""
import argparse
import base64
import json
import zlib
import os
import struct
import subprocess
import sys
import tempfile

GUESTS = ["demo.elf", "probe.elf", "smp.elf", "xenvcpu.elf", "xenpvh.elf", "xenhvm32.elf", "xenhvm64.elf",
          "mboot.elf", "mboot64.elf"]

XEN_NOTE_TYPES = {"ENTRY": 1, "HYPERCALL_PAGE": 2, "VIRT_BASE": 3, "PADDR_OFFSET": 4, "XEN_VERSION": 5,
                  "GUEST_OS": 6, "FEATURES": 10, "L1_MFN_VALID": 13, "SUPPORTED_FEATURES": 17,
                  "PHYS32_ENTRY": 18, "PHYS32_RELOC": 19, "CRASH_INFO": 0x1000001}


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# ELF

class ELF:
    """The few fields of an ELF32/ELF64 little-endian file the seeds are made from."""

    def __init__(self, data):
        self.data = data
        self.is64 = data[4] == 2
        if self.is64:
            (self.entry, self.phoff, self.shoff) = struct.unpack_from("<QQQ", data, 24)
            (self.phentsize, self.phnum, self.shentsize, self.shnum) = struct.unpack_from("<HHHH", data, 54)
        else:
            (self.entry, self.phoff, self.shoff) = struct.unpack_from("<III", data, 24)
            (self.phentsize, self.phnum, self.shentsize, self.shnum) = struct.unpack_from("<HHHH", data, 42)
        self.headers = [self.program_header(i) for i in range(self.phnum)]

    def program_header(self, index):
        at = self.phoff + index * self.phentsize
        if self.is64:
            t, flags, off, va, pa, fsz, msz, align = struct.unpack_from("<IIQQQQQQ", self.data, at)
        else:
            t, off, va, pa, fsz, msz, flags, align = struct.unpack_from("<IIIIIIII", self.data, at)
        return dict(type=t, flags=flags, offset=off, vaddr=va, paddr=pa, filesz=fsz, memsz=msz, align=align)

    def pack_program_header(self, h):
        if self.is64:
            return struct.pack("<IIQQQQQQ", h["type"], h["flags"], h["offset"], h["vaddr"], h["paddr"],
                               h["filesz"], h["memsz"], h["align"])
        return struct.pack("<IIIIIIII", h["type"], h["offset"], h["vaddr"], h["paddr"], h["filesz"], h["memsz"],
                           h["flags"], h["align"])

    def header_size(self):
        return 64 if self.is64 else 52

    def compact(self, keep=256, notes_as_section=False):
        """The file header and program headers, then each segment's first `keep` bytes (notes in
        full), no section table; with notes_as_section the PT_NOTE becomes PT_NULL and one
        SHT_NOTE section covers the notes instead."""
        header = bytearray(self.data[:self.header_size()])
        phoff = len(header)
        body = bytearray()
        base = phoff + self.phnum * self.phentsize
        headers = []
        note_range = None
        for h in self.headers:
            h = dict(h)
            if h["type"] in (1, 4):
                size = h["filesz"] if h["type"] == 4 else min(h["filesz"], keep)
                content = self.data[h["offset"]:h["offset"] + size]
                while (base + len(body)) % 4:
                    body.append(0)
                h["offset"] = base + len(body)
                h["filesz"] = len(content)
                if h["type"] == 4:
                    note_range = (h["offset"], len(content))
                    if notes_as_section:
                        h["type"] = 0
                body += content
            headers.append(h)
        sections = b""
        shoff = 0
        shnum = 0
        if notes_as_section and note_range:
            while (base + len(body)) % 8:
                body.append(0)
            shoff = base + len(body)
            shnum = 2
            if self.is64:
                null = bytes(64)
                note = struct.pack("<IIQQQQIIQQ", 1, 7, 2, 0, note_range[0], note_range[1], 0, 0, 4, 0)
            else:
                null = bytes(40)
                note = struct.pack("<IIIIIIIIII", 1, 7, 2, 0, note_range[0], note_range[1], 0, 0, 4, 0)
            sections = null + note
        if self.is64:
            struct.pack_into("<QQ", header, 32, phoff, shoff)
            struct.pack_into("<HH", header, 58, 64, shnum)
        else:
            struct.pack_into("<II", header, 28, phoff, shoff)
            struct.pack_into("<HH", header, 46, 40, shnum)
        return bytes(header) + b"".join(self.pack_program_header(h) for h in headers) + bytes(body) + sections


def note_section(path):
    """The raw bytes of the .notes (or first note) section, as objcopy writes them."""
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "notes")
        for section in (".notes", ".note.Xen", ".note"):
            result = subprocess.run(["objcopy", "-O", "binary", "--only-section=" + section, path, out],
                                    capture_output=True)
            if result.returncode == 0 and os.path.exists(out) and os.path.getsize(out) > 0:
                return open(out, "rb").read()
    return None


def note(name, note_type, desc, pad=0):
    name_bytes = name + b"\0" if name is not None else b""
    out = struct.pack("<III", len(name_bytes), len(desc), note_type) + name_bytes
    out += bytes([pad]) * (-len(out) % 4)
    out += desc
    out += bytes([pad]) * (-len(out) % 4)
    return out


def xen(name, desc):
    return note(b"Xen", XEN_NOTE_TYPES[name], desc)


def handmade_notes():
    q = lambda v: struct.pack("<Q", v)
    l = lambda v: struct.pack("<I", v)
    return {
        "every-kind": b"".join([
            xen("ENTRY", q(0xFFFFFFFF81000000)), xen("HYPERCALL_PAGE", q(0xFFFFFFFF81001000)),
            xen("VIRT_BASE", q(0xFFFFFFFF80000000)), xen("PADDR_OFFSET", q(0)),
            xen("XEN_VERSION", b"xen-3.0\0"), xen("GUEST_OS", b"linux\0"),
            xen("FEATURES", b"!writable_page_tables|pae_pgdir_above_4gb|unknown_feature"),
            xen("L1_MFN_VALID", q(1) + q(1)), xen("SUPPORTED_FEATURES", l(0x8801)),
            xen("PHYS32_ENTRY", l(0x1000850)), xen("PHYS32_RELOC", l(0x200000) + l(0x1000000) + l(0xFFFFFFFF)),
            xen("CRASH_INFO", b"crash"),
        ]),
        "phys32-entry-8-bytes": xen("PHYS32_ENTRY", q(0x1000850)),
        "phys32-entry-2-bytes": xen("PHYS32_ENTRY", b"\x50\x08"),
        "integer-odd-size": xen("ENTRY", b"\x01\x02\x03"),
        "gnu-and-linux-notes": note(b"GNU", 3, b"\x01\x02\x03\x04") + note(b"Linux", 0x100, b"6.1")
                               + xen("ENTRY", q(0xFFFFFFFF81000000)),
        "empty-name-and-desc": note(None, 0, b"") + note(b"", 0, b""),
        "string-without-nul": xen("GUEST_OS", b"linu") + xen("FEATURES", b"|!|a||b|"),
        "unknown-type": note(b"Xen", 0x7777, b"\xff" * 5, pad=0xAA),
        "truncated-header": xen("ENTRY", q(1))[:-2] + b"\x04\x00\x00\x00\x08\x00",
        "descsz-too-big": struct.pack("<III", 4, 0x100, 1) + b"Xen\0" + q(5),
        "namesz-too-big": struct.pack("<III", 0xFFFFFFFF, 0, 1) + b"Xen\0",
    }


# ---------------------------------------------------------------------------------------------
# bzImage

def bzimage_variants(image):
    setup_sects = image[0x1F1] or 4
    pm = (setup_sects + 1) * 512
    base = bytearray(image[:pm + 0x400])      # the header and a little protected-mode code

    def edited(**fields):
        data = bytearray(base)
        for offset, (fmt, value) in fields.items():
            struct.pack_into(fmt, data, int(offset[1:], 16), value)
        return bytes(data)

    return {
        "probe-small": bytes(base),
        "probe-header-only": bytes(image[:0x290]),
        "probe-no-payload": bytes(image[:pm + 0x100]),
        "probe-2.11-no-64bit": edited(x206=("<H", 0x020B)),
        "probe-2.02": edited(x206=("<H", 0x0202)),
        "probe-relocatable-pref": edited(x234=("<B", 1), x258=("<Q", 0x200000)),
        "probe-init-size-big": edited(x260=("<I", 0x600000)),
        "probe-short-header": edited(x201=("<B", 0x10)),
        "probe-zimage": edited(x211=("<B", 0)),
        "probe-setup-sects-0": edited(x1f1=("<B", 0)) + bytes(0x800),
        "probe-load-high-address": edited(x214=("<I", 0x10000000)),
    }


# ---------------------------------------------------------------------------------------------
# Hypercalls (layout: Sources/FuzzTargets/HypercallHarness.swift)

SERVED = [0, 4, 12, 17, 18, 20, 24, 29, 30, 32, 34]   # HypercallNumber.allCases, in declaration order


def hypercall_input(calls, memory=b"", vcpus=0x04, up=0x01, initialised=0x01, flags=0x01):
    """`calls`: (number, [args], is32) tuples; memory starts right after the call records."""
    out = bytearray([len(calls) - 1, vcpus, up, initialised, flags, 0, 0, 0])
    for number, args, is32 in calls:
        out += bytes([SERVED.index(number), 1 if is32 else 0]) + bytes(6)
        out += b"".join(struct.pack("<Q", a) for a in (list(args) + [0] * 5)[:5])
    return bytes(out + memory)


def vcpu_context(rip=0xFFFFFFFF80100000, rsp=0xFFFFFFFF80200000, cr3=0x1000, flags=(1 << 2) | (1 << 5)):
    ctx = bytearray(5168)
    for offset, value in ((512, flags), (520 + 128, rip), (520 + 152, rsp), (520 + 112, 7), (520 + 104, 9),
                          (4984 + 24, cr3)):
        struct.pack_into("<Q", ctx, offset, value)
    return bytes(ctx)


def hypercall_seeds():
    domid_self = 0x7FF0
    trap_table = b"".join(struct.pack("<BBHIQ", v, 0, 0x10, 0, 0xFFFFFFFF80100000 + v) for v in range(4)) + bytes(16)
    return {
        "console-write": hypercall_input([(18, [0, 13, 0], False)], b"hello, fuzzer\n"),
        "console-write-fault": hypercall_input([(18, [0, 0xFFFFFFFF, 0], False)], b"x" * 64),
        "xen-version-all": hypercall_input([(17, [0], False), (17, [1, 16], False), (17, [6, 0], False),
                                            (17, [7], False)], bytes(64)),
        "xen-version-capabilities": hypercall_input([(17, [3, 0], False)], bytes(1024)),
        "trap-table": hypercall_input([(0, [0], False)], trap_table),
        "set-callbacks": hypercall_input([(4, [0xFFFFFFFF80100000, 0x8000000000000000, 0], False)]),
        "callback-op": hypercall_input([(30, [0, 0], False), (30, [1, 16], False)],
                                       struct.pack("<HHIQ", 4, 1, 0, 0xFFFFFFFF80100100) + struct.pack("<I", 4)),
        "sched-op-shutdown": hypercall_input([(29, [2, 0], False)], struct.pack("<I", 2)),
        "sched-op-yield-poll": hypercall_input([(29, [0], False), (29, [5, 0], False)], bytes(8)),
        "vcpu-initialise-up": hypercall_input([(24, [0, 1, 0], False), (24, [1, 1, 0], False), (24, [3, 1, 0], False)],
                                              vcpu_context(), up=0x01, initialised=0x01),
        "vcpu-down-runstate": hypercall_input([(24, [4, 0, 0], False), (24, [2, 0, 0], False)], bytes(48),
                                              up=0x01, initialised=0x01, flags=0x0F),
        "vcpu-bad-context": hypercall_input([(24, [0, 2, 0], False)], vcpu_context(rip=0x0000800000000000)),
        "hvm-param": hypercall_input([(34, [0, 0], False), (34, [1, 0], True)],
                                     struct.pack("<HHIQ", domid_self, 0, 0, 0x0200000000000005), flags=0x11),
        "memory-op-shared-info": hypercall_input([(12, [7, 0], False)],
                                                 struct.pack("<HHIQQ", domid_self, 0, 0, 0, 0x100), flags=0x11),
        "memory-op-grant-32": hypercall_input([(12, [7, 0], True)],
                                              struct.pack("<HHIII", domid_self, 0, 1, 0, 0x101), flags=0x11),
        "grant-table-op": hypercall_input([(20, [6, 0, 1], False), (20, [8, 16, 1], False), (20, [10, 32, 1], False)],
                                          struct.pack("<HHIIh", domid_self, 0, 0, 0, 0) + bytes(2)
                                          + struct.pack("<I", 1) + bytes(12) + struct.pack("<HHI", domid_self, 0, 0)),
        "event-channel-op": hypercall_input([(32, [0, 0], False)]),
        "unknown-number": bytes([0, 4, 1, 1, 1, 0, 0, 0, 0xF0, 0, 0, 0, 0, 0, 0, 0]) + bytes(32)
                          + struct.pack("<Q", 0x100000012),
        "tsc-scale": hypercall_input([(29, [0, 0, 0, 2_900_000_000, 12345], False)]),
    }


def api_seeds():
    """API request sequences (APIHarness): "METHOD URI\nbody", NUL between requests."""
    def seq(*requests):
        return b"\0".join(r.encode() for r in requests)
    boot = 'PUT /boot-source\n{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}'
    machine = 'PUT /machine-config\n{"vcpu_count": 2, "mem_size_mib": 64}'
    start = 'PUT /actions\n{"action_type": "InstanceStart"}'
    return {
        "getting-started": seq(boot, machine, start, "GET /", "GET /vcpus"),
        "pause-resume": seq(boot, start, 'PATCH /vm\n{"state": "Paused"}', 'PATCH /vm\n{"state": "Paused"}',
                            'PATCH /vm\n{"state": "Resumed"}', "GET /vm/config"),
        "mp-state": seq(boot, machine, start, 'PUT /vcpus/1/mp-state\n{"mp_state": "INIT_RECEIVED"}',
                        'PUT /vcpus/1/mp-state\n{"mp_state": "SIPI_RECEIVED"}', 'PATCH /vcpus/1\n{"state": "Paused"}',
                        "GET /vcpus/1", "GET /vcpus/9"),
        "patch-and-logger": seq('PATCH /machine-config\n{"mem_size_mib": 256, "smt": false}', "GET /machine-config",
                                'PUT /logger\n{"level": "Debug", "show_level": true}', 'PUT /actions\n{"action_type": "FlushMetrics"}'),
        "malformed": seq('PUT /machine-config\n{"vcpu_count": 1.5, "mem_size_mib": 64,}', 'PUT /machine-config\n[1, {"a": null}]',
                         'PUT /machine-config\n{"vcpu_count": 1, "vcpu_count": 2}', "GET /\n{}", "DELETE /", "GET /drives/x",
                         'PUT /boot-source\n{"kernel_image_path": "\\ud800"}'),
        "after-start": seq(boot, start, machine, 'PUT /metrics\n{"metrics_path": "/m"}', 'PUT /actions\n{"action_type": "SendCtrlAltDel"}',
                           start),
    }


def virtqueue_seeds():
    """Guest memory images for VirtqueueHarness: control byte, then RAM from address 0 (descriptor
    table at 0, available ring at 0x1000, used ring at 0x2000, buffers above 0x3000)."""
    def image(control, descriptors, heads, indirect_tables=(), used_event=None, size_log2=3):
        ram = bytearray(0x4000)
        for i, (addr, length, flags, nxt) in enumerate(descriptors):
            struct.pack_into("<QIHH", ram, 16 * i, addr, length, flags, nxt)
        for base, entries in indirect_tables:
            for i, (addr, length, flags, nxt) in enumerate(entries):
                struct.pack_into("<QIHH", ram, base + 16 * i, addr, length, flags, nxt)
        struct.pack_into("<HH", ram, 0x1000, 0, len(heads))
        for i, h in enumerate(heads):
            struct.pack_into("<H", ram, 0x1004 + 2 * i, h)
        if used_event is not None:
            struct.pack_into("<H", ram, 0x1004 + 2 * (1 << size_log2), used_event)
        return bytes([control]) + bytes(ram).rstrip(b"\0")   # the rest of RAM is zero anyway
    W, N, I = 2, 1, 4

    def vsock_packet(op, src_port=1234, dst_port=5000, payload=b"", length=None):
        header = struct.pack("<QQIIIHHIII", 3, 2, src_port, dst_port, len(payload) if length is None else length,
                             1, op, 0, 4096, 0)
        return header + payload

    def with_buffers(ram_image, buffers):
        ram = bytearray(ram_image[1:].ljust(0x4000, b"\0"))
        for address, data in buffers:
            ram[address:address + len(data)] = data
        return ram_image[:1] + bytes(ram).rstrip(b"\0")

    request = vsock_packet(1)
    rw = vsock_packet(5, payload=b"hello")
    lying = vsock_packet(5, payload=b"abc", length=4000)
    return {
        # bits 6-7 of the control byte: 1 the console's transmit queue, 2 vsock, 3 entropy
        "console-text": with_buffers(image(3 | 0x40, [(0x3000, 6, N, 1), (0x3100, 3, 0, 0)], [0]),
                                     [(0x3000, b"hello "), (0x3100, b"hvc")]),
        "vsock-request-and-rw": with_buffers(image(3 | 0x80, [(0x3000, len(request), 0, 0), (0x3100, len(rw), 0, 0),
                                                              (0x3200, 300, W, 0), (0x3400, 300, W, 0)], [0, 1, 2, 3]),
                                             [(0x3000, request), (0x3100, rw)]),
        "vsock-lying-length": with_buffers(image(3 | 0x80, [(0x3000, len(lying), 0, 0), (0x3200, 300, W, 0)], [0, 1]),
                                           [(0x3000, lying)]),
        "entropy-device": image(3 | 0xC0, [(0x3000, 16, W | N, 1), (0x3100, 8, W, 0)], [0]),
        "entropy-two-chains": image(3, [(0x3000, 16, W | N, 1), (0x3100, 8, W, 0), (0x3200, 64, W, 0)], [0, 2]),
        "read-then-write": image(3, [(0x3000, 16, N, 1), (0x3100, 8, W, 0)], [0]),
        "indirect": image(3 | 0x10, [(0x3800, 32, I, 0)], [0], indirect_tables=[(0x3800, [(0x3000, 4, W | N, 1), (0x3100, 4, W, 0)])]),
        "loop": image(3, [(0x3000, 4, W | N, 1), (0x3000, 4, W | N, 0)], [0]),
        "outside-ram": image(3, [(0xFFFF0000, 4, W, 0)], [0]),
        "event-index": image(3 | 0x20, [(0x3000, 4, W, 0)], [0, 0, 0], used_event=1),
        "overrun": image(3, [(0x3000, 4, W, 0)], list(range(9))),
    }


def snapshot_seeds():
    """Snapshot files (Sources/Snapshot/SnapshotFile.swift): header, JSON state, CRC-32."""
    def frame(state, version=1):
        body = json.dumps(state, sort_keys=True).encode() if not isinstance(state, bytes) else state
        data = b"SWLTSNAP" + struct.pack("<IIQ", version, 0, len(body)) + body
        return data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF)
    b64 = lambda raw: base64.b64encode(raw).decode()
    queue = {"size": 256, "descriptorTable": 4096, "availableRing": 8192, "usedRing": 12288, "ready": True,
             "nextAvailable": 17, "nextUsed": 17, "signalledUsed": 16}
    state = {
        "swiftletVersion": "0.9.0",
        "host": {"cpuVendor": "GenuineIntel", "cpuid": [{"function": 0, "index": 0, "flags": 0, "eax": 13, "ebx": 1, "ecx": 2, "edx": 3}]},
        "snapshotType": "Full",
        "memory": {"size": 134217728, "regions": [{"guestAddress": 0, "size": 134217728, "fileOffset": 0}]},
        "configuration": {"cpus": 2, "bootCPU": 0, "memorySize": 134217728, "xen": False, "trackDirtyPages": False,
                          "virtio": [{"kind": "block", "parameters": {"path": "/images/root.img", "id": "root"}}],
                          "commandLine": "console=ttyS0", "bootProtocol": "pvh"},
        "vcpus": [{"id": 0, "kvm": {"regs": b64(bytes(144)), "lapic": b64(bytes(1024))}, "msrs": [{"index": 16, "value": 12345}],
                   "mpState": 0, "runState": "Running"}],
        "vm": {"irqchips": [b64(b"\0"), b64(b"\1"), b64(b"\2")], "pit": b64(b"\x09"), "clock": b64(b"\x08")},
        "devices": {"serial": {"registers": {"lcr": 3}, "receiveFIFO": b64(b"hi")}, "firmwareConfig": {"selector": 5, "offset": 1},
                    "virtio": [{"status": 15, "deviceFeaturesSel": 1, "driverFeaturesSel": 1, "driverFeatures": 4294967296,
                                "queueSel": 0, "interruptStatus": 1, "configGeneration": 0, "activated": True, "queues": [queue]}]},
        "xen": {"callback_irq": 0},
    }
    missing = dict(state)
    del missing["vm"]
    bad_base64 = json.loads(json.dumps(state))
    bad_base64["vm"]["pit"] = "not base64!"
    whole = frame(state)
    return {
        "full": whole,
        "no-vcpus": frame(dict(state, vcpus=[])),
        "missing-vm": frame(missing),
        "bad-base64": frame(bad_base64),
        "version-2": frame(state, version=2),
        "truncated": whole[:200],
        "not-json": frame(b"{not json"),
    }


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("guests", help="folder with the built test kernels (make -C Guests OUT=...)")
    parser.add_argument("--vmlinux", help="Debian's vmlinux (Linux/debian-kernel.sh prints its folder)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    args = parser.parse_args()

    elf_dir = os.path.join(args.out, "elf")
    notes_dir = os.path.join(args.out, "xen-notes")
    bz_dir = os.path.join(args.out, "bzimage")
    hc_dir = os.path.join(args.out, "hypercalls")
    for name, data in api_seeds().items():
        write(os.path.join(args.out, "api"), name, data)
    for name, data in virtqueue_seeds().items():
        write(os.path.join(args.out, "virtqueue"), name, data)
    for name, data in snapshot_seeds().items():
        write(os.path.join(args.out, "snapshot"), name, data)

    for name in GUESTS:
        path = os.path.join(args.guests, name)
        data = open(path, "rb").read()
        stem = name.rsplit(".", 1)[0]
        elf = ELF(data)
        write(elf_dir, stem + ".compact", elf.compact())
        if any(h["type"] == 4 for h in elf.headers):
            write(elf_dir, stem + ".compact-section-notes", elf.compact(notes_as_section=True))
        notes = note_section(path)
        if notes:
            write(notes_dir, stem, notes)
    for name in ("demo.elf", "xenpvh.elf", "mboot.elf"):      # three whole images, the smallest
        write(elf_dir, name, open(os.path.join(args.guests, name), "rb").read())
    demo = open(os.path.join(args.guests, "demo.elf"), "rb").read()
    for cut in (16, 52, 64, 120, 0x590):
        write(elf_dir, "demo.truncated-%d" % cut, demo[:cut])

    aout = open(os.path.join(args.guests, "mboot-aout.bin"), "rb").read()
    flat = bytearray(aout[:1024])
    struct.pack_into("<I", flat, 20, 0)                        # load_end_addr 0: the rest of the file
    write(elf_dir, "mboot-aout.small", bytes(flat))

    bz = open(os.path.join(args.guests, "probe.bzImage"), "rb").read()
    for name, data in bzimage_variants(bz).items():
        write(bz_dir, name, data)
    write(elf_dir, "probe-bzimage.small", bzimage_variants(bz)["probe-small"])

    for name, data in handmade_notes().items():
        write(notes_dir, "handmade-" + name, data)
    for name, data in hypercall_seeds().items():
        write(hc_dir, name, data)

    if args.vmlinux:
        notes = note_section(args.vmlinux)
        if notes:
            write(notes_dir, "debian-vmlinux", notes)
        elf = ELF(open(args.vmlinux, "rb").read())
        write(elf_dir, "debian-vmlinux.compact", elf.compact(keep=64))
        write(elf_dir, "debian-vmlinux.compact-section-notes", elf.compact(keep=64, notes_as_section=True))

    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(args.out) for f in files)
    count = sum(len(files) for _, _, files in os.walk(args.out))
    print("%s: %d files, %d bytes" % (args.out, count, total))


if __name__ == "__main__":
    sys.exit(main())

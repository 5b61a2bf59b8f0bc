#!/usr/bin/env python3
"""Static checks of the built guest images (no VM needed).

usage: verify.py OUTDIR      (checks OUTDIR/probe.elf, probe.bin, probe.bzImage, smp.elf, demo.elf,
                              xenvcpu.elf, xenpvh.elf, mboot.elf, mboot-aout.bin, mboot64.elf and, if present,
                              Sources/DemoGuest/DemoGuestImage.swift against demo.elf)
"""
import os
import re
import struct
import sys

VIRT_BASE = 0xFFFFFFFF80000000
errors = []


def expect(cond, what):
    if not cond:
        errors.append(what)
    print(("ok   " if cond else "FAIL ") + what)


def parse_elf(path):
    d = open(path, "rb").read()
    assert d[:4] == b"\x7fELF" and d[4] == 2 and d[5] == 1, f"{path}: not ELF64 LE"
    e_type, e_machine, _v, e_entry, e_phoff, e_shoff, _f, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = \
        struct.unpack_from("<HHIQQQIHHHHHH", d, 16)
    phdrs = [struct.unpack_from("<IIQQQQQQ", d, e_phoff + i * e_phentsize) for i in range(e_phnum)]
    shdrs = [struct.unpack_from("<IIQQQQIIQQ", d, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    syms = {}
    for sh in shdrs:
        if sh[1] == 2:  # SHT_SYMTAB
            strtab = shdrs[sh[6]]
            for off in range(sh[4], sh[4] + sh[5], 24):
                st_name, _info, _other, _shndx, st_value, _size = struct.unpack_from("<IBBHQQ", d, off)
                name = d[strtab[4] + st_name:d.index(b"\0", strtab[4] + st_name)].decode()
                if name:
                    syms[name] = st_value
    notes = []
    for p in phdrs:
        if p[0] != 4:  # PT_NOTE
            continue
        off, end = p[2], p[2] + p[5]
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", d, off)
            name = d[off + 12:off + 12 + namesz]
            doff = off + 12 + ((namesz + 3) & ~3)
            notes.append((name, ntype, d[doff:doff + descsz]))
            off = doff + ((descsz + 3) & ~3)
    return dict(data=d, type=e_type, machine=e_machine, entry=e_entry, phdrs=phdrs, syms=syms, notes=notes)


def note_map(elf):
    m = {}
    for name, ntype, desc in elf["notes"]:
        expect(name == b"Xen\0", f"note type {ntype} has name \"Xen\\0\" (got {name!r})")
        m[ntype] = desc
    return m


def check_probe(out):
    elf = parse_elf(os.path.join(out, "probe.elf"))
    expect(elf["type"] == 2 and elf["machine"] == 62, "probe.elf is an x86-64 ET_EXEC")
    expect(elf["entry"] == 0x100200, f"probe.elf e_entry 0x{elf['entry']:x} == 0x100200")
    loads = sorted([p for p in elf["phdrs"] if p[0] == 1], key=lambda p: p[4])
    expect(loads[0][4] == 0x100000, f"first PT_LOAD p_paddr 0x{loads[0][4]:x} == 0x100000")
    for a, b in zip(loads, loads[1:]):
        expect(a[4] + a[6] == b[4], f"PT_LOAD 0x{a[4]:x}+0x{a[6]:x} is followed directly by 0x{b[4]:x}")
    for p in loads:
        expect(p[3] == p[4] + VIRT_BASE, f"PT_LOAD p_vaddr 0x{p[3]:x} == VIRT_BASE + p_paddr")
    bss = loads[-1][6] - loads[-1][5]
    expect(bss >= 4096, f"last PT_LOAD has {bss} bytes of .bss (>= 4096)")
    syms = elf["syms"]
    expect(syms.get("startup_64") == VIRT_BASE + 0x100200, "startup_64 at VIRT_BASE + 0x100200")
    n = note_map(elf)
    expect(n.get(6) == b"swiftlet-probe\0", "GUEST_OS swiftlet-probe")
    expect(n.get(7) == b"1\0", "GUEST_VERSION 1")
    expect(n.get(5) == b"xen-3.0\0", "XEN_VERSION xen-3.0")
    expect(n.get(8) == b"generic\0", "LOADER generic")
    expect(n.get(3) == struct.pack("<Q", VIRT_BASE), "VIRT_BASE 0xffffffff80000000 (8 bytes)")
    expect(n.get(4) == struct.pack("<Q", 0), "PADDR_OFFSET 0 (8 bytes)")
    expect(n.get(1) == struct.pack("<Q", syms["xen64_start"]), f"ENTRY == xen64_start 0x{syms['xen64_start']:x}")
    expect(n.get(18) == struct.pack("<I", syms["pvh_start"] - VIRT_BASE),
           f"PHYS32_ENTRY == pvh_start physical 0x{syms['pvh_start'] - VIRT_BASE:x} (4 bytes)")
    expect(n.get(10) == b"!writable_page_tables|auto_translated_physmap|supervisor_mode_kernel\0", "FEATURES string")
    expect(n.get(17) == struct.pack("<I", 0xD), "SUPPORTED_FEATURES 0xd (4 bytes)")
    expect(n.get(9) == b"yes\0", "PAE_MODE yes")
    expect(n.get(14) == struct.pack("<I", 1), "SUSPEND_CANCEL 1 (4 bytes)")

    # objcopy -O binary image == file contents of the PT_LOAD segments at their physical offsets
    binary = open(os.path.join(out, "probe.bin"), "rb").read()
    d = elf["data"]
    same = all(binary[p[4] - 0x100000:p[4] - 0x100000 + p[5]] == d[p[2]:p[2] + p[5]] for p in loads)
    expect(same, "probe.bin holds every PT_LOAD at p_paddr - 0x100000")
    expect(binary[0x200:0x200 + 16] == d[loads[0][2] + 0x200:loads[0][2] + 0x210], "probe.bin has startup_64 at 0x200")

    bz = open(os.path.join(out, "probe.bzImage"), "rb").read()
    u8 = lambda o: bz[o]
    u16 = lambda o: struct.unpack_from("<H", bz, o)[0]
    u32 = lambda o: struct.unpack_from("<I", bz, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", bz, o)[0]
    setup_sects = u8(0x1F1)
    expect(setup_sects == 1, "bzImage setup_sects 1")
    payload = bz[(setup_sects + 1) * 512:]
    expect(payload == binary, "bzImage payload == probe.bin")
    expect(u16(0x1FE) == 0xAA55, "bzImage boot_flag 0xAA55")
    expect(bz[0x200] == 0xEB and 0x202 + bz[0x201] == 0x26C, "bzImage jump to the end of the header (0x26c)")
    expect(bz[0x202:0x206] == b"HdrS", "bzImage header HdrS")
    expect(u16(0x206) == 0x020F, "bzImage version 0x020f")
    expect(u8(0x211) == 0x01, "bzImage loadflags LOADED_HIGH")
    expect(u32(0x214) == 0x100000, "bzImage code32_start 0x100000")
    expect(u32(0x22C) == 0x7FFFFFFF, "bzImage initrd_addr_max 0x7fffffff")
    expect(u32(0x230) == 0x200000, "bzImage kernel_alignment 0x200000")
    expect(u8(0x234) == 0, "bzImage relocatable_kernel 0")
    expect(u16(0x236) == 0x0001, "bzImage xloadflags XLF_KERNEL_64")
    expect(u32(0x238) == 2047, "bzImage cmdline_size 2047")
    expect(u64(0x258) == 0x100000, "bzImage pref_address 0x100000")
    mem_end = max(p[4] + p[6] for p in loads)
    expect(u32(0x260) == ((mem_end - 0x100000 + 0xFFF) & ~0xFFF), f"bzImage init_size 0x{u32(0x260):x} covers .bss")
    expect(u32(0x1F4) == (len(payload) + 15) // 16, "bzImage syssize = payload / 16 rounded up")


def check_smp(out):
    elf = parse_elf(os.path.join(out, "smp.elf"))
    syms = elf["syms"]
    expect(elf["type"] == 2 and elf["machine"] == 62, "smp.elf is an x86-64 ET_EXEC")
    expect(elf["entry"] == syms.get("pvh_start"), f"smp.elf e_entry 0x{elf['entry']:x} == pvh_start")
    loads = sorted([p for p in elf["phdrs"] if p[0] == 1], key=lambda p: p[4])
    expect(loads[0][4] == 0x100000, f"smp.elf first PT_LOAD p_paddr 0x{loads[0][4]:x} == 0x100000")
    expect(all(p[3] == p[4] for p in loads), "smp.elf PT_LOADs are identity-mapped (p_vaddr == p_paddr)")
    expect(max(p[4] + p[6] for p in loads) <= 0x40000000, "smp.elf ends below 1 GiB")
    n = note_map(elf)
    expect(n.get(6) == b"swiftlet-smp\0", "smp GUEST_OS swiftlet-smp")
    expect(n.get(5) == b"xen-3.0\0", "smp XEN_VERSION xen-3.0")
    expect(n.get(8) == b"generic\0", "smp LOADER generic")
    expect(n.get(18) == struct.pack("<I", syms["pvh_start"]), "smp PHYS32_ENTRY == pvh_start (4 bytes)")
    size = syms["tramp_end"] - syms["tramp_start"]
    expect(0 < size <= 256, f"smp AP trampoline is {size} bytes (copied to 0x8000, at most 256)")


def check_demo(out):
    path = os.path.join(out, "demo.elf")
    elf = parse_elf(path)
    size = len(elf["data"])
    expect(size < 4096, f"demo.elf is {size} bytes (< 4096)")
    loads = sorted([p for p in elf["phdrs"] if p[0] == 1], key=lambda p: p[4])
    expect(loads[0][4] == 0x100000, "demo.elf first PT_LOAD at 0x100000")
    expect(all(p[4] >= 0x100000 for p in loads), "demo.elf loads nothing below 1 MiB")
    n = note_map(elf)
    expect(n.get(6) == b"swiftlet-demo\0", "demo GUEST_OS swiftlet-demo")
    expect(n.get(5) == b"xen-3.0\0", "demo XEN_VERSION xen-3.0")
    expect(n.get(8) == b"generic\0", "demo LOADER generic")
    expect(n.get(18) == struct.pack("<I", elf["entry"]), "demo PHYS32_ENTRY == e_entry")
    swift = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Sources", "DemoGuest",
                         "DemoGuestImage.swift")
    if os.path.exists(swift):
        text = open(swift).read()
        body = text[text.index("public let demoGuestImage: [UInt8] = ["):]
        embedded = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", body))
        expect(embedded == elf["data"], "DemoGuestImage.swift matches demo.elf")


def check_xenvcpu(out):
    elf = parse_elf(os.path.join(out, "xenvcpu.elf"))
    syms = elf["syms"]
    expect(elf["type"] == 2 and elf["machine"] == 62, "xenvcpu.elf is an x86-64 ET_EXEC")
    expect(elf["entry"] == syms.get("xen_start"), f"xenvcpu.elf e_entry 0x{elf['entry']:x} == xen_start")
    loads = sorted([p for p in elf["phdrs"] if p[0] == 1], key=lambda p: p[4])
    expect(loads[0][4] == 0x100000, f"xenvcpu first PT_LOAD p_paddr 0x{loads[0][4]:x} == 0x100000")
    for a, b in zip(loads, loads[1:]):
        expect(a[4] + a[6] == b[4], f"xenvcpu PT_LOAD 0x{a[4]:x}+0x{a[6]:x} is followed directly by 0x{b[4]:x}")
    expect(all(p[3] == p[4] + VIRT_BASE for p in loads), "xenvcpu PT_LOADs: p_vaddr == VIRT_BASE + p_paddr")
    expect(max(p[4] + p[6] for p in loads) <= 0x40000000, "xenvcpu ends below 1 GiB (the VIRT_BASE mapping)")
    n = note_map(elf)
    expect(n.get(6) == b"swiftlet-xenvcpu\0", "xenvcpu GUEST_OS swiftlet-xenvcpu")
    expect(n.get(5) == b"xen-3.0\0", "xenvcpu XEN_VERSION xen-3.0")
    expect(n.get(8) == b"generic\0", "xenvcpu LOADER generic")
    expect(n.get(3) == struct.pack("<Q", VIRT_BASE), "xenvcpu VIRT_BASE 0xffffffff80000000 (8 bytes)")
    expect(n.get(4) == struct.pack("<Q", 0), "xenvcpu PADDR_OFFSET 0 (8 bytes)")
    expect(n.get(1) == struct.pack("<Q", syms["xen_start"]), f"xenvcpu ENTRY == xen_start 0x{syms['xen_start']:x}")
    page = syms["hypercall_page"]
    expect(n.get(2) == struct.pack("<Q", page), f"xenvcpu HYPERCALL_PAGE == hypercall_page 0x{page:x} (8 bytes)")
    expect(page % 4096 == 0, "xenvcpu hypercall page is page-aligned")
    expect(18 not in n, "xenvcpu has no PHYS32_ENTRY (xen64 only)")
    seg = [p for p in loads if p[3] <= page and page + 4096 <= p[3] + p[5]]
    expect(len(seg) == 1, "xenvcpu hypercall page lies in the file-backed part of one PT_LOAD")
    if seg:
        off = seg[0][2] + page - seg[0][3]
        expect(elf["data"][off:off + 4096] == b"\x0f\x0b" * 2048, "xenvcpu hypercall page holds ud2 until the VMM fills it")


def check_xenpvh(out):
    elf = parse_elf(os.path.join(out, "xenpvh.elf"))
    syms = elf["syms"]
    expect(elf["type"] == 2 and elf["machine"] == 62, "xenpvh.elf is an x86-64 ET_EXEC")
    expect(elf["entry"] == syms.get("pvh_start"), f"xenpvh.elf e_entry 0x{elf['entry']:x} == pvh_start")
    loads = sorted([p for p in elf["phdrs"] if p[0] == 1], key=lambda p: p[4])
    expect(loads[0][4] == 0x100000, f"xenpvh first PT_LOAD p_paddr 0x{loads[0][4]:x} == 0x100000")
    expect(all(p[3] == p[4] for p in loads), "xenpvh PT_LOADs are identity-mapped (p_vaddr == p_paddr)")
    n = note_map(elf)
    expect(n.get(6) == b"swiftlet-xenpvh\0", "xenpvh GUEST_OS swiftlet-xenpvh")
    expect(n.get(5) == b"xen-3.0\0", "xenpvh XEN_VERSION xen-3.0")
    expect(n.get(8) == b"generic\0", "xenpvh LOADER generic")
    expect(n.get(18) == struct.pack("<I", syms["pvh_start"]), "xenpvh PHYS32_ENTRY == pvh_start (4 bytes)")
    expect(2 not in n, "xenpvh has no HYPERCALL_PAGE (it installs its pages through the MSR)")
    expect(1 not in n, "xenpvh has no ENTRY (PVH only)")
    feats = n.get(10, b"")
    expect(feats.endswith(b"\0") and len(feats) > 1 and b"!" not in feats,
           "xenpvh FEATURES note present, nothing required (turns --xen auto on)")
    for name in ("hpage32", "hpage64", "hpage_compat", "hpage_bad"):
        expect(syms.get(name, 1) % 4096 == 0, f"xenpvh {name} is page-aligned")


def parse_elf_any(path):
    """ELF32 or ELF64, little-endian: type, machine, entry, PT_LOADs (p_offset, p_paddr, p_filesz, p_memsz), symbols."""
    d = open(path, "rb").read()
    assert d[:4] == b"\x7fELF" and d[5] == 1, f"{path}: not little-endian ELF"
    if d[4] == 1:
        e_type, e_machine, _v, e_entry, e_phoff, e_shoff, _f, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum, _x = \
            struct.unpack_from("<HHIIIIIHHHHHH", d, 16)
        ph = [struct.unpack_from("<IIIIIIII", d, e_phoff + i * e_phentsize) for i in range(e_phnum)]
        loads = [(p[1], p[3], p[4], p[5]) for p in ph if p[0] == 1]
        sh = [struct.unpack_from("<IIIIIIIIII", d, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        symfmt, symsize, valpos = "<IIIBBH", 16, 1
    else:
        e_type, e_machine, _v, e_entry, e_phoff, e_shoff, _f, _eh, e_phentsize, e_phnum, e_shentsize, e_shnum, _x = \
            struct.unpack_from("<HHIQQQIHHHHHH", d, 16)
        ph = [struct.unpack_from("<IIQQQQQQ", d, e_phoff + i * e_phentsize) for i in range(e_phnum)]
        loads = [(p[2], p[4], p[5], p[6]) for p in ph if p[0] == 1]
        sh = [struct.unpack_from("<IIQQQQIIQQ", d, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        symfmt, symsize, valpos = "<IBBHQQ", 24, 4
    syms = {}
    for h in sh:
        if h[1] == 2:  # SHT_SYMTAB
            strtab = sh[h[6]]
            for off in range(h[4], h[4] + h[5], symsize):
                ent = struct.unpack_from(symfmt, d, off)
                name = d[strtab[4] + ent[0]:d.index(b"\0", strtab[4] + ent[0])].decode()
                if name:
                    syms[name] = ent[valpos]
    return dict(data=d, cls=d[4], type=e_type, machine=e_machine, entry=e_entry, loads=sorted(loads, key=lambda p: p[1]),
                syms=syms)


def multiboot_header(data):
    """(offset, magic, flags, checksum, address fields) of the first Multiboot 1 header in the first 8 KiB."""
    for off in range(0, min(len(data), 8192) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == 0x1BADB002 and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off, flags, struct.unpack_from("<IIIII", data, off + 12)
    return None


def loaded_image(elf):
    """The bytes the PT_LOADs put in memory (file part, then zeros), from the lowest p_paddr."""
    lo = elf["loads"][0][1]
    hi = max(p[1] + p[3] for p in elf["loads"])
    mem = bytearray(hi - lo)
    for off, paddr, filesz, _memsz in elf["loads"]:
        mem[paddr - lo:paddr - lo + filesz] = elf["data"][off:off + filesz]
    return lo, bytes(mem)


def check_mboot(out):
    elf = parse_elf_any(os.path.join(out, "mboot.elf"))
    syms = elf["syms"]
    expect(elf["cls"] == 1 and elf["type"] == 2 and elf["machine"] == 3, "mboot.elf is an i386 ELF32 ET_EXEC")
    expect(elf["entry"] == syms.get("mboot_start"), f"mboot.elf e_entry 0x{elf['entry']:x} == mboot_start")
    expect(elf["loads"][0][1] == 0x100000, f"mboot.elf first PT_LOAD p_paddr 0x{elf['loads'][0][1]:x} == 0x100000")
    end = max(p[1] + p[3] for p in elf["loads"])
    expect(end == syms.get("_end"), f"mboot.elf PT_LOADs end at _end 0x{end:x}")
    hdr = multiboot_header(elf["data"])
    expect(hdr is not None, "mboot.elf has a Multiboot header (magic, checksum) 4-byte aligned in its first 8 KiB")
    if hdr:
        off, flags, fields = hdr
        expect(flags == 0x00000003, f"mboot.elf header flags 0x{flags:x} == 0x3 (page-aligned modules, memory info)")
        seg = [p for p in elf["loads"] if p[0] <= off < p[0] + p[2]]
        expect(len(seg) == 1 and seg[0][1] + off - seg[0][0] == syms.get("mb_header") == 0x100000,
               "mboot.elf header is loaded at mb_header = 0x100000")
        expect(fields == (0, 0, 0, 0, 0), "mboot.elf header address fields are 0 (flag 16 clear: ELF program headers)")
    size = syms["tramp_end"] - syms["tramp_start"]
    expect(0 < size <= 256, f"mboot AP trampoline is {size} bytes (copied below 1 MiB, at most 256)")

    aout = parse_elf_any(os.path.join(out, "mboot", "mboot-aout.elf"))
    a = aout["syms"]
    binary = open(os.path.join(out, "mboot-aout.bin"), "rb").read()
    hdr = multiboot_header(binary)
    expect(hdr is not None and hdr[0] == 0, "mboot-aout.bin has its Multiboot header at offset 0")
    if hdr:
        _off, flags, (header_addr, load_addr, load_end, bss_end, entry) = hdr
        expect(flags == 0x00010003, f"mboot-aout.bin header flags 0x{flags:x} == 0x10003 (flag 16: a.out kludge)")
        expect(header_addr == a["mb_header"] == 0x100000, f"mboot-aout.bin header_addr 0x{header_addr:x} == 0x100000")
        expect(load_addr == 0x100000, f"mboot-aout.bin load_addr 0x{load_addr:x} == 0x100000 (file offset 0)")
        expect(load_end - load_addr == len(binary), f"mboot-aout.bin load_end_addr 0x{load_end:x} == load_addr + file size")
        expect(bss_end == a["_end"] and bss_end > load_end, f"mboot-aout.bin bss_end_addr 0x{bss_end:x} == _end")
        expect(entry == a["mboot_start"] == elf["entry"], f"mboot-aout.bin entry_addr 0x{entry:x} == mboot_start")
        lo, mem = loaded_image(aout)
        expect(lo == load_addr and mem[:len(binary)] == binary and not any(mem[len(binary):]),
               "mboot-aout.bin is mboot-aout.elf's loaded image (bss excluded)")
        lo, mem32 = loaded_image(elf)
        expect(mem32[32:len(binary)] == binary[32:] and len(mem32) == bss_end - load_addr,
               "mboot-aout.bin is mboot.elf's image but for the 32-byte header")

    e64 = parse_elf_any(os.path.join(out, "mboot64.elf"))
    expect(e64["cls"] == 2 and e64["type"] == 2 and e64["machine"] == 62, "mboot64.elf is an x86-64 ELF64 ET_EXEC")
    expect(e64["entry"] == elf["entry"], "mboot64.elf e_entry == mboot.elf e_entry")
    expect([p[1:] for p in e64["loads"]] == [p[1:] for p in elf["loads"]], "mboot64.elf has mboot.elf's PT_LOADs")
    expect(loaded_image(e64) == loaded_image(elf), "mboot64.elf loads the same bytes as mboot.elf")
    hdr = multiboot_header(e64["data"])
    expect(hdr is not None and hdr[1] == 0x00000003, "mboot64.elf has the Multiboot header (flags 0x3) in its first 8 KiB")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check_probe(sys.argv[1])
    check_smp(sys.argv[1])
    check_demo(sys.argv[1])
    check_xenvcpu(sys.argv[1])
    check_xenpvh(sys.argv[1])
    check_mboot(sys.argv[1])
    if errors:
        sys.exit(f"{len(errors)} check(s) failed")
    print("all checks passed")


if __name__ == "__main__":
    main()

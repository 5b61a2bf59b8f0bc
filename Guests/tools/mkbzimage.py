#!/usr/bin/env python3
"""Wrap the probe in the Linux bzImage format.

usage: mkbzimage.py probe.elf probe.bin out.bzImage

probe.bin is `objcopy -O binary probe.elf` (the protected-mode part, loaded at 0x100000, with the
64-bit entry at offset 0x200). probe.elf is read only for the in-memory size (init_size). The real-mode
part is one boot sector plus one setup sector (setup_sects = 1) holding the setup header at 0x1F1 and
a stub that halts. Output is a pure function of the inputs.
"""
import struct
import sys

LOAD_ADDR = 0x100000
SETUP_SECTS = 1
HDR_END = 0x26C  # end of the 2.15 setup header (kernel_info_offset is the last field)


def elf_load_extent(path):
    """(lowest p_paddr, highest p_paddr + p_memsz) over the PT_LOAD segments of an ELF64 file."""
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a little-endian ELF64 file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    lo, hi = None, 0
    for i in range(e_phnum):
        p_type, _flags, _off, _vaddr, p_paddr, _filesz, p_memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type != 1:  # PT_LOAD
            continue
        lo = p_paddr if lo is None else min(lo, p_paddr)
        hi = max(hi, p_paddr + p_memsz)
    if lo is None:
        sys.exit(f"{path}: no PT_LOAD segment")
    return lo, hi


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    elf, binary, out = sys.argv[1:]
    lo, hi = elf_load_extent(elf)
    if lo != LOAD_ADDR:
        sys.exit(f"{elf}: lowest PT_LOAD is at 0x{lo:x}, want 0x{LOAD_ADDR:x}")
    payload = open(binary, "rb").read()
    init_size = (max(hi - lo, len(payload)) + 0xFFF) & ~0xFFF

    setup = bytearray((SETUP_SECTS + 1) * 512)
    # Boot sector stub (never run by Swiftlet): cli; hlt; jmp $-1.
    setup[0:4] = bytes([0xFA, 0xF4, 0xEB, 0xFD])

    def put(fmt, off, *vals):
        struct.pack_into("<" + fmt, setup, off, *vals)

    put("B", 0x1F1, SETUP_SECTS)                 # setup_sects
    put("H", 0x1F2, 0)                           # root_flags
    put("I", 0x1F4, (len(payload) + 15) // 16)   # syssize (16-byte paragraphs)
    put("H", 0x1F8, 0)                           # ram_size
    put("H", 0x1FA, 0xFFFF)                      # vid_mode: normal
    put("H", 0x1FC, 0)                           # root_dev
    put("H", 0x1FE, 0xAA55)                      # boot_flag
    put("BB", 0x200, 0xEB, HDR_END - 0x202)      # jump over the header
    put("4s", 0x202, b"HdrS")                    # header
    put("H", 0x206, 0x020F)                      # version 2.15
    put("I", 0x208, 0)                           # realmode_swtch
    put("H", 0x20C, 0x1000)                      # start_sys_seg (obsolete)
    put("H", 0x20E, 0)                           # kernel_version: none
    put("B", 0x210, 0)                           # type_of_loader (the loader writes it)
    put("B", 0x211, 0x01)                        # loadflags: LOADED_HIGH
    put("H", 0x212, 0)                           # setup_move_size
    put("I", 0x214, LOAD_ADDR)                   # code32_start
    put("I", 0x218, 0)                           # ramdisk_image
    put("I", 0x21C, 0)                           # ramdisk_size
    put("I", 0x220, 0)                           # bootsect_kludge
    put("H", 0x224, 0)                           # heap_end_ptr
    put("B", 0x226, 0)                           # ext_loader_ver
    put("B", 0x227, 0)                           # ext_loader_type
    put("I", 0x228, 0)                           # cmd_line_ptr
    put("I", 0x22C, 0x7FFFFFFF)                  # initrd_addr_max
    put("I", 0x230, 0x200000)                    # kernel_alignment
    put("B", 0x234, 0)                           # relocatable_kernel
    put("B", 0x235, 21)                          # min_alignment (log2)
    put("H", 0x236, 0x0001)                      # xloadflags: XLF_KERNEL_64
    put("I", 0x238, 2047)                        # cmdline_size
    put("I", 0x23C, 0)                           # hardware_subarch: PC
    put("Q", 0x240, 0)                           # hardware_subarch_data
    put("I", 0x248, 0)                           # payload_offset
    put("I", 0x24C, 0)                           # payload_length
    put("Q", 0x250, 0)                           # setup_data
    put("Q", 0x258, LOAD_ADDR)                   # pref_address
    put("I", 0x260, init_size)                   # init_size
    put("I", 0x264, 0)                           # handover_offset
    put("I", 0x268, 0)                           # kernel_info_offset
    # Real-mode code after the header (jump target): cli; hlt; jmp $-1.
    setup[HDR_END:HDR_END + 4] = bytes([0xFA, 0xF4, 0xEB, 0xFD])

    with open(out, "wb") as f:
        f.write(bytes(setup))
        f.write(payload)


if __name__ == "__main__":
    main()

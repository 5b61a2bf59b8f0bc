/*
 * The Multiboot 1 header (spec 0.6.96, section 3.1), first thing in the image. Built twice:
 *
 *   header.o       flags 0x00000003: page-aligned modules, memory info; the loader must use the
 *                  ELF program headers (the address fields are 0, i.e. meaningless)
 *   header-aout.o  -DAOUT_KLUDGE, flags 0x00010003: the address fields say where the flat binary
 *                  (objcopy -O binary) goes: header_addr, load_addr, load_end_addr, bss_end_addr,
 *                  entry_addr
 *
 * Both are 32 bytes, so the rest of the kernel is the same code at the same addresses.
 */
#include "layout.h"

#ifdef AOUT_KLUDGE
#define MB_FLAGS (MB_HEADER_PAGE_ALIGN | MB_HEADER_MEMORY_INFO | MB_HEADER_AOUT_KLUDGE)
#else
#define MB_FLAGS (MB_HEADER_PAGE_ALIGN | MB_HEADER_MEMORY_INFO)
#endif

        .section .mbheader, "a"
        .balign 4
        .globl mb_header
mb_header:
        .long MB_HEADER_MAGIC
        .long MB_FLAGS
        .long -(MB_HEADER_MAGIC + MB_FLAGS)     /* checksum: the three add up to 0 */
#ifdef AOUT_KLUDGE
        .long mb_header                         /* header_addr: where this header is loaded */
        .long _image_start                      /* load_addr: file offset 0 goes here */
        .long _load_end                         /* load_end_addr: end of .data */
        .long _end                              /* bss_end_addr: the loader zeroes up to here */
        .long mboot_start                       /* entry_addr */
#else
        .long 0, 0, 0, 0, 0
#endif

        .section .note.GNU-stack, "", @progbits

/* Swiftlet Multiboot guest: constants shared by entry.S, header.S and the C code. */
#ifndef MBOOT_LAYOUT_H
#define MBOOT_LAYOUT_H

#define KCODE 0x08 /* GDT selectors: flat 32-bit code, flat data */
#define KDATA 0x10

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_HEADER_PAGE_ALIGN 0x00000001 /* modules page-aligned */
#define MB_HEADER_MEMORY_INFO 0x00000002 /* mem_* (and mmap_* if there is one) */
#define MB_HEADER_AOUT_KLUDGE 0x00010000 /* header address fields are valid */

#define MAX_APS 256          /* AP arrival slots: APIC ID, 1 KiB stack each */
#define AP_STACK_SHIFT 10
#define BSP_STACK_SIZE 16384

#define EXIT_PORT 0xf4 /* isa-debug-exit: status (code << 1) | 1 */
#define EXIT_FAILURE_CODE 0x55

#endif

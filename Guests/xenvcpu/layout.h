/* Swiftlet xenvcpu guest: constants shared by entry.S and the C code. */
#ifndef XENVCPU_LAYOUT_H
#define XENVCPU_LAYOUT_H

#define VIRT_BASE 0xffffffff80000000
#define PA(x) ((x) - VIRT_BASE)

/* Our GDT uses the selectors of Swiftlet's boot GDT, so nothing changes when an AP loads it. */
#define KCODE32 0x08
#define KCODE64 0x10
#define KDATA 0x18

#define MAX_VCPUS 256
#define AP_STACK_SIZE 16384
#define BOOT_STACK_SIZE 16384

/* Extra mappings for the -EFAULT checks (see entry.S). */
#define EDGE_VA 0x0000008000000000      /* one 4 KiB page (edge_page); the next page is unmapped */
#define TOP_VA 0xffffffffffe00000       /* the top 2 MiB of the address space -> physical 0 */
#define UNMAPPED_VA 0x0000400000000000  /* canonical, nothing mapped there */

#endif

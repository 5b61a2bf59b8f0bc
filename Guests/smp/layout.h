/* Swiftlet SMP guest: constants shared by entry.S and the C code. */
#ifndef SMP_LAYOUT_H
#define SMP_LAYOUT_H

#define KCODE64 0x08 /* GDT selectors */
#define KDATA 0x10
#define KCODE32 0x18

#define MAX_CPUS 256         /* APIC IDs 0..255 */
#define TRAMPOLINE 0x8000    /* real-mode AP entry, SIPI vector 0x08 */
#define AP_STACK_SHIFT 10    /* 1 KiB per AP (ap_main uses a few hundred bytes) */
#define AP_STACKS 512        /* one per arrival: every AP, plus re-arrivals after a broadcast INIT */
#define BSP_STACK_SIZE 16384

#endif

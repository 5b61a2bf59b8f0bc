/* Swiftlet SMP guest: shared declarations. */
#ifndef SMP_H
#define SMP_H

#include "layout.h"
#include "lib.h" /* Guests/common: port I/O, console, checks, poweroff */

#define LAPIC_BASE 0xfee00000UL
#define IOAPIC_BASE 0xfec00000UL
#define TABLE_LIMIT 0xc0000000UL /* tables must lie below the 32-bit MMIO hole */
#define MAX_LISTED 512           /* processor entries read from a table */

/* What one CPU saw of itself, written by that CPU when it checks in. */
struct cpu_info {
    uint32_t topo_core_ebx, topo_core_edx, topo_core_eax; /* CPUID.0xB.1 */
    uint32_t topo_end_ecx;                                /* CPUID.0xB.2 ECX */
    uint32_t apic_id;                    /* read from its local APIC */
    uint32_t eax, ebx, ecx, edx;         /* CPUID.1 */
    uint64_t apic_base;                  /* IA32_APIC_BASE before x2APIC was enabled */
};
extern struct cpu_info cpu_info[MAX_CPUS];
int cpu_online(uint32_t id);

/* The CPUs a table lists, in table order. */
struct discovery {
    int ok;                              /* found and usable for waking CPUs */
    uint32_t n;                          /* processor entries */
    uint32_t ids[MAX_LISTED];
    uint8_t enabled[MAX_LISTED];
};

int mptable_discover(uint32_t bsp_id, struct discovery *d);
void mptable_cpuid_checks(void);
int madt_discover(uint32_t bsp_id, uint64_t rsdp_paddr, struct discovery *d);

/* ---- physical memory (identity-mapped below 4 GiB) ---- */
static inline uint8_t rd8(uint64_t a) { return *(const volatile uint8_t *)a; }
static inline uint16_t rd16(uint64_t a) { return *(const volatile uint16_t *)a; }
static inline uint32_t rd32(uint64_t a) { return *(const volatile uint32_t *)a; }
static inline uint64_t rd64(uint64_t a) { return *(const volatile uint64_t *)a; }
uint8_t sum8(uint64_t a, uint64_t n);
int mem_is(uint64_t a, const void *s, size_t n);
const char *show(uint64_t a, size_t n); /* "'text'" with \xNN escapes; a few rotating buffers */
int table_ok(uint64_t a, uint64_t n);  /* [a, a+n) is a plausible table address range */

#endif

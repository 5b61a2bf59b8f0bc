/* Swiftlet probe: shared declarations. */
#ifndef PROBE_H
#define PROBE_H

#include "lib.h" /* Guests/common: port I/O, console, checks, poweroff */

#define VIRT_BASE 0xffffffff80000000UL
#define MAPPED_LIMIT (8UL << 30) /* our identity map covers [0, 8 GiB) */
#define HIGH_MAP_SIZE (1UL << 30) /* VIRT_BASE maps [0, 1 GiB) */

#define PROTO_PVH 1
#define PROTO_XEN64 2
#define PROTO_LINUX 3

/* ---- state saved by the entry stubs (entry.S, all 64-bit slots in .data) ---- */
extern uint64_t st_protocol, st_bx, st_si, st_sp, st_ax, st_flags;
extern uint64_t st_cr0, st_cr3, st_cr4, st_efer, st_fsbase, st_gsbase, st_kgsbase;
extern uint64_t st_cs, st_ds, st_es, st_ss, st_fs, st_gs, st_tr;
extern uint8_t st_gdtr[16], st_idtr[16];
extern uint64_t st_stack_bad, st_call_returned;

/* A segment descriptor looked up in the GDT saved at entry, decoded the way lar/lsl report it. */
struct seg_info {
    uint64_t desc;  /* the 8-byte descriptor */
    uint64_t ar;    /* access rights as lar returns them: (desc >> 32) & 0x00f0ff00 */
    uint64_t limit; /* byte-granular limit as lsl returns it */
    uint64_t base;  /* 32-bit base */
    uint64_t gdt_base, gdt_limit;
};
int seg_lookup(uint64_t sel, struct seg_info *si, const char **why);
#define AR_W_R (1u << 9) /* data: writable / code: readable */
#define AR_CODE (1u << 11)
#define AR_S (1u << 12)
#define AR_DPL (3u << 13)
#define AR_P (1u << 15)
#define AR_L (1u << 21)
#define AR_DB (1u << 22)
#define AR_TYPE (0xfu << 8)
#define AR_CODE64_MASK (AR_DB | AR_L | AR_P | AR_S | AR_CODE)
#define AR_CODE64_WANT (AR_L | AR_P | AR_S | AR_CODE)

/* linker-script symbols */
extern char _image_start[], _end[], _bss_zero_start[], _bss_end[];
extern char isr_stubs[];

/* ---- memory map and what the entry-specific code found ---- */
#define MAX_MAP 128
#define MAX_EXCL 24

struct mrange {
    uint64_t addr, size;
    uint32_t type;
};

struct boot_info {
    int proto;
    struct mrange map[MAX_MAP];
    int nmap;
    const char *cmdline; /* identity/virtual pointer to the bytes, NULL = none */
    uint64_t cmdline_len;
    uint64_t initrd_size;
    uint32_t initrd_fnv;
    int have_rsdp, have_nr_pages, have_boot_version;
    uint64_t rsdp, nr_pages, boot_version;
    struct mrange excl[MAX_EXCL]; /* physical ranges the memory test must not touch */
    int nexcl;
};
extern struct boot_info bi;

/* ---- main.c ---- */
void idt_install(void);
void map_add(uint64_t addr, uint64_t size, uint32_t type);
void excl_add(uint64_t addr, uint64_t size);
int range_in_ram(uint64_t addr, uint64_t len);
int mapped(uint64_t addr, uint64_t len);
int cstr_in_ram(uint64_t addr, uint64_t maxlen, uint64_t *lenp);
int cstr_mapped(uint64_t addr, uint64_t maxlen, uint64_t *lenp);
int initrd_take(uint64_t addr, uint64_t size);
void probe_main(int proto);
extern int first_line_printed;
NORETURN void exception_handler(uint64_t vector, uint64_t error, uint64_t rip);

/* ---- per protocol ---- */
void pvh_checks(void);
void xen64_checks(void);
void xen64_early(void);
void linux_checks(void);
int linux_is_bzimage(void);

#endif

/* Swiftlet probe: PVH entry checks (state saved by pvh_start in 32-bit protected mode). */
#include "probe.h"

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info is 56 bytes");

struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_table_entry is 24 bytes");

#define HVM_START_MAGIC 0x336ec578u
#define MAX_MODULES 16

enum seg_kind { SEG_CODE, SEG_DATA, SEG_TSS };

static void seg_checks(const char *seg, uint64_t sel, enum seg_kind kind)
{
    char n_type[32], n_limit[32], n_base[32];
    ksnprintf(n_type, sizeof n_type, "pvh-%s-type", seg);
    ksnprintf(n_limit, sizeof n_limit, "pvh-%s-limit", seg);
    ksnprintf(n_base, sizeof n_base, "pvh-%s-base", seg);

    uint64_t mask, want;
    switch (kind) {
    case SEG_CODE: /* present, S, code, readable, DPL 0, D=1, L=0 */
        mask = AR_P | AR_S | AR_CODE | AR_W_R | AR_DPL | AR_DB | AR_L;
        want = AR_P | AR_S | AR_CODE | AR_W_R | AR_DB;
        break;
    case SEG_DATA: /* present, S, data, writable, DPL 0, B=1 */
        mask = AR_P | AR_S | AR_CODE | AR_W_R | AR_DPL | AR_DB;
        want = AR_P | AR_S | AR_W_R | AR_DB;
        break;
    default: /* present, system, busy 32-bit TSS */
        mask = AR_P | AR_S | AR_TYPE;
        want = AR_P | (0xbu << 8);
        break;
    }
    struct seg_info si;
    const char *why = "";
    if (!seg_lookup(sel, &si, &why)) {
        fail(n_type, "selector 0x%lx: %s (GDT base 0x%lx limit 0x%lx)", sel, why, si.gdt_base, si.gdt_limit);
        fail(n_limit, "selector 0x%lx: %s", sel, why);
        fail(n_base, "selector 0x%lx: %s", sel, why);
        return;
    }
    check((si.ar & mask) == want, n_type, "selector 0x%lx access rights 0x%lx want 0x%lx under mask 0x%lx (descriptor 0x%016lx)",
          sel, si.ar, want, mask, si.desc);
    check_eq(n_limit, si.limit, kind == SEG_TSS ? 0x67 : 0xffffffffu);
    check_eq(n_base, si.base, 0);
}

void pvh_checks(void)
{
    check(((st_cr0 & 0xffffffffu) & ~0x10UL) == 1, "pvh-cr0", "got 0x%lx want 0x1 (ET ignored)", st_cr0);
    check_eq("pvh-cr4", st_cr4 & 0xffffffffu, 0);
    check_mask("pvh-eflags", st_flags & 0xffffffffu, (1u << 17) | (1u << 9) | (1u << 8), 0);
    seg_checks("cs", st_cs, SEG_CODE);
    seg_checks("ds", st_ds, SEG_DATA);
    seg_checks("es", st_es, SEG_DATA);
    seg_checks("ss", st_ss, SEG_DATA);
    check(st_tr != 0, "pvh-tr-selector", "got 0x%lx want non-zero", st_tr);
    seg_checks("tr", st_tr, SEG_TSS);

    bi.have_rsdp = 1;
    uint64_t sip = st_bx & 0xffffffffu;
    if (!check(sip != 0, "pvh-start-info-addr", "ebx is 0"))
        return;
    struct hvm_start_info s;
    memcpy(&s, (const void *)sip, sizeof s);
    excl_add(sip, sizeof s);
    check_eq("pvh-start-info-magic", s.magic, HVM_START_MAGIC);
    check_eq("pvh-start-info-version", s.version, 1);
    check_eq("pvh-start-info-flags", s.flags, 0);
    check_eq("pvh-start-info-reserved", s.reserved, 0);
    bi.rsdp = s.rsdp_paddr;

    /* memory map */
    uint64_t mm_bytes = 0;
    int mm_ok = check(s.memmap_paddr != 0 && s.memmap_entries > 0, "pvh-memmap-present",
                      "memmap_paddr 0x%lx memmap_entries %u", s.memmap_paddr, s.memmap_entries);
    if (mm_ok) {
        uint32_t n = s.memmap_entries;
        check(n <= MAX_MAP, "pvh-memmap-count", "%u entries, the probe reads at most %d", n, MAX_MAP);
        if (n > MAX_MAP)
            n = MAX_MAP;
        mm_bytes = (uint64_t)n * sizeof(struct hvm_memmap_entry);
        if (!mapped(s.memmap_paddr, mm_bytes)) {
            fail("pvh-memmap-sorted", "memmap at 0x%lx is not below 8 GiB", s.memmap_paddr);
            mm_ok = 0;
        } else {
            const struct hvm_memmap_entry *e = (const struct hvm_memmap_entry *)s.memmap_paddr;
            int bad_type = -1, bad_res = -1, bad_order = -1;
            for (uint32_t i = 0; i < n; i++) {
                struct hvm_memmap_entry m;
                memcpy(&m, &e[i], sizeof m);
                map_add(m.addr, m.size, m.type);
                if (bad_type < 0 && (m.type < 1 || m.type > 7))
                    bad_type = (int)i;
                if (bad_res < 0 && m.reserved != 0)
                    bad_res = (int)i;
                if (bad_order < 0 && i > 0) {
                    const struct mrange *p = &bi.map[i - 1];
                    if (p->addr + p->size < p->addr || m.addr < p->addr + p->size)
                        bad_order = (int)i;
                }
            }
            if (bad_order < 0)
                ok("pvh-memmap-sorted");
            else
                fail("pvh-memmap-sorted", "entry %d at 0x%lx starts before entry %d ends at 0x%lx", bad_order,
                     bi.map[bad_order].addr, bad_order - 1, bi.map[bad_order - 1].addr + bi.map[bad_order - 1].size);
            if (bad_type < 0)
                ok("pvh-memmap-types");
            else
                fail("pvh-memmap-types", "entry %d type %u not in 1..7", bad_type, bi.map[bad_type].type);
            if (bad_res < 0)
                ok("pvh-memmap-reserved");
            else
                fail("pvh-memmap-reserved", "entry %d reserved 0x%x want 0x0", bad_res,
                     ((const struct hvm_memmap_entry *)s.memmap_paddr)[bad_res].reserved);
            excl_add(s.memmap_paddr, mm_bytes);
        }
    }

    check(range_in_ram(sip, sizeof s), "pvh-start-info-in-ram", "0x%lx+0x38 is not inside RAM", sip);
    if (mm_ok)
        check(range_in_ram(s.memmap_paddr, mm_bytes), "pvh-memmap-in-ram", "0x%lx+0x%lx is not inside RAM",
              s.memmap_paddr, mm_bytes);

    /* command line */
    if (s.cmdline_paddr == 0) {
        ok_note("pvh-cmdline", "none");
    } else {
        uint64_t len = 0;
        /* Even when it is not inside RAM, a readable string is still used for the facts and actions. */
        if (check(cstr_in_ram(s.cmdline_paddr, 1UL << 20, &len), "pvh-cmdline",
                  "no NUL-terminated string inside RAM at 0x%lx", s.cmdline_paddr) ||
            cstr_mapped(s.cmdline_paddr, 1UL << 16, &len)) {
            bi.cmdline = (const char *)s.cmdline_paddr;
            bi.cmdline_len = len;
            excl_add(s.cmdline_paddr, len + 1);
        }
    }

    /* modules; module 0 is the initrd */
    check(s.nr_modules == 0 || s.modlist_paddr != 0, "pvh-modlist", "nr_modules %u with modlist_paddr 0",
          s.nr_modules);
    if (s.nr_modules == 0 || s.modlist_paddr == 0) {
        ok_note("pvh-modlist-in-ram", "no modules");
        return;
    }
    uint64_t ml_bytes = (uint64_t)s.nr_modules * sizeof(struct hvm_modlist_entry);
    if (!check(range_in_ram(s.modlist_paddr, ml_bytes) && mapped(s.modlist_paddr, ml_bytes), "pvh-modlist-in-ram",
               "0x%lx+0x%lx is not inside RAM", s.modlist_paddr, ml_bytes))
        return;
    excl_add(s.modlist_paddr, ml_bytes);
    const struct hvm_modlist_entry *ml = (const struct hvm_modlist_entry *)s.modlist_paddr;
    for (uint32_t i = 0; i < s.nr_modules && i < MAX_MODULES; i++) {
        struct hvm_modlist_entry m;
        char name[32];
        memcpy(&m, &ml[i], sizeof m);
        ksnprintf(name, sizeof name, "pvh-module-%u", i);
        int good = m.paddr != 0 && range_in_ram(m.paddr, m.size) && mapped(m.paddr, m.size);
        check(good, name, "paddr 0x%lx size 0x%lx is not inside RAM", m.paddr, m.size);
        if (i == 0 && good)
            initrd_take(m.paddr, m.size);
        else if (good)
            excl_add(m.paddr, m.size);
    }
}

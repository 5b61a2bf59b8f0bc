/* Swiftlet probe: Xen 64-bit entry (start_info in RSI, VMM page tables live at entry). */
#include "probe.h"
#include "xenstart.h"

_Static_assert(offsetof(struct xen_start_info, console_mfn) == 72, "console at 72");
_Static_assert(offsetof(struct xen_start_info, pt_base) == 88, "pt_base at 88");
_Static_assert(offsetof(struct xen_start_info, cmd_line) == 128, "cmd_line at 128");
_Static_assert(offsetof(struct xen_start_info, first_p2m_pfn) == 1152, "first_p2m_pfn at 1152");

#define LOW_RAM_END 0x9fc00UL
#define HIGH_RAM_START 0x100000UL
#define HOLE_START 0xc0000000UL
#define FOUR_GIB 0x100000000UL

/* What xen64_early found while the VMM's page tables were live (in .data: .bss is not ours yet). */
static struct {
    int rsi_high;
    int high_mapped, ident_mapped;
    uint64_t map_bad;
    int page_same;
    uint64_t page_diff_at;
    int copied;
    int initrd_summed;
    uint32_t initrd_fnv;
    const char *initrd_problem;
    uint64_t initrd_bad_va;
    struct xen_start_info si;
} xe DATA;

/* Swiftlet's RAM layout for size bytes (Xen PV has no memory map in start_info). */
static void xen_ram_map(uint64_t size, void (*add)(uint64_t, uint64_t, uint32_t))
{
    add(0, size < LOW_RAM_END ? size : LOW_RAM_END, 1);
    add(LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, 2);
    if (size > HIGH_RAM_START)
        add(HIGH_RAM_START, (size < HOLE_START ? size : HOLE_START) - HIGH_RAM_START, 1);
    if (size > HOLE_START)
        add(FOUR_GIB, size - HOLE_START, 1);
}

static int xen_ram_contains(uint64_t size, uint64_t a, uint64_t len)
{
    uint64_t e = a + len;
    if (e < a)
        return 0;
    uint64_t low_end = size < LOW_RAM_END ? size : LOW_RAM_END;
    uint64_t mid_end = size < HOLE_START ? size : HOLE_START;
    if (e <= low_end)
        return 1;
    if (a >= HIGH_RAM_START && e <= mid_end)
        return 1;
    if (size > HOLE_START && a >= FOUR_GIB && e <= FOUR_GIB + (size - HOLE_START))
        return 1;
    return 0;
}

static int nul_within(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == 0)
            return 1;
    return 0;
}

/*
 * Translate va through the VMM's page tables (CR3 at entry), reading the tables through the identity
 * map of low memory. Returns 1 and the physical address, and the end of the page that maps va.
 */
static int vmm_translate(uint64_t va, uint64_t *pa, uint64_t *page_end)
{
    const uint64_t addr_mask = 0x000ffffffffff000UL;
    uint64_t table = st_cr3 & addr_mask;
    for (int level = 0; level < 4; level++) {
        int shift = 39 - 9 * level;
        if (table >= FOUR_GIB)
            return 0; /* not in low memory: do not follow */
        uint64_t e = ((const volatile uint64_t *)table)[(va >> shift) & 511];
        if (!(e & 1))
            return 0;
        if (level == 3 || ((level == 1 || level == 2) && (e & 0x80))) {
            uint64_t size = 1UL << shift;
            *pa = ((e & addr_mask) & ~(size - 1)) | (va & (size - 1));
            *page_end = (va | (size - 1)) + 1;
            return 1;
        }
        table = e & addr_mask;
    }
    return 0;
}

/* Is [va, va+len) mapped by the VMM's tables to [pa, pa+len)? On failure *bad is the first bad va. */
static int vmm_maps(uint64_t va, uint64_t pa, uint64_t len, uint64_t *bad)
{
    uint64_t a = va;
    while (a < va + len) {
        uint64_t got, end;
        if (!vmm_translate(a, &got, &end) || got != pa + (a - va)) {
            *bad = a;
            return 0;
        }
        if (end <= a)
            break; /* wrapped at the top of the address space */
        a = end;
    }
    return 1;
}

/* Called from xen64_start on the VMM's stack and page tables, after our GDT is loaded. */
void xen64_early(void)
{
    print("probe: entered via xen64\n");
    first_line_printed = 1;
    idt_install(); /* any fault from here on is reported */

    uint64_t rsi = st_si;
    xe.rsi_high = rsi >= VIRT_BASE;
    if (!xe.rsi_high)
        return;
    uint64_t x = rsi - VIRT_BASE;
    uint64_t start = x & ~0xfffUL, end = (x + sizeof(struct xen_start_info) + 0xfff) & ~0xfffUL;

    /* Both VIRT_BASE + x and identity x must map to physical x ... */
    uint64_t bad = 0;
    xe.high_mapped = vmm_maps(VIRT_BASE + start, start, end - start, &bad);
    if (!xe.high_mapped)
        xe.map_bad = bad;
    xe.ident_mapped = vmm_maps(start, start, end - start, &bad);
    if (!xe.ident_mapped && xe.high_mapped)
        xe.map_bad = bad;
    if (!xe.high_mapped)
        return;

    /* ... and read the same bytes. */
    if (xe.ident_mapped) {
        xe.page_same = 1;
        for (uint64_t a = start; a < end; a += 8) {
            uint64_t hi = *(const volatile uint64_t *)(VIRT_BASE + a);
            uint64_t lo = *(const volatile uint64_t *)a;
            if (hi != lo) {
                xe.page_same = 0;
                xe.page_diff_at = a;
                break;
            }
        }
    }

    memcpy(&xe.si, (const void *)rsi, sizeof xe.si);
    xe.copied = 1;

    /* Checksum the initrd through its virtual address while that mapping is the VMM's. */
    const struct xen_start_info *si = &xe.si;
    if ((si->mod_start || si->mod_len) && si->mod_start < VIRT_BASE) {
        xe.initrd_problem = "is below VIRT_BASE, not a virtual address";
    } else if (si->mod_len) {
        uint64_t rd = si->mod_start - VIRT_BASE;
        if (!xen_ram_contains(si->nr_pages * 4096, rd, si->mod_len)) {
            xe.initrd_problem = "is not inside RAM";
        } else if (!vmm_maps(si->mod_start, rd, si->mod_len, &xe.initrd_bad_va)) {
            xe.initrd_problem = "is not mapped to mod_start - VIRT_BASE by the entry page tables";
        } else {
            xe.initrd_fnv = fnv1a((const volatile uint8_t *)si->mod_start, si->mod_len, FNV_BASIS);
            xe.initrd_summed = 1;
        }
    }
}

void xen64_checks(void)
{
    check_eq("xen64-cr0", st_cr0, 0x80000011);
    check_eq("xen64-cr4", st_cr4, 0x20);
    check_eq("xen64-efer", st_efer, 0x500);
    check_eq("xen64-fs-base", st_fsbase, 0);
    check_eq("xen64-gs-base", st_gsbase, 0);
    check_eq("xen64-kernel-gs-base", st_kgsbase, 0);
    struct seg_info cs;
    const char *why = "";
    if (seg_lookup(st_cs, &cs, &why))
        check((cs.ar & AR_CODE64_MASK) == AR_CODE64_WANT, "xen64-cs-type",
              "selector 0x%lx access rights 0x%lx want 0x%x under mask 0x%x (descriptor 0x%016lx)", st_cs, cs.ar,
              AR_CODE64_WANT, AR_CODE64_MASK, cs.desc);
    else
        fail("xen64-cs-type", "selector 0x%lx: %s (GDT base 0x%lx limit 0x%lx)", st_cs, why, cs.gdt_base, cs.gdt_limit);
    check_eq("xen64-cs-rpl", st_cs & 3, 0);
    check_eq("xen64-ss-rpl", st_ss & 3, 0);
    check_eq("xen64-ds-rpl", st_ds & 3, 0);
    check_eq("xen64-es-rpl", st_es & 3, 0);
    check(((st_sp & 15) == 0), "xen64-rsp-aligned", "got rsp 0x%lx want 16-byte aligned", st_sp);
    check(st_stack_bad == 0, "xen64-stack-rw", "%lu of 512 qwords below rsp 0x%lx read back wrong", st_stack_bad,
          st_sp);
    check(st_call_returned == 1, "xen64-call", "call on the entry stack did not return");
    uint64_t sp_phys = st_sp >= VIRT_BASE ? st_sp - VIRT_BASE : st_sp;
    excl_add(sp_phys - 4096, 4096);

    if (!check(xe.rsi_high, "xen64-rsi-virtual", "got rsi 0x%lx want >= 0x%lx", st_si, VIRT_BASE))
        return;
    uint64_t x = st_si - VIRT_BASE;
    if (!xe.high_mapped || !xe.ident_mapped)
        fail("xen64-start-info-mapping", "start_info page: 0x%lx is not mapped to 0x%lx by the entry page tables (cr3 0x%lx)",
             xe.map_bad, xe.map_bad & (HIGH_MAP_SIZE - 1) & ~0xfffUL, st_cr3);
    else
        check(xe.page_same, "xen64-start-info-mapping", "qword at 0x%lx differs between VIRT_BASE+x and identity x",
              xe.page_diff_at);
    if (!xe.copied)
        return;

    const struct xen_start_info *si = &xe.si;
    check(memcmp(si->magic, "xen-3.0-x86_64", 15) == 0, "xen64-start-info-magic",
          "got \"%s\" want \"xen-3.0-x86_64\"",
          nul_within(si->magic, sizeof si->magic) ? si->magic : "(not NUL-terminated)");
    check(si->nr_pages > 0, "xen64-nr-pages", "got 0 want > 0");
    bi.have_nr_pages = 1;
    bi.nr_pages = si->nr_pages;
    xen_ram_map(si->nr_pages * 4096, map_add);

    check_eq("xen64-shared-info", si->shared_info, 0);
    check_eq("xen64-flags", si->flags, 0);
    check_eq("xen64-store-mfn", si->store_mfn, 0);
    check_eq("xen64-store-evtchn", si->store_evtchn, 0);
    check_eq("xen64-console-mfn", si->console_mfn, 0);
    check_eq("xen64-console-evtchn", si->console_evtchn, 0);
    check(si->pt_base - VIRT_BASE == (st_cr3 & ~0xfffUL), "xen64-pt-base", "pt_base 0x%lx cr3 0x%lx want pt_base = VIRT_BASE + (cr3 & ~0xfff)",
          si->pt_base, st_cr3);
    check(si->nr_pt_frames >= 1, "xen64-nr-pt-frames", "got 0 want >= 1");
    check_eq("xen64-mfn-list", si->mfn_list, 0);
    check(si->first_p2m_pfn == 0 && si->nr_p2m_frames == 0, "xen64-p2m",
          "first_p2m_pfn 0x%lx nr_p2m_frames 0x%lx want 0 0", si->first_p2m_pfn, si->nr_p2m_frames);
    check(range_in_ram(x, sizeof *si), "xen64-start-info-in-ram", "0x%lx+0x%lx is not inside RAM", x,
          (uint64_t)sizeof *si);
    excl_add(x & ~0xfffUL, 8192);
    uint64_t ptf = si->nr_pt_frames < 64 ? si->nr_pt_frames : 64;
    excl_add(st_cr3 & ~0xfffUL, ptf * 4096);

    /* initrd: virtual address and length, checksummed through the virtual address at entry */
    if (si->mod_start == 0 && si->mod_len == 0) {
        ok_note("xen64-initrd", "none");
    } else if (check(si->mod_start >= VIRT_BASE && si->mod_len && xe.initrd_summed, "xen64-initrd",
                     "mod_start 0x%lx mod_len 0x%lx %s (at 0x%lx)", si->mod_start, si->mod_len,
                     xe.initrd_problem ? xe.initrd_problem : "want the virtual address of RAM", xe.initrd_bad_va)) {
        bi.initrd_size = si->mod_len;
        bi.initrd_fnv = xe.initrd_fnv;
        excl_add(si->mod_start - VIRT_BASE, si->mod_len);
    }

    /* command line: NUL-terminated within its 1024 bytes */
    uint64_t len = 0;
    while (len < sizeof si->cmd_line && si->cmd_line[len])
        len++;
    if (check(len < sizeof si->cmd_line, "xen64-cmdline", "no NUL in the 1024 bytes of cmd_line")) {
        bi.cmdline = si->cmd_line;
        bi.cmdline_len = len;
    }
}

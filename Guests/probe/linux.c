/* Swiftlet probe: Linux 64-bit boot protocol entry (RSI = struct boot_params, physical). */
#include "probe.h"

#define ZP8(off) (*(const volatile uint8_t *)(zp + (off)))
#define ZP16(off) (*(const volatile uint16_t *)(zp + (off)))
#define ZP32(off) (*(const volatile uint32_t *)(zp + (off)))
#define ZP64(off) (*(const volatile uint64_t *)(zp + (off)))

#define E820_MAX 128
#define E820_TABLE 0x2d0
#define E820_ENTRY_SIZE 20

/* A bzImage's header is copied into the zero page (version 0x020F, setup_sects != 0);
 * for an ELF kernel the VMM writes a zeroed header with version 0x020C. */
int linux_is_bzimage(void)
{
    uint64_t zp = st_si;
    if (zp == 0 || !mapped(zp, 4096))
        return 0;
    return ZP16(0x206) == 0x020f && ZP8(0x1f1) != 0;
}

void linux_checks(void)
{
    check_mask("linux-cr0", st_cr0, 0x80000001UL, 0x80000001UL);
    check_mask("linux-cr4", st_cr4, 0x20, 0x20);
    check_mask("linux-efer", st_efer, 0x500, 0x500);
    check_mask("linux-rflags-if", st_flags, 0x200, 0);
    check_eq("linux-cs-selector", st_cs, 0x10);
    struct seg_info cs;
    const char *why = "";
    if (seg_lookup(st_cs, &cs, &why))
        check((cs.ar & AR_CODE64_MASK) == AR_CODE64_WANT, "linux-cs-type",
              "selector 0x%lx access rights 0x%lx want 0x%x under mask 0x%x (descriptor 0x%016lx)", st_cs, cs.ar,
              AR_CODE64_WANT, AR_CODE64_MASK, cs.desc);
    else
        fail("linux-cs-type", "selector 0x%lx: %s (GDT base 0x%lx limit 0x%lx)", st_cs, why, cs.gdt_base, cs.gdt_limit);
    check_eq("linux-ds-selector", st_ds, 0x18);
    check_eq("linux-es-selector", st_es, 0x18);
    check_eq("linux-ss-selector", st_ss, 0x18);

    uint64_t zp = st_si;
    if (!check(zp != 0 && mapped(zp, 4096), "linux-zero-page-addr", "rsi 0x%lx is not a boot_params address", zp))
        return;
    excl_add(zp, 4096);

    /* e820 first: the other in-RAM checks need it */
    uint8_t n = ZP8(0x1e8);
    check(n >= 1 && n <= E820_MAX, "linux-e820-entries", "got %u want 1..128", n);
    int bad_order = -1;
    for (int i = 0; i < n && i < E820_MAX; i++) {
        uint64_t base = zp + E820_TABLE + (uint64_t)i * E820_ENTRY_SIZE;
        uint64_t addr, size;
        uint32_t type;
        memcpy(&addr, (const void *)base, 8);
        memcpy(&size, (const void *)(base + 8), 8);
        memcpy(&type, (const void *)(base + 16), 4);
        map_add(addr, size, type);
        if (bad_order < 0 && i > 0) {
            const struct mrange *p = &bi.map[i - 1];
            if (p->addr + p->size < p->addr || addr < p->addr + p->size)
                bad_order = i;
        }
    }
    if (n >= 1) {
        if (bad_order < 0)
            ok("linux-e820-sorted");
        else
            fail("linux-e820-sorted", "entry %d at 0x%lx starts before entry %d ends at 0x%lx", bad_order,
                 bi.map[bad_order].addr, bad_order - 1, bi.map[bad_order - 1].addr + bi.map[bad_order - 1].size);
    }
    check(range_in_ram(zp, 4096), "linux-zero-page-in-ram", "0x%lx+0x1000 is not inside RAM", zp);

    check_eq("linux-boot-flag", ZP16(0x1fe), 0xaa55);
    check_eq("linux-header", ZP32(0x202), 0x53726448);
    check_eq("linux-type-of-loader", ZP8(0x210), 0xff);
    check_eq("linux-sentinel", ZP8(0x1ef), 0);
    bi.have_boot_version = 1;
    bi.boot_version = ZP16(0x206);
    bi.have_rsdp = 1;
    bi.rsdp = ZP64(0x70);

    uint64_t cmd = ZP32(0x228) | ((uint64_t)ZP32(0xc8) << 32);
    uint64_t len = 0;
    if (check(cmd != 0 && cstr_in_ram(cmd, 1UL << 20, &len), "linux-cmdline",
              "cmd_line_ptr 0x%lx is not a NUL-terminated string inside RAM", cmd) ||
        cstr_mapped(cmd, 1UL << 16, &len)) {
        bi.cmdline = (const char *)cmd;
        bi.cmdline_len = len;
        excl_add(cmd, len + 1);
    }

    uint64_t rd = ZP32(0x218) | ((uint64_t)ZP32(0xc0) << 32);
    uint64_t rd_size = ZP32(0x21c) | ((uint64_t)ZP32(0xc4) << 32);
    if (rd == 0 && rd_size == 0)
        ok_note("linux-initrd", "none");
    else
        check(initrd_take(rd, rd_size), "linux-initrd", "ramdisk 0x%lx size 0x%lx is not inside RAM", rd, rd_size);
}

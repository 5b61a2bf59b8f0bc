/*
 * Swiftlet SMP guest: finding the CPUs through the Intel MP table (MP spec 1.4) or through ACPI
 * (RSDP -> RSDT/XSDT -> FADT, DSDT, MADT), checking every field against what Swiftlet writes
 * (one report line per check; see Guests/README.md).
 */
#include "smp.h"

/* ---- physical memory helpers ---- */
uint8_t sum8(uint64_t a, uint64_t n)
{
    uint8_t s = 0;
    for (uint64_t i = 0; i < n; i++)
        s = (uint8_t)(s + rd8(a + i));
    return s;
}

int mem_is(uint64_t a, const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n; i++)
        if (rd8(a + i) != p[i])
            return 0;
    return 1;
}

/* Whether the N bytes at S occur in the LEN bytes at A. */
static int mem_find(uint64_t a, uint64_t len, const void *s, size_t n)
{
    for (uint64_t i = 0; i + n <= len; i++)
        if (mem_is(a + i, s, n))
            return 1;
    return 0;
}

/* An AML PkgLength (ACPI 6.5, 20.2.4): how many bytes follow its lead byte, and (at A) its value
 * (counting itself), read no further than END. */
static int aml_pkg_bytes(uint8_t lead) { return lead >> 6; }

static uint64_t aml_pkg_length(uint64_t a, uint64_t end)
{
    if (a >= end)
        return 0;
    uint8_t lead = rd8(a);
    int extra = aml_pkg_bytes(lead);
    if (extra == 0)
        return lead & 0x3f;
    if (a + extra >= end)
        return 0;
    uint64_t value = lead & 0x0f;
    for (int i = 0; i < extra; i++)
        value |= (uint64_t)rd8(a + 1 + i) << (4 + 8 * i);
    return value;
}

const char *show(uint64_t a, size_t n)
{
    static char bufs[4][72];
    static unsigned next;
    char *b = bufs[next++ % 4];
    size_t o = 0;
    b[o++] = '\'';
    for (size_t i = 0; i < n && o + 6 < sizeof bufs[0]; i++) {
        uint8_t c = rd8(a + i);
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            b[o++] = (char)c;
        } else {
            static const char hex[] = "0123456789abcdef";
            b[o++] = '\\';
            b[o++] = 'x';
            b[o++] = hex[c >> 4];
            b[o++] = hex[c & 15];
        }
    }
    b[o++] = '\'';
    b[o] = 0;
    return b;
}

int table_ok(uint64_t a, uint64_t n)
{
    return a != 0 && a + n > a && a + n <= TABLE_LIMIT;
}

static uint64_t scan(const char *sig, size_t n, uint64_t from, uint64_t to)
{
    for (uint64_t a = from; a + n <= to; a += 16)
        if (mem_is(a, sig, n))
            return a;
    return 0;
}

/* A checked table's entries, in order. */
#define MAX_ENTRIES 1024
struct entry {
    uint64_t at;
    uint8_t type, len;
};
static struct entry ent[MAX_ENTRIES];
static uint32_t nent;

/* ==== Intel MP table ==== */

#define MP_EXTRA_ENTRIES 20 /* bus, I/O APIC, 16 I/O interrupts, 2 local interrupts */

static uint64_t mp_cpu_entry[MAX_LISTED];
static uint32_t mp_ncpu;

static uint64_t mp_nth(uint8_t type, uint32_t k)
{
    for (uint32_t i = 0; i < nent; i++)
        if (ent[i].type == type && k-- == 0)
            return ent[i].at;
    return 0;
}

static uint32_t mp_count(uint8_t type)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < nent; i++)
        n += ent[i].type == type;
    return n;
}

static uint8_t mp_expected_type(uint32_t i, uint32_t n)
{
    if (i < n)
        return 0;
    i -= n;
    return i == 0 ? 1 : i == 1 ? 2 : i < 18 ? 3 : 4;
}

static void mp_local_check(const char *name, uint32_t k, uint8_t irqtype, uint8_t lint)
{
    uint64_t e = mp_nth(4, k);
    if (!e) {
        fail(name, "no local interrupt entry #%u", k);
        return;
    }
    check(rd8(e + 1) == irqtype && rd16(e + 2) == 0 && rd8(e + 4) == 0 && rd8(e + 5) == 0 && rd8(e + 6) == 0xff &&
              rd8(e + 7) == lint,
          name, "type %u flags 0x%x bus %u irq %u destination 0x%x LINTIN %u, want %u 0x0 0 0 0xff %u", rd8(e + 1),
          rd16(e + 2), rd8(e + 4), rd8(e + 5), rd8(e + 6), rd8(e + 7), irqtype, lint);
}

int mptable_discover(uint32_t bsp_id, struct discovery *d)
{
    uint64_t fps = scan("_MP_", 4, 0x9fc00, 0xa0000);
    if (!fps)
        fps = scan("_MP_", 4, 0xf0000, 0x100000);
    if (!check(fps != 0, "mp-fps", "no '_MP_' at a 16-byte boundary of [0x9fc00, 0xa0000) or [0xf0000, 0x100000)"))
        return 0;
    check_eq("mp-fps-address", fps, 0x9fc00);
    uint32_t physptr = rd32(fps + 4);
    check_eq("mp-fps-physptr", physptr, 0x9fc10);
    check_eq("mp-fps-length", rd8(fps + 8), 1);
    check_eq("mp-fps-spec", rd8(fps + 9), 4);
    check(sum8(fps, 16) == 0, "mp-fps-checksum", "16 bytes sum to 0x%x want 0x0", sum8(fps, 16));
    check(rd8(fps + 11) == 0 && rd8(fps + 12) == 0 && rd8(fps + 13) == 0 && rd8(fps + 14) == 0 && rd8(fps + 15) == 0,
          "mp-fps-features", "feature bytes 1..5 are 0x%x 0x%x 0x%x 0x%x 0x%x want 0", rd8(fps + 11), rd8(fps + 12),
          rd8(fps + 13), rd8(fps + 14), rd8(fps + 15));

    uint64_t c = physptr;
    if (!table_ok(c, 44)) {
        fail("mp-config-signature", "physptr 0x%lx is not a usable table address", c);
        return 0;
    }
    if (!check(mem_is(c, "PCMP", 4), "mp-config-signature", "got %s want 'PCMP'", show(c, 4)))
        return 0;
    uint32_t len = rd16(c + 4), count = rd16(c + 34);
    int len_ok = len >= 44 && table_ok(c, len);

    /* Walk the entries within the base length (or, if that is unusable, the entry count). */
    uint64_t end = len_ok ? c + len : c + 44 + 20UL * (count + 1);
    uint64_t p = c + 44;
    int bad_type = -1, truncated = 0;
    nent = 0;
    while (p < end && nent < MAX_ENTRIES && (len_ok || nent < count)) {
        uint8_t t = rd8(p);
        unsigned sz = t == 0 ? 20 : t <= 4 ? 8 : 0;
        if (!sz) {
            bad_type = t;
            break;
        }
        if (p + sz > end) {
            truncated = 1;
            break;
        }
        ent[nent].at = p;
        ent[nent].type = t;
        ent[nent].len = (uint8_t)sz;
        nent++;
        p += sz;
    }
    uint32_t n = mp_count(0);

    check_eq("mp-config-length", len, 44 + 20 * n + 8 + 8 + 16 * 8 + 2 * 8);
    check_eq("mp-config-spec", rd8(c + 6), 4);
    if (len_ok)
        check(sum8(c, len) == 0, "mp-config-checksum", "%u bytes sum to 0x%x want 0x0", len, sum8(c, len));
    else
        fail("mp-config-checksum", "base length %u is unusable", len);
    check(mem_is(c + 8, "SWIFTLET", 8), "mp-config-oem", "got %s want 'SWIFTLET'", show(c + 8, 8));
    check(mem_is(c + 16, "MICROVM     ", 12), "mp-config-product", "got %s want 'MICROVM     '", show(c + 16, 12));
    check(rd32(c + 28) == 0 && rd16(c + 32) == 0, "mp-config-oem-table", "pointer 0x%x size %u want 0 and 0",
          rd32(c + 28), rd16(c + 32));
    check_eq("mp-config-entry-count", count, n + MP_EXTRA_ENTRIES);
    check_eq("mp-config-lapic", rd32(c + 36), LAPIC_BASE);
    check(rd16(c + 40) == 0 && rd8(c + 42) == 0 && rd8(c + 43) == 0, "mp-config-extended",
          "extended length %u checksum 0x%x reserved 0x%x want 0 0x0 0x0", rd16(c + 40), rd8(c + 42), rd8(c + 43));

    /* Entry order: N processors, bus, I/O APIC, 16 I/O interrupts, 2 local interrupts. */
    if (bad_type >= 0) {
        fail("mp-entry-order", "entry %u at 0x%lx has unknown type %u", nent, p, (unsigned)bad_type);
    } else if (truncated) {
        fail("mp-entry-order", "entry %u at 0x%lx runs past the base length", nent, p);
    } else {
        uint32_t bad = nent;
        for (uint32_t i = 0; i < nent && i < n + MP_EXTRA_ENTRIES; i++)
            if (ent[i].type != mp_expected_type(i, n)) {
                bad = i;
                break;
            }
        if (bad < nent)
            fail("mp-entry-order", "entry %u has type %u want %u", bad, ent[bad].type, mp_expected_type(bad, n));
        else
            check(nent == n + MP_EXTRA_ENTRIES, "mp-entry-order", "%u entries want %u", nent, n + MP_EXTRA_ENTRIES);
    }

    /* Processor entries: the boot CPU's first (EN | BP), then the others by APIC ID (EN); version
     * 0x14, reserved 0. */
    int bad = -1, bps = 0;
    mp_ncpu = 0;
    for (uint32_t k = 0; k < n && k < MAX_LISTED; k++) {
        uint64_t e = mp_nth(0, k);
        uint8_t id = rd8(e + 1), flags = rd8(e + 3);
        uint32_t want_id = k == 0 ? bsp_id : k - 1 < bsp_id ? k - 1 : k;
        uint8_t want_flags = (uint8_t)(1 | (k == 0 ? 2 : 0));
        bps += (flags & 2) != 0;
        if (bad < 0 && (id != want_id || rd8(e + 2) != 0x14 || flags != want_flags || rd32(e + 12) || rd32(e + 16))) {
            bad = (int)k;
            fail("mp-cpus", "processor entry %u: APIC ID %u version 0x%x flags 0x%x reserved 0x%x 0x%x, want %u 0x14 0x%x 0 0",
                 k, id, rd8(e + 2), flags, rd32(e + 12), rd32(e + 16), want_id, want_flags);
        }
        mp_cpu_entry[k] = e;
        d->ids[k] = id;
        d->enabled[k] = flags & 1;
        mp_ncpu++;
    }
    if (bad < 0) {
        if (n == 0)
            fail("mp-cpus", "no processor entries");
        else if (bps != 1)
            fail("mp-cpus", "%d entries have the BP flag, want 1", bps);
        else if (n > MAX_LISTED)
            fail("mp-cpus", "%u processor entries, this guest reads at most %d", n, MAX_LISTED);
        else
            ok("mp-cpus");
    }

    uint64_t e = mp_nth(1, 0);
    if (e)
        check(rd8(e + 1) == 0 && mem_is(e + 2, "ISA   ", 6), "mp-bus", "bus %u type %s want 0 'ISA   '", rd8(e + 1),
              show(e + 2, 6));
    else
        fail("mp-bus", "no bus entry");

    e = mp_nth(2, 0);
    if (e)
        check(rd8(e + 1) == n && rd8(e + 2) == 0x11 && rd8(e + 3) == 1 && rd32(e + 4) == IOAPIC_BASE, "mp-ioapic",
              "ID %u version 0x%x flags 0x%x address 0x%x, want %u 0x11 0x1 0xfec00000", rd8(e + 1), rd8(e + 2),
              rd8(e + 3), rd32(e + 4), n);
    else
        fail("mp-ioapic", "no I/O APIC entry");

    uint32_t nirq = mp_count(3);
    int irq_bad = -1;
    for (uint32_t i = 0; i < nirq && irq_bad < 0; i++) {
        e = mp_nth(3, i);
        if (rd8(e + 1) != 0 || rd16(e + 2) != 0 || rd8(e + 4) != 0 || rd8(e + 5) != i || rd8(e + 6) != n ||
            rd8(e + 7) != i) {
            irq_bad = (int)i;
            fail("mp-irqs", "I/O interrupt entry %u: type %u flags 0x%x bus %u IRQ %u destination %u INTIN %u, "
                            "want 0 0x0 0 %u %u %u",
                 i, rd8(e + 1), rd16(e + 2), rd8(e + 4), rd8(e + 5), rd8(e + 6), rd8(e + 7), i, n, i);
        }
    }
    if (irq_bad < 0)
        check(nirq == 16, "mp-irqs", "%u I/O interrupt entries want 16", nirq);

    mp_local_check("mp-lint-extint", 0, 3, 0);
    mp_local_check("mp-lint-nmi", 1, 1, 1);

    d->n = n < MAX_LISTED ? n : MAX_LISTED;
    d->ok = n > 0;
    return d->ok;
}

/* After the wake-up: processor entry i holds CPUID.1 as CPU i sees it. */
void mptable_cpuid_checks(void)
{
    if (!mp_ncpu)
        return;
    int sig_done = 0, feat_done = 0;
    uint32_t skipped = 0;
    for (uint32_t k = 0; k < mp_ncpu; k++) {
        uint64_t e = mp_cpu_entry[k];
        uint32_t id = rd8(e + 1);
        if (!cpu_online(id)) {
            skipped++;
            continue;
        }
        const struct cpu_info *ci = &cpu_info[id];
        if (!sig_done && rd32(e + 4) != (ci->eax & 0xfff)) {
            sig_done = 1;
            fail("mp-cpu-signature", "processor entry %u (APIC ID %u): 0x%x want 0x%x (CPUID.1:EAX & 0xfff on that CPU)",
                 k, id, rd32(e + 4), ci->eax & 0xfff);
        }
        if (!feat_done && rd32(e + 8) != ci->edx) {
            feat_done = 1;
            fail("mp-cpu-features", "processor entry %u (APIC ID %u): 0x%x want 0x%x (CPUID.1:EDX on that CPU)", k, id,
                 rd32(e + 8), ci->edx);
        }
    }
    char note[64];
    ksnprintf(note, sizeof note, "%u listed CPUs not online: not checked", skipped);
    if (!sig_done) {
        if (skipped)
            ok_note("mp-cpu-signature", note);
        else
            ok("mp-cpu-signature");
    }
    if (!feat_done) {
        if (skipped)
            ok_note("mp-cpu-features", note);
        else
            ok("mp-cpu-features");
    }
}

/* ==== ACPI ==== */

#define ACPI_HDR 36

/* The standard header of the table at a: every field, one check each (plus the ids in one line). */
static int header_checks(uint64_t a, const char *name, const char *sig, uint32_t want_len, uint8_t rev)
{
    char n[48];
    ksnprintf(n, sizeof n, "acpi-%s-signature", name);
    if (!table_ok(a, ACPI_HDR)) {
        fail(n, "table address 0x%lx is not usable", a);
        return 0;
    }
    if (!check(mem_is(a, sig, 4), n, "got %s at 0x%lx want '%s'", show(a, 4), a, sig))
        return 0;
    uint32_t len = rd32(a + 4);
    int len_ok = len >= ACPI_HDR && table_ok(a, len);
    ksnprintf(n, sizeof n, "acpi-%s-length", name);
    check_eq(n, len, want_len);
    ksnprintf(n, sizeof n, "acpi-%s-revision", name);
    check_eq(n, rd8(a + 8), rev);
    ksnprintf(n, sizeof n, "acpi-%s-checksum", name);
    if (len_ok)
        check(sum8(a, len) == 0, n, "%u bytes sum to 0x%x want 0x0", len, sum8(a, len));
    else
        fail(n, "length %u is unusable", len);
    ksnprintf(n, sizeof n, "acpi-%s-ids", name);
    check(mem_is(a + 10, "SWIFTL", 6) && mem_is(a + 16, "SWIFTLET", 8) && rd32(a + 24) == 1 &&
              mem_is(a + 28, "SWFT", 4) && rd32(a + 32) == 1,
          n, "OEM ID %s table ID %s revision %u creator %s revision %u, want 'SWIFTL' 'SWIFTLET' 1 'SWFT' 1",
          show(a + 10, 6), show(a + 16, 8), rd32(a + 24), show(a + 28, 4), rd32(a + 32));
    return len_ok;
}

/* RSDT (4-byte) or XSDT (8-byte) entries. */
static uint32_t sdt_entries(uint64_t sdt, unsigned width, uint64_t *out, uint32_t max)
{
    uint32_t len = rd32(sdt + 4);
    if (len < ACPI_HDR || !table_ok(sdt, len))
        return 0;
    uint32_t n = (len - ACPI_HDR) / width;
    for (uint32_t i = 0; i < n && i < max; i++)
        out[i] = width == 4 ? rd32(sdt + ACPI_HDR + 4 * i) : rd64(sdt + ACPI_HDR + 8 * i);
    return n;
}

static const char *sig_at(uint64_t a)
{
    return table_ok(a, 4) ? show(a, 4) : "(unusable address)";
}

static int entries_check(const char *name, const uint64_t *e, uint32_t n)
{
    if (n == 2 && table_ok(e[0], 4) && mem_is(e[0], "FACP", 4) && table_ok(e[1], 4) && mem_is(e[1], "APIC", 4)) {
        ok(name);
        return 1;
    }
    if (n == 0)
        fail(name, "no entries, want FACP and APIC");
    else if (n == 1)
        fail(name, "1 entry: 0x%lx %s, want FACP and APIC", e[0], sig_at(e[0]));
    else
        fail(name, "%u entries, first 0x%lx %s and 0x%lx %s, want exactly FACP and APIC", n, e[0], sig_at(e[0]), e[1],
             sig_at(e[1]));
    return 0;
}

static int gas_is(uint64_t g, uint8_t space, uint8_t width, uint8_t offset, uint8_t access, uint64_t addr)
{
    return rd8(g) == space && rd8(g + 1) == width && rd8(g + 2) == offset && rd8(g + 3) == access && rd64(g + 4) == addr;
}

static void gas_check(const char *name, uint64_t g, uint64_t addr)
{
    check(gas_is(g, 1, 8, 0, 1, addr), name,
          "space %u width %u offset %u access %u address 0x%lx, want 1 8 0 1 0x%lx", rd8(g), rd8(g + 1), rd8(g + 2),
          rd8(g + 3), rd64(g + 4), addr);
}

static void fadt_checks(uint64_t f)
{
    if (!header_checks(f, "fadt", "FACP", 276, 6))
        return;
    uint32_t flags = rd32(f + 112);
    check(flags & (1u << 20), "acpi-fadt-flags", "0x%x lacks HW_REDUCED_ACPI (bit 20)", flags);
    uint32_t dsdt = rd32(f + 40);
    uint64_t xdsdt = rd64(f + 140);
    int dsdt_ok = check(dsdt != 0 && dsdt == xdsdt && table_ok(dsdt, 4) && mem_is(dsdt, "DSDT", 4), "acpi-fadt-dsdt",
                        "DSDT 0x%x X_DSDT 0x%lx (%s), want equal and pointing at a DSDT", dsdt, xdsdt,
                        sig_at(xdsdt ? xdsdt : dsdt));
    check_eq("acpi-fadt-sci", rd16(f + 46), 9);
    /* IAPC_BOOT_ARCH: an 8042 (bit 1), no VGA (bit 2), no CMOS RTC (bit 5). */
    check_eq("acpi-fadt-boot-arch", rd16(f + 109), 0x26);
    gas_check("acpi-fadt-sleep-control", f + 244, 0x508);
    gas_check("acpi-fadt-sleep-status", f + 256, 0x509);
    check_eq("acpi-fadt-minor-version", rd8(f + 131), 0);
    check(mem_is(f + 268, "SWIFTLET", 8), "acpi-fadt-hypervisor", "got %s want 'SWIFTLET'", show(f + 268, 8));

    /* The DSDT: Name(_S5, Package(4){5, 5, 0, 0}), then Scope(\_SB) holding COM1 (PNP0501 at 0x3F8,
     * IRQ 4) and the i8042 keyboard (PNP0303), and nothing after it; no virtio device (this guest
     * runs with none). */
    static const uint8_t s5[] = {0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00};
    uint64_t d = xdsdt ? xdsdt : dsdt;
    if (!dsdt_ok && !(table_ok(d, 4) && mem_is(d, "DSDT", 4))) {
        fail("acpi-dsdt-signature", "the FADT points at no DSDT");
        return;
    }
    uint32_t len = rd32(d + 4);
    /* Its length is judged by the AML it holds (the scope must end where the table does). */
    if (!header_checks(d, "dsdt", "DSDT", len > ACPI_HDR + sizeof s5 ? len : ACPI_HDR + sizeof s5 + 1, 2) ||
        len <= ACPI_HDR + sizeof s5 || !table_ok(d, len))
        return;
    check(mem_is(d + ACPI_HDR, s5, sizeof s5), "acpi-dsdt-s5", "AML starts %s, want 08 5f 53 35 5f 12 08 04 0a 05 0a 05 00 00",
          show(d + ACPI_HDR, sizeof s5));
    uint64_t scope = d + ACPI_HDR + sizeof s5, end = d + len;
    uint64_t scope_end = scope + 1 + aml_pkg_length(scope + 1, end);
    check(rd8(scope) == 0x10 && scope_end == end && mem_is(scope + 2 + aml_pkg_bytes(rd8(scope + 1)), "\\_SB_", 5),
          "acpi-dsdt-sb", "after _S5: %s, want Scope (\\_SB_) to the table's end (0x%lx, ends 0x%lx)",
          show(scope, 8), end, scope_end);
    static const uint8_t com1[] = {'C', 'O', 'M', '1', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01};
    static const uint8_t ps2k[] = {'P', 'S', '2', 'K', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x03, 0x03};
    static const uint8_t com1_io[] = {0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00};
    check(mem_find(scope, len - ACPI_HDR - sizeof s5, com1, sizeof com1), "acpi-dsdt-com1",
          "no Device (COM1) with _HID EisaId (\"PNP0501\")");
    check(mem_find(scope, len - ACPI_HDR - sizeof s5, com1_io, sizeof com1_io), "acpi-dsdt-com1-crs",
          "no IO (0x3F8, 8) with IRQNoFlags (4) in the DSDT");
    check(mem_find(scope, len - ACPI_HDR - sizeof s5, ps2k, sizeof ps2k), "acpi-dsdt-i8042",
          "no Device (PS2K) with _HID EisaId (\"PNP0303\")");
    check(!mem_find(scope, len - ACPI_HDR - sizeof s5, "LNRO0005", 8), "acpi-dsdt-no-virtio",
          "a virtio-mmio device (LNRO0005) with no virtio device configured");
}

/* The APIC ID of the k-th processor entry: the boot processor first (ACPI asks firmware to list
 * it first), then the others in ID order. */
static uint32_t madt_expected_id(uint32_t k, uint32_t bsp)
{
    return k == 0 ? bsp : k - 1 < bsp ? k - 1 : k;
}

/* MADT entry types in order for n CPUs: Local APIC below ID 255, Local x2APIC from 255 on. */
static uint8_t madt_expected_type(uint32_t i, uint32_t n, uint32_t bsp)
{
    if (i < n)
        return madt_expected_id(i, bsp) < 255 ? 0 : 9;
    i -= n;
    return i == 0 ? 1 : i == 1 ? 2 : i == 2 ? 4 : 0xa;
}

static uint32_t madt_expected_count(uint32_t n)
{
    return n + 3 + (n > 255);
}

static uint64_t madt_nth(uint8_t type, uint32_t k)
{
    return mp_nth(type, k);
}

static int madt_checks(uint64_t m, uint32_t bsp, struct discovery *d)
{
    /* Walk first: the expected length depends on the number of CPUs. */
    int malformed = 0;
    uint64_t at = 0;
    uint32_t n = 0, expect_len = 0;
    nent = 0;
    if (table_ok(m, 44) && mem_is(m, "APIC", 4)) {
        uint32_t len = rd32(m + 4);
        uint64_t end = len >= 44 && table_ok(m, len) ? m + len : m + 44;
        for (at = m + 44; at < end && nent < MAX_ENTRIES;) {
            uint8_t t = rd8(at), l = at + 2 <= end ? rd8(at + 1) : 0;
            if (l < 2 || at + l > end) {
                malformed = 1;
                break;
            }
            ent[nent].at = at;
            ent[nent].type = t;
            ent[nent].len = l;
            nent++;
            n += t == 0 || t == 9;
            at += l;
        }
        expect_len = 44 + 12 + 10 + 6 + (n > 255 ? 12 : 0);
        expect_len += (n < 255 ? n : 255) * 8 + (n > 255 ? n - 255 : 0) * 16;
    }
    if (!header_checks(m, "madt", "APIC", expect_len, 5))
        return 0;
    check_eq("acpi-madt-lapic", rd32(m + 36), LAPIC_BASE);
    check_eq("acpi-madt-flags", rd32(m + 40), 1);

    if (malformed) {
        fail("acpi-madt-entry-order", "entry %u at 0x%lx has length %u", nent, at, rd8(at + 1));
    } else {
        uint32_t want = madt_expected_count(n), bad = nent;
        for (uint32_t i = 0; i < nent && i < want; i++)
            if (ent[i].type != madt_expected_type(i, n, bsp)) {
                bad = i;
                break;
            }
        if (bad < nent)
            fail("acpi-madt-entry-order", "entry %u has type %u want %u", bad, ent[bad].type, madt_expected_type(bad, n, bsp));
        else
            check(nent == want, "acpi-madt-entry-order", "%u entries want %u", nent, want);
    }

    /* Processor entries: Local APIC (type 0) for i < 255, Local x2APIC (type 9) from 255 on. */
    int bad = -1;
    uint32_t k = 0;
    for (uint32_t i = 0; i < nent; i++) {
        const struct entry *e = &ent[i];
        if (e->type != 0 && e->type != 9)
            continue;
        uint32_t id, flags, want = madt_expected_id(k, bsp);
        int good;
        if (e->type == 0) {
            id = rd8(e->at + 3);
            flags = rd32(e->at + 4);
            good = want < 255 && e->len == 8 && rd8(e->at + 2) == want && id == want && flags == 1;
            if (!good && bad < 0) {
                bad = (int)k;
                fail("acpi-madt-cpus", "entry %u: Local APIC entry length %u UID %u APIC ID %u flags 0x%x, want %s %u",
                     k, e->len, rd8(e->at + 2), id, flags,
                     want < 255 ? "length 8, flags 0x1, UID and APIC ID" : "a Local x2APIC entry for ID", want);
            }
        } else {
            id = rd32(e->at + 4);
            flags = rd32(e->at + 8);
            good = want >= 255 && e->len == 16 && rd16(e->at + 2) == 0 && id == want && flags == 1 && rd32(e->at + 12) == want;
            if (!good && bad < 0) {
                bad = (int)k;
                fail("acpi-madt-cpus",
                     "entry %u: Local x2APIC entry length %u reserved 0x%x x2APIC ID %u flags 0x%x UID %u, want %s %u", k,
                     e->len, rd16(e->at + 2), id, flags, rd32(e->at + 12),
                     want >= 255 ? "length 16, reserved 0, flags 0x1, ID and UID" : "a Local APIC entry for ID", want);
            }
        }
        if (k < MAX_LISTED) {
            d->ids[k] = id;
            d->enabled[k] = flags & 1;
        }
        k++;
    }
    if (bad < 0) {
        if (n == 0)
            fail("acpi-madt-cpus", "no processor entries");
        else if (n > MAX_LISTED)
            fail("acpi-madt-cpus", "%u processor entries, this guest reads at most %d", n, MAX_LISTED);
        else
            ok("acpi-madt-cpus");
    }

    uint64_t e = madt_nth(1, 0);
    uint32_t want_id = n < 255 ? n : 0;
    if (e)
        check(rd8(e + 1) == 12 && rd8(e + 2) == want_id && rd8(e + 3) == 0 && rd32(e + 4) == IOAPIC_BASE &&
                  rd32(e + 8) == 0,
              "acpi-madt-ioapic", "length %u ID %u reserved 0x%x address 0x%x GSI base %u, want 12 %u 0x0 0xfec00000 0",
              rd8(e + 1), rd8(e + 2), rd8(e + 3), rd32(e + 4), rd32(e + 8), want_id);
    else
        fail("acpi-madt-ioapic", "no I/O APIC entry");

    e = madt_nth(2, 0);
    if (e)
        check(rd8(e + 1) == 10 && rd8(e + 2) == 0 && rd8(e + 3) == 9 && rd32(e + 4) == 9 && rd16(e + 8) == 0x000d,
              "acpi-madt-iso", "length %u bus %u source %u GSI %u flags 0x%x, want 10 0 9 9 0xd", rd8(e + 1), rd8(e + 2),
              rd8(e + 3), rd32(e + 4), rd16(e + 8));
    else
        fail("acpi-madt-iso", "no Interrupt Source Override entry");

    e = madt_nth(4, 0);
    if (e)
        check(rd8(e + 1) == 6 && rd8(e + 2) == 0xff && rd16(e + 3) == 0 && rd8(e + 5) == 1, "acpi-madt-nmi",
              "length %u UID 0x%x flags 0x%x LINT %u, want 6 0xff 0x0 1", rd8(e + 1), rd8(e + 2), rd16(e + 3),
              rd8(e + 5));
    else
        fail("acpi-madt-nmi", "no Local APIC NMI entry");

    if (n > 255) {
        e = madt_nth(0xa, 0);
        if (e)
            check(rd8(e + 1) == 12 && rd16(e + 2) == 0 && rd32(e + 4) == 0xffffffffu && rd8(e + 8) == 1 &&
                      rd8(e + 9) == 0 && rd8(e + 10) == 0 && rd8(e + 11) == 0,
                  "acpi-madt-x2apic-nmi",
                  "length %u flags 0x%x UID 0x%x LINT %u reserved 0x%x 0x%x 0x%x, want 12 0x0 0xffffffff 1 0 0 0",
                  rd8(e + 1), rd16(e + 2), rd32(e + 4), rd8(e + 8), rd8(e + 9), rd8(e + 10), rd8(e + 11));
        else
            fail("acpi-madt-x2apic-nmi", "no Local x2APIC NMI entry (more than 255 CPUs)");
    }

    d->n = n < MAX_LISTED ? n : MAX_LISTED;
    d->ok = n > 0;
    return d->ok;
}

int madt_discover(uint32_t bsp_id, uint64_t rsdp_paddr, struct discovery *d)
{
    check_eq("acpi-rsdp-start-info", rsdp_paddr, 0xe0000);
    uint64_t scanned = scan("RSD PTR ", 8, 0xe0000, 0x100000);
    if (scanned)
        check(scanned == 0xe0000, "acpi-rsdp-scan", "first 'RSD PTR ' at 0x%lx want 0xe0000", scanned);
    else
        fail("acpi-rsdp-scan", "no 'RSD PTR ' at a 16-byte boundary of [0xe0000, 0x100000)");
    uint64_t r = rsdp_paddr ? rsdp_paddr : scanned;
    if (!table_ok(r, 36)) {
        fail("acpi-rsdp-signature", "no usable RSDP (rsdp_paddr 0x%lx, scan 0x%lx)", rsdp_paddr, scanned);
        return 0;
    }
    if (!check(mem_is(r, "RSD PTR ", 8), "acpi-rsdp-signature", "got %s at 0x%lx want 'RSD PTR '", show(r, 8), r))
        return 0;
    check(sum8(r, 20) == 0, "acpi-rsdp-checksum", "20 bytes sum to 0x%x want 0x0", sum8(r, 20));
    check(mem_is(r + 9, "SWIFTL", 6), "acpi-rsdp-oem", "got %s want 'SWIFTL'", show(r + 9, 6));
    check_eq("acpi-rsdp-revision", rd8(r + 15), 2);
    uint32_t rsdt = rd32(r + 16);
    check(rsdt != 0, "acpi-rsdp-rsdt", "RSDT address is 0");
    check_eq("acpi-rsdp-length", rd32(r + 20), 36);
    uint64_t xsdt = rd64(r + 24);
    check(xsdt != 0, "acpi-rsdp-xsdt", "XSDT address is 0");
    check(sum8(r, 36) == 0, "acpi-rsdp-ext-checksum", "36 bytes sum to 0x%x want 0x0", sum8(r, 36));
    check(rd8(r + 33) == 0 && rd8(r + 34) == 0 && rd8(r + 35) == 0, "acpi-rsdp-reserved",
          "0x%x 0x%x 0x%x want 0", rd8(r + 33), rd8(r + 34), rd8(r + 35));

    uint64_t re[8] = {0}, xe[8] = {0};
    uint32_t rn = 0, xn = 0;
    int r_ok = 0, x_ok = 0;
    if (header_checks(rsdt, "rsdt", "RSDT", ACPI_HDR + 2 * 4, 1)) {
        rn = sdt_entries(rsdt, 4, re, 8);
        r_ok = entries_check("acpi-rsdt-entries", re, rn);
    }
    if (header_checks(xsdt, "xsdt", "XSDT", ACPI_HDR + 2 * 8, 1)) {
        xn = sdt_entries(xsdt, 8, xe, 8);
        x_ok = entries_check("acpi-xsdt-entries", xe, xn);
        if (x_ok && r_ok && (xe[0] != re[0] || xe[1] != re[1])) {
            fail("acpi-xsdt-same-tables", "XSDT lists 0x%lx 0x%lx, RSDT 0x%lx 0x%lx", xe[0], xe[1], re[0], re[1]);
        } else if (x_ok && r_ok) {
            ok("acpi-xsdt-same-tables");
        }
    }
    /* Use the XSDT's tables (as an ACPI 2.0+ OS does), else the RSDT's. */
    uint64_t fadt = 0, madt = 0;
    const uint64_t *list = xn ? xe : re;
    uint32_t ln = xn ? xn : rn;
    for (uint32_t i = 0; i < ln && i < 8; i++) {
        if (!fadt && table_ok(list[i], 4) && mem_is(list[i], "FACP", 4))
            fadt = list[i];
        if (!madt && table_ok(list[i], 4) && mem_is(list[i], "APIC", 4))
            madt = list[i];
    }
    if (fadt)
        fadt_checks(fadt);
    else
        fail("acpi-fadt-signature", "no FACP table listed");
    if (!madt) {
        fail("acpi-madt-signature", "no APIC table listed");
        return 0;
    }
    return madt_checks(madt, bsp_id, d);
}

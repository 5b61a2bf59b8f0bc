/* Swiftlet probe: common part, run in 64-bit mode on the probe's own page tables. */
#include "probe.h"
#include "idt.h"

struct boot_info bi;                       /* .bss */
static volatile uint64_t bss_canary;       /* .bss: must read 0 at entry */
static char echo_buf[4096];                /* .bss */
int first_line_printed DATA;

static const char *proto_name(int proto)
{
    switch (proto) {
    case PROTO_PVH:
        return "pvh";
    case PROTO_XEN64:
        return "xen64";
    case PROTO_LINUX:
        return "linux";
    default:
        return "unknown";
    }
}

/* ---- IDT: every vector goes to exception_handler ---- */
void idt_install(void)
{
    idt_fill(0x08);
    idt_lidt();
}

NORETURN void exception_handler(uint64_t vector, uint64_t error, uint64_t rip)
{
    print("FAIL exception %lu rip=0x%lx\n", vector, rip);
    print("fact exception_error 0x%lx\n", error);
    if (vector == 14)
        print("fact exception_cr2 0x%lx\n", read_cr2());
    n_fail++;
    poweroff(2);
}

/*
 * lar/lsl are not used: some KVM implementations (e.g. kvm-pvm) emulate the early guest code and
 * cannot emulate them. The probe reads the descriptor from the GDT (via the GDTR saved by sgdt at
 * entry) instead and decodes it the same way.
 */
static int gdt_readable(uint64_t a)
{
    if (a < MAPPED_LIMIT - 8)
        return 1;
    return a >= VIRT_BASE && a < VIRT_BASE + HIGH_MAP_SIZE - 8;
}

int seg_lookup(uint64_t sel, struct seg_info *si, const char **why)
{
    uint16_t limit;
    uint64_t base;
    memcpy(&limit, st_gdtr, 2);
    memcpy(&base, st_gdtr + 2, 8);
    si->gdt_base = base;
    si->gdt_limit = limit;
    uint64_t off = sel & ~7UL;
    if (sel & 4) {
        *why = "selector refers to the LDT";
        return 0;
    }
    if (off == 0) {
        *why = "null selector";
        return 0;
    }
    if (off + 7 > limit) {
        *why = "selector beyond the GDT limit";
        return 0;
    }
    if (!gdt_readable(base + off)) {
        *why = "GDT not mapped";
        return 0;
    }
    uint64_t d = *(const volatile uint64_t *)(base + off);
    si->desc = d;
    si->ar = (d >> 32) & 0x00f0ff00UL;
    uint64_t lim = (d & 0xffff) | ((d >> 32) & 0xf0000);
    if (d & (1UL << 55))
        lim = (lim << 12) | 0xfff;
    si->limit = lim;
    si->base = ((d >> 16) & 0xffffff) | ((d >> 56) << 24);
    return 1;
}

/* ---- memory map helpers ---- */
void map_add(uint64_t addr, uint64_t size, uint32_t type)
{
    if (bi.nmap < MAX_MAP) {
        bi.map[bi.nmap].addr = addr;
        bi.map[bi.nmap].size = size;
        bi.map[bi.nmap].type = type;
        bi.nmap++;
    }
}

void excl_add(uint64_t addr, uint64_t size)
{
    if (size && bi.nexcl < MAX_EXCL) {
        bi.excl[bi.nexcl].addr = addr;
        bi.excl[bi.nexcl].size = size;
        bi.excl[bi.nexcl].type = 0;
        bi.nexcl++;
    }
}

static uint64_t entry_end(const struct mrange *m)
{
    uint64_t e = m->addr + m->size;
    return e < m->addr ? ~0UL : e;
}

/* End of the run of contiguous RAM that contains addr, or 0 if addr is not in RAM. */
static uint64_t ram_extent_end(uint64_t addr)
{
    uint64_t cur = addr, end = 0;
    for (int progress = 1; progress;) {
        progress = 0;
        for (int i = 0; i < bi.nmap; i++) {
            const struct mrange *m = &bi.map[i];
            if (m->type == 1 && m->addr <= cur && cur < entry_end(m)) {
                cur = end = entry_end(m);
                progress = 1;
            }
        }
    }
    return end;
}

int range_in_ram(uint64_t addr, uint64_t len)
{
    if (len == 0)
        len = 1;
    if (addr + len < addr)
        return 0;
    uint64_t e = ram_extent_end(addr);
    return e != 0 && addr + len <= e;
}

int mapped(uint64_t addr, uint64_t len)
{
    return addr + len >= addr && addr + len <= MAPPED_LIMIT;
}

/* The length of the NUL-terminated string at addr if it ends within lim bytes. */
static int cstr_scan(uint64_t addr, uint64_t lim, uint64_t *lenp)
{
    const volatile char *p = (const volatile char *)addr;
    for (uint64_t i = 0; i < lim; i++) {
        if (p[i] == 0) {
            *lenp = i;
            return 1;
        }
    }
    return 0;
}

int cstr_in_ram(uint64_t addr, uint64_t maxlen, uint64_t *lenp)
{
    uint64_t e = ram_extent_end(addr);
    if (e == 0)
        return 0;
    if (e > MAPPED_LIMIT)
        e = MAPPED_LIMIT;
    if (addr >= e)
        return 0;
    uint64_t lim = e - addr;
    if (lim > maxlen)
        lim = maxlen;
    return cstr_scan(addr, lim, lenp);
}

/* A NUL-terminated string anywhere in mapped memory (used when the in-RAM check already failed). */
int cstr_mapped(uint64_t addr, uint64_t maxlen, uint64_t *lenp)
{
    if (addr == 0 || addr >= MAPPED_LIMIT)
        return 0;
    uint64_t lim = MAPPED_LIMIT - addr;
    if (lim > maxlen)
        lim = maxlen;
    return cstr_scan(addr, lim, lenp);
}

/* Record (and checksum) an initrd given by physical address; 0 if it is not readable RAM. */
int initrd_take(uint64_t addr, uint64_t size)
{
    bi.initrd_size = 0;
    bi.initrd_fnv = FNV_BASIS;
    if (addr == 0 || size == 0 || !range_in_ram(addr, size) || !mapped(addr, size))
        return 0;
    bi.initrd_size = size;
    bi.initrd_fnv = fnv1a((const volatile uint8_t *)addr, size, FNV_BASIS);
    excl_add(addr, size);
    return 1;
}

/* ---- facts ---- */
static void print_facts(void)
{
    uint64_t ram = 0, top = 0;
    for (int i = 0; i < bi.nmap; i++) {
        if (bi.map[i].type != 1)
            continue;
        ram += bi.map[i].size;
        if (entry_end(&bi.map[i]) > top)
            top = entry_end(&bi.map[i]);
    }
    print("fact protocol %s\n", proto_name(bi.proto));
    print("fact cmdline ");
    if (bi.cmdline)
        put_bytes(bi.cmdline, bi.cmdline_len);
    serial_putc('\n');
    print("fact ram_bytes %lu\n", ram);
    print("fact ram_top 0x%lx\n", top);
    print("fact initrd_size %lu\n", bi.initrd_size);
    print("fact initrd_fnv 0x%08x\n", bi.initrd_fnv);
    if (bi.have_rsdp)
        print("fact rsdp 0x%lx\n", bi.rsdp);
    if (bi.have_nr_pages)
        print("fact nr_pages %lu\n", bi.nr_pages);
    if (bi.have_boot_version)
        print("fact boot_version 0x%lx\n", bi.boot_version);
}

/* ---- memory-map coverage: write/read back the first and last qword of each RAM range ---- */
static const struct mrange *excl_hit(uint64_t a)
{
    for (int i = 0; i < bi.nexcl; i++) {
        const struct mrange *x = &bi.excl[i];
        if (a < entry_end(x) && x->addr < a + 8)
            return x;
    }
    return 0;
}

static int qword_test(uint64_t a, uint64_t *got, uint64_t *want)
{
    volatile uint64_t *p = (volatile uint64_t *)a;
    uint64_t old = *p, pat = 0x5a5aa5a5c3c33c3cUL ^ a;
    *p = pat;
    uint64_t r1 = *p;
    *p = ~pat;
    uint64_t r2 = *p;
    *p = old;
    if (r1 != pat) {
        *got = r1;
        *want = pat;
        return 0;
    }
    if (r2 != ~pat) {
        *got = r2;
        *want = ~pat;
        return 0;
    }
    return 1;
}

static void mem_test_range(const struct mrange *r)
{
    char name[64];
    uint64_t s = r->addr, e = entry_end(r);
    ksnprintf(name, sizeof name, "mem-0x%lx-0x%lx", s, e);
    if (s == 0)
        s = 0x1000;
    if (s >= MAPPED_LIMIT) {
        ok_note(name, "not checked: above 8 GiB");
        return;
    }
    if (e > MAPPED_LIMIT)
        e = MAPPED_LIMIT;
    s = (s + 7) & ~7UL;
    e &= ~7UL;
    if (e < s + 8) {
        ok_note(name, "not checked: too small");
        return;
    }
    uint64_t first = s, last = e - 8;
    const struct mrange *x;
    while (first + 8 <= e && (x = excl_hit(first)))
        first = (entry_end(x) + 7) & ~7UL;
    while (last >= s && (x = excl_hit(last))) {
        if (x->addr < s + 8) {
            last = 0;
            break;
        }
        last = (x->addr & ~7UL) - 8;
    }
    if (first + 8 > e || last < s || last == 0) {
        ok_note(name, "not checked: in use");
        return;
    }
    uint64_t got = 0, want = 0;
    if (!qword_test(first, &got, &want)) {
        fail(name, "at 0x%lx got 0x%lx want 0x%lx", first, got, want);
        return;
    }
    if (!qword_test(last, &got, &want)) {
        fail(name, "at 0x%lx got 0x%lx want 0x%lx", last, got, want);
        return;
    }
    ok(name);
}

static void memory_coverage(void)
{
    for (int i = 0; i < bi.nmap; i++)
        if (bi.map[i].type == 1 && bi.map[i].size)
            mem_test_range(&bi.map[i]);
}

/* ---- actions ---- */
static inline uint8_t mmio_r8(uint64_t a)
{
    uint8_t v;
    __asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
    return v;
}
static inline uint16_t mmio_r16(uint64_t a)
{
    uint16_t v;
    __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline uint32_t mmio_r32(uint64_t a)
{
    uint32_t v;
    __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline uint64_t mmio_r64(uint64_t a)
{
    uint64_t v;
    __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline void mmio_w8(uint64_t a, uint8_t v) { __asm__ volatile("movb %0, (%1)" ::"q"(v), "r"(a) : "memory"); }
static inline void mmio_w16(uint64_t a, uint16_t v) { __asm__ volatile("movw %0, (%1)" ::"r"(v), "r"(a) : "memory"); }
static inline void mmio_w32(uint64_t a, uint32_t v) { __asm__ volatile("movl %0, (%1)" ::"r"(v), "r"(a) : "memory"); }
static inline void mmio_w64(uint64_t a, uint64_t v) { __asm__ volatile("movq %0, (%1)" ::"r"(v), "r"(a) : "memory"); }

#define UNCLAIMED_MMIO 0xd0000000UL

static void unclaimed_tests(void)
{
    static const uint16_t ports[3] = {0x2f8 + 5, 0x1234, 0xe000};
    char name[40];
    for (int i = 0; i < 3; i++) {
        ksnprintf(name, sizeof name, "unclaimed-inb-%x", ports[i]);
        check_eq(name, inb(ports[i]), 0xff);
        ksnprintf(name, sizeof name, "unclaimed-inw-%x", ports[i]);
        check_eq(name, inw(ports[i]), 0xffff);
        ksnprintf(name, sizeof name, "unclaimed-inl-%x", ports[i]);
        check_eq(name, inl(ports[i]), 0xffffffffu);
    }
    check_eq("unclaimed-mmio-read8", mmio_r8(UNCLAIMED_MMIO), 0xff);
    check_eq("unclaimed-mmio-read16", mmio_r16(UNCLAIMED_MMIO), 0xffff);
    check_eq("unclaimed-mmio-read32", mmio_r32(UNCLAIMED_MMIO), 0xffffffffu);
    check_eq("unclaimed-mmio-read64", mmio_r64(UNCLAIMED_MMIO), ~0UL);

    for (int i = 0; i < 3; i++) {
        outb(ports[i], 0x5a);
        outw(ports[i], 0x5aa5);
        outl(ports[i], 0x5aa5c33cu);
    }
    ok("unclaimed-pio-write");
    mmio_w8(UNCLAIMED_MMIO, 0x5a);
    mmio_w16(UNCLAIMED_MMIO, 0x5aa5);
    mmio_w32(UNCLAIMED_MMIO, 0x5aa5c33cu);
    mmio_w64(UNCLAIMED_MMIO, 0x5aa5c33c0ff0f00fUL);
    uint32_t after = mmio_r32(UNCLAIMED_MMIO);
    check(after == 0xffffffffu, "unclaimed-mmio-write", "read after write got 0x%x want 0xffffffff", after);
}

/* Parse a decimal number that makes up all of [p, p+n). */
static int parse_dec(const char *p, uint64_t n, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return 0;
    for (uint64_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > 0xffffffffUL)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int value_is(const char *v, uint64_t n, const char *word)
{
    uint64_t l = strlen(word);
    return n == l && memcmp(v, word, l) == 0;
}

static int value_has_prefix(const char *v, uint64_t n, const char *word)
{
    uint64_t l = strlen(word);
    return n >= l && memcmp(v, word, l) == 0;
}

static NORETURN void finish(void)
{
    summary();
    poweroff(n_fail ? 1 : 0);
}

static NORETURN void do_action(void)
{
    static const char key[] = "swiftlet.action=";
    const uint64_t klen = sizeof key - 1;
    const char *cmd = bi.cmdline;
    uint64_t len = cmd ? bi.cmdline_len : 0;
    const char *v = 0;
    uint64_t vn = 0;
    for (uint64_t i = 0; i + klen <= len; i++) {
        if (memcmp(cmd + i, key, klen) == 0) {
            v = cmd + i + klen;
            while (i + klen + vn < len && v[vn] != ' ' && v[vn] != '\t' && v[vn] != '\n')
                vn++;
            break;
        }
    }
    if (!v)
        finish();

    uint32_t n;
    if (value_has_prefix(v, vn, "exit=") && parse_dec(v + 5, vn - 5, &n)) {
        summary();
        poweroff(n);
    }
    if (value_has_prefix(v, vn, "f4=") && parse_dec(v + 3, vn - 3, &n)) {
        summary();
        outl(0xf4, n);
        spin(1000000);
        print("FAIL f4 ignored: port 0xf4 value 0x%x\n", n);
        poweroff(1);
    }
    if (value_is(v, vn, "reset")) {
        summary();
        outb(0x64, 0xfe);
        spin(1000000);
        print("FAIL reset ignored\n");
        poweroff(1);
    }
    if (value_is(v, vn, "device-garbage")) {
        /* Every register of every device, read and written with patterns, as a hostile guest
           would; ports that end the VM on purpose (0x500, 0xf4, 0x64 <- 0xfe, S5 on 0x508) are
           left out. Then COM1 is put back and the probe reports. */
        static const uint16_t ports[] = {0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff,
                                         0x60, 0x61, 0x62, 0x63, 0x504, 0x505, 0x506, 0x507, 0x509, 0xe8, 0xe9};
        static const uint8_t values[] = {0x00, 0xff, 0x80, 0x7f, 0x55, 0xaa, 0x10, 0x1f};
        uint64_t reads = 0;
        for (unsigned r = 0; r < 4; r++)
            for (unsigned i = 0; i < sizeof ports / sizeof ports[0]; i++)
                for (unsigned j = 0; j < sizeof values / sizeof values[0]; j++) {
                    outb(ports[i], values[(j + r) % 8]);
                    reads += inb(ports[i]);
                    outw(ports[i], (uint16_t)(values[j] * 0x101));
                    outl(ports[i], values[j] * 0x01010101u);
                    reads += inl(ports[i]);
                }
        for (unsigned v8 = 0; v8 < 256; v8++)
            if (v8 != 0xfe)
                outb(0x64, (uint8_t)v8);                           /* every i8042 command but reset */
        for (unsigned v8 = 0; v8 < 256; v8++)
            if (!((v8 & 0x20) && ((v8 >> 2) & 7) == 5))
                outb(0x508, (uint8_t)v8);                          /* every sleep value but S5 */
        outb(0x3fb, 0x03);                                          /* COM1 back to 8N1, DLAB off */
        outb(0x3f9, 0x00);
        outb(0x3fc, 0x0b);
        outb(0x3fa, 0x07);
        ok("device-garbage-survived");
        print("fact garbage_reads %lu\n", reads);
        summary();
        poweroff(n_fail ? 1 : 0);
    }
    if (value_is(v, vn, "flood")) {
        /* 256 KiB to the serial port as fast as the UART takes it. */
        for (unsigned long i = 0; i < (256UL << 10); i++) {
            while (!(inb(0x3fd) & 0x20))
                ;
            outb(0x3f8, (uint8_t)('a' + i % 26));
        }
        print("\n");
        ok("flood-done");
        summary();
        poweroff(0);
    }
    if (value_has_prefix(v, vn, "garbage=") && parse_dec(v + 8, vn - 8, &n)) {
        /* Execute a page of pseudo-random bytes (xorshift32 from the seed) with no IDT: whatever
           it does (fault, triple fault, halt, loop, port writes), the VMM must stay in charge. */
        static uint8_t garbage_page[4096] __attribute__((aligned(4096)));
        uint32_t x = n ? n : 1;
        for (int i = 0; i < 4096; i++) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            garbage_page[i] = (uint8_t)x;
        }
        summary();
        struct desc_ptr d = {0, 0};
        __asm__ volatile("lidt %0" ::"m"(d) : "memory");
        ((void (*)(void))(void *)garbage_page)();
        print("FAIL garbage returned\n");
        poweroff(1);
    }
    if (value_is(v, vn, "halt")) {
        /* Halt with interrupts off: nothing can resume this vCPU; the VMM must notice. */
        summary();
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    if (value_is(v, vn, "idle")) {
        /* Halt with interrupts on: an interrupt could come, so the VMM must keep waiting. */
        summary();
        for (;;)
            __asm__ volatile("sti; hlt");
    }
    if (value_is(v, vn, "acpi-poweroff")) {
        /* ACPI S5 the hardware-reduced way: SLP_TYP 5 (the DSDT's \\_S5) with SLP_EN (bit 5)
           to the FADT's sleep control register, I/O port 0x508 on Swiftlet. */
        summary();
        outb(0x508, (5 << 2) | (1 << 5));
        spin(1000000);
        print("FAIL acpi-poweroff ignored\n");
        poweroff(1);
    }
    if (value_is(v, vn, "triple-fault")) {
        summary();
        struct desc_ptr d = {0, 0};
        __asm__ volatile("lidt %0\n\tud2" ::"m"(d) : "memory");
        halt_forever();
    }
    if (value_is(v, vn, "unclaimed")) {
        unclaimed_tests();
        finish();
    }
    if (value_is(v, vn, "echo")) {
        uint64_t m = 0;
        print("ready\n");
        for (;;) {
            int c = serial_getc();
            if (c == '\n')
                break;
            if (m < sizeof echo_buf)
                echo_buf[m++] = (char)c;
        }
        print("echo ");
        put_bytes(echo_buf, m);
        serial_putc('\n');
        finish();
    }
    print("FAIL action: unknown swiftlet.action value '");
    put_bytes(v, vn);
    print("'\n");
    n_fail++;
    finish();
}

/* ---- entry from entry.S, on the probe's own page tables and stack ---- */
NORETURN void probe_main(int proto)
{
    if (!first_line_printed) {
        print("probe: entered via %s\n", proto_name(proto));
        first_line_printed = 1;
    }
    idt_install();

    /* .bss check: nothing has written the zeroable part of .bss yet. */
    int skip_bss = proto == PROTO_LINUX && linux_is_bzimage();
    uint64_t canary = bss_canary, bad_at = 0, bad_val = 0;
    for (uint64_t a = (uint64_t)_bss_zero_start; a < (uint64_t)_bss_end; a += 8) {
        uint64_t v = *(volatile uint64_t *)a;
        if (v) {
            bad_at = a;
            bad_val = v;
            break;
        }
    }
    memset(_bss_zero_start, 0, (size_t)(_bss_end - _bss_zero_start));
    if (skip_bss)
        ok_note("bss", "not checked: bzImage");
    else
        check(canary == 0 && bad_at == 0, "bss", "got 0x%lx at 0x%lx want 0 (canary 0x%lx)", bad_val, bad_at, canary);

    bi.proto = proto;
    bi.initrd_fnv = FNV_BASIS;
    excl_add((uint64_t)_image_start - VIRT_BASE, (uint64_t)(_end - _image_start));
    switch (proto) {
    case PROTO_PVH:
        pvh_checks();
        break;
    case PROTO_XEN64:
        xen64_checks();
        break;
    case PROTO_LINUX:
        linux_checks();
        break;
    default:
        fail("protocol", "unknown protocol %d", proto);
        break;
    }
    print_facts();
    memory_coverage();
    do_action();
}

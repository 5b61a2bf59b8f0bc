/*
 * Swiftlet xenhvm guests: the Xen HVM interface the way an HVM guest uses it, written against
 * Xen's public headers (xen.h, hvm/hvm_op.h, hvm/params.h, memory.h, grant_table.h,
 * event_channel.h, version.h, features.h, arch-x86/xen*.h). One source, built twice:
 *
 *   xenhvm32.elf (-m32)  stays in 32-bit protected mode with paging off; 32-bit hypercall ABI
 *                        (ebx, ecx, edx, esi, edi; result in eax) and the x86_32 structure layouts
 *   xenhvm64.elf (-m64)  entry64.S switched to long mode; 64-bit ABI (rdi, rsi, rdx, r10, r8)
 *                        and the x86_64 layouts
 *
 * Steps: the Xen CPUID leaves, the hypercall page through the MSR they name, xen_version,
 * hvm_op get/set_param, memory_op XENMEM_add_to_physmap (shared_info, grant table), the shared_info
 * contents (vcpu_info, time, wallclock), grant_table_op, event_channel_op, console_io, and
 * sched_op(SCHEDOP_shutdown). Output on COM1 (ok/FAIL/fact/summary lines, common/lib.c); the
 * important lines also through console_io, prefixed so that a report parser skips them. Any failed
 * check: shutdown with reason crash. See Guests/README.md.
 */
#include "layout.h"
#include "lib.h"
#include "xen.h"

#ifdef __x86_64__
#include "idt.h"
#define BITS 64
#define NAME "xenhvm64"
#else
#define BITS 32
#define NAME "xenhvm32"
#endif

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
#define HVM_START_MAGIC 0x336ec578u
#define LOW_LIMIT 0xc0000000u /* what the guest can address without paging: start info and memmap below it */

extern uint32_t start_info_pa;
extern char isr_stubs[];

/* The pages the hypervisor fills or maps: page-aligned, in .bss. */
static uint8_t hpage[4096] __attribute__((aligned(4096)));
static volatile uint8_t shinfo_page[4096] __attribute__((aligned(4096)));
static volatile uint8_t grant_page[4096] __attribute__((aligned(4096)));

static int page_installed DATA;
static uint32_t shutdown_reason DATA = SHUTDOWN_poweroff;
static int fault_ud2 DATA; /* xenhvm.fault=ud2: an invalid opcode right after the page is installed */

/* ---- hypercalls through the page, with this build's ABI ---- */
static inline long hypercall(unsigned nr, unsigned long a1, unsigned long a2, unsigned long a3, unsigned long a4,
                             unsigned long a5)
{
    unsigned long fn = (unsigned long)hpage + (unsigned long)nr * XEN_HCALL_STUB_SIZE;
    long ret;
#ifdef __x86_64__
    register unsigned long r10 __asm__("r10") = a4;
    register unsigned long r8 __asm__("r8") = a5;
    __asm__ volatile("call *%[fn]"
                     : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
                     : [fn] "r"(fn)
                     : "memory", "cc", "rcx", "r9", "r11");
#else
    __asm__ volatile("call *%[fn]"
                     : "=a"(ret), "+b"(a1), "+c"(a2), "+d"(a3), "+S"(a4), "+D"(a5)
                     : [fn] "m"(fn)
                     : "memory", "cc");
#endif
    return ret;
}

#define HC2(nr, a, b) hypercall((nr), (unsigned long)(a), (unsigned long)(b), 0, 0, 0)
#define HC3(nr, a, b, c) hypercall((nr), (unsigned long)(a), (unsigned long)(b), (unsigned long)(c), 0, 0)

static long hvm_param(unsigned op, uint16_t domid, uint32_t index, uint64_t *value)
{
    struct xen_hvm_param p = {.domid = domid, .pad = 0, .index = index, .value = *value};
    long rc = HC2(HC_hvm_op, op, &p);
    *value = p.value;
    return rc;
}

static long add_to_physmap(uint16_t domid, unsigned space, unsigned long idx, unsigned long gpfn)
{
    struct xen_add_to_physmap x = {.domid = domid, .size = 0, .space = space, .idx = idx, .gpfn = gpfn};
    return HC2(HC_memory_op, XENMEM_add_to_physmap, &x);
}

static long console_write(const char *s, unsigned long n) { return HC3(HC_console_io, CONSOLEIO_write, n, s); }

/* ---- checks ---- */
static const char *errno_name(long rc)
{
    switch (rc) {
    case -XEN_EPERM:
        return " (-EPERM)";
    case -XEN_ENOENT:
        return " (-ENOENT)";
    case -XEN_ESRCH:
        return " (-ESRCH)";
    case -XEN_E2BIG:
        return " (-E2BIG)";
    case -XEN_EFAULT:
        return " (-EFAULT)";
    case -XEN_EEXIST:
        return " (-EEXIST)";
    case -XEN_EINVAL:
        return " (-EINVAL)";
    case -XEN_ENOSYS:
        return " (-ENOSYS)";
    default:
        return "";
    }
}

static int expect_rc(const char *name, long got, long want)
{
    return check(got == want, name, "got %ld%s want %ld%s", (int64_t)got, errno_name(got), (int64_t)want,
                 errno_name(want));
}

/* A line through console_io, prefixed with the image's name (report parsers skip it). */
static void cio_line(const char *text)
{
    char out[200];
    int n = ksnprintf(out, sizeof out, "%s console_io: %s\n", NAME, text);
    if (n >= (int)sizeof out)
        n = sizeof out - 1;
    if (page_installed)
        console_write(out, (unsigned long)n);
}

NORETURN static void finish(void)
{
    char text[80];
    summary();
    ksnprintf(text, sizeof text, "summary %lu %lu", n_pass, n_fail);
    cio_line(text);
    if (!page_installed) {
        print("fact shutdown port-0x500\n");
        poweroff(n_fail ? 1 : 0);
    }
    uint32_t reason = n_fail ? SHUTDOWN_crash : shutdown_reason;
    const char *rname = reason == SHUTDOWN_crash ? "crash" : "poweroff";
    print("fact shutdown %s\n", rname);
    ksnprintf(text, sizeof text, "sched_op(SCHEDOP_shutdown, %s)", rname);
    cio_line(text);
    long rc = HC2(HC_sched_op, SCHEDOP_shutdown, &reason);
    print("FAIL shutdown: sched_op(SCHEDOP_shutdown, %s) returned %ld%s and the VM is still running\n", rname,
          (int64_t)rc, errno_name(rc));
    poweroff(1);
}

/* ---- exceptions: report, then crash ---- */
#ifdef __x86_64__
static void idt_install(void)
{
    idt_fill(KCODE64);
    idt_lidt();
}
#else
struct idt_gate32 {
    uint16_t off0, sel;
    uint8_t zero, type;
    uint16_t off1;
} __attribute__((packed));
extern struct idt_gate32 idt_table[256];

static void idt_install(void)
{
    for (int i = 0; i < 256; i++) {
        uint32_t a = (uint32_t)isr_stubs + 16u * (uint32_t)i;
        idt_table[i].off0 = (uint16_t)a;
        idt_table[i].sel = KCODE32;
        idt_table[i].zero = 0;
        idt_table[i].type = 0x8e; /* present, DPL 0, 32-bit interrupt gate */
        idt_table[i].off1 = (uint16_t)(a >> 16);
    }
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) d = {sizeof(struct idt_gate32) * 256 - 1, (uint32_t)idt_table};
    __asm__ volatile("lidt %0" ::"m"(d) : "memory");
}
#endif

NORETURN void exception_handler(unsigned long vector, unsigned long error, unsigned long ip);
NORETURN void exception_handler(unsigned long vector, unsigned long error, unsigned long ip)
{
    print("FAIL exception %lu rip=0x%lx error=0x%lx\n", (uint64_t)vector, (uint64_t)ip, (uint64_t)error);
    n_fail++;
    if (page_installed) {
        uint32_t reason = SHUTDOWN_crash;
        cio_line("exception: sched_op(SCHEDOP_shutdown, crash)");
        HC2(HC_sched_op, SCHEDOP_shutdown, &reason);
    }
    poweroff(2);
}

/* ---- boot information ---- */
static const struct hvm_start_info *start_info(void)
{
    if (start_info_pa == 0 || start_info_pa >= LOW_LIMIT)
        return 0;
    const struct hvm_start_info *si = (const struct hvm_start_info *)(unsigned long)start_info_pa;
    return si->magic == HVM_START_MAGIC ? si : 0;
}

/* The end of the highest RAM range in the PVH memory map, page-aligned (0 without one). */
static uint64_t ram_end(const struct hvm_start_info *si)
{
    if (!si || si->version < 1 || si->memmap_paddr == 0 || si->memmap_entries == 0 || si->memmap_paddr >= LOW_LIMIT)
        return 0;
    const struct hvm_memmap_entry *m = (const struct hvm_memmap_entry *)(unsigned long)si->memmap_paddr;
    uint64_t end = 0;
    for (uint32_t i = 0; i < si->memmap_entries && i < 1024; i++)
        if (m[i].type == 1 && m[i].addr + m[i].size > end)
            end = m[i].addr + m[i].size;
    return (end + 4095) & ~(uint64_t)4095;
}

static int word_is(const char *w, size_t n, const char *s) { return strlen(s) == n && memcmp(w, s, n) == 0; }

/* xenhvm.shutdown=poweroff|crash and xenhvm.fault=ud2, anywhere in the command line. */
/* xenhvm.pv-input: wait for a line on the PV console's in ring (swiftlet --console xen). */
static int pv_input;

static void parse_cmdline(const struct hvm_start_info *si)
{
    if (!si || si->cmdline_paddr == 0 || si->cmdline_paddr >= LOW_LIMIT)
        return;
    const char *c = (const char *)(unsigned long)si->cmdline_paddr;
    static const char key[] = "xenhvm.shutdown=", fault[] = "xenhvm.fault=ud2";
    while (*c) {
        while (*c == ' ')
            c++;
        const char *w = c;
        while (*c && *c != ' ')
            c++;
        size_t n = (size_t)(c - w);
        if (n > sizeof key - 1 && memcmp(w, key, sizeof key - 1) == 0) {
            const char *v = w + sizeof key - 1;
            size_t vn = n - (sizeof key - 1);
            if (word_is(v, vn, "crash"))
                shutdown_reason = SHUTDOWN_crash;
            else if (word_is(v, vn, "poweroff"))
                shutdown_reason = SHUTDOWN_poweroff;
            else
                fail("cmdline", "xenhvm.shutdown= takes poweroff or crash");
        } else if (word_is(w, n, fault)) {
            fault_ud2 = 1;
        } else if (word_is(w, n, "xenhvm.pv-input")) {
            pv_input = 1;
        }
    }
}

/* ---- TSC and the vcpu_time_info arithmetic ---- */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* (delta << shift or >> -shift) * mul >> 32, without 128-bit arithmetic (both builds). */
static uint64_t pvclock_scale(uint64_t delta, uint32_t mul, int8_t shift)
{
    if (shift < 0)
        delta >>= -shift;
    else
        delta <<= shift;
    uint64_t lo = (uint64_t)(uint32_t)delta * mul;
    uint64_t hi = (uint64_t)(uint32_t)(delta >> 32) * mul;
    return hi + (lo >> 32);
}

struct time_snapshot {
    uint32_t version, mul;
    int8_t shift;
    uint64_t tsc_timestamp, system_time, now_tsc, ns;
};

/* One consistent read of vcpu_time_info (version even and unchanged across the read). */
static int read_time(volatile struct xen_vcpu_time_info *t, struct time_snapshot *s)
{
    for (int tries = 0; tries < 1000000; tries++) {
        uint32_t v = t->version;
        __asm__ volatile("" ::: "memory");
        if (v & 1)
            continue;
        s->tsc_timestamp = t->tsc_timestamp;
        s->system_time = t->system_time;
        s->mul = t->tsc_to_system_mul;
        s->shift = t->tsc_shift;
        s->now_tsc = rdtsc();
        __asm__ volatile("" ::: "memory");
        if (t->version != v)
            continue;
        s->version = v;
        if (s->now_tsc >= s->tsc_timestamp)
            s->ns = s->system_time + pvclock_scale(s->now_tsc - s->tsc_timestamp, s->mul, s->shift);
        else
            s->ns = s->system_time - pvclock_scale(s->tsc_timestamp - s->now_tsc, s->mul, s->shift);
        return 1;
    }
    return 0;
}

static int all_bytes(const volatile uint8_t *p, size_t n, uint8_t v, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) {
            *at = i;
            return 0;
        }
    return 1;
}

/* ---- 1. CPUID ---- */
static uint32_t find_xen_leaves(void)
{
    for (uint32_t base = 0x40000000u; base <= 0x4000ff00u; base += 0x100) {
        uint32_t r[4];
        xen_cpuid(base, r);
        if (r[1] == XEN_SIG_EBX && r[2] == XEN_SIG_ECX && r[3] == XEN_SIG_EDX && r[0] >= base + 2)
            return base;
    }
    return 0;
}

/* ---- 2. the hypercall page ---- */
static int install_page(uint32_t msr)
{
    for (int i = 0; i < 4096; i += 2) {
        hpage[i] = 0x0f; /* ud2: a stub the hypervisor did not write faults */
        hpage[i + 1] = 0x0b;
    }
    uint64_t gpa = (uint64_t)(unsigned long)hpage;
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)gpa), "d"((uint32_t)(gpa >> 32)) : "memory");
    print("fact hypercall_page 0x%lx\n", gpa);
    /* Every stub but 23 (iret) starts with mov eax, nr. */
    for (unsigned nr = 0; nr < XEN_HCALL_STUBS; nr++) {
        if (nr == HC_iret)
            continue;
        const uint8_t *s = hpage + nr * XEN_HCALL_STUB_SIZE;
        uint32_t imm = (uint32_t)s[1] | (uint32_t)s[2] << 8 | (uint32_t)s[3] << 16 | (uint32_t)s[4] << 24;
        if (s[0] != 0xb8 || imm != nr) {
            fail("hypercall-page", "stub %u after wrmsr(0x%x, 0x%lx): %02x %02x %02x %02x %02x, want b8 <%u as u32>", nr,
                 msr, gpa, s[0], s[1], s[2], s[3], s[4], nr);
            return 0;
        }
    }
    ok_note("hypercall-page", "every stub loads its number into eax");
    page_installed = 1;
    return 1;
}

/* ---- 3. xen_version ---- */
static void version_checks(uint32_t cpuid_version)
{
    long v = HC2(HC_xen_version, XENVER_version, 0);
    print("fact xen_version 0x%x\n", (uint32_t)v);
    check((uint32_t)v == cpuid_version && v > 0, "xen-version", "xen_version(XENVER_version) = 0x%lx%s, CPUID says 0x%x",
          (uint64_t)(uint32_t)v, errno_name(v), cpuid_version);

    struct xen_feature_info fi = {.submap_idx = 0, .submap = 0xdeadbeef};
    long rc = HC2(HC_xen_version, XENVER_get_features, &fi);
    print("fact features 0x%x\n", fi.submap);
    uint32_t want = (1u << XENFEAT_writable_page_tables) | (1u << XENFEAT_auto_translated_physmap);
    check(rc == 0 && fi.submap == want, "xen-features", "XENVER_get_features submap 0: rc %ld%s submap 0x%x want 0 and 0x%x",
          (int64_t)rc, errno_name(rc), fi.submap, want);
    struct xen_feature_info f1 = {.submap_idx = 1, .submap = 0};
    expect_rc("xen-features-submap-1", HC2(HC_xen_version, XENVER_get_features, &f1), -XEN_EINVAL);
}

/* ---- 4. hvm_op ---- */
static uint64_t console_pfn;
static uint32_t console_port;

static void hvm_op_checks(void)
{
    static const struct {
        uint32_t index;
        const char *name;
    } params[] = {
        {HVM_PARAM_STORE_PFN, "hvm-param-store-pfn"},
        {HVM_PARAM_STORE_EVTCHN, "hvm-param-store-evtchn"},
    };
    for (unsigned i = 0; i < sizeof params / sizeof params[0]; i++) {
        uint64_t value = 0x5a5a5a5a5a5a5a5aULL;
        long rc = hvm_param(HVMOP_get_param, DOMID_SELF, params[i].index, &value);
        check(rc == 0 && value == 0, params[i].name, "HVMOP_get_param(%u): rc %ld%s value 0x%lx, want 0 and 0 (no xenstore)",
              params[i].index, (int64_t)rc, errno_name(rc), value);
    }
    /* The PV console: a page and a port, as Xen's toolstack gives every HVM guest. */
    uint64_t pfn = 0, port = 0;
    long prc = hvm_param(HVMOP_get_param, DOMID_SELF, HVM_PARAM_CONSOLE_PFN, &pfn);
    long erc = hvm_param(HVMOP_get_param, DOMID_SELF, HVM_PARAM_CONSOLE_EVTCHN, &port);
    check(prc == 0 && pfn != 0 && erc == 0 && port != 0, "hvm-param-console", "CONSOLE_PFN rc %ld value 0x%lx, CONSOLE_EVTCHN rc %ld value %lu",
          (int64_t)prc, pfn, (int64_t)erc, port);
    console_pfn = pfn;
    console_port = (uint32_t)port;
    print("fact console_pfn 0x%lx\n", pfn);
    print("fact console_evtchn %lu\n", port);
    uint64_t value = 0;
    expect_rc("hvm-param-index-einval", hvm_param(HVMOP_get_param, DOMID_SELF, 1000, &value), -XEN_EINVAL);
    value = 0;
    expect_rc("hvm-param-domid-esrch", hvm_param(HVMOP_get_param, 5, HVM_PARAM_STORE_PFN, &value), -XEN_ESRCH);

    value = 0;
    expect_rc("hvm-set-callback-irq", hvm_param(HVMOP_set_param, DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, &value), 0);
    value = 0x5a5a5a5a5a5a5a5aULL;
    long rc = hvm_param(HVMOP_get_param, DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, &value);
    check(rc == 0 && value == 0, "hvm-get-callback-irq", "HVMOP_get_param(CALLBACK_IRQ) after setting 0: rc %ld%s value 0x%lx",
          (int64_t)rc, errno_name(rc), value);

    value = 0x12345;
    expect_rc("hvm-set-store-pfn-eperm", hvm_param(HVMOP_set_param, DOMID_SELF, HVM_PARAM_STORE_PFN, &value), -XEN_EPERM);
    value = 0x5a5a5a5a5a5a5a5aULL;
    rc = hvm_param(HVMOP_get_param, DOMID_SELF, HVM_PARAM_STORE_PFN, &value);
    check(rc == 0 && value == 0, "hvm-store-pfn-unchanged", "HVMOP_get_param(STORE_PFN) after the refused set: rc %ld%s value 0x%lx",
          (int64_t)rc, errno_name(rc), value);

    struct xen_hvm_param p = {.domid = DOMID_SELF, .index = 0};
    expect_rc("hvm-op-enosys", HC2(HC_hvm_op, 0x7fff, &p), -XEN_ENOSYS);
}

/* ---- 5. memory_op XENMEM_add_to_physmap, and shared_info ---- */
static void shared_info_checks(void)
{
    volatile struct xen_shared_info *si = (volatile struct xen_shared_info *)shinfo_page;
    volatile struct xen_vcpu_info *v0 = &si->vcpu_info[0];
    size_t at = 0;

    check(v0->evtchn_upcall_mask == 1, "shinfo-upcall-mask", "vcpu_info[0].evtchn_upcall_mask %u want 1",
          v0->evtchn_upcall_mask);
    check(v0->evtchn_upcall_pending == 0 && v0->evtchn_pending_sel == 0, "shinfo-upcall-pending",
          "vcpu_info[0].evtchn_upcall_pending %u evtchn_pending_sel 0x%lx, want 0 and 0", v0->evtchn_upcall_pending,
          (uint64_t)v0->evtchn_pending_sel);
    int zero = 1;
    unsigned bad = 0;
    for (unsigned i = 0; i < sizeof si->evtchn_pending / sizeof si->evtchn_pending[0] && zero; i++)
        if (si->evtchn_pending[i] || si->evtchn_mask[i]) {
            zero = 0;
            bad = i;
        }
    check(zero, "shinfo-evtchn-zero", "evtchn_pending[%u] 0x%lx evtchn_mask[%u] 0x%lx, want every word 0", bad,
          (uint64_t)si->evtchn_pending[bad], bad, (uint64_t)si->evtchn_mask[bad]);

    /* The time: a consistent read, plausible values, and the extrapolated clock moves on. */
    volatile struct xen_vcpu_time_info *t = &v0->time;
    struct time_snapshot a, b;
    if (!read_time(t, &a)) {
        fail("shinfo-time-version", "vcpu_info[0].time.version stays odd (0x%x)", t->version);
        return;
    }
    check(a.version != 0 && !(a.version & 1), "shinfo-time-version", "vcpu_info[0].time.version 0x%x, want even and non-zero",
          a.version);
    print("fact tsc_to_system_mul 0x%x\n", a.mul);
    print("fact tsc_shift %d\n", (int)a.shift);
    print("fact system_time_ns %lu\n", a.system_time);
    check(a.mul != 0, "shinfo-time-mul", "tsc_to_system_mul 0 (shift %d)", (int)a.shift);
    check(a.system_time < 60000000000ULL, "shinfo-system-time", "system_time %lu ns, want less than 60 s since boot",
          a.system_time);
    /* About 1 ms at 1 GHz; by the TSC, not a pause loop (pause can exit to the host here). */
    for (uint64_t t0 = rdtsc(); rdtsc() - t0 < (1u << 20);)
        ;
    read_time(t, &b);
    print("fact clock_ns %lu\n", b.ns);
    check(b.ns > a.ns && b.ns - a.ns < 10000000000ULL, "shinfo-time-advances",
          "system_time + scale(tsc - tsc_timestamp): %lu ns, then %lu ns after a delay (tsc 0x%lx -> 0x%lx, "
          "tsc_timestamp 0x%lx, mul 0x%x, shift %d)",
          a.ns, b.ns, a.now_tsc, b.now_tsc, b.tsc_timestamp, b.mul, (int)b.shift);

    /* The wallclock. */
    uint32_t wv = si->wc_version, sec = si->wc_sec, nsec = si->wc_nsec;
#ifdef __x86_64__
    uint32_t sec_hi = si->wc_sec_hi;
#else
    uint32_t sec_hi = si->arch.wc_sec_hi;
#endif
    print("fact wc_sec %u\n", sec);
    print("fact wc_nsec %u\n", nsec);
    check(!(wv & 1), "shinfo-wc-version", "wc_version 0x%x, want even", wv);
    check(sec > 1577836800u && nsec < 1000000000u, "shinfo-wc-sec", "wc_sec %u wc_nsec %u, want after 2020-01-01 and < 1e9",
          sec, nsec);
    check(sec_hi == 0, "shinfo-wc-sec-hi", "wc_sec_hi (%s) 0x%x, want 0", BITS == 64 ? "offset 3084" : "arch, offset 2340",
          sec_hi);

    /* Past this build's structure the page is the hypervisor's, zero: not the guest's 0xAA. */
    size_t end = sizeof(struct xen_shared_info);
    check(all_bytes(shinfo_page + end, 4096 - end, 0, &at), "shinfo-tail-zero",
          "byte %lu of the page (after the %u-byte x86_%u shared_info) is 0x%02x, want 0", (uint64_t)(end + at),
          (unsigned)end, BITS, shinfo_page[end + at]);
}

static void physmap_checks(const struct hvm_start_info *start)
{
    unsigned long shinfo_pfn = (unsigned long)shinfo_page >> 12, grant_pfn = (unsigned long)grant_page >> 12;
    size_t at = 0;
    memset((void *)shinfo_page, 0xaa, 4096);
    memset((void *)grant_page, 0xaa, 4096);
    print("fact shared_info_gpa 0x%lx\n", (uint64_t)(unsigned long)shinfo_page);

    long rc = add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, shinfo_pfn);
    if (expect_rc("physmap-shared-info", rc, 0))
        shared_info_checks();

    /* Errors: nothing written (grant_page is still 0xAA). */
    expect_rc("physmap-shared-info-idx-1", add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 1, grant_pfn), -XEN_EINVAL);
    expect_rc("physmap-domid-esrch", add_to_physmap(5, XENMAPSPACE_shared_info, 0, grant_pfn), -XEN_ESRCH);
    uint64_t top = ram_end(start);
    print("fact ram_end 0x%lx\n", top);
    if (top)
        expect_rc("physmap-gpfn-ram-end", add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, (unsigned long)(top >> 12)),
                  -XEN_EINVAL);
    else
        fail("physmap-gpfn-ram-end", "no RAM end: no usable PVH memory map");
    expect_rc("physmap-gpfn-hole", add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, 0xfffff), -XEN_EINVAL);
#ifdef __x86_64__
    expect_rc("physmap-gpfn-far", add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, 0xffffffffffUL), -XEN_EINVAL);
    /* gpfn << 12 wraps to grant_page's address in 64 bits: still far beyond RAM. */
    expect_rc("physmap-gpfn-wrap",
              add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, (1UL << 52) | grant_pfn), -XEN_EINVAL);
#else
    expect_rc("physmap-gpfn-far", add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, 0xffffffffUL), -XEN_EINVAL);
#endif
    check(all_bytes(grant_page, 4096, 0xaa, &at), "physmap-errors-write-nothing",
          "byte %lu of the 0xAA page named by the refused calls is 0x%02x", (uint64_t)at, grant_page[at]);

    /* Grant table frame 0: a page of (v1) grant entries, all unused. */
    print("fact grant_table_gpa 0x%lx\n", (uint64_t)(unsigned long)grant_page);
    rc = add_to_physmap(DOMID_SELF, XENMAPSPACE_grant_table, 0, grant_pfn);
    if (expect_rc("physmap-grant-table", rc, 0))
        check(all_bytes(grant_page, 4096, 0, &at), "grant-table-frame-zero", "byte %lu of the grant frame is 0x%02x, want 0",
              (uint64_t)at, grant_page[at]);
}

/* ---- 6. grant_table_op ---- */
static void grant_checks(void)
{
    struct xen_gnttab_query_size q = {.dom = DOMID_SELF, .nr_frames = 0xdead, .max_nr_frames = 0xdead, .status = 0x55};
    long rc = HC3(HC_grant_table_op, GNTTABOP_query_size, &q, 1);
    print("fact grant_frames %u\n", q.nr_frames);
    print("fact grant_max_frames %u\n", q.max_nr_frames);
    check(rc == 0 && q.nr_frames == 1 && q.max_nr_frames == 1 && q.status == GNTST_okay, "gnttab-query-size",
          "rc %ld%s nr_frames %u max_nr_frames %u status %d, want 0 1 1 0", (int64_t)rc, errno_name(rc), q.nr_frames,
          q.max_nr_frames, (int)q.status);
    struct xen_gnttab_query_size q5 = {.dom = 5, .nr_frames = 0, .max_nr_frames = 0, .status = 0x55};
    rc = HC3(HC_grant_table_op, GNTTABOP_query_size, &q5, 1);
    check(rc == 0 && q5.status == GNTST_bad_domain, "gnttab-query-size-bad-domain",
          "dom 5: rc %ld%s status %d, want rc 0 and status -2 (GNTST_bad_domain)", (int64_t)rc, errno_name(rc),
          (int)q5.status);
    struct xen_gnttab_query_size q2[2] = {{.dom = DOMID_SELF}, {.dom = DOMID_SELF}};
    expect_rc("gnttab-query-size-count-2", HC3(HC_grant_table_op, GNTTABOP_query_size, q2, 2), -XEN_EINVAL);

    struct xen_gnttab_set_version sv = {.version = 1};
    rc = HC3(HC_grant_table_op, GNTTABOP_set_version, &sv, 1);
    check(rc == 0 && sv.version == 1, "gnttab-set-version-1", "rc %ld%s version %u, want 0 and 1", (int64_t)rc,
          errno_name(rc), sv.version);
    sv.version = 2;
    rc = HC3(HC_grant_table_op, GNTTABOP_set_version, &sv, 1);
    check(rc == -XEN_ENOSYS && sv.version == 1, "gnttab-set-version-2",
          "rc %ld%s version written back %u, want -ENOSYS and 1", (int64_t)rc, errno_name(rc), sv.version);
    sv.version = 3;
    expect_rc("gnttab-set-version-3", HC3(HC_grant_table_op, GNTTABOP_set_version, &sv, 1), -XEN_EINVAL);

    struct xen_gnttab_get_version gv = {.dom = DOMID_SELF, .pad = 0, .version = 0x55};
    rc = HC3(HC_grant_table_op, GNTTABOP_get_version, &gv, 1);
    check(rc == 0 && gv.version == 1, "gnttab-get-version", "rc %ld%s version %u, want 0 and 1", (int64_t)rc,
          errno_name(rc), gv.version);

    struct xen_gnttab_get_version junk = {.dom = DOMID_SELF};
    expect_rc("gnttab-op-enosys", HC3(HC_grant_table_op, 99, &junk, 1), -XEN_ENOSYS);
}

/* ---- 7. event_channel_op and the PV console ---- */
static long evtchn(unsigned op, void *arg) { return HC2(HC_event_channel_op, op, arg); }

static void evtchn_checks(void)
{
    struct xen_evtchn_alloc_unbound a = {.dom = DOMID_SELF, .remote_dom = 0, .port = 0};
    long rc = evtchn(EVTCHNOP_alloc_unbound, &a);
    check(rc == 0 && a.port != 0 && a.port != console_port, "evtchn-alloc-unbound", "rc %ld%s port %u", (int64_t)rc, errno_name(rc), a.port);
    struct xen_evtchn_status st = {.dom = DOMID_SELF, .port = a.port};
    rc = evtchn(EVTCHNOP_status, &st);
    check(rc == 0 && st.status == EVTCHNSTAT_unbound && st.vcpu == 0, "evtchn-status-unbound", "rc %ld status %u vcpu %u",
          (int64_t)rc, st.status, st.vcpu);
    struct xen_evtchn_port p = {.port = a.port};
    expect_rc("evtchn-send-unbound", evtchn(EVTCHNOP_send, &p), 0);
    struct xen_evtchn_bind_vcpu bv = {.port = a.port, .vcpu = 0};
    expect_rc("evtchn-bind-vcpu", evtchn(EVTCHNOP_bind_vcpu, &bv), 0);
    bv.vcpu = 99;
    expect_rc("evtchn-bind-vcpu-enoent", evtchn(EVTCHNOP_bind_vcpu, &bv), -XEN_ENOENT);
    expect_rc("evtchn-unmask", evtchn(EVTCHNOP_unmask, &p), 0);
    expect_rc("evtchn-close", evtchn(EVTCHNOP_close, &p), 0);
    expect_rc("evtchn-close-again-einval", evtchn(EVTCHNOP_close, &p), -XEN_EINVAL);
    expect_rc("evtchn-send-closed-einval", evtchn(EVTCHNOP_send, &p), -XEN_EINVAL);
    p.port = 0;
    expect_rc("evtchn-close-reserved-einval", evtchn(EVTCHNOP_close, &p), -XEN_EINVAL);
    p.port = 100000;
    expect_rc("evtchn-unmask-einval", evtchn(EVTCHNOP_unmask, &p), -XEN_EINVAL);
    st.port = console_port;
    rc = evtchn(EVTCHNOP_status, &st);
    check(rc == 0 && st.status == EVTCHNSTAT_interdomain && st.u0 == 0, "evtchn-status-console",
          "rc %ld status %u remote domain %u", (int64_t)rc, st.status, st.u0);
    struct xen_evtchn_alloc_unbound other = {.dom = 3};
    expect_rc("evtchn-alloc-esrch", evtchn(EVTCHNOP_alloc_unbound, &other), -XEN_ESRCH);
    expect_rc("evtchn-bind-virq-enosys", evtchn(EVTCHNOP_bind_virq, &other), -XEN_ENOSYS);

    /* The PV console: a line into the out ring, a send on its port; the back end takes it. */
    if (!console_pfn) return;
    volatile struct xencons_interface *ring = (volatile struct xencons_interface *)(uintptr_t)(console_pfn << 12);
    static const char line[] = NAME " pv console: hello\n";
    uint32_t prod = ring->out_prod;
    for (unsigned i = 0; i < sizeof line - 1; i++) ring->out[(prod + i) % 2048] = line[i];
    __asm__ volatile("" ::: "memory");
    ring->out_prod = prod + sizeof line - 1;
    p.port = console_port;
    expect_rc("pv-console-send", evtchn(EVTCHNOP_send, &p), 0);
    check(ring->out_cons == ring->out_prod, "pv-console-drained", "out_cons %u out_prod %u after the notification",
          ring->out_cons, ring->out_prod);
    if (!pv_input) return;
    /* Input: whatever arrives in the in ring, up to a newline (polled; no upcall handler here). */
    char text[64];
    unsigned n = 0;
    for (unsigned long spin = 0; spin < 200000000ul && n < sizeof text - 1; spin++) {
        __asm__ volatile("" ::: "memory");
        if (ring->in_cons == ring->in_prod) continue;
        char ch = ring->in[ring->in_cons % 1024];
        ring->in_cons = ring->in_cons + 1;
        if (ch == '\n') break;
        text[n++] = ch;
    }
    text[n] = 0;
    print("fact pv_console_input %s\n", n ? text : "(none)");
    check(n > 0, "pv-console-input", "no input arrived in the in ring");
}

/* ---- 8. an upcall on a vector: an IPI port raised on this vCPU ----
 * The handler does what a guest's 2-level demultiplexer does: clear evtchn_upcall_pending, take the
 * selector, and for each word it names take the pending, unmasked ports. An event pending from
 * before (the PV console's) may arrive as soon as the vector is set, as under Xen; the IPI port
 * must then arrive exactly once. */
#define UPCALL_VECTOR 0xF3
#define LAPIC_BASE 0xFEE00000ul
extern char upcall_stub[];
static volatile unsigned upcalls, ipi_seen;
static unsigned ipi_port_wanted;

void upcall_handler(void);
void upcall_handler(void)
{
    const unsigned long bits = sizeof(unsigned long) * 8;
    volatile unsigned long *selector = (volatile unsigned long *)(shinfo_page + sizeof(unsigned long));
    volatile unsigned long *pending = (volatile unsigned long *)(shinfo_page + 2048);
    volatile unsigned long *mask = pending + bits;                      /* evtchn_mask follows bits words */
    upcalls++;
    shinfo_page[0] = 0;                                                /* vcpu_info[0].evtchn_upcall_pending */
    for (unsigned long sel = __atomic_exchange_n(selector, 0ul, __ATOMIC_SEQ_CST); sel; sel &= sel - 1) {
        unsigned word = (unsigned)__builtin_ctzl(sel);
        unsigned long ports = pending[word] & ~mask[word];
        __atomic_fetch_and(&pending[word], ~ports, __ATOMIC_SEQ_CST);
        if (ipi_port_wanted && ipi_port_wanted / bits == word && ((ports >> (ipi_port_wanted % bits)) & 1))
            ipi_seen++;
    }
    *(volatile uint32_t *)(LAPIC_BASE + 0xB0) = 0;                     /* EOI */
}

static void set_gate(unsigned vector, unsigned long handler)
{
#ifdef __x86_64__
    idt_table[vector].off0 = (uint16_t)handler;
    idt_table[vector].off1 = (uint16_t)(handler >> 16);
    idt_table[vector].off2 = (uint32_t)(handler >> 32);
#else
    idt_table[vector].off0 = (uint16_t)handler;
    idt_table[vector].off1 = (uint16_t)(handler >> 16);
#endif
}

static void spin_with_interrupts(void)
{
    __asm__ volatile("sti" ::: "memory");
    for (unsigned long spin = 0; spin < 10000000ul && !ipi_seen; spin++) __asm__ volatile("pause" ::: "memory");
    __asm__ volatile("cli" ::: "memory");
}

static void upcall_checks(void)
{
    /* The LAPIC software-enabled (SVR bit 8, spurious vector 0xFF), the gate, the vector. */
    volatile uint32_t *svr = (volatile uint32_t *)(LAPIC_BASE + 0xF0);
    *svr = *svr | 0x1FF;
    set_gate(UPCALL_VECTOR, (unsigned long)upcall_stub);
    struct { uint32_t vcpu; uint8_t vector, pad[3]; } uv = {.vcpu = 0, .vector = UPCALL_VECTOR};
    if (!expect_rc("upcall-vector", HC2(HC_hvm_op, 23 /* HVMOP_set_evtchn_upcall_vector */, &uv), 0))
        return;
    unsigned early = shinfo_page[0];
    spin_with_interrupts();                      /* whatever was pending before arrives now */
    check(!early || upcalls == 1, "upcall-pending-before", "evtchn_upcall_pending was set, %u upcalls once the vector was", upcalls);
    unsigned before = upcalls;
    struct { uint32_t vcpu, port; } ipi = {.vcpu = 0, .port = 0};
    long rc = HC2(HC_event_channel_op, EVTCHNOP_bind_ipi, &ipi);
    if (!check(rc == 0 && ipi.port != 0, "evtchn-bind-ipi", "rc %ld%s port %u", (int64_t)rc, errno_name(rc), ipi.port))
        return;
    ipi_port_wanted = ipi.port;
    struct xen_evtchn_port p = {.port = ipi.port};
    rc = HC2(HC_event_channel_op, EVTCHNOP_send, &p);
    spin_with_interrupts();
    check(rc == 0 && upcalls == before + 1 && ipi_seen == 1, "upcall",
          "send rc %ld, %u upcalls on vector 0x%x and the port seen %u times (want 1 and 1)", (int64_t)rc,
          upcalls - before, UPCALL_VECTOR, ipi_seen);
    /* The 2-level bits were found through the selector and taken: nothing is left pending. */
    unsigned long bits = sizeof(unsigned long) * 8;
    volatile unsigned long *pending = (volatile unsigned long *)(shinfo_page + 2048);
    check(!((pending[ipi.port / bits] >> (ipi.port % bits)) & 1) && shinfo_page[0] == 0, "upcall-bits-taken",
          "port %u still pending or evtchn_upcall_pending %u", ipi.port, shinfo_page[0]);
    print("fact upcalls %u\n", upcalls - before);
}

void hvm_main(void);
void hvm_main(void)
{
    idt_install();
    print("%s: entered via pvh (32-bit protected mode, paging off)%s\n", NAME,
          BITS == 64 ? ", now in long mode" : ", and staying there");
    print("fact abi x86_%u\n", BITS);

    const struct hvm_start_info *si = start_info();
    check(si != 0, "start-info", "EBX 0x%x does not point at an hvm_start_info", start_info_pa);
    parse_cmdline(si);

    /* 1. The Xen leaves. */
    uint32_t base = find_xen_leaves();
    if (!base) {
        fail("xen-cpuid", "no \"XenVMMXenVMM\" leaf with eax >= base + 2 in 0x40000000..0x4000ff00");
        finish();
    }
    uint32_t l0[4], l1[4], l2[4];
    xen_cpuid(base, l0);
    xen_cpuid(base + 1, l1);
    xen_cpuid(base + 2, l2);
    print("fact cpuid_base 0x%x\n", base);
    print("fact cpuid_max_leaf 0x%x\n", l0[0]);
    print("fact cpuid_version 0x%x\n", l1[0]);
    print("fact hypercall_pages %u\n", l2[0]);
    print("fact hypercall_msr 0x%x\n", l2[1]);
    ok("xen-cpuid");
    if (!check(l2[0] >= 1, "xen-cpuid-pages", "leaf 0x%x eax (hypercall pages) %u, want at least 1", base + 2, l2[0]))
        finish();

    /* 2. The hypercall page. */
    if (!install_page(l2[1]))
        finish();
    cio_line("hypercall page installed");
    if (fault_ud2)
        __asm__ volatile("ud2");

    /* 3..7. */
    version_checks(l1[0]);
    hvm_op_checks();
    physmap_checks(si);
    grant_checks();
    evtchn_checks();
    upcall_checks();

    /* 8. console_io, then the shutdown. */
    static const char msg[] = NAME " console_io: checks done\n";
    expect_rc("console-io", console_write(msg, sizeof msg - 1), 0);
    finish();
}

/*
 * Swiftlet SMP guest: the BSP finds the CPUs (MP table or ACPI MADT), wakes every AP with
 * INIT-SIPI-SIPI (xAPIC or x2APIC ICR), one at a time, and reports. See Guests/README.md.
 */
#include "smp.h"
#include "idt.h"
#include "cpu.h"

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
#define HVM_START_MAGIC 0x336ec578u

#define CHECKPOINT_PORT 0x504
#define POWEROFF_PORT 0x500

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_BSP (1u << 8)
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)
#define MSR_X2APIC_ID 0x802
#define MSR_X2APIC_SVR 0x80f
#define MSR_X2APIC_ICR 0x830

#define XAPIC_ID 0x20
#define XAPIC_SVR 0xf0
#define XAPIC_ICR_LO 0x300
#define XAPIC_ICR_HI 0x310

#define ICR_INIT 0x500
#define ICR_STARTUP 0x600
#define ICR_BUSY (1u << 12)
#define ICR_ASSERT (1u << 14)
#define ICR_LEVEL (1u << 15)
#define ICR_ALL_BUT_SELF (3u << 18)

#define INIT_DELAY_US 10000
#define SIPI_DELAY_US 200
#define AP_TIMEOUT_MS 1000
#define AP_TIMEOUT_SHORT_MS 100 /* after 3 APs in a row did not answer */

extern char tramp_start[], tramp_end[], isr_stubs[];
extern uint32_t start_info_pa;

struct cpu_info cpu_info[MAX_CPUS];
static volatile uint32_t claimed[MAX_CPUS / 32]; /* set first: an AP that finds its bit set halts quietly */
static volatile uint32_t online[MAX_CPUS / 32];  /* set after the AP printed its line */
static volatile uint32_t online_count, ap_arrivals, last_ap_id;
static volatile int use_x2apic;
static struct discovery disc;
static char cmdline[4096];

/* ---- CPU helpers ---- */
static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline uint32_t lapic_read(uint32_t off) { return *(volatile uint32_t *)(LAPIC_BASE + off); }
static inline void lapic_write(uint32_t off, uint32_t v) { *(volatile uint32_t *)(LAPIC_BASE + off) = v; }

static int bit_test(volatile uint32_t *bm, uint32_t id)
{
    return (__atomic_load_n(&bm[id / 32], __ATOMIC_ACQUIRE) >> (id % 32)) & 1;
}
static int bit_test_and_set(volatile uint32_t *bm, uint32_t id)
{
    return (__atomic_fetch_or(&bm[id / 32], 1u << (id % 32), __ATOMIC_SEQ_CST) >> (id % 32)) & 1;
}

int cpu_online(uint32_t id)
{
    return id < MAX_CPUS && bit_test(online, id);
}

/* This CPU's APIC ID, through the interface selected on the command line. */
static uint32_t apic_id(void)
{
    return use_x2apic ? (uint32_t)rdmsr(MSR_X2APIC_ID) : lapic_read(XAPIC_ID) >> 24;
}

static void record_self(uint32_t id, uint64_t apic_base)
{
    uint32_t r[4];
    cpuid(1, 0, r);
    cpu_info[id].apic_id = id;
    cpu_info[id].eax = r[0];
    cpu_info[id].ebx = r[1];
    cpu_info[id].ecx = r[2];
    cpu_info[id].edx = r[3];
    cpu_info[id].apic_base = apic_base;
    cpuid(0xb, 1, r);
    cpu_info[id].topo_core_eax = r[0];
    cpu_info[id].topo_core_ebx = r[1];
    cpu_info[id].topo_core_edx = r[3];
    cpuid(0xb, 2, r);
    cpu_info[id].topo_end_ecx = r[2];
}

/* ---- exceptions (IDT from common/idt.h, shared by every CPU) ---- */
NORETURN void exception_handler(uint64_t vector, uint64_t error, uint64_t rip)
{
    uint32_t r[4];
    cpuid(1, 0, r);
    /* Take the console if we can, but do not wait forever (the fault may be inside print). */
    for (unsigned long i = 0; i < 100000000UL && !console_trylock(); i++)
        pause();
    console_unlock();
    print("FAIL exception %lu rip=0x%lx error=0x%lx cpu=%u\n", vector, rip, error, r[1] >> 24);
    if (vector == 14)
        print("fact exception_cr2 0x%lx\n", read_cr2());
    n_fail++;
    poweroff(2);
}

/* ---- IPIs ---- */
static int xapic_idle(void)
{
    uint64_t end = rdtsc() + 100 * tsc_per_ms;
    while (lapic_read(XAPIC_ICR_LO) & ICR_BUSY)
        if (rdtsc() > end)
            return 0;
    return 1;
}

static int send_ipi(uint32_t dest, uint32_t low)
{
    if (use_x2apic) {
        wrmsr(MSR_X2APIC_ICR, ((uint64_t)dest << 32) | low);
        return 1;
    }
    if (!xapic_idle())
        return 0;
    lapic_write(XAPIC_ICR_HI, dest << 24);
    lapic_write(XAPIC_ICR_LO, low);
    return xapic_idle();
}

/* INIT, INIT deassert (xAPIC), 10 ms, SIPI, 200 us, SIPI. */
static int init_sipi_sipi(uint32_t dest, uint32_t shorthand)
{
    uint32_t vector = TRAMPOLINE >> 12;
    int sent = send_ipi(dest, shorthand | ICR_LEVEL | ICR_ASSERT | ICR_INIT);
    if (!use_x2apic)
        sent &= send_ipi(dest, shorthand | ICR_LEVEL | ICR_INIT);
    udelay(INIT_DELAY_US);
    sent &= send_ipi(dest, shorthand | ICR_STARTUP | vector);
    udelay(SIPI_DELAY_US);
    sent &= send_ipi(dest, shorthand | ICR_STARTUP | vector);
    return sent;
}

static int wait_online(uint32_t id, uint64_t ms)
{
    uint64_t end = rdtsc() + ms * tsc_per_ms;
    while (!bit_test(online, id)) {
        if (rdtsc() > end)
            return bit_test(online, id);
        pause();
    }
    return 1;
}

static int consecutive_timeouts;

static void wake(uint32_t id, uint32_t bsp_id)
{
    char name[32];
    ksnprintf(name, sizeof name, "wake-%u", id);
    if (id >= MAX_CPUS) {
        fail(name, "APIC ID %u is beyond this guest's limit of %d CPUs", id, MAX_CPUS);
        return;
    }
    if (bit_test(claimed, id)) {
        fail(name, "APIC ID %u is listed twice", id);
        return;
    }
    /* 0xff is the xAPIC broadcast ID: reach it with the all-but-self shorthand. Every AP that is
     * already up is reset by the INIT and comes through the trampoline again; it finds its
     * bit in `claimed` and halts without a word. */
    int broadcast = !use_x2apic && id == 0xff && bsp_id != 0xff;
    uint32_t arrivals = ap_arrivals;
    uint32_t before = online_count;
    uint64_t ms = consecutive_timeouts >= 3 ? AP_TIMEOUT_SHORT_MS : AP_TIMEOUT_MS;
    int sent = broadcast ? init_sipi_sipi(0, ICR_ALL_BUT_SELF) : init_sipi_sipi(id, 0);
    if (wait_online(id, ms)) {
        consecutive_timeouts = 0;
        if (broadcast) {
            /* Let the re-started APs halt again: wait (at most 2 s) until every AP that was up
             * has come through again and then no more arrive for 20 ms. */
            uint32_t expect = arrivals + before; /* the APs that were up (before - BSP) and this one */
            uint64_t limit = rdtsc() + 2000 * tsc_per_ms;
            uint32_t seen = ap_arrivals;
            uint64_t quiet = rdtsc() + 20 * tsc_per_ms;
            while (rdtsc() < limit && (ap_arrivals < expect || rdtsc() < quiet)) {
                if (ap_arrivals != seen) {
                    seen = ap_arrivals;
                    quiet = rdtsc() + 20 * tsc_per_ms;
                }
                pause();
            }
            ok_note(name, "APIC ID 0xff is the xAPIC broadcast ID: INIT-SIPI-SIPI to all but self");
        } else {
            ok(name);
        }
        return;
    }
    consecutive_timeouts++;
    if (!sent)
        fail(name, "the ICR stayed busy (delivery status) for more than 100 ms");
    else if (online_count != before)
        fail(name, "no check-in within %lu ms, but APIC ID %u checked in", ms, last_ap_id);
    else if (ap_arrivals != arrivals)
        fail(name, "an AP reached the trampoline but did not check in within %lu ms", ms);
    else
        fail(name, "no AP reached the trampoline within %lu ms", ms);
}

/* ---- AP ---- */
void ap_main(void)
{
    idt_lidt();
    __atomic_fetch_add(&ap_arrivals, 1, __ATOMIC_SEQ_CST);
    uint64_t base = rdmsr(MSR_APIC_BASE);
    if (use_x2apic && !(base & APIC_BASE_X2APIC))
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
    uint32_t id = apic_id();
    if (id >= MAX_CPUS) {
        print("ap %u up (beyond this guest's %d CPUs: not checked in)\n", id, MAX_CPUS);
        halt_forever();
    }
    if (bit_test_and_set(claimed, id))
        halt_forever(); /* came back after a broadcast INIT */
    record_self(id, base);
    print("ap %u up\n", id);
    last_ap_id = id;
    __atomic_fetch_add(&online_count, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_or(&online[id / 32], 1u << (id % 32), __ATOMIC_RELEASE);
    halt_forever();
}

/* ---- command line ---- */
static const char *opt(const char *key, uint64_t *vn)
{
    uint64_t kl = strlen(key);
    for (uint64_t i = 0; cmdline[i]; i++) {
        if ((i == 0 || cmdline[i - 1] == ' ') && memcmp(cmdline + i, key, kl) == 0) {
            const char *v = cmdline + i + kl;
            uint64_t n = 0;
            while (v[n] && v[n] != ' ')
                n++;
            *vn = n;
            return v;
        }
    }
    return 0;
}

static int opt_is(const char *v, uint64_t n, const char *word)
{
    return n == strlen(word) && memcmp(v, word, n) == 0;
}

/* ---- checks across all CPUs that came up ---- */
static void cpuid_checks(uint32_t bsp_id, uint32_t ncpus)
{
    int bad_id = -1, bad_hv = -1, bad_base = -1, bad_topo = -1;
    for (uint32_t id = 0; id < MAX_CPUS; id++) {
        if (!cpu_online(id))
            continue;
        const struct cpu_info *ci = &cpu_info[id];
        if (bad_id < 0 && (ci->ebx >> 24) != id)
            bad_id = (int)id;
        if (bad_hv < 0 && !(ci->ecx & (1u << 31)))
            bad_hv = (int)id;
        if (bad_base < 0 && id != bsp_id && (ci->apic_base & 0xfffff900UL) != 0xfee00800UL)
            bad_base = (int)id;
        /* Leaf 0xB: core level (type 2 in ECX[15:8]) lists every CPU; the x2APIC ID is ours;
           the shift covers every ID; subleaf 2 ends the levels. */
        if (bad_topo < 0 && (ci->topo_core_edx != id || ci->topo_core_ebx != ncpus
                             || (1u << (ci->topo_core_eax & 0x1f)) < ncpus || (ci->topo_end_ecx & 0xff00) != 0))
            bad_topo = (int)id;
    }
    if (bad_topo < 0)
        ok("cpuid-topology");
    else
        fail("cpuid-topology", "CPU with APIC ID %d has CPUID.0xB.1 EAX 0x%x EBX 0x%x EDX 0x%x (want %u CPUs), 0xB.2 ECX 0x%x",
             bad_topo, cpu_info[bad_topo].topo_core_eax, cpu_info[bad_topo].topo_core_ebx,
             cpu_info[bad_topo].topo_core_edx, ncpus, cpu_info[bad_topo].topo_end_ecx);
    if (bad_id < 0)
        ok("cpuid-apic-id");
    else
        fail("cpuid-apic-id", "CPU with APIC ID %d has CPUID.1:EBX[31:24] = %u", bad_id, cpu_info[bad_id].ebx >> 24);
    if (bad_hv < 0)
        ok("cpuid-hypervisor");
    else
        fail("cpuid-hypervisor", "CPU with APIC ID %d has CPUID.1:ECX 0x%x without bit 31", bad_hv, cpu_info[bad_hv].ecx);
    if (bad_base < 0)
        ok("ap-apic-base");
    else
        fail("ap-apic-base", "AP with APIC ID %d has IA32_APIC_BASE 0x%lx, want base 0xfee00000, enabled, BSP flag clear",
             bad_base, cpu_info[bad_base].apic_base);
}

static void print_online(void)
{
    static char line[MAX_CPUS * 4 + 32];
    size_t o = 0;
    o += (size_t)ksnprintf(line, sizeof line, "fact online ");
    int first = 1;
    for (uint32_t id = 0; id < MAX_CPUS; id++) {
        if (!cpu_online(id))
            continue;
        o += (size_t)ksnprintf(line + o, sizeof line - o, first ? "%u" : ",%u", id);
        first = 0;
    }
    print("%s\n", line);
}

/* ---- BSP ---- */
NORETURN void smp_main(void)
{
    idt_fill(KCODE64);
    idt_lidt();

    const struct hvm_start_info *si = (const struct hvm_start_info *)(uint64_t)start_info_pa;
    uint64_t rsdp = 0;
    int si_ok = si && si->magic == HVM_START_MAGIC;
    if (si_ok) {
        rsdp = si->rsdp_paddr;
        uint64_t c = si->cmdline_paddr;
        if (c && c < TABLE_LIMIT)
            for (size_t i = 0; i + 1 < sizeof cmdline && rd8(c + i); i++)
                cmdline[i] = (char)rd8(c + i);
    }

    uint64_t vn = 0;
    const char *v = opt("smp.discover=", &vn);
    int use_madt = 0, bad_opt = 0;
    if (v && opt_is(v, vn, "madt"))
        use_madt = 1;
    else if (v && !opt_is(v, vn, "mptable"))
        bad_opt = 1;
    const char *a = opt("smp.apic=", &vn);
    int want_x2apic = 0;
    if (a && opt_is(a, vn, "x2apic"))
        want_x2apic = 1;
    else if (a && !opt_is(a, vn, "xapic"))
        bad_opt = 2;

    print("smp: discover=%s apic=%s\n", use_madt ? "madt" : "mptable", want_x2apic ? "x2apic" : "xapic");
    if (!check(si_ok, "start-info", "EBX 0x%x holds no hvm_start_info (magic 0x%x)", start_info_pa,
               si ? si->magic : 0)) {
        summary();
        poweroff(1);
    }
    if (bad_opt) {
        const char *key = bad_opt == 1 ? "smp.discover" : "smp.apic";
        const char *val = bad_opt == 1 ? v : a;
        opt(bad_opt == 1 ? "smp.discover=" : "smp.apic=", &vn);
        char buf[48];
        size_t n = vn < 40 ? vn : 40;
        memcpy(buf, val, n);
        buf[n] = 0;
        fail("cmdline", "unknown %s value '%s' (want %s)", key, buf, bad_opt == 1 ? "mptable or madt" : "xapic or x2apic");
        summary();
        poweroff(1);
    }

    tsc_calibrate();

    /* The BSP's own APIC (xAPIC first; x2APIC on request). */
    uint64_t base = rdmsr(MSR_APIC_BASE);
    check((base & 0xfffff900UL) == 0xfee00900UL, "bsp-apic-base",
          "IA32_APIC_BASE 0x%lx, want base 0xfee00000, enabled, BSP flag set", base);
    uint32_t bsp_id = lapic_read(XAPIC_ID) >> 24;
    if (want_x2apic) {
        uint32_t r[4];
        cpuid(1, 0, r);
        if (check(r[2] & (1u << 21), "x2apic-supported", "CPUID.1:ECX 0x%x lacks bit 21; waking through the xAPIC",
                  r[2])) {
            wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
            uint64_t now = rdmsr(MSR_APIC_BASE);
            uint32_t x2id = (uint32_t)rdmsr(MSR_X2APIC_ID);
            if (check((now & (APIC_BASE_ENABLE | APIC_BASE_X2APIC)) == (APIC_BASE_ENABLE | APIC_BASE_X2APIC) &&
                          x2id == bsp_id,
                      "x2apic-enable", "IA32_APIC_BASE 0x%lx, x2APIC ID %u (xAPIC ID was %u)", now, x2id, bsp_id)) {
                use_x2apic = 1;
                bsp_id = x2id;
            }
        }
    }
    if (use_x2apic)
        wrmsr(MSR_X2APIC_SVR, (rdmsr(MSR_X2APIC_SVR) & ~0x1ffUL) | 0x1ff);
    else
        lapic_write(XAPIC_SVR, (lapic_read(XAPIC_SVR) & ~0x1ffu) | 0x1ff); /* software-enable, vector 0xff */
    record_self(bsp_id, base);

    /* Find the CPUs. */
    if (use_madt)
        madt_discover(bsp_id, rsdp, &disc);
    else
        mptable_discover(bsp_id, &disc);
    int listed = 0;
    for (uint32_t i = 0; i < disc.n; i++)
        listed |= disc.ids[i] == bsp_id;
    check(listed, "bsp-listed", "the BSP's APIC ID %u is not among the %u CPUs listed", bsp_id, disc.n);

    /* The BSP checks in, then wakes every other enabled CPU, one at a time. */
    bit_test_and_set(claimed, bsp_id);
    online_count = 1;
    __atomic_fetch_or(&online[bsp_id / 32], 1u << (bsp_id % 32), __ATOMIC_RELEASE);
    memcpy((void *)(uint64_t)TRAMPOLINE, tramp_start, (size_t)(tramp_end - tramp_start));
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    outl(CHECKPOINT_PORT, 1);
    for (uint32_t i = 0; disc.ok && i < disc.n; i++) {
        uint32_t id = disc.ids[i];
        if (id == bsp_id || !disc.enabled[i])
            continue;
        wake(id, bsp_id);
    }
    udelay(1000); /* the last AP is on its way into hlt */
    outl(CHECKPOINT_PORT, 2);

    cpuid_checks(bsp_id, disc.n);
    if (!use_madt)
        mptable_cpuid_checks();

    print("fact bsp %u\n", bsp_id);
    print("fact cpus %u\n", disc.n);
    print_online();
    summary();
    poweroff(n_fail ? 1 : 0);
}

/*
 * Swiftlet xenvcpu guest: the Xen hypercall interface seen from a xen64 kernel. The boot vCPU
 * checks the CPUID leaves and the hypercall page the VMM wrote at XEN_ELFNOTE_HYPERCALL_PAGE,
 * counts the vCPUs with VCPUOP_is_up, starts every AP with VCPUOP_initialise + VCPUOP_up, takes
 * one down and up again, and checks the error codes of vcpu_op, console_io, sched_op,
 * xen_version, set_trap_table, set_callbacks and callback_op. See Guests/README.md.
 */
#include "layout.h"
#include "lib.h"
#include "xen.h"
#include "idt.h"
#include "xenstart.h"


#define CHECKPOINT_PORT 0x504
#define COOKIE 0x5377696674000000UL /* "\0\0\0tfiwS": the AP's RSI is COOKIE + id */
#define LOW_RAM_LIMIT 0xc0000000UL
#define FOUR_GIB 0x100000000UL
#define YIELD_EVERY 4096          /* AP loop iterations between two sched_op(yield); the first at once */
#define COUNT_BEFORE_PARK 512     /* an AP counts at least this far (and yields once) before it is parked */
#define CHECKIN_MS 2000
#define CHECKIN_SHORT_MS 200      /* after 3 APs in a row did not check in */

/* ---- from entry.S and the linker script ---- */
extern uint8_t hypercall_page[4096];
extern uint8_t edge_page[4096];
extern uint64_t pt_pml4[512];
extern char isr_stubs[], ap_start[], callback_event[], callback_failsafe[], callback_syscall[];
extern uint64_t boot_rsi, boot_rsp, boot_cr3;

uint8_t *xen_hcall_page DATA = hypercall_page;

/* ---- what an AP saw at entry: pushed by ap_start, lowest address first ---- */
struct ap_frame {
    uint8_t idtr[16], gdtr[16];
    uint64_t gs, fs, ss, es, ds, cs;
    uint64_t kgsbase, gsbase, fsbase, efer, cr4, cr3, cr0, rsp;
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax, rflags;
};
_Static_assert(sizeof(struct ap_frame) == 272, "ap_start pushes 272 bytes");

enum { AP_NONE, AP_IN, AP_PARKED };
enum { CMD_RUN, CMD_PARK, CMD_SELF_DOWN };

struct ap {
    volatile uint32_t state, entries, cmd, self_down_done;
    volatile uint64_t counter, yields, yield_bad;
    volatile int64_t yield_bad_rc, self_down_rc, console_rc;
    struct ap_frame frame;
    uint64_t stack_top, cookie, flags; /* what the boot vCPU passed in the context */
    int64_t init_rc, up_rc;
    int started;                        /* checked in after initialise + up */
} __attribute__((aligned(64)));

static struct ap aps[MAX_VCPUS];
static uint8_t ap_stacks[MAX_VCPUS][AP_STACK_SIZE] __attribute__((aligned(4096)));
static volatile uint32_t stray_entries; /* APs that came in with an id we did not give */
static volatile uint64_t stray_rdi;

static struct xen_vcpu_guest_context ctx; /* the boot vCPU's context buffer */
static uint32_t nv, self_id, first_ap, reserved_ap, n_started;
static int have_first_ap, have_reserved;
static uint64_t ram_size, low_ram_end, ram_top;
static char cmdline[1024];
static uint64_t tsc_per_ms;
static const char *tsc_source;
static int park_aps = 1;

static enum { SD_REASON, SD_DOWN } shutdown_mode = SD_REASON;
static uint32_t shutdown_reason = SHUTDOWN_poweroff;
static const char *shutdown_name = "poweroff";

/* ---- small helpers ---- */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}
static uint64_t pml4_phys(void) { return (uint64_t)pt_pml4 - VIRT_BASE; }
static int64_t is_up(uint64_t id) { return xen_vcpu_op(VCPUOP_is_up, id, 0); }
static int nul_within(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == 0)
            return 1;
    return 0;
}

/* TSC rate: CPUID 0x15, else 0x16, else 4 GHz is assumed (delays then come out long, not short). */
static void tsc_init(void)
{
    uint32_t r[4];
    xen_cpuid(0, r);
    uint32_t max = r[0];
    if (max >= 0x15) {
        xen_cpuid(0x15, r);
        if (r[0] && r[1] && r[2]) {
            uint64_t khz = (uint64_t)r[2] / 1000 * r[1] / r[0];
            if (khz >= 100000 && khz <= 10000000) {
                tsc_per_ms = khz;
                tsc_source = "cpuid-0x15";
                return;
            }
        }
    }
    if (max >= 0x16) {
        xen_cpuid(0x16, r);
        if (r[0] >= 100 && r[0] <= 10000) {
            tsc_per_ms = (uint64_t)r[0] * 1000;
            tsc_source = "cpuid-0x16";
            return;
        }
    }
    tsc_per_ms = 4000000;
    tsc_source = "assumed-4ghz";
}
static uint64_t deadline_ms(uint64_t ms) { return rdtsc() + ms * tsc_per_ms; }
static int past(uint64_t deadline) { return rdtsc() > deadline; }
static void mdelay(uint64_t ms)
{
    uint64_t d = deadline_ms(ms);
    while (!past(d))
        cpu_relax();
}
static uint64_t tsc_us(uint64_t ticks) { return ticks * 1000 / tsc_per_ms; }

/* ---- exceptions (IDT from common/idt.h, shared by every vCPU) ---- */
NORETURN void exception_handler(uint64_t vector, uint64_t error, uint64_t rip, uint64_t rsp)
{
    uint64_t base = (uint64_t)ap_stacks;
    uint64_t cpu = rsp >= base && rsp < base + sizeof ap_stacks ? (rsp - base) / AP_STACK_SIZE : self_id;
    /* Take the console if we can, but do not wait forever (the fault may be inside print). */
    for (unsigned long i = 0; i < 100000000UL && !console_trylock(); i++)
        cpu_relax();
    console_unlock();
    print("FAIL exception %lu rip=0x%lx error=0x%lx vcpu=%lu\n", vector, rip, error, cpu);
    if (vector == 14)
        print("fact exception_cr2 0x%lx\n", read_cr2());
    n_fail++;
    poweroff(2);
}

/* ---- APs ---- */
static NORETURN void ap_loop(struct ap *a, uint32_t id)
{
    uint64_t local = 0; /* lives in a register: a vCPU resumed with fresh registers would restart at 0 */
    for (;;) {
        a->counter = ++local;
        cpu_relax();
        if (local % YIELD_EVERY == 1) {
            int64_t rc = xen_sched_op(SCHEDOP_yield, 0);
            if (rc != 0) {
                a->yield_bad_rc = rc;
                a->yield_bad = a->yield_bad + 1;
            }
            a->yields = a->yields + 1;
        }
        uint32_t cmd = a->cmd;
        if (cmd == CMD_PARK) {
            __atomic_store_n(&a->state, AP_PARKED, __ATOMIC_RELEASE);
            halt_forever();
        }
        if (cmd == CMD_SELF_DOWN) {
            a->cmd = CMD_RUN;
            a->self_down_rc = xen_vcpu_op(VCPUOP_down, id, 0);
            __atomic_store_n(&a->self_down_done, 1, __ATOMIC_RELEASE);
        }
    }
}

void ap_main(const struct ap_frame *f)
{
    idt_lidt();
    uint64_t id = f->rdi;
    if (id >= MAX_VCPUS || id == self_id) {
        stray_rdi = id;
        __atomic_fetch_add(&stray_entries, 1, __ATOMIC_SEQ_CST);
        halt_forever();
    }
    struct ap *a = &aps[id];
    __atomic_fetch_add(&a->entries, 1, __ATOMIC_SEQ_CST);
    memcpy(&a->frame, f, sizeof *f);
    char line[64];
    int n = ksnprintf(line, sizeof line, "ap %lu up via VCPUOP_up\n", id);
    console_lock();
    a->console_rc = xen_console_write(line, (uint64_t)n);
    console_unlock();
    __atomic_store_n(&a->state, AP_IN, __ATOMIC_RELEASE);
    ap_loop(a, (uint32_t)id);
}

/* A valid context for AP `id`: entry ap_start on its own stack, our page tables. */
static void ctx_for(uint32_t id, uint64_t flags)
{
    memset(&ctx, 0, sizeof ctx);
    ctx.flags = flags;
    ctx.user_regs.rip = (uint64_t)ap_start;
    ctx.user_regs.rsp = (uint64_t)&ap_stacks[id][AP_STACK_SIZE];
    ctx.user_regs.rdi = id;
    ctx.user_regs.rsi = COOKIE + id;
    ctx.ctrlreg[3] = pml4_phys();
}

/* Which allowed VGCF flags AP `id` is started with: every allowed combination gets used. */
static uint64_t flags_for(uint32_t id)
{
    switch (id % 4) {
    case 2:
        return VGCF_ALLOWED;
    case 0:
        return 0;
    default:
        return VGCF_in_kernel | VGCF_online;
    }
}

static int consecutive_timeouts;

static void start_ap(uint32_t id)
{
    struct ap *a = &aps[id];
    char name[32];
    ksnprintf(name, sizeof name, "vcpu-start-%u", id);
    a->flags = flags_for(id);
    ctx_for(id, a->flags);
    a->stack_top = ctx.user_regs.rsp;
    a->cookie = ctx.user_regs.rsi;
    a->init_rc = xen_vcpu_op(VCPUOP_initialise, id, &ctx);
    a->up_rc = xen_vcpu_op(VCPUOP_up, id, 0);
    uint64_t ms = consecutive_timeouts >= 3 ? CHECKIN_SHORT_MS : CHECKIN_MS;
    uint64_t d = deadline_ms(ms);
    while (__atomic_load_n(&a->state, __ATOMIC_ACQUIRE) == AP_NONE && !past(d))
        cpu_relax();
    int in = a->state != AP_NONE;
    consecutive_timeouts = in ? 0 : consecutive_timeouts + 1;
    if (a->init_rc != 0 || a->up_rc != 0 || !in) {
        fail(name, "initialise returned %ld%s, up returned %ld%s, %s", a->init_rc, xen_errno_name(a->init_rc),
             a->up_rc, xen_errno_name(a->up_rc),
             in ? "the AP checked in" : "no check-in within the timeout");
        if (!in)
            print("fact vcpu_%u_timeout_ms %lu\n", id, ms);
    } else {
        ok(name);
    }
    if (!in)
        return;
    a->started = 1;
    n_started++;
    /* Let it count (and yield) a while, then park it unless it is the one the down tests use. */
    d = deadline_ms(1000);
    while ((a->counter < COUNT_BEFORE_PARK || a->yields == 0) && !past(d))
        cpu_relax();
    if (park_aps && id != first_ap)
        a->cmd = CMD_PARK;
}

#define FOR_STARTED(v) for (uint32_t v = 0; v < nv && v < MAX_VCPUS; v++) if (aps[v].started)

/* One check over every started AP: `cond` may use id, a (struct ap *) and f (its entry frame). */
#define AP_CHECK(name, cond, fmt, ...)                                                                    \
    do {                                                                                                  \
        int bad_ = -1;                                                                                    \
        uint32_t nbad_ = 0, cnt_ = 0;                                                                     \
        FOR_STARTED(id) {                                                                                 \
            const struct ap *a = &aps[id];                                                                \
            const struct ap_frame *f = &a->frame;                                                         \
            (void)a;                                                                                      \
            (void)f;                                                                                      \
            cnt_++;                                                                                       \
            if (!(cond)) {                                                                                \
                nbad_++;                                                                                  \
                if (bad_ < 0)                                                                             \
                    bad_ = (int)id;                                                                       \
            }                                                                                             \
        }                                                                                                 \
        if (cnt_ == 0) {                                                                                  \
            ok_note(name, "no AP started");                                                               \
        } else if (bad_ < 0) {                                                                            \
            ok(name);                                                                                     \
        } else {                                                                                          \
            uint32_t id = (uint32_t)bad_;                                                                 \
            const struct ap *a = &aps[id];                                                                \
            const struct ap_frame *f = &a->frame;                                                         \
            (void)a;                                                                                      \
            (void)f;                                                                                      \
            fail(name, "%u of %u APs, first vCPU %u: " fmt, nbad_, cnt_, id, __VA_ARGS__);                \
        }                                                                                                 \
    } while (0)

static uint64_t gdtr_base(const struct ap_frame *f)
{
    uint64_t b;
    memcpy(&b, f->gdtr + 2, 8);
    return b;
}
static uint16_t idtr_limit(const struct ap_frame *f)
{
    uint16_t l;
    memcpy(&l, f->idtr, 2);
    return l;
}
static int gprs_zero(const struct ap_frame *f)
{
    return !(f->rax | f->rbx | f->rcx | f->rdx | f->rbp | f->r8 | f->r9 | f->r10 | f->r11 | f->r12 | f->r13 |
             f->r14 | f->r15);
}

static void ap_entry_checks(void)
{
    AP_CHECK("ap-entry-cr0", f->cr0 == 0x80000011, "cr0 0x%lx want 0x80000011", f->cr0);
    AP_CHECK("ap-entry-cr4", f->cr4 == 0x20, "cr4 0x%lx want 0x20", f->cr4);
    AP_CHECK("ap-entry-efer", f->efer == 0x500, "efer 0x%lx want 0x500", f->efer);
    AP_CHECK("ap-entry-cr3", f->cr3 == pml4_phys(), "cr3 0x%lx want ctrlreg[3] 0x%lx", f->cr3, pml4_phys());
    AP_CHECK("ap-entry-rdi", f->rdi == id, "rdi 0x%lx want %u", f->rdi, id);
    AP_CHECK("ap-entry-rsi", f->rsi == a->cookie, "rsi 0x%lx want 0x%lx", f->rsi, a->cookie);
    AP_CHECK("ap-entry-rsp", f->rsp == a->stack_top, "rsp 0x%lx want 0x%lx", f->rsp, a->stack_top);
    AP_CHECK("ap-entry-gprs", gprs_zero(f),
             "want 0: rax 0x%lx rbx 0x%lx rcx 0x%lx rdx 0x%lx rbp 0x%lx r8 0x%lx r9 0x%lx r10 0x%lx r11 0x%lx "
             "r12 0x%lx r13 0x%lx r14 0x%lx r15 0x%lx",
             f->rax, f->rbx, f->rcx, f->rdx, f->rbp, f->r8, f->r9, f->r10, f->r11, f->r12, f->r13, f->r14, f->r15);
    AP_CHECK("ap-entry-rflags", f->rflags == 0x2, "rflags 0x%lx want 0x2", f->rflags);
    AP_CHECK("ap-entry-cs", f->cs == KCODE64, "cs 0x%lx want 0x10", f->cs);
    AP_CHECK("ap-entry-data-selectors", f->ds == KDATA && f->es == KDATA && f->ss == KDATA && f->fs == KDATA &&
                                            f->gs == KDATA,
             "ds 0x%lx es 0x%lx ss 0x%lx fs 0x%lx gs 0x%lx want 0x18", f->ds, f->es, f->ss, f->fs, f->gs);
    AP_CHECK("ap-entry-segment-bases", f->fsbase == 0 && f->gsbase == 0 && f->kgsbase == 0,
             "fs base 0x%lx gs base 0x%lx kernel gs base 0x%lx want 0", f->fsbase, f->gsbase, f->kgsbase);
    AP_CHECK("ap-entry-gdtr", gdtr_base(f) == 0x500, "GDTR base 0x%lx want 0x500", gdtr_base(f));
    AP_CHECK("ap-entry-idtr", idtr_limit(f) == 0, "IDTR limit 0x%x want 0", idtr_limit(f));
    AP_CHECK("ap-console-io", a->console_rc == 0, "console_io write returned %ld%s", a->console_rc,
             xen_errno_name(a->console_rc));
    AP_CHECK("ap-counting", a->counter >= COUNT_BEFORE_PARK, "counter %lu want >= %u", a->counter,
             COUNT_BEFORE_PARK);
    AP_CHECK("ap-yield", a->yields > 0 && a->yield_bad == 0, "%lu sched_op(yield) calls, %lu failed, last %ld",
             a->yields, a->yield_bad, a->yield_bad_rc);
    AP_CHECK("ap-single-entry", a->entries == 1, "entered ap_start %u times", a->entries);
    AP_CHECK("is-up-started", is_up(id) == 1, "is_up returned %ld", is_up(id));
    check(stray_entries == 0, "ap-stray-entries", "%u APs entered with rdi 0x%lx (not an id we started)",
          stray_entries, stray_rdi);
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

static int word_is(const char *v, uint64_t n, const char *w) { return n == strlen(w) && memcmp(v, w, n) == 0; }

/* The n bytes at v as a string (for messages; cut at 63). */
static const char *word(const char *v, uint64_t n)
{
    static char buf[64];
    if (n > sizeof buf - 1)
        n = sizeof buf - 1;
    memcpy(buf, v, n);
    buf[n] = 0;
    return buf;
}

/* xen.bench=1: bring every AP up between checkpoints 1 and 2, for the VMM's benchmark. */
static int bench_mode;

static void parse_cmdline(void)
{
    static const struct {
        const char *name;
        uint32_t reason;
    } reasons[] = {{"poweroff", SHUTDOWN_poweroff}, {"reboot", SHUTDOWN_reboot},     {"suspend", SHUTDOWN_suspend},
                   {"crash", SHUTDOWN_crash},       {"watchdog", SHUTDOWN_watchdog}, {"soft_reset", SHUTDOWN_soft_reset}};
    static char number[16];
    uint64_t n;
    const char *v = opt("xen.shutdown=", &n);
    if (v) {
        int found = 0;
        for (unsigned i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
            if (word_is(v, n, reasons[i].name)) {
                shutdown_reason = reasons[i].reason;
                shutdown_name = reasons[i].name;
                found = 1;
            }
        }
        if (!found && word_is(v, n, "down")) {
            shutdown_mode = SD_DOWN;
            shutdown_name = "down";
            found = 1;
        }
        if (!found && n > 0 && n < 10) {
            uint64_t x = 0, i = 0;
            while (i < n && v[i] >= '0' && v[i] <= '9')
                x = x * 10 + (uint64_t)(v[i++] - '0');
            if (i == n && x <= 0xffffffffUL) {
                shutdown_reason = (uint32_t)x;
                memcpy(number, v, n);
                number[n] = 0;
                shutdown_name = number;
                found = 1;
            }
        }
        if (!found)
            fail("cmdline", "xen.shutdown=%s: want poweroff, reboot, suspend, crash, watchdog, soft_reset, down or a "
                            "number",
                 word(v, n));
    }
    v = opt("xen.bench=", &n);
    if (v)
        bench_mode = word_is(v, n, "1");
    v = opt("xen.park=", &n);
    if (v) {
        if (word_is(v, n, "no"))
            park_aps = 0;
        else if (!word_is(v, n, "yes"))
            fail("cmdline", "xen.park=%s: want yes or no", word(v, n));
    }
}

/* ---- the checks ---- */
static void abi_checks(void)
{
    uint64_t in[16], out[16];
    for (int i = 0; i < 16; i++)
        in[i] = 0x0123456789abcdefUL ^ ((uint64_t)(i + 1) * 0x1111111111111111UL);
    in[REG_RSP] = 0;
    in[REG_RDI] = XENVER_version;
    in[REG_RSI] = 0;
    xen_abi_call64(hypercall_page + HC_xen_version * XEN_HCALL_STUB_SIZE, in, out);
    int bad = -1;
    for (int i = 1; i < 16; i++)
        if (out[i] != in[i] && bad < 0)
            bad = i;
    if (out[REG_RAX] != XEN_VERSION_4_19)
        fail("hypercall-abi-preserved", "xen_version(XENVER_version) through the page: rax 0x%lx want 0x%x",
             out[REG_RAX], XEN_VERSION_4_19);
    else if (bad >= 0)
        fail("hypercall-abi-preserved", "%s changed from 0x%lx to 0x%lx (only rax may change)", xen_reg_names[bad],
             in[bad], out[bad]);
    else
        ok("hypercall-abi-preserved");

    in[REG_RDI] = 0;
    xen_abi_call64(hypercall_page + 11 * XEN_HCALL_STUB_SIZE, in, out);
    check(out[REG_RAX] == (uint64_t)-XEN_ENOSYS, "hypercall-result-sign-extended",
          "hypercall 11: rax 0x%lx want 0x%lx (-ENOSYS sign-extended to 64 bits)", out[REG_RAX],
          (uint64_t)-XEN_ENOSYS);
}

static void discover_vcpus(void)
{
    uint32_t id, up_count = 0, bad_id = 0;
    int have_self = 0;
    int64_t bad_rc = 0;
    for (id = 0; id < 4096; id++) {
        int64_t rc = is_up(id);
        if (rc == -XEN_ENOENT)
            break;
        if (rc == 1) {
            up_count++;
            if (!have_self) {
                self_id = id;
                have_self = 1;
            }
        } else if (rc != 0 && bad_rc == 0) {
            bad_rc = rc;
            bad_id = id;
        }
    }
    nv = id;
    print("fact vcpus %u\n", nv);
    print("fact boot_vcpu %u\n", self_id);
    check(nv >= 1 && nv < 4096 && bad_rc == 0, "vcpu-count",
          "is_up loop: %u vCPUs before -ENOENT (limit 4096); is_up(%u) returned %ld", nv, bad_id, bad_rc);
    if (nv > MAX_VCPUS)
        fail("vcpu-limit", "%u vCPUs: this guest starts at most %u", nv, MAX_VCPUS);
    check(have_self && up_count == 1, "is-up-self", "%u vCPUs report is_up 1, want exactly one (the boot vCPU)",
          up_count);
    if (have_self && up_count == 1)
        ok_note("is-up-aps", nv > 1 ? "every AP reports 0" : "no APs");
    else if (up_count > 1)
        fail("is-up-aps", "%u APs report is_up 1 before anything started them", up_count - 1);
    else
        fail("is-up-aps", "no vCPU is up, not even the boot vCPU");

    uint32_t lim = nv < MAX_VCPUS ? nv : MAX_VCPUS;
    for (id = 0; id < lim; id++) {
        if (id == self_id)
            continue;
        if (!have_first_ap) {
            first_ap = id;
            have_first_ap = 1;
        }
    }
    if (lim >= 3) {
        for (id = lim; id-- > 0;) {
            if (id != self_id && id != first_ap) {
                reserved_ap = id;
                have_reserved = 1;
                break;
            }
        }
    }
}

/* initialise with one stray field: -EINVAL. `target` is a vCPU that was never initialised. */
static void stray(uint32_t target, const char *field, uint32_t off, uint32_t size, uint64_t value)
{
    char name[64];
    ksnprintf(name, sizeof name, "initialise-einval-%s", field);
    ctx_for(target, VGCF_in_kernel | VGCF_online);
    memcpy((uint8_t *)&ctx + off, &value, size);
    check_rc(name, xen_vcpu_op(VCPUOP_initialise, target, &ctx), -XEN_EINVAL);
}

#define UR(field) (uint32_t)(offsetof(struct xen_vcpu_guest_context, user_regs) + offsetof(struct xen_cpu_user_regs, field))
#define CT(field) (uint32_t) offsetof(struct xen_vcpu_guest_context, field)

static void initialise_error_checks(void)
{
    ctx_for(0, VGCF_in_kernel | VGCF_online);
    check_rc("initialise-enoent", xen_vcpu_op(VCPUOP_initialise, nv, &ctx), -XEN_ENOENT);
    if (!have_first_ap) {
        ok_note("initialise-einval", "skipped: 1 vCPU, no AP to initialise");
        ok_note("initialise-efault", "skipped: 1 vCPU, no AP to initialise");
        return;
    }
    uint32_t t = have_reserved ? reserved_ap : first_ap;
    uint64_t cr3 = pml4_phys();
    uint64_t code = (uint64_t)isr_stubs;
    uint64_t stack = (uint64_t)&ap_stacks[t][AP_STACK_SIZE];
    print("fact initialise_target %u\n", t);

    stray(t, "fpu-ctxt", CT(fpu_ctxt), 1, 0x7f);
    stray(t, "fpu-ctxt-last", CT(fpu_ctxt) + 511, 1, 1);
    stray(t, "flags-bit1", CT(flags), 8, VGCF_in_kernel | VGCF_online | (1u << 1));
    stray(t, "flags-bit6", CT(flags), 8, VGCF_in_kernel | VGCF_online | (1u << 6));
    stray(t, "flags-bit9", CT(flags), 8, VGCF_in_kernel | VGCF_online | (1u << 9));
    stray(t, "flags-bit63", CT(flags), 8, VGCF_in_kernel | VGCF_online | (1UL << 63));
    stray(t, "rax", UR(rax), 8, 1);
    stray(t, "rbx", UR(rbx), 8, 1);
    stray(t, "rcx", UR(rcx), 8, 1);
    stray(t, "rdx", UR(rdx), 8, 1);
    stray(t, "rbp", UR(rbp), 8, stack);
    stray(t, "r8", UR(r8), 8, 1);
    stray(t, "r9", UR(r9), 8, 1);
    stray(t, "r10", UR(r10), 8, 1);
    stray(t, "r11", UR(r11), 8, 1);
    stray(t, "r12", UR(r12), 8, 1);
    stray(t, "r13", UR(r13), 8, 1);
    stray(t, "r14", UR(r14), 8, 1);
    stray(t, "r15", UR(r15), 8, 1UL << 63);
    stray(t, "error-code", UR(error_code), 4, 1);
    stray(t, "entry-vector", UR(entry_vector), 4, 14);
    stray(t, "cs", UR(cs), 2, KCODE64);
    stray(t, "cs-pad", UR(cs) + 2, 1, 1);
    stray(t, "saved-upcall-mask", UR(saved_upcall_mask), 1, 1);
    stray(t, "rflags", UR(rflags), 8, 0x2);
    stray(t, "ss", UR(ss), 2, KDATA);
    stray(t, "es", UR(es), 2, KDATA);
    stray(t, "ds", UR(ds), 2, KDATA);
    stray(t, "fs", UR(fs), 2, KDATA);
    stray(t, "gs", UR(gs), 2, KDATA);
    stray(t, "gs-pad", UR(gs) + 7, 1, 1);
    stray(t, "rip-noncanonical", UR(rip), 8, 0x0000800000000000UL);
    stray(t, "rsp-noncanonical", UR(rsp), 8, 0xffff7ffffffff000UL);
    stray(t, "trap-ctxt-3-address", CT(trap_ctxt[3].address), 8, code + 3 * 16);
    stray(t, "trap-ctxt-255-vector", CT(trap_ctxt[255].vector), 1, 0xff);
    stray(t, "ldt-base", CT(ldt_base), 8, VIRT_BASE);
    stray(t, "ldt-ents", CT(ldt_ents), 8, 1);
    stray(t, "gdt-frames-0", CT(gdt_frames[0]), 8, 0x100);
    stray(t, "gdt-ents", CT(gdt_ents), 8, 4);
    stray(t, "kernel-ss", CT(kernel_ss), 8, KDATA);
    stray(t, "kernel-sp", CT(kernel_sp), 8, stack);
    stray(t, "ctrlreg-0", CT(ctrlreg[0]), 8, 0x80000011);
    stray(t, "ctrlreg-1", CT(ctrlreg[1]), 8, cr3);
    stray(t, "ctrlreg-4", CT(ctrlreg[4]), 8, 0x20);
    stray(t, "ctrlreg-3-unaligned", CT(ctrlreg[3]), 8, cr3 + 8);
    stray(t, "ctrlreg-3-beyond-ram", CT(ctrlreg[3]), 8, ram_top);
    stray(t, "debugreg-0", CT(debugreg[0]), 8, code);
    stray(t, "debugreg-7", CT(debugreg[7]), 8, 0x400);
    stray(t, "event-callback-eip", CT(event_callback_eip), 8, (uint64_t)callback_event);
    stray(t, "failsafe-callback-eip", CT(failsafe_callback_eip), 8, (uint64_t)callback_failsafe);
    stray(t, "syscall-callback-eip", CT(syscall_callback_eip), 8, (uint64_t)callback_syscall);
    stray(t, "vm-assist", CT(vm_assist), 8, 1u << 5);
    stray(t, "fs-base", CT(fs_base), 8, 0x1000);
    stray(t, "gs-base-kernel", CT(gs_base_kernel), 8, 0x1000);
    stray(t, "gs-base-user", CT(gs_base_user), 8, 0x1000);
    stray(t, "last-byte", sizeof(struct xen_vcpu_guest_context) - 1, 1, 1);

    /* -EFAULT: the context is not all readable. */
    check_rc("initialise-efault-unmapped", xen_vcpu_op(VCPUOP_initialise, t, (void *)UNMAPPED_VA), -XEN_EFAULT);
    check_rc("initialise-efault-ram-end", xen_vcpu_op(VCPUOP_initialise, t, (void *)(low_ram_end - 64)),
             -XEN_EFAULT);
    check_rc("initialise-efault-page-edge",
             xen_vcpu_op(VCPUOP_initialise, t, (void *)(EDGE_VA + 4096 - 64)), -XEN_EFAULT);
    check_rc("initialise-efault-wrap", xen_vcpu_op(VCPUOP_initialise, t, (void *)0xfffffffffffff000UL), -XEN_EFAULT);
    check_rc("is-up-after-failed-initialise", is_up(t), 0);
}

static int64_t runstate(uint32_t id, struct xen_vcpu_runstate_info *rs)
{
    memset(rs, 0xa5, sizeof *rs);
    return xen_vcpu_op(VCPUOP_get_runstate_info, id, rs);
}

static void check_runstate(const char *name, uint32_t id, int32_t want, struct xen_vcpu_runstate_info *rs)
{
    int64_t rc = runstate(id, rs);
    check(rc == 0 && rs->state == want, name, "vCPU %u: rc %ld%s state %d want rc 0 state %d", id, rc,
          xen_errno_name(rc), rs->state, want);
}

/* Wait up to ms for the counter of `a` to pass `above`; returns the last value read. */
static uint64_t wait_counter_above(const struct ap *a, uint64_t above, uint64_t ms)
{
    uint64_t d = deadline_ms(ms), c;
    while ((c = a->counter) <= above && !past(d))
        cpu_relax();
    return c;
}

static void down_up_checks(void)
{
    if (!have_first_ap || !aps[first_ap].started) {
        const char *why = have_first_ap ? "skipped: the first AP did not start" : "skipped: 1 vCPU";
        if (have_first_ap)
            fail("vcpu-down", "%s", why);
        else
            ok_note("vcpu-down", why);
        return;
    }
    uint32_t id = first_ap;
    struct ap *a = &aps[id];
    struct xen_vcpu_runstate_info rs;
    print("fact down_vcpu %u\n", id);

    uint64_t c0 = a->counter;
    uint64_t c = wait_counter_above(a, c0 + 1000, 1000);
    check(c > c0 + 1000, "vcpu-down-before", "vCPU %u counter went from %lu to %lu in 1 s: not running", id, c0, c);

    int64_t rc = xen_vcpu_op(VCPUOP_down, id, 0);
    uint64_t c1 = a->counter;
    uint64_t t1 = rdtsc();
    check_rc("vcpu-down", rc, 0);
    check_rc("vcpu-down-is-up", is_up(id), 0);
    check_runstate("runstate-down", id, RUNSTATE_offline, &rs);
    uint64_t down_entry = rs.state_entry_time;
    ctx_for(id, VGCF_in_kernel | VGCF_online);
    check_rc("initialise-eexist-down", xen_vcpu_op(VCPUOP_initialise, id, &ctx), -XEN_EEXIST);
    mdelay(10);
    uint64_t c2 = a->counter;
    uint64_t t2 = rdtsc();
    check(c1 == c2, "vcpu-down-stopped", "vCPU %u counter moved from %lu to %lu in %lu us after VCPUOP_down", id, c1,
          c2, tsc_us(t2 - t1));
    print("fact down_counter %lu\n", c2);

    rc = xen_vcpu_op(VCPUOP_up, id, 0);
    uint64_t c3 = a->counter;
    check_rc("vcpu-up-again", rc, 0);
    check_rc("vcpu-up-again-is-up", is_up(id), 1);
    uint64_t c4 = wait_counter_above(a, c2 + 1000, 1000);
    check(c3 >= c2 && c4 > c2 + 1000 && a->entries == 1, "vcpu-resumed",
          "vCPU %u: counter %lu when down, %lu right after up, %lu after up to 1 s; entered ap_start %u times", id, c2,
          c3, c4, a->entries);
    int64_t rrc = runstate(id, &rs);
    check(rrc == 0 && rs.state == RUNSTATE_running && rs.state_entry_time >= down_entry, "runstate-up-again",
          "vCPU %u: rc %ld state %d entry time %lu want rc 0 state 0 entry time >= %lu (when it went down)", id, rrc,
          rs.state, rs.state_entry_time, down_entry);
    check_rc("vcpu-up-already-up", xen_vcpu_op(VCPUOP_up, id, 0), 0);

    /* The AP takes itself down; up makes its VCPUOP_down return 0. */
    __atomic_store_n(&a->self_down_done, 0, __ATOMIC_RELEASE);
    a->cmd = CMD_SELF_DOWN;
    uint64_t d = deadline_ms(1000);
    int64_t u;
    while ((u = is_up(id)) != 0 && !past(d))
        mdelay(1);
    if (check(u == 0, "vcpu-down-self", "vCPU %u still reports is_up %ld 1 s after it was asked to take itself down",
              id, u)) {
        uint64_t s1 = a->counter;
        mdelay(5);
        uint64_t s2 = a->counter;
        check(s1 == s2 && a->self_down_done == 0, "vcpu-down-self-stopped",
              "vCPU %u: counter %lu -> %lu in 5 ms, VCPUOP_down %s", id, s1, s2,
              a->self_down_done ? "already returned" : "not returned");
    }
    check_rc("vcpu-down-self-up", xen_vcpu_op(VCPUOP_up, id, 0), 0);
    d = deadline_ms(1000);
    while (!__atomic_load_n(&a->self_down_done, __ATOMIC_ACQUIRE) && !past(d))
        cpu_relax();
    if (!a->self_down_done)
        fail("vcpu-down-self-return", "vCPU %u: its VCPUOP_down did not return within 1 s of VCPUOP_up", id);
    else
        check_rc("vcpu-down-self-return", a->self_down_rc, 0);
    uint64_t s3 = a->counter;
    uint64_t s4 = wait_counter_above(a, s3 + 1000, 1000);
    check(s4 > s3 + 1000 && a->entries == 1, "vcpu-down-self-resumed",
          "vCPU %u counter %lu -> %lu in 1 s after up; entered ap_start %u times", id, s3, s4, a->entries);
}

static void more_vcpu_op_checks(void)
{
    struct xen_vcpu_runstate_info rs;
    check_rc("is-up-enoent", is_up(nv), -XEN_ENOENT);
    check_rc("is-up-enoent-ffffffff", is_up(0xffffffffUL), -XEN_ENOENT);
    check_rc("vcpu-op-enoent-first", xen_vcpu_op(99, nv, 0), -XEN_ENOENT);
    check_rc("vcpu-op-truncation", xen_vcpu_op(0xffffffff00000000UL | VCPUOP_is_up, 0xffffffff00000000UL | self_id, 0),
             1);
    ctx_for(self_id, VGCF_in_kernel | VGCF_online);
    check_rc("initialise-eexist-self", xen_vcpu_op(VCPUOP_initialise, self_id, &ctx), -XEN_EEXIST);
    if (have_first_ap && aps[first_ap].started) {
        ctx_for(first_ap, VGCF_in_kernel | VGCF_online);
        check_rc("initialise-eexist-running", xen_vcpu_op(VCPUOP_initialise, first_ap, &ctx), -XEN_EEXIST);
    } else {
        ok_note("initialise-eexist-running", have_first_ap ? "skipped: the first AP did not start" : "skipped: 1 vCPU");
    }
    if (have_reserved) {
        print("fact uninitialised_vcpu %u\n", reserved_ap);
        check_rc("vcpu-up-uninitialised", xen_vcpu_op(VCPUOP_up, reserved_ap, 0), -XEN_EINVAL);
        check_rc("is-up-uninitialised", is_up(reserved_ap), 0);
        check_runstate("runstate-never-started", reserved_ap, RUNSTATE_offline, &rs);
    } else {
        ok_note("vcpu-up-uninitialised", "skipped: needs 3 vCPUs");
    }
    check_runstate("runstate-self", self_id, RUNSTATE_running, &rs);
    check_rc("runstate-efault", xen_vcpu_op(VCPUOP_get_runstate_info, self_id, (void *)UNMAPPED_VA), -XEN_EFAULT);
    check_rc("runstate-efault-page-edge",
             xen_vcpu_op(VCPUOP_get_runstate_info, self_id, (void *)(EDGE_VA + 4096 - 24)), -XEN_EFAULT);
    check_rc("vcpu-op-enosys-10", xen_vcpu_op(VCPUOP_register_vcpu_info, self_id, 0), -XEN_ENOSYS);
    check_rc("vcpu-op-enosys-99", xen_vcpu_op(99, self_id, 0), -XEN_ENOSYS);
    int bad_cmd = -1;
    int64_t bad_rc = 0;
    for (int cmd = 5; cmd <= 15; cmd++) {
        int64_t rc = xen_vcpu_op((uint64_t)cmd, self_id, 0);
        if (rc != -XEN_ENOSYS && bad_cmd < 0) {
            bad_cmd = cmd;
            bad_rc = rc;
        }
    }
    check(bad_cmd < 0, "vcpu-op-enosys-5-15", "cmd %d returned %ld%s want -38 (-ENOSYS)", bad_cmd, bad_rc,
          xen_errno_name(bad_rc));
}

static void hypercall_enosys_checks(void)
{
    check_rc("hypercall-enosys-11", HYPERCALL0(11), -XEN_ENOSYS);
    check_rc("hypercall-enosys-42", HYPERCALL0(42), -XEN_ENOSYS);
    check_rc("hypercall-enosys-127", HYPERCALL0(127), -XEN_ENOSYS);
}

static void console_checks(void)
{
    static const char msg[] = "xenvcpu: console_io write from the boot vCPU\n";
    console_lock();
    int64_t rc = xen_console_write(msg, sizeof msg - 1);
    console_unlock();
    check_rc("console-io-write", rc, 0);
    check_rc("console-io-write-empty", xen_console_write(msg, 0), 0);
    check_rc("console-io-read", HYPERCALL3(HC_console_io, CONSOLEIO_read, 16, edge_page), 0);
    check_rc("console-io-efault", HYPERCALL3(HC_console_io, CONSOLEIO_write, 8, UNMAPPED_VA), -XEN_EFAULT);
    check_rc("console-io-enosys", HYPERCALL3(HC_console_io, 7, 0, 0), -XEN_ENOSYS);
}

static void sched_checks(void)
{
    uint32_t reason = SHUTDOWN_poweroff;
    check_rc("sched-op-yield", xen_sched_op(SCHEDOP_yield, 0), 0);
    check_rc("sched-op-block", xen_sched_op(SCHEDOP_block, 0), 0);
    check_rc("sched-op-truncation", xen_sched_op(0x100000000UL | SCHEDOP_yield, 0), 0);
    check_rc("sched-op-shutdown-code", xen_sched_op(SCHEDOP_shutdown_code, &reason), 0);
    check_rc("sched-op-shutdown-efault", xen_sched_op(SCHEDOP_shutdown, (void *)UNMAPPED_VA), -XEN_EFAULT);
    check_rc("sched-op-enosys-3", xen_sched_op(SCHEDOP_poll, 0), -XEN_ENOSYS);
    check_rc("sched-op-enosys-99", xen_sched_op(99, 0), -XEN_ENOSYS);
}

static int padded_string_is(const uint8_t *buf, size_t size, const char *s, const char *name, uint8_t guard)
{
    size_t n = strlen(s);
    int bad = -1;
    for (size_t i = 0; i < size && bad < 0; i++)
        if (buf[i] != (i < n ? (uint8_t)s[i] : 0))
            bad = (int)i;
    if (bad < 0 && buf[size] != guard) {
        fail(name, "wrote past its %lu bytes: byte %lu is 0x%02x", (uint64_t)size, (uint64_t)size, buf[size]);
        return 0;
    }
    if (bad >= 0) {
        char text[40];
        size_t k = 0;
        for (; k < sizeof text - 1 && k < size; k++)
            text[k] = buf[k] >= 0x20 && buf[k] < 0x7f ? (char)buf[k] : '.';
        text[k] = 0;
        fail(name, "byte %d is 0x%02x want 0x%02x; starts \"%s\", want \"%s\" NUL-padded to %lu bytes", bad, buf[bad],
             bad < (int)n ? (uint8_t)s[bad] : 0, text, s, (uint64_t)size);
        return 0;
    }
    ok(name);
    return 1;
}

static void version_checks(void)
{
    static uint8_t buf[1024 + 16];
    check_rc("xen-version", xen_version(XENVER_version, 0), XEN_VERSION_4_19);

    memset(buf, 0xa5, sizeof buf);
    int64_t rc = xen_version(XENVER_extraversion, buf);
    if (check_rc("xen-version-extraversion-rc", rc, 0))
        padded_string_is(buf, 16, "-swiftlet", "xen-version-extraversion", 0xa5);

    memset(buf, 0xa5, sizeof buf);
    rc = xen_version(XENVER_capabilities, buf);
    if (check_rc("xen-version-capabilities-rc", rc, 0))
        padded_string_is(buf, 1024, "hvm-3.0-x86_64 hvm-3.0-x86_32", "xen-version-capabilities", 0xa5);

    struct xen_feature_info fi = {0, 0xdeadbeef};
    rc = xen_version(XENVER_get_features, &fi);
    check(rc == 0 && fi.submap_idx == 0 && fi.submap == 0xf, "xen-version-get-features",
          "rc %ld%s submap_idx %u submap 0x%x want rc 0 submap 0xf", rc, xen_errno_name(rc), fi.submap_idx, fi.submap);
    fi.submap_idx = 1;
    fi.submap = 0xdeadbeef;
    check_rc("xen-version-get-features-1", xen_version(XENVER_get_features, &fi), -XEN_EINVAL);
    check_rc("xen-version-pagesize", xen_version(XENVER_pagesize, 0), 4096);
    check_rc("xen-version-enosys", xen_version(99, 0), -XEN_ENOSYS);
    check_rc("xen-version-efault", xen_version(XENVER_extraversion, (void *)UNMAPPED_VA), -XEN_EFAULT);
}

#define TRAPS_E2BIG 1100
static struct xen_trap_info big_table[TRAPS_E2BIG + 1];

static void trap_callback_checks(void)
{
    uint64_t stubs = (uint64_t)isr_stubs;
    struct xen_trap_info table[4] = {
        {3, 3, KCODE64, 0, stubs + 3 * 16},
        {14, 0, KCODE64, 0, stubs + 14 * 16},
        {0x80, 3, KCODE64, 0, stubs + 0x80 * 16},
        {0, 0, 0, 0, 0},
    };
    struct xen_trap_info bad[2] = {{6, 0, KCODE64, 0, 0x0000800000000000UL}, {0, 0, 0, 0, 0}};
    check_rc("set-trap-table-noncanonical", HYPERCALL1(HC_set_trap_table, bad), -XEN_EINVAL);
    for (int i = 0; i < TRAPS_E2BIG; i++) {
        big_table[i].vector = (uint8_t)i;
        big_table[i].cs = KCODE64;
        big_table[i].address = stubs + 16 * (uint64_t)(i & 255);
    }
    check_rc("set-trap-table-e2big", HYPERCALL1(HC_set_trap_table, big_table), -XEN_E2BIG);
    check_rc("set-trap-table-efault", HYPERCALL1(HC_set_trap_table, UNMAPPED_VA), -XEN_EFAULT);
    check_rc("set-trap-table-clear", HYPERCALL1(HC_set_trap_table, 0), 0);
    check_rc("set-trap-table", HYPERCALL1(HC_set_trap_table, table), 0); /* last: the report shows 3 vectors */

    uint64_t ev = (uint64_t)callback_event, fs = (uint64_t)callback_failsafe, sc = (uint64_t)callback_syscall;
    check_rc("set-callbacks", HYPERCALL3(HC_set_callbacks, ev, fs, sc), 0);
    check_rc("set-callbacks-noncanonical",
             HYPERCALL3(HC_set_callbacks, 0x0000800000000000UL, 0x8000000000000000UL, 0x00ff000000000000UL), 0);

    struct xen_callback_register cb = {CALLBACKTYPE_event, 0, 0, ev};
    check_rc("callback-op-register", HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb), 0);
    static const uint16_t types[] = {CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall, CALLBACKTYPE_nmi,
                                     CALLBACKTYPE_sysenter, CALLBACKTYPE_syscall32};
    int bad_type = -1;
    int64_t bad_rc = 0;
    for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++) {
        cb.type = types[i];
        cb.address = types[i] == CALLBACKTYPE_failsafe ? fs : types[i] == CALLBACKTYPE_syscall ? sc : ev;
        int64_t rc = HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb);
        if (rc != 0 && bad_type < 0) {
            bad_type = types[i];
            bad_rc = rc;
        }
    }
    check(bad_type < 0, "callback-op-register-types", "type %d returned %ld%s want 0", bad_type, bad_rc,
          xen_errno_name(bad_rc));
    cb.type = 99;
    cb.address = ev;
    check_rc("callback-op-register-enosys", HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb), -XEN_ENOSYS);
    cb.type = CALLBACKTYPE_sysenter_deprecated;
    check_rc("callback-op-register-type3", HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb), -XEN_ENOSYS);
    cb.type = CALLBACKTYPE_event;
    cb.address = 0xffff000000000000UL;
    check_rc("callback-op-register-noncanonical", HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb), -XEN_EINVAL);
    cb.address = ev;
    check_rc("callback-op-register-event-again", HYPERCALL2(HC_callback_op, CALLBACKOP_register, &cb), 0);
    struct xen_callback_unregister un = {CALLBACKTYPE_nmi, 0};
    check_rc("callback-op-unregister-nmi", HYPERCALL2(HC_callback_op, CALLBACKOP_unregister, &un), 0);
    un.type = CALLBACKTYPE_event;
    check_rc("callback-op-unregister-event", HYPERCALL2(HC_callback_op, CALLBACKOP_unregister, &un), -XEN_EINVAL);
    check_rc("callback-op-enosys", HYPERCALL2(HC_callback_op, 2, &cb), -XEN_ENOSYS);
    check_rc("callback-op-efault", HYPERCALL2(HC_callback_op, CALLBACKOP_register, UNMAPPED_VA), -XEN_EFAULT);
}

/* ---- the end ---- */
static NORETURN void finish(void)
{
    print("fact started %u\n", n_started);
    print("fact shutdown %s\n", shutdown_name);
    summary();
    outl(CHECKPOINT_PORT, 1);
    if (n_fail)
        poweroff(1);
    if (shutdown_mode == SD_DOWN) {
        /* Every other vCPU down, then this one: the last VCPUOP_down powers the VM off. */
        for (uint32_t id = 0; id < nv; id++) {
            if (id == self_id || is_up(id) != 1)
                continue;
            int64_t rc = xen_vcpu_op(VCPUOP_down, id, 0);
            if (rc != 0) {
                print("FAIL shutdown-down: VCPUOP_down(%u) returned %ld\n", id, rc);
                poweroff(1);
            }
        }
        int64_t rc = xen_vcpu_op(VCPUOP_down, self_id, 0);
        print("FAIL shutdown-down: VCPUOP_down of the last vCPU returned %ld and the VM is still running\n", rc);
        poweroff(1);
    }
    uint32_t reason = shutdown_reason;
    int64_t rc = xen_sched_op(SCHEDOP_shutdown, &reason);
    print("FAIL shutdown: sched_op(SCHEDOP_shutdown, %u) returned %ld and the VM is still running\n", reason, rc);
    poweroff(1);
}

void xen_main(const struct xen_start_info *si)
{
    print("xenvcpu: entered via xen64\n");
    idt_fill(KCODE64);
    idt_lidt();
    if (!check(memcmp(si->magic, "xen-3.0-x86_64", 15) == 0 && si->nr_pages > 0, "start-info",
               "start_info at 0x%lx: magic \"%s\" nr_pages %lu", (uint64_t)si,
               nul_within(si->magic, sizeof si->magic) ? si->magic : "?", si->nr_pages)) {
        summary();
        poweroff(1);
    }
    memcpy(cmdline, si->cmd_line, sizeof cmdline - 1);
    ram_size = si->nr_pages * 4096;
    low_ram_end = ram_size < LOW_RAM_LIMIT ? ram_size : LOW_RAM_LIMIT;
    ram_top = ram_size <= LOW_RAM_LIMIT ? ram_size : FOUR_GIB + (ram_size - LOW_RAM_LIMIT);
    parse_cmdline();
    tsc_init();
    print("fact ram_bytes %lu\n", ram_size);
    print("fact tsc_khz %lu\n", tsc_per_ms);
    print("fact tsc_source %s\n", tsc_source);
    print("fact hypercall_page 0x%lx\n", (uint64_t)hypercall_page);
    print("fact entry_rsp 0x%lx\n", boot_rsp);
    print("fact entry_cr3 0x%lx\n", boot_cr3);

    uint32_t l0[4], l1[4], l2[4];
    xen_cpuid(XEN_CPUID_BASE, l0);
    xen_cpuid(XEN_CPUID_BASE + 1, l1);
    xen_cpuid(XEN_CPUID_BASE + 2, l2);
    xen_cpuid_checks(l0, l1, l2);
    if (!xen_stub_check("hypercall-page-stubs", hypercall_page, 0)) {
        print("fact stopped no-hypercall-page\n");
        summary();
        outl(CHECKPOINT_PORT, 1);
        poweroff(1);
    }
    check(read_cr3() == pml4_phys(), "own-page-tables", "cr3 0x%lx want 0x%lx", read_cr3(), pml4_phys());
    abi_checks();

    discover_vcpus();
    if (bench_mode) {
        have_reserved = 0;
        uint32_t lim = nv < MAX_VCPUS ? nv : MAX_VCPUS;
        outl(CHECKPOINT_PORT, 1);
        for (uint32_t id = 0; id < lim; id++)
            if (id != self_id)
                start_ap(id);
        outl(CHECKPOINT_PORT, 2);
        finish();
    }
    initialise_error_checks();

    uint64_t t0 = rdtsc();
    uint32_t lim = nv < MAX_VCPUS ? nv : MAX_VCPUS;
    for (uint32_t id = 0; id < lim; id++)
        if (id != self_id && !(have_reserved && id == reserved_ap))
            start_ap(id);
    print("fact bringup_us %lu\n", tsc_us(rdtsc() - t0));
    ap_entry_checks();

    down_up_checks();
    more_vcpu_op_checks();
    hypercall_enosys_checks();
    console_checks();
    sched_checks();
    version_checks();
    trap_callback_checks();
    print("fact checks_us %lu\n", tsc_us(rdtsc() - t0));
    finish();
}

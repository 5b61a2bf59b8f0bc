/*
 * Swiftlet xenpvh guest: the hypercall page installed through the MSR, from a PVH kernel.
 * entry.S did the 32-bit part (32-bit stubs, 32-bit ABI calls) and switched to long mode; this
 * reports it, installs a second page from 64-bit mode (64-bit stubs), a third from compatibility
 * mode (32-bit stubs), calls through the 64-bit ABI and checks that a bad MSR value raises #GP.
 * See Guests/README.md.
 */
#include "layout.h"
#include "lib.h"
#include "xen.h"
#include "idt.h"

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
#define CHECKPOINT_PORT 0x504

/* ---- from entry.S ---- */
extern uint32_t start_info_pa, pvh32_bad_stub, pvh32_skipped, pvh32_version, pvh32_extra_rc, pvh32_is_up,
    pvh32_console_rc;
extern volatile uint32_t gp_hit;
extern volatile uint64_t gp_error;
extern uint32_t cpuid_l0[4], cpuid_l1[4], cpuid_l2[4], pvh32_regs[7];
extern uint8_t pvh32_extra[32];
extern uint8_t hpage32[4096], hpage64[4096], hpage_compat[4096], hpage_bad[4096];
extern char isr_stubs[], stack_top[];
int msr_try(uint32_t msr, uint64_t value);
void wrmsr_compat(uint32_t msr, uint64_t value);

uint8_t *xen_hcall_page DATA = hpage64;

/* ---- IDT ---- */
static void idt_install(void)
{
    idt_fill(KCODE64);
    idt_lidt();
}

NORETURN void exception_handler(uint64_t vector, uint64_t error, uint64_t rip)
{
    print("FAIL exception %lu rip=0x%lx error=0x%lx\n", vector, rip, error);
    if (vector == 14)
        print("fact exception_cr2 0x%lx\n", read_cr2());
    n_fail++;
    poweroff(2);
}

/* The end of the highest RAM range in the PVH memory map (0 if there is none). */
static uint64_t ram_end(const struct hvm_start_info *si)
{
    if (si->version < 1 || si->memmap_paddr == 0 || si->memmap_entries == 0 || si->memmap_paddr >= 0xc0000000UL)
        return 0;
    const struct hvm_memmap_entry *m = (const struct hvm_memmap_entry *)si->memmap_paddr;
    uint64_t end = 0;
    for (uint32_t i = 0; i < si->memmap_entries && i < 1024; i++)
        if (m[i].type == 1 && m[i].addr + m[i].size > end)
            end = m[i].addr + m[i].size;
    return (end + 4095) & ~4095UL;
}

static void fill_ud2(uint8_t *page)
{
    for (int i = 0; i < 4096; i += 2) {
        page[i] = 0x0f;
        page[i + 1] = 0x0b;
    }
}

static int all_zero(const volatile uint8_t *p, size_t n, size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            *at = i;
            return 0;
        }
    }
    return 1;
}

static void report_32bit_part(void)
{
    xen_cpuid_checks(cpuid_l0, cpuid_l1, cpuid_l2);
    if (pvh32_skipped == 1) {
        fail("hypercall-page32-stubs", "not installed: no Xen signature in CPUID 0x40000000");
        return;
    }
    xen_stub_check("hypercall-page32-stubs", hpage32, 1);
    if (pvh32_skipped) {
        fail("pvh32-calls", "not made: stub %u of the page installed in 32-bit mode is not the 32-bit stub",
             pvh32_bad_stub);
        return;
    }
    check_rc("pvh32-xen-version", (int32_t)pvh32_version, XEN_VERSION_4_19);
    static const uint32_t want[7] = {0, 0, 0x1d1d1d1d, 0x5e5e5e5e, 0x7d7d7d7d, 0xb0b0b0b0, 0};
    static const char *const names[7] = {"ebx", "ecx", "edx", "esi", "edi", "ebp", "esp"};
    int bad = -1;
    for (int i = 0; i < 6 && bad < 0; i++)
        if (pvh32_regs[i] != want[i])
            bad = i;
    if (bad < 0 && pvh32_regs[6] != (uint32_t)(uint64_t)stack_top)
        bad = 6;
    if (bad < 0)
        ok("pvh32-abi-preserved");
    else
        fail("pvh32-abi-preserved", "%s was 0x%x after xen_version, want 0x%x (only eax may change)", names[bad],
             pvh32_regs[bad], bad == 6 ? (uint32_t)(uint64_t)stack_top : want[bad]);
    if (check_rc("pvh32-xen-extraversion-rc", (int32_t)pvh32_extra_rc, 0)) {
        static const char ev[16] = "-swiftlet";
        check(memcmp(pvh32_extra, ev, 16) == 0 && pvh32_extra[16] == 0xa5, "pvh32-xen-extraversion",
              "got \"%s\" (16 bytes NUL-padded, byte 16 0x%02x) want \"-swiftlet\" and byte 16 untouched (0xa5)",
              pvh32_extra[15] == 0 ? (const char *)pvh32_extra : "(not NUL-terminated)", pvh32_extra[16]);
    }
    check_rc("pvh32-vcpu-is-up", (int32_t)pvh32_is_up, 1);
    check_rc("pvh32-console-io", (int32_t)pvh32_console_rc, 0);
}

static void abi64_check(void)
{
    uint64_t in[16], out[16];
    for (int i = 0; i < 16; i++)
        in[i] = 0xfedcba9876543210UL ^ ((uint64_t)(i + 1) * 0x0101010101010101UL);
    in[REG_RSP] = 0;
    in[REG_RDI] = VCPUOP_is_up;
    in[REG_RSI] = 0;
    in[2] = 0; /* rdx: arg */
    xen_abi_call64(hpage64 + HC_vcpu_op * XEN_HCALL_STUB_SIZE, in, out);
    int bad = -1;
    for (int i = 1; i < 16; i++)
        if (out[i] != in[i] && bad < 0)
            bad = i;
    if (out[REG_RAX] != 1)
        fail("pvh64-abi-preserved", "vcpu_op(VCPUOP_is_up, 0) through the page: rax 0x%lx want 1", out[REG_RAX]);
    else if (bad >= 0)
        fail("pvh64-abi-preserved", "%s changed from 0x%lx to 0x%lx (only rax may change)", xen_reg_names[bad],
             in[bad], out[bad]);
    else
        ok("pvh64-abi-preserved");
}

void pvh_main(void)
{
    idt_install();
    const struct hvm_start_info *si = (const struct hvm_start_info *)(uint64_t)start_info_pa;
    int have_si = start_info_pa != 0 && start_info_pa < 0xc0000000u && si->magic == HVM_START_MAGIC;
    check(have_si, "start-info", "EBX 0x%x does not point at an hvm_start_info (magic 0x%x)", start_info_pa,
          have_si || (start_info_pa && start_info_pa < 0xc0000000u) ? si->magic : 0);
    uint64_t top = have_si ? ram_end(si) : 0;
    print("fact ram_end 0x%lx\n", top);

    report_32bit_part();

    /* 64-bit mode: a second page, 64-bit stubs. */
    fill_ud2(hpage64);
    int gp = msr_try(XEN_MSR, (uint64_t)hpage64);
    check(!gp, "msr-install64", "wrmsr(0x%x, 0x%lx) raised #GP (error 0x%lx)", XEN_MSR, (uint64_t)hpage64, gp_error);
    if (!xen_stub_check("hypercall-page64-stubs", hpage64, 0)) {
        summary();
        outl(CHECKPOINT_PORT, 1);
        poweroff(1);
    }
    xen_stub_check("hypercall-page32-kept", hpage32, 1);
    check_rc("pvh64-xen-version", xen_version(XENVER_version, 0), XEN_VERSION_4_19);
    check_rc("pvh64-vcpu-is-up", xen_vcpu_op(VCPUOP_is_up, 0, 0), 1);
    abi64_check();
    static const char msg[] = "pvh64 console_io ok\n";
    check_rc("pvh64-console-io", xen_console_write(msg, sizeof msg - 1), 0);

    /* Compatibility mode (long mode, 32-bit code segment): 32-bit stubs. */
    fill_ud2(hpage_compat);
    wrmsr_compat(XEN_MSR, (uint64_t)hpage_compat);
    xen_stub_check("hypercall-page-compat-mode", hpage_compat, 1);

    /* #GP: a non-zero page index, and a page outside RAM; neither writes anything. */
    memset(hpage_bad, 0, 4096);
    gp_error = 0xdead;
    gp = msr_try(XEN_MSR, (uint64_t)hpage_bad | 1);
    check(gp, "msr-page-index-gp", "wrmsr(0x%x, 0x%lx) did not raise #GP", XEN_MSR, (uint64_t)hpage_bad | 1);
    size_t at = 0;
    check(all_zero(hpage_bad, 4096, &at), "msr-page-index-no-fill", "the page was written: byte %lu is 0x%02x",
          (uint64_t)at, hpage_bad[at]);
    if (top) {
        gp = msr_try(XEN_MSR, top);
        check(gp, "msr-beyond-ram-gp", "wrmsr(0x%x, 0x%lx) (the end of RAM) did not raise #GP", XEN_MSR, top);
    } else {
        fail("msr-beyond-ram-gp", "no RAM end: no usable PVH memory map");
    }
    gp = msr_try(XEN_MSR, 0xfffffffff000UL);
    check(gp, "msr-far-gp", "wrmsr(0x%x, 0xfffffffff000) did not raise #GP", XEN_MSR);
    /* The page installed last from 64-bit mode still works. */
    check_rc("pvh64-after-gp", xen_version(XENVER_version, 0), XEN_VERSION_4_19);

    summary();
    outl(CHECKPOINT_PORT, 1);
    if (n_fail)
        poweroff(1);
    uint32_t reason = SHUTDOWN_poweroff;
    int64_t rc = xen_sched_op(SCHEDOP_shutdown, &reason);
    print("FAIL shutdown: sched_op(SCHEDOP_shutdown, poweroff) returned %ld and the VM is still running\n", rc);
    poweroff(1);
}

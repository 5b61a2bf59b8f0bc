/* Swiftlet guests: Xen hypercall helpers shared by xenvcpu and xenpvh (xen.h). */
#include "lib.h"
#include "xen.h"

const char *const xen_reg_names[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                       "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

void xen_expected_stub(unsigned nr, int bits32, uint8_t out[XEN_HCALL_STUB_SIZE])
{
    memset(out, 0xcc, XEN_HCALL_STUB_SIZE);
    if (nr == HC_iret) {
        out[0] = 0x0f; /* ud2 */
        out[1] = 0x0b;
        return;
    }
    int n = 0;
    out[n++] = 0xb8; /* mov eax, nr */
    out[n++] = (uint8_t)nr;
    out[n++] = (uint8_t)(nr >> 8);
    out[n++] = (uint8_t)(nr >> 16);
    out[n++] = (uint8_t)(nr >> 24);
    out[n++] = 0xe5; /* in eax, 0xe8 */
    out[n++] = 0xe8;
    if (!bits32) {
        out[n++] = 0x48; /* movsxd rax, eax */
        out[n++] = 0x63;
        out[n++] = 0xc0;
    }
    out[n++] = 0xc3; /* ret */
}

int xen_check_stubs(const volatile uint8_t *page, int bits32, uint8_t *got, uint8_t *want)
{
    uint8_t exp[XEN_HCALL_STUB_SIZE];
    for (unsigned nr = 0; nr < XEN_HCALL_STUBS; nr++) {
        xen_expected_stub(nr, bits32, exp);
        for (unsigned i = 0; i < XEN_HCALL_STUB_SIZE; i++) {
            uint8_t b = page[nr * XEN_HCALL_STUB_SIZE + i];
            if (b != exp[i]) {
                *got = b;
                *want = exp[i];
                return (int)(nr * XEN_HCALL_STUB_SIZE + i);
            }
        }
    }
    return -1;
}

int xen_stub_check(const char *name, const volatile uint8_t *page, int bits32)
{
    uint8_t got = 0, want = 0;
    int bad = xen_check_stubs(page, bits32, &got, &want);
    if (bad < 0) {
        ok_note(name, bits32 ? "128 32-bit stubs" : "128 64-bit stubs");
        return 1;
    }
    char hex[3 * XEN_HCALL_STUB_SIZE + 1];
    const volatile uint8_t *stub = page + (bad & ~(XEN_HCALL_STUB_SIZE - 1));
    for (int i = 0; i < XEN_HCALL_STUB_SIZE; i++)
        ksnprintf(hex + 3 * i, 4, "%02x ", stub[i]);
    hex[3 * XEN_HCALL_STUB_SIZE - 1] = 0;
    fail(name, "stub %d byte %d at 0x%lx: got 0x%02x want 0x%02x (%d-bit stubs); stub bytes: %s",
         bad / XEN_HCALL_STUB_SIZE, bad % XEN_HCALL_STUB_SIZE, (uint64_t)(page + bad), got, want, bits32 ? 32 : 64,
         hex);
    return 0;
}

static void sig_text(const uint32_t r[4], char out[13])
{
    memcpy(out, &r[1], 4);
    memcpy(out + 4, &r[2], 4);
    memcpy(out + 8, &r[3], 4);
    for (int i = 0; i < 12; i++)
        if (out[i] < 0x20 || out[i] > 0x7e)
            out[i] = '.';
    out[12] = 0;
}

int xen_cpuid_checks(const uint32_t l0[4], const uint32_t l1[4], const uint32_t l2[4])
{
    char sig[13];
    sig_text(l0, sig);
    int ok_sig = check(l0[0] == 0x40000002u && l0[1] == XEN_SIG_EBX && l0[2] == XEN_SIG_ECX && l0[3] == XEN_SIG_EDX,
                       "xen-cpuid-signature",
                       "CPUID 0x40000000: eax 0x%x \"%s\" want eax 0x40000002 \"XenVMMXenVMM\"", l0[0], sig);
    check(l1[0] == XEN_VERSION_4_19, "xen-cpuid-version", "CPUID 0x40000001 eax 0x%x want 0x%x", l1[0],
          XEN_VERSION_4_19);
    check(l2[0] == 1 && l2[1] == XEN_HCALL_MSR && l2[2] == 0 && l2[3] == 0, "xen-cpuid-msr",
          "CPUID 0x40000002: eax 0x%x ebx 0x%x ecx 0x%x edx 0x%x want 1 0x40000000 0 0", l2[0], l2[1], l2[2], l2[3]);
    return ok_sig;
}

const char *xen_errno_name(int64_t rc)
{
    switch (rc) {
    case -XEN_ENOENT:
        return " (-ENOENT)";
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

int check_rc(const char *name, int64_t got, int64_t want)
{
    return check(got == want, name, "got %ld%s want %ld%s", got, xen_errno_name(got), want, xen_errno_name(want));
}

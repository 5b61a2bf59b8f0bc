/*
 * Swiftlet guests: the Xen hypercall ABI as Swiftlet implements it (boot-and-abi.md section 5),
 * shared by the xenvcpu, xenpvh and xenhvm guests. 64-bit calls go through `xen_hcall_page` (each
 * guest defines it): `call xen_hcall_page + nr * 32`, number in the stub, arguments in rdi, rsi,
 * rdx, r10, r8, result in rax (a negative Xen errno on failure).
 *
 * The PV structures and the 64-bit call helpers are only there for x86-64 builds; the numbers and
 * the HVM structures (written, like Xen's public headers, with `unsigned long` for xen_ulong_t and
 * xen_pfn_t, so that one definition gives the x86_32 and the x86_64 layout) also build with -m32.
 */
#ifndef GUEST_XEN_H
#define GUEST_XEN_H

#include <stddef.h>
#include <stdint.h>

/* ---- CPUID and the hypercall-page MSR ---- */
#define XEN_CPUID_BASE 0x40000000u
#define XEN_SIG_EBX 0x566e6558u /* "XenV" */
#define XEN_SIG_ECX 0x65584d4du /* "MMXe" */
#define XEN_SIG_EDX 0x4d4d566eu /* "nVMM" */
#define XEN_VERSION_4_19 0x00040013u
#define XEN_HCALL_MSR 0x40000000u
#define XEN_HCALL_STUBS 128
#define XEN_HCALL_STUB_SIZE 32

/* ---- hypercall numbers ---- */
#define HC_set_trap_table 0
#define HC_set_callbacks 4
#define HC_xen_version 17
#define HC_console_io 18
#define HC_iret 23
#define HC_vcpu_op 24
#define HC_sched_op 29
#define HC_callback_op 30
#define HC_memory_op 12
#define HC_grant_table_op 20
#define HC_event_channel_op 32
#define HC_hvm_op 34

/* ---- errno (returned negated) ---- */
#define XEN_EPERM 1
#define XEN_ENOENT 2
#define XEN_ESRCH 3
#define XEN_E2BIG 7
#define XEN_EFAULT 14
#define XEN_EEXIST 17
#define XEN_EINVAL 22
#define XEN_ENOSYS 38

/* ---- sub-commands ---- */
#define VCPUOP_initialise 0
#define VCPUOP_up 1
#define VCPUOP_down 2
#define VCPUOP_is_up 3
#define VCPUOP_get_runstate_info 4
#define VCPUOP_register_vcpu_info 10

#define RUNSTATE_running 0
#define RUNSTATE_offline 3

#define SCHEDOP_yield 0
#define SCHEDOP_block 1
#define SCHEDOP_shutdown 2
#define SCHEDOP_poll 3
#define SCHEDOP_shutdown_code 5

#define SHUTDOWN_poweroff 0
#define SHUTDOWN_reboot 1
#define SHUTDOWN_suspend 2
#define SHUTDOWN_crash 3
#define SHUTDOWN_watchdog 4
#define SHUTDOWN_soft_reset 5

#define CONSOLEIO_write 0
#define CONSOLEIO_read 1

#define XENVER_version 0
#define XENVER_extraversion 1
#define XENVER_capabilities 3
#define XENVER_get_features 6
#define XENVER_pagesize 7

#define CALLBACKOP_register 0
#define CALLBACKOP_unregister 1
#define CALLBACKTYPE_event 0
#define CALLBACKTYPE_failsafe 1
#define CALLBACKTYPE_syscall 2
#define CALLBACKTYPE_sysenter_deprecated 3
#define CALLBACKTYPE_nmi 4
#define CALLBACKTYPE_sysenter 5
#define CALLBACKTYPE_syscall32 7

#define VGCF_i387_valid (1u << 0)
#define VGCF_in_kernel (1u << 2)
#define VGCF_failsafe_disables_events (1u << 3)
#define VGCF_syscall_disables_events (1u << 4)
#define VGCF_online (1u << 5)
#define VGCF_in_syscall (1u << 8)
#define VGCF_ALLOWED (VGCF_i387_valid | VGCF_in_kernel | VGCF_failsafe_disables_events | \
                      VGCF_syscall_disables_events | VGCF_online | VGCF_in_syscall)

#define XENFEAT_writable_page_tables 0
#define XENFEAT_auto_translated_physmap 2

/* ---- HVM interface (xen.h, hvm/hvm_op.h, hvm/params.h, memory.h, grant_table.h, event_channel.h) ---- */
#define DOMID_SELF 0x7ff0u

#define HVMOP_set_param 0
#define HVMOP_get_param 1
#define HVM_PARAM_CALLBACK_IRQ 0
#define HVM_PARAM_STORE_PFN 1
#define HVM_PARAM_STORE_EVTCHN 2
#define HVM_PARAM_CONSOLE_PFN 17
#define HVM_PARAM_CONSOLE_EVTCHN 18

#define XENMEM_add_to_physmap 7
#define XENMAPSPACE_shared_info 0
#define XENMAPSPACE_grant_table 1

#define GNTTABOP_query_size 6
#define GNTTABOP_set_version 8
#define GNTTABOP_get_version 10
#define GNTST_okay 0
#define GNTST_bad_domain (-2)

#define EVTCHNOP_bind_virq 1
#define EVTCHNOP_close 3
#define EVTCHNOP_send 4
#define EVTCHNOP_status 5
#define EVTCHNOP_alloc_unbound 6
#define EVTCHNOP_bind_ipi 7
#define EVTCHNOP_bind_vcpu 8
#define EVTCHNOP_unmask 9
#define EVTCHNSTAT_closed 0
#define EVTCHNSTAT_unbound 1
#define EVTCHNSTAT_interdomain 2
#define EVTCHNSTAT_ipi 5
#define XEN_ENOSPC 28

struct xen_evtchn_port { /* evtchn_send, evtchn_close, evtchn_unmask */
    uint32_t port;
};
struct xen_evtchn_status {
    uint16_t dom, pad;
    uint32_t port, status, vcpu;
    uint32_t u0, u1;
};
struct xen_evtchn_bind_vcpu {
    uint32_t port, vcpu;
};

/* io/console.h: the PV console ring page. */
struct xencons_interface {
    char in[1024];
    char out[2048];
    uint32_t in_cons, in_prod;
    uint32_t out_cons, out_prod;
};

struct xen_feature_info { /* version.h, XENVER_get_features */
    uint32_t submap_idx, submap;
};

struct xen_hvm_param { /* hvm_op.h; the same 16 bytes in both ABIs */
    uint16_t domid, pad;
    uint32_t index;
    uint64_t value;
};

struct xen_add_to_physmap { /* memory.h: idx is xen_ulong_t, gpfn xen_pfn_t */
    uint16_t domid, size;
    unsigned int space;
    unsigned long idx;
    unsigned long gpfn;
};

struct xen_gnttab_query_size {
    uint16_t dom;
    uint32_t nr_frames, max_nr_frames;
    int16_t status;
};
struct xen_gnttab_set_version {
    uint32_t version;
};
struct xen_gnttab_get_version {
    uint16_t dom, pad;
    uint32_t version;
};

struct xen_evtchn_alloc_unbound {
    uint16_t dom, remote_dom;
    uint32_t port;
};

struct xen_vcpu_time_info {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags, pad1[2];
};

struct xen_vcpu_info { /* 64 bytes in both ABIs: arch_vcpu_info pads it */
    uint8_t evtchn_upcall_pending, evtchn_upcall_mask;
    unsigned long evtchn_pending_sel;
    unsigned long cr2;
    unsigned long arch_pad[sizeof(unsigned long) == 4 ? 5 : 1];
    struct xen_vcpu_time_info time;
};

struct xen_shared_info {
    struct xen_vcpu_info vcpu_info[32]; /* XEN_LEGACY_MAX_VCPUS */
    unsigned long evtchn_pending[sizeof(unsigned long) * 8];
    unsigned long evtchn_mask[sizeof(unsigned long) * 8];
    uint32_t wc_version, wc_sec, wc_nsec;
#ifdef __x86_64__
    uint32_t wc_sec_hi;
#endif
    struct { /* arch_shared_info */
        unsigned long max_pfn, pfn_to_mfn_frame_list_list, nmi_reason, p2m_cr3, p2m_vaddr, p2m_generation;
#ifndef __x86_64__
        uint32_t wc_sec_hi; /* x86_32 keeps it here */
#endif
    } arch;
};

_Static_assert(sizeof(struct xen_hvm_param) == 16, "xen_hvm_param is 16 bytes");
_Static_assert(sizeof(struct xen_gnttab_query_size) == 16, "gnttab_query_size is 16 bytes");
_Static_assert(sizeof(struct xen_vcpu_time_info) == 32, "vcpu_time_info is 32 bytes");
_Static_assert(sizeof(struct xen_vcpu_info) == 64, "vcpu_info is 64 bytes");
_Static_assert(offsetof(struct xen_vcpu_info, time) == 32, "vcpu_info.time at 32");
_Static_assert(offsetof(struct xen_shared_info, evtchn_pending) == 2048, "evtchn_pending at 2048");
#ifdef __x86_64__
_Static_assert(sizeof(struct xen_add_to_physmap) == 24 && offsetof(struct xen_add_to_physmap, idx) == 8 &&
                   offsetof(struct xen_add_to_physmap, gpfn) == 16,
               "x86_64 xen_add_to_physmap: 24 bytes, idx at 8, gpfn at 16");
_Static_assert(offsetof(struct xen_vcpu_info, evtchn_pending_sel) == 8, "x86_64 evtchn_pending_sel at 8");
_Static_assert(offsetof(struct xen_shared_info, evtchn_mask) == 2560 &&
                   offsetof(struct xen_shared_info, wc_version) == 3072 &&
                   offsetof(struct xen_shared_info, wc_sec) == 3076 &&
                   offsetof(struct xen_shared_info, wc_nsec) == 3080 &&
                   offsetof(struct xen_shared_info, wc_sec_hi) == 3084 &&
                   offsetof(struct xen_shared_info, arch) == 3088 && sizeof(struct xen_shared_info) == 3136,
               "x86_64 shared_info layout");
#else
_Static_assert(sizeof(struct xen_add_to_physmap) == 16 && offsetof(struct xen_add_to_physmap, idx) == 8 &&
                   offsetof(struct xen_add_to_physmap, gpfn) == 12,
               "x86_32 xen_add_to_physmap: 16 bytes, idx at 8, gpfn at 12");
_Static_assert(offsetof(struct xen_vcpu_info, evtchn_pending_sel) == 4, "x86_32 evtchn_pending_sel at 4");
_Static_assert(offsetof(struct xen_shared_info, evtchn_mask) == 2176 &&
                   offsetof(struct xen_shared_info, wc_version) == 2304 &&
                   offsetof(struct xen_shared_info, wc_sec) == 2308 &&
                   offsetof(struct xen_shared_info, wc_nsec) == 2312 &&
                   offsetof(struct xen_shared_info, arch) == 2316 &&
                   offsetof(struct xen_shared_info, arch.wc_sec_hi) == 2340 && sizeof(struct xen_shared_info) == 2344,
               "x86_32 shared_info layout");
#endif

#ifdef __x86_64__
/* ---- structures (x86-64 layouts, boot-and-abi.md 5.3-5.5) ---- */
struct xen_cpu_user_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi;
    uint32_t error_code, entry_vector;
    uint64_t rip;
    uint16_t cs, pad0;
    uint8_t saved_upcall_mask, pad1[3];
    uint64_t rflags, rsp;
    uint16_t ss, pad2[3];
    uint16_t es, pad3[3];
    uint16_t ds, pad4[3];
    uint16_t fs, pad5[3];
    uint16_t gs, pad6[3];
};

struct xen_trap_info {
    uint8_t vector, flags;
    uint16_t cs;
    uint32_t pad;
    uint64_t address;
};

struct xen_vcpu_guest_context {
    uint8_t fpu_ctxt[512];
    uint64_t flags;
    struct xen_cpu_user_regs user_regs;
    struct xen_trap_info trap_ctxt[256];
    uint64_t ldt_base, ldt_ents;
    uint64_t gdt_frames[16];
    uint64_t gdt_ents;
    uint64_t kernel_ss, kernel_sp;
    uint64_t ctrlreg[8];
    uint64_t debugreg[8];
    uint64_t event_callback_eip, failsafe_callback_eip, syscall_callback_eip;
    uint64_t vm_assist;
    uint64_t fs_base, gs_base_kernel, gs_base_user;
};

struct xen_vcpu_runstate_info {
    int32_t state, pad;
    uint64_t state_entry_time;
    uint64_t time[4];
};

struct xen_callback_register {
    uint16_t type, flags;
    uint32_t pad;
    uint64_t address;
};

struct xen_callback_unregister {
    uint16_t type, pad;
};

_Static_assert(sizeof(struct xen_cpu_user_regs) == 200, "cpu_user_regs is 200 bytes");
_Static_assert(offsetof(struct xen_cpu_user_regs, error_code) == 120, "error_code at 120");
_Static_assert(offsetof(struct xen_cpu_user_regs, rip) == 128, "rip at 128");
_Static_assert(offsetof(struct xen_cpu_user_regs, saved_upcall_mask) == 140, "saved_upcall_mask at 140");
_Static_assert(offsetof(struct xen_cpu_user_regs, rflags) == 144, "rflags at 144");
_Static_assert(offsetof(struct xen_cpu_user_regs, ss) == 160, "ss at 160");
_Static_assert(offsetof(struct xen_cpu_user_regs, gs) == 192, "gs at 192");
_Static_assert(sizeof(struct xen_trap_info) == 16, "trap_info is 16 bytes");
_Static_assert(sizeof(struct xen_vcpu_guest_context) == 5168, "vcpu_guest_context is 5168 bytes");
_Static_assert(offsetof(struct xen_vcpu_guest_context, flags) == 512, "flags at 512");
_Static_assert(offsetof(struct xen_vcpu_guest_context, user_regs) == 520, "user_regs at 520");
_Static_assert(offsetof(struct xen_vcpu_guest_context, trap_ctxt) == 720, "trap_ctxt at 720");
_Static_assert(offsetof(struct xen_vcpu_guest_context, ldt_base) == 4816, "ldt_base at 4816");
_Static_assert(offsetof(struct xen_vcpu_guest_context, gdt_frames) == 4832, "gdt_frames at 4832");
_Static_assert(offsetof(struct xen_vcpu_guest_context, gdt_ents) == 4960, "gdt_ents at 4960");
_Static_assert(offsetof(struct xen_vcpu_guest_context, kernel_ss) == 4968, "kernel_ss at 4968");
_Static_assert(offsetof(struct xen_vcpu_guest_context, ctrlreg) == 4984, "ctrlreg at 4984");
_Static_assert(offsetof(struct xen_vcpu_guest_context, debugreg) == 5048, "debugreg at 5048");
_Static_assert(offsetof(struct xen_vcpu_guest_context, event_callback_eip) == 5112, "event_callback_eip at 5112");
_Static_assert(offsetof(struct xen_vcpu_guest_context, vm_assist) == 5136, "vm_assist at 5136");
_Static_assert(offsetof(struct xen_vcpu_guest_context, gs_base_user) == 5160, "gs_base_user at 5160");
_Static_assert(sizeof(struct xen_vcpu_runstate_info) == 48, "vcpu_runstate_info is 48 bytes");
_Static_assert(sizeof(struct xen_callback_register) == 16, "callback_register is 16 bytes");

/* ---- 64-bit calls through the hypercall page ---- */
extern uint8_t *xen_hcall_page; /* the page the 64-bit calls use (defined by each guest) */

static inline int64_t xen_hypercall(unsigned nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r8 __asm__("r8") = a5;
    uint64_t fn = (uint64_t)xen_hcall_page + (uint64_t)nr * XEN_HCALL_STUB_SIZE;
    int64_t ret;
    __asm__ volatile("call *%[fn]"
                     : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
                     : [fn] "r"(fn)
                     : "memory", "cc", "rcx", "r9", "r11");
    return ret;
}

#define HYPERCALL0(nr) xen_hypercall((nr), 0, 0, 0, 0, 0)
#define HYPERCALL1(nr, a) xen_hypercall((nr), (uint64_t)(a), 0, 0, 0, 0)
#define HYPERCALL2(nr, a, b) xen_hypercall((nr), (uint64_t)(a), (uint64_t)(b), 0, 0, 0)
#define HYPERCALL3(nr, a, b, c) xen_hypercall((nr), (uint64_t)(a), (uint64_t)(b), (uint64_t)(c), 0, 0)

static inline int64_t xen_vcpu_op(uint64_t cmd, uint64_t id, const void *arg)
{
    return HYPERCALL3(HC_vcpu_op, cmd, id, arg);
}
static inline int64_t xen_sched_op(uint64_t cmd, const void *arg) { return HYPERCALL2(HC_sched_op, cmd, arg); }
static inline int64_t xen_console_write(const char *s, uint64_t n)
{
    return HYPERCALL3(HC_console_io, CONSOLEIO_write, n, s);
}
static inline int64_t xen_version(uint64_t cmd, void *arg) { return HYPERCALL2(HC_xen_version, cmd, arg); }

/*
 * xen_abi_call64 (common/xenabi.S): loads every GPR but rsp from in[] (index = register number:
 * rax rcx rdx rbx rsp rbp rsi rdi r8..r15), calls `stub` and stores every GPR into out[].
 */
void xen_abi_call64(const void *stub, const uint64_t in[16], uint64_t out[16]);
#define REG_RAX 0
#define REG_RSP 4
#define REG_RSI 6
#define REG_RDI 7
extern const char *const xen_reg_names[16];
#endif /* __x86_64__ */

/* The 64-bit stub for `nr` as Swiftlet writes it; 32-bit when `bits32` (xencall.c). */
void xen_expected_stub(unsigned nr, int bits32, uint8_t out[XEN_HCALL_STUB_SIZE]);
/* First byte of `page` that differs from the expected stubs, or -1; *got and *want describe it. */
int xen_check_stubs(const volatile uint8_t *page, int bits32, uint8_t *got, uint8_t *want);
/* The check `name`: every stub of `page` byte by byte. */
int xen_stub_check(const char *name, const volatile uint8_t *page, int bits32);
/* CPUID 0x40000000..2: xen-cpuid-signature, xen-cpuid-version, xen-cpuid-msr. Returns the signature's result. */
int xen_cpuid_checks(const uint32_t leaf0[4], const uint32_t leaf1[4], const uint32_t leaf2[4]);
static inline void xen_cpuid(uint32_t leaf, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}
/* Checks the result of a call: want == got. Prints errno names. */
int check_rc(const char *name, int64_t got, int64_t want);
/* The errno name for -rc ("ENOENT"), or "" */
const char *xen_errno_name(int64_t rc);

#endif

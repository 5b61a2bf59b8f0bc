// CKVM: the only place <linux/kvm.h> is seen. Function-like ioctl macros become constants and
// fixed-argument helpers, because Swift imports neither macros with arguments nor variadic ioctl().
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <string.h>

// System ioctls (/dev/kvm).
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
// VM ioctls.
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_SET_BOOT_CPU_ID = KVM_SET_BOOT_CPU_ID;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_X86_SET_MSR_FILTER = KVM_X86_SET_MSR_FILTER;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned int CKVM_IOEVENTFD_FLAG_DATAMATCH = 1u << kvm_ioeventfd_flag_nr_datamatch;
static const unsigned int CKVM_IOEVENTFD_FLAG_DEASSIGN = 1u << kvm_ioeventfd_flag_nr_deassign;
static const unsigned int CKVM_IRQFD_FLAG_DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN;
// vCPU ioctls.
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;

// Capabilities.
static const int CKVM_CAP_IRQCHIP = KVM_CAP_IRQCHIP;
static const int CKVM_CAP_USER_MEMORY = KVM_CAP_USER_MEMORY;
static const int CKVM_CAP_SET_TSS_ADDR = KVM_CAP_SET_TSS_ADDR;
static const int CKVM_CAP_EXT_CPUID = KVM_CAP_EXT_CPUID;
static const int CKVM_CAP_NR_VCPUS = KVM_CAP_NR_VCPUS;
static const int CKVM_CAP_MP_STATE = KVM_CAP_MP_STATE;
static const int CKVM_CAP_PIT2 = KVM_CAP_PIT2;
static const int CKVM_CAP_SET_BOOT_CPU_ID = KVM_CAP_SET_BOOT_CPU_ID;
static const int CKVM_CAP_MAX_VCPUS = KVM_CAP_MAX_VCPUS;
static const int CKVM_CAP_IMMEDIATE_EXIT = KVM_CAP_IMMEDIATE_EXIT;
static const int CKVM_CAP_X86_USER_SPACE_MSR = KVM_CAP_X86_USER_SPACE_MSR;
static const int CKVM_CAP_XEN_HVM = KVM_CAP_XEN_HVM;
static const int CKVM_CAP_SYNC_REGS = KVM_CAP_SYNC_REGS;
static const int CKVM_CAP_IOEVENTFD = KVM_CAP_IOEVENTFD;
static const int CKVM_CAP_IRQFD = KVM_CAP_IRQFD;

static const uint32_t CKVM_PIT_SPEAKER_DUMMY = KVM_PIT_SPEAKER_DUMMY;
static const uint32_t CKVM_MAX_CPUID_ENTRIES = 256;

static inline int ckvm_ioctl(int fd, unsigned long request, unsigned long argument) {
    return ioctl(fd, request, argument);
}
static inline int ckvm_ioctl_ptr(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

// Snapshots: the state structures as opaque blobs (their get/set ioctls and sizes), the MSR index
// list, the dirty log.
enum ckvm_state_kind {
    CKVM_STATE_REGS, CKVM_STATE_SREGS, CKVM_STATE_XSAVE, CKVM_STATE_XCRS, CKVM_STATE_DEBUGREGS,
    CKVM_STATE_LAPIC, CKVM_STATE_EVENTS, CKVM_STATE_IRQCHIP, CKVM_STATE_PIT2, CKVM_STATE_CLOCK,
};
static inline unsigned long ckvm_state_size(int kind) {
    switch (kind) {
    case CKVM_STATE_REGS: return sizeof(struct kvm_regs);
    case CKVM_STATE_SREGS: return sizeof(struct kvm_sregs);
    case CKVM_STATE_XSAVE: return sizeof(struct kvm_xsave);
    case CKVM_STATE_XCRS: return sizeof(struct kvm_xcrs);
    case CKVM_STATE_DEBUGREGS: return sizeof(struct kvm_debugregs);
    case CKVM_STATE_LAPIC: return sizeof(struct kvm_lapic_state);
    case CKVM_STATE_EVENTS: return sizeof(struct kvm_vcpu_events);
    case CKVM_STATE_IRQCHIP: return sizeof(struct kvm_irqchip);
    case CKVM_STATE_PIT2: return sizeof(struct kvm_pit_state2);
    case CKVM_STATE_CLOCK: return sizeof(struct kvm_clock_data);
    default: return 0;
    }
}
static inline unsigned long ckvm_state_request(int kind, int set) {
    switch (kind) {
    case CKVM_STATE_REGS: return set ? KVM_SET_REGS : KVM_GET_REGS;
    case CKVM_STATE_SREGS: return set ? KVM_SET_SREGS : KVM_GET_SREGS;
    case CKVM_STATE_XSAVE: return set ? KVM_SET_XSAVE : KVM_GET_XSAVE;
    case CKVM_STATE_XCRS: return set ? KVM_SET_XCRS : KVM_GET_XCRS;
    case CKVM_STATE_DEBUGREGS: return set ? KVM_SET_DEBUGREGS : KVM_GET_DEBUGREGS;
    case CKVM_STATE_LAPIC: return set ? KVM_SET_LAPIC : KVM_GET_LAPIC;
    case CKVM_STATE_EVENTS: return set ? KVM_SET_VCPU_EVENTS : KVM_GET_VCPU_EVENTS;
    case CKVM_STATE_IRQCHIP: return set ? KVM_SET_IRQCHIP : KVM_GET_IRQCHIP;
    case CKVM_STATE_PIT2: return set ? KVM_SET_PIT2 : KVM_GET_PIT2;
    case CKVM_STATE_CLOCK: return set ? KVM_SET_CLOCK : KVM_GET_CLOCK;
    default: return 0;
    }
}
/// KVM_GET_MSR_INDEX_LIST on the system fd into `indices` (at most `capacity`): the count, or -errno.
static inline int ckvm_msr_index_list(int fd, uint32_t *indices, uint32_t capacity) {
    struct { struct kvm_msr_list list; uint32_t room[1024]; } request;
    if (capacity > 1024) capacity = 1024;
    request.list.nmsrs = 1024;
    if (ioctl(fd, KVM_GET_MSR_INDEX_LIST, &request) < 0) return -errno;
    uint32_t n = request.list.nmsrs < capacity ? request.list.nmsrs : capacity;
    for (uint32_t i = 0; i < n; i++) indices[i] = request.list.indices[i];
    return (int)n;
}
/// KVM_GET_DIRTY_LOG for `slot` into `bitmap` (one bit per page): 0, or -errno.
static inline int ckvm_dirty_log(int fd, uint32_t slot, void *bitmap) {
    struct kvm_dirty_log log;
    memset(&log, 0, sizeof log);
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    return ioctl(fd, KVM_GET_DIRTY_LOG, &log) < 0 ? -errno : 0;
}
static const uint32_t CKVM_MEM_LOG_DIRTY_PAGES = KVM_MEM_LOG_DIRTY_PAGES;

// kvm_run accessors: the exit union is anonymous in C, so Swift reaches it through these.
static inline uint32_t ckvm_run_exit_reason(const struct kvm_run *run) { return run->exit_reason; }
static inline void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}
static inline struct kvm_run *ckvm_run_cast(void *mapping) { return (struct kvm_run *)mapping; }

static inline uint8_t ckvm_io_direction(const struct kvm_run *run) { return run->io.direction; }
static inline uint8_t ckvm_io_size(const struct kvm_run *run) { return run->io.size; }
static inline uint16_t ckvm_io_port(const struct kvm_run *run) { return run->io.port; }
static inline uint32_t ckvm_io_count(const struct kvm_run *run) { return run->io.count; }
static inline uint64_t ckvm_io_data_offset(const struct kvm_run *run) { return run->io.data_offset; }

static inline uint64_t ckvm_mmio_address(const struct kvm_run *run) { return run->mmio.phys_addr; }
static inline uint32_t ckvm_mmio_length(const struct kvm_run *run) { return run->mmio.len; }
static inline uint8_t ckvm_mmio_is_write(const struct kvm_run *run) { return run->mmio.is_write; }
static inline uint8_t *ckvm_mmio_data(struct kvm_run *run) { return run->mmio.data; }

static inline uint32_t ckvm_system_event_type(const struct kvm_run *run) { return run->system_event.type; }
static inline uint32_t ckvm_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }
static inline uint32_t ckvm_internal_ndata(const struct kvm_run *run) { return run->internal.ndata; }
static inline uint64_t ckvm_internal_data(const struct kvm_run *run, uint32_t index) {
    return index < 16 ? run->internal.data[index] : 0;
}
static inline uint64_t ckvm_fail_entry_reason(const struct kvm_run *run) {
    return run->fail_entry.hardware_entry_failure_reason;
}
static inline uint32_t ckvm_msr_index(const struct kvm_run *run) { return run->msr.index; }
static inline uint64_t ckvm_msr_data(const struct kvm_run *run) { return run->msr.data; }
static inline void ckvm_msr_complete(struct kvm_run *run, uint8_t error, uint64_t data) {
    run->msr.error = error;
    run->msr.data = data;
}

// KVM_CAP_SYNC_REGS: register classes KVM copies into kvm_run on every exit.
static const uint64_t CKVM_SYNC_X86_REGS = KVM_SYNC_X86_REGS;
static const uint64_t CKVM_SYNC_X86_SREGS = KVM_SYNC_X86_SREGS;
static inline void ckvm_run_set_valid_regs(struct kvm_run *run, uint64_t classes) { run->kvm_valid_regs = classes; }
static inline const struct kvm_regs *ckvm_run_regs(const struct kvm_run *run) { return &run->s.regs.regs; }
static inline const struct kvm_sregs *ckvm_run_sregs(const struct kvm_run *run) { return &run->s.regs.sregs; }

#endif

/// Swiftlet's Xen-style hypercall ABI on plain KVM: the numbers, error codes and structure
/// layouts of Xen's public headers (`xen.h`, `vcpu.h`, `callback.h`, `hvm/params.h`, `memory.h`,
/// `grant_table.h`), and the trap that replaces `vmcall`.

/// Xen errno values, returned negated.
public enum XenErrno: Int32, Error, Sendable, Equatable, CustomStringConvertible {
    case perm = 1, noent = 2, srch = 3, io = 5, tooBig = 7, fault = 14, exist = 17, inval = 22, noSpace = 28, nosys = 38

    public var description: String {
        switch self {
        case .perm: "EPERM"
        case .noent: "ENOENT"
        case .srch: "ESRCH"
        case .io: "EIO"
        case .tooBig: "E2BIG"
        case .fault: "EFAULT"
        case .exist: "EEXIST"
        case .inval: "EINVAL"
        case .noSpace: "ENOSPC"
        case .nosys: "ENOSYS"
        }
    }
}

/// `__HYPERVISOR_*` numbers Swiftlet serves (the rest answer -ENOSYS).
public enum HypercallNumber: UInt32, Sendable, CaseIterable {
    case setTrapTable = 0, setCallbacks = 4, memoryOp = 12, xenVersion = 17, consoleIO = 18, grantTableOp = 20
    case vcpuOp = 24, schedOp = 29, callbackOp = 30, eventChannelOp = 32, hvmOp = 34

    /// Xen's name, used for counts in reports.
    public var name: String {
        switch self {
        case .setTrapTable: "set_trap_table"
        case .setCallbacks: "set_callbacks"
        case .xenVersion: "xen_version"
        case .consoleIO: "console_io"
        case .vcpuOp: "vcpu_op"
        case .schedOp: "sched_op"
        case .callbackOp: "callback_op"
        case .memoryOp: "memory_op"
        case .grantTableOp: "grant_table_op"
        case .eventChannelOp: "event_channel_op"
        case .hvmOp: "hvm_op"
        }
    }

    /// Every `__HYPERVISOR_*` name by number (xen.h), for reporting calls Swiftlet does not serve.
    public static let allNames: [UInt32: String] = [
        0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch", 4: "set_callbacks",
        5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op", 8: "set_debugreg", 9: "get_debugreg",
        10: "update_descriptor", 12: "memory_op", 13: "multicall", 14: "update_va_mapping",
        15: "set_timer_op", 16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
        19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist", 22: "update_va_mapping_otherdomain",
        23: "iret", 24: "vcpu_op", 25: "set_segment_base", 26: "mmuext_op", 27: "xsm_op", 28: "nmi_op",
        29: "sched_op", 30: "callback_op", 31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op",
        34: "hvm_op", 35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op",
        40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
    ]

    public static func name(of number: UInt64) -> String {
        number <= UInt64(UInt32.max) ? (allNames[UInt32(number)] ?? "unknown_\(number)") : "unknown_\(number)"
    }
}

public enum XenABI {
    /// The port whose IN the hypercall stubs execute: Swiftlet's trap in place of `vmcall`.
    public static let trapPort: UInt16 = 0xE8
    /// The hypercall-page MSR advertised in CPUID 0x40000002.
    public static let hypercallPageMSR: UInt32 = 0x4000_0000
    public static let cpuidBase: UInt32 = 0x4000_0000
    /// Xen 4.19, as `XENVER_version` and CPUID 0x40000001 report it.
    public static let version: UInt32 = 0x0004_0013
    public static let extraVersion = "-swiftlet"
    public static let capabilities = "hvm-3.0-x86_64 hvm-3.0-x86_32"
    /// XENFEAT_ bits Swiftlet really provides: writable_page_tables (0),
    /// writable_descriptor_tables (1), auto_translated_physmap (2), supervisor_mode_kernel (3).
    public static let featureSubmap0: UInt32 = 0xF
    /// For an HVM-style guest (PVH, Multiboot or Linux entry), what Xen itself lists for a
    /// translated guest and Swiftlet provides: writable_page_tables (0), auto_translated_physmap (2).
    public static let hvmFeatureSubmap0: UInt32 = 0x5
    /// `DOMID_SELF`: the only domain a guest can name here.
    public static let domidSelf: UInt16 = 0x7FF0
    /// The guest's own domain id where Xen would report one (`DOMID_SELF` resolved): a domU's first.
    public static let selfDomainID: UInt16 = 1
    /// `HVM_NR_PARAMS` (hvm/params.h): indices at or above are -EINVAL.
    public static let hvmParamCount: UInt32 = 39
    /// `HVM_PARAM_CALLBACK_IRQ`: the one parameter a guest may set here.
    public static let hvmParamCallbackIRQ: UInt32 = 0
    /// `HVM_PARAM_STORE_PFN` (1; 0: no xenstore), `HVM_PARAM_CONSOLE_PFN` (17), `_CONSOLE_EVTCHN` (18).
    public static let hvmParamStorePFN: UInt32 = 1
    public static let hvmParamConsolePFN: UInt32 = 17
    public static let hvmParamConsoleEvtchn: UInt32 = 18
    /// Grant-table frames: one, and version 1 only.
    public static let grantFrames: UInt32 = 1
    public static let pageSize: Int32 = 4096
    /// Entries read from a trap table before giving up on finding its terminator.
    public static let trapTableLimit = 1024

    /// CPUID leaves 0x40000000..0x40000002: (function, eax, ebx, ecx, edx).
    public static let cpuidLeaves: [(function: UInt32, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32)] = [
        (cpuidBase, cpuidBase + 2, 0x566E_6558, 0x6558_4D4D, 0x4D4D_566E),   // "XenVMMXenVMM"
        (cpuidBase + 1, version, 0, 0, 0),
        (cpuidBase + 2, 1, hypercallPageMSR, 0, 0),                          // 1 page, MSR base
    ]

    /// True if bits 63..47 are all equal (48-bit virtual addresses).
    public static func isCanonical(_ address: UInt64) -> Bool {
        let top = address >> 47
        return top == 0 || top == 0x1_FFFF
    }
}

/// The hypercall page Swiftlet fills: 128 stubs of 32 bytes, each `mov eax, nr; in eax, 0xE8`
/// (then `movsxd rax, eax` in the 64-bit flavour) and `ret`; 0xCC elsewhere; stub 23 (iret) is
/// `ud2`, as in Xen's HVM pages.
public enum HypercallPage {
    public static let size = 4096
    public static let stubSize = 32
    static let iret = 23

    public static func bytes(longMode: Bool) -> [UInt8] {
        var page = [UInt8](repeating: 0xCC, count: size)
        for number in 0..<(size / stubSize) {
            let stub: [UInt8]
            if number == iret {
                stub = [0x0F, 0x0B]
            } else {
                let n = UInt32(number)
                stub = [0xB8, UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)]
                    + [0xE5, UInt8(XenABI.trapPort)]
                    + (longMode ? [0x48, 0x63, 0xC0] : [])
                    + [0xC3]
            }
            page.replaceSubrange(number * stubSize..<number * stubSize + stub.count, with: stub)
        }
        return page
    }
}

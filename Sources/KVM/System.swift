import CKVM
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Capabilities Swiftlet asks about (`KVM_CHECK_EXTENSION`).
public enum Capability: Sendable {
    case irqchip, userMemory, setTSSAddress, nrVCPUs, maxVCPUs, mpState, pit2, setBootCPUID,
         immediateExit, userSpaceMSR, xenHVM, syncRegs, ioeventfd, irqfd

    var raw: CInt {
        switch self {
        case .irqchip: CKVM_CAP_IRQCHIP
        case .userMemory: CKVM_CAP_USER_MEMORY
        case .setTSSAddress: CKVM_CAP_SET_TSS_ADDR
        case .nrVCPUs: CKVM_CAP_NR_VCPUS
        case .maxVCPUs: CKVM_CAP_MAX_VCPUS
        case .mpState: CKVM_CAP_MP_STATE
        case .pit2: CKVM_CAP_PIT2
        case .setBootCPUID: CKVM_CAP_SET_BOOT_CPU_ID
        case .immediateExit: CKVM_CAP_IMMEDIATE_EXIT
        case .userSpaceMSR: CKVM_CAP_X86_USER_SPACE_MSR
        case .xenHVM: CKVM_CAP_XEN_HVM
        case .syncRegs: CKVM_CAP_SYNC_REGS
        case .ioeventfd: CKVM_CAP_IOEVENTFD
        case .irqfd: CKVM_CAP_IRQFD
        }
    }
}

/// The KVM subsystem: an open `/dev/kvm`.
public final class KVMSystem: Sendable {
    public static let expectedAPIVersion: CInt = 12
    let fd: FileDescriptor
    /// Size of each vCPU's `kvm_run` mapping.
    public let vcpuMmapSize: Int

    /// Opens `path` (normally `/dev/kvm`) and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        do {
            fd = try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
        } catch {
            throw KVMError("open(\(path))", (error as? Errno) ?? .noSuchFileOrDirectory)
        }
        do throws(KVMError) {
            let version = try ioctlValue(fd.rawValue, CKVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
            guard version == Self.expectedAPIVersion else {
                throw KVMError("KVM_GET_API_VERSION", .notSupported, context: "API version \(version), need \(Self.expectedAPIVersion)")
            }
            vcpuMmapSize = Int(try ioctlValue(fd.rawValue, CKVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"))
        } catch {
            try? fd.close()
            throw error
        }
    }

    deinit { try? fd.close() }

    /// `KVM_CHECK_EXTENSION` on the system fd: 0 when absent, otherwise a capability-specific value.
    public func check(_ capability: Capability) -> Int {
        Int((try? ioctlValue(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability.raw), "KVM_CHECK_EXTENSION")) ?? 0)
    }

    /// `KVM_CHECK_EXTENSION` for a capability given by its `KVM_CAP_*` number (a CPU template's
    /// `kvm_capabilities`): 0 when absent.
    public func check(capabilityNumber: UInt32) -> Int {
        Int((try? ioctlValue(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capabilityNumber), "KVM_CHECK_EXTENSION")) ?? 0)
    }

    /// The most vCPUs one VM may have (`KVM_CAP_MAX_VCPUS`, falling back to `KVM_CAP_NR_VCPUS`).
    public var maxVCPUs: Int {
        let max = check(.maxVCPUs)
        return max > 0 ? max : Swift.max(check(.nrVCPUs), 4)
    }

    /// `KVM_GET_SUPPORTED_CPUID`: every leaf this KVM can present to a guest.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        try CPUIDEntry.withKVMList(capacity: Int(CKVM_MAX_CPUID_ENTRIES)) { (pointer) throws(KVMError) in
            _ = try ioctlPointer(fd.rawValue, CKVM_GET_SUPPORTED_CPUID, pointer, "KVM_GET_SUPPORTED_CPUID")
        }
    }

    /// `KVM_CREATE_VM`.
    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmfd = try ioctlValue(fd.rawValue, CKVM_CREATE_VM, 0, "KVM_CREATE_VM")
        return VirtualMachine(fd: FileDescriptor(rawValue: vmfd), mmapSize: vcpuMmapSize)
    }
}

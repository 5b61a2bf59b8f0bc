import CKVM
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A KVM virtual machine (the fd from `KVM_CREATE_VM`).
public final class VirtualMachine: Sendable {
    let fd: FileDescriptor
    let mmapSize: Int

    init(fd: FileDescriptor, mmapSize: Int) {
        self.fd = fd
        self.mmapSize = mmapSize
    }

    deinit { try? fd.close() }

    /// `KVM_CHECK_EXTENSION` on the VM fd (some answers are per VM).
    public func check(_ capability: Capability) -> Int {
        Int((try? ioctlValue(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability.raw), "KVM_CHECK_EXTENSION")) ?? 0)
    }

    /// `KVM_SET_USER_MEMORY_REGION`: backs `[guestAddress, +size)` with host memory at `hostAddress`.
    /// `logDirtyPages`: `KVM_MEM_LOG_DIRTY_PAGES`, for `dirtyPages(slot:pages:)`.
    public func setMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64,
                                logDirtyPages: Bool = false) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: logDirtyPages ? CKVM_MEM_LOG_DIRTY_PAGES : 0, guest_phys_addr: guestAddress,
                                                 memory_size: size, userspace_addr: hostAddress)
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION",
                             context: "slot \(slot) at 0x\(String(guestAddress, radix: 16))")
    }

    /// `KVM_SET_TSS_ADDR`: three pages below 4 GiB that KVM may use on Intel hosts.
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try ioctlValue(fd.rawValue, CKVM_SET_TSS_ADDR, UInt(address), "KVM_SET_TSS_ADDR")
    }

    /// `KVM_CREATE_IRQCHIP`: in-kernel PIC pair, IOAPIC, and an in-kernel LAPIC for every later vCPU.
    public func createInterruptController() throws(KVMError) {
        _ = try ioctlValue(fd.rawValue, CKVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")
    }

    /// `KVM_CREATE_PIT2` with the PC speaker port left to the kernel.
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = CKVM_PIT_SPEAKER_DUMMY
        _ = try ioctlPointer(fd.rawValue, CKVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2")
    }

    /// `KVM_SET_BOOT_CPU_ID`: must come before any vCPU exists.
    public func setBootCPU(_ id: Int) throws(KVMError) {
        _ = try ioctlValue(fd.rawValue, CKVM_SET_BOOT_CPU_ID, UInt(id), "KVM_SET_BOOT_CPU_ID")
    }

    /// `KVM_IRQ_LINE`: drives a GSI of the in-kernel interrupt controllers.
    public func setInterruptLine(_ gsi: UInt32, high: Bool) throws(KVMError) {
        var level = kvm_irq_level()
        level.irq = gsi
        level.level = high ? 1 : 0
        _ = try ioctlPointer(fd.rawValue, CKVM_IRQ_LINE, &level, "KVM_IRQ_LINE", context: "GSI \(gsi)")
    }

    /// `KVM_IOEVENTFD`: a guest write of `datamatch` (`length` bytes) to the MMIO address
    /// `address` signals `eventfd` inside the kernel; the vCPU does not exit. `deassign` undoes it.
    public func setIOEventFD(_ eventfd: Int32, mmioAddress address: UInt64, length: UInt32, datamatch: UInt64,
                             deassign: Bool = false) throws(KVMError) {
        var request = kvm_ioeventfd()
        request.datamatch = datamatch
        request.addr = address
        request.len = length
        request.fd = eventfd
        request.flags = CKVM_IOEVENTFD_FLAG_DATAMATCH | (deassign ? CKVM_IOEVENTFD_FLAG_DEASSIGN : 0)
        _ = try ioctlPointer(fd.rawValue, CKVM_IOEVENTFD, &request, "KVM_IOEVENTFD",
                             context: "0x\(String(address, radix: 16)) = \(datamatch)")
    }

    /// `KVM_IRQFD`: a write to `eventfd` raises GSI `gsi` of the in-kernel irqchip (an edge:
    /// asserted and released) without a system call into the VM. `deassign` undoes it.
    public func setIRQFD(_ eventfd: Int32, gsi: UInt32, deassign: Bool = false) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd)
        request.gsi = gsi
        request.flags = deassign ? CKVM_IRQFD_FLAG_DEASSIGN : 0
        _ = try ioctlPointer(fd.rawValue, CKVM_IRQFD, &request, "KVM_IRQFD", context: "GSI \(gsi)")
    }

    /// `KVM_SIGNAL_MSI`: a message-signalled interrupt (an MSI to the LAPICs: address
    /// 0xFEE0_0000 | APIC ID << 12, data = the vector, fixed delivery, edge).
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        _ = try ioctlPointer(fd.rawValue, CKVM_SIGNAL_MSI, &msi, "KVM_SIGNAL_MSI", context: "vector \(data & 0xFF)")
    }

    /// `KVM_ENABLE_CAP` on the VM.
    public func enable(_ capability: Capability, arguments: [UInt64] = []) throws(KVMError) {
        var request = kvm_enable_cap()
        request.cap = UInt32(capability.raw)
        withUnsafeMutableBytes(of: &request.args) { args in
            for (i, value) in arguments.prefix(4).enumerated() { args.storeBytes(of: value, toByteOffset: i * 8, as: UInt64.self) }
        }
        _ = try ioctlPointer(fd.rawValue, CKVM_ENABLE_CAP, &request, "KVM_ENABLE_CAP", context: "\(capability)")
    }

    /// `KVM_CREATE_VCPU` and the mapping of its `kvm_run` page.
    public func createVCPU(id: Int) throws(KVMError) -> VCPU {
        let vcpufd = try ioctlValue(fd.rawValue, CKVM_CREATE_VCPU, UInt(id), "KVM_CREATE_VCPU", context: "vCPU \(id)")
        let mapping = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpufd, 0)
        guard let mapping, mapping != MAP_FAILED else {
            let error = Errno(rawValue: Glibc.errno)
            close(vcpufd)
            throw KVMError("mmap(kvm_run)", error, context: "vCPU \(id)")
        }
        return VCPU(id: id, fd: FileDescriptor(rawValue: vcpufd), run: mapping, mmapSize: mmapSize)
    }
}

import CKVM
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A KVM state structure, saved and restored as the kernel's bytes (a snapshot keeps them opaque:
/// the layouts are KVM's stable ABI).
public enum KVMState: String, CaseIterable, Sendable {
    // Per vCPU, in the order a restore applies them (KVM's rules: special registers before the
    // registers' RIP matters, XCRs after XSAVE, the LAPIC before pending events, events last).
    case sregs, regs, xsave, xcrs, debugregs, lapic, events
    // Per VM.
    case irqchip, pit2, clock

    var kind: Int32 {
        switch self {
        case .regs: Int32(CKVM_STATE_REGS.rawValue)
        case .sregs: Int32(CKVM_STATE_SREGS.rawValue)
        case .xsave: Int32(CKVM_STATE_XSAVE.rawValue)
        case .xcrs: Int32(CKVM_STATE_XCRS.rawValue)
        case .debugregs: Int32(CKVM_STATE_DEBUGREGS.rawValue)
        case .lapic: Int32(CKVM_STATE_LAPIC.rawValue)
        case .events: Int32(CKVM_STATE_EVENTS.rawValue)
        case .irqchip: Int32(CKVM_STATE_IRQCHIP.rawValue)
        case .pit2: Int32(CKVM_STATE_PIT2.rawValue)
        case .clock: Int32(CKVM_STATE_CLOCK.rawValue)
        }
    }

    /// The structure's size in bytes.
    public var size: Int { Int(ckvm_state_size(kind)) }
    /// The vCPU's structures, in restore order.
    public static let perVCPU: [KVMState] = [.sregs, .regs, .xsave, .xcrs, .debugregs, .lapic, .events]

    func get(_ fd: CInt, prefill: (inout [UInt8]) -> Void = { _ in }, context: String) throws(KVMError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        prefill(&bytes)
        try call(fd, 0, &bytes, context: context)
        return bytes
    }

    func set(_ fd: CInt, _ saved: [UInt8], context: String) throws(KVMError) {
        guard saved.count == size else {
            throw KVMError("KVM_SET_\(rawValue.uppercased())", .invalidArgument,
                           context: "\(context): the saved structure has \(saved.count) bytes, this kernel's \(size)")
        }
        // No XCRs saved (KVM_GET_XCRS gives none where the host has no XSAVE): nothing to set,
        // and such a host's KVM_SET_XCRS refuses even an empty list with EINVAL.
        if self == .xcrs, Self.xcrCount(saved) == 0 { return }
        var bytes = saved
        try call(fd, 1, &bytes, context: context)
    }

    /// `struct kvm_xcrs.nr_xcrs`: how many XCRs a saved XCR structure holds.
    public static func xcrCount(_ saved: [UInt8]) -> UInt32 {
        saved.count < 4 ? 0 : saved[0..<4].reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// The get (0) or set (1) ioctl on `bytes`, retried on EINTR.
    private func call(_ fd: CInt, _ set: Int32, _ bytes: inout [UInt8], context: String) throws(KVMError) {
        let request = ckvm_state_request(kind, set)
        let name = "KVM_\(set == 1 ? "SET" : "GET")_\(rawValue.uppercased())"
        while true {
            // unsafe: the buffer is the structure's size, as the ioctl reads or writes it.
            let result = bytes.withUnsafeMutableBytes { ckvm_ioctl_ptr(fd, request, $0.baseAddress) }
            if result >= 0 { return }
            let error = Errno(rawValue: Glibc.errno)
            if error != .interrupted { throw KVMError(name, error, context: context) }
        }
    }
}

extension VCPU {
    /// `KVM_GET_<state>` for this vCPU (it must not be in `KVM_RUN`: paused, or not started).
    public func save(_ state: KVMState) throws(KVMError) -> [UInt8] {
        try state.get(fd.rawValue, context: "vCPU \(id)")
    }

    /// `KVM_SET_<state>`; the bytes must be a structure of this kernel's size.
    public func restore(_ state: KVMState, _ bytes: [UInt8]) throws(KVMError) {
        try state.set(fd.rawValue, bytes, context: "vCPU \(id)")
    }
}

extension VirtualMachine {
    /// `KVM_GET_IRQCHIP` for chip 0 (master PIC), 1 (slave PIC) or 2 (IOAPIC); `KVM_GET_PIT2`;
    /// `KVM_GET_CLOCK`.
    public func save(_ state: KVMState, chip: UInt32 = 0) throws(KVMError) -> [UInt8] {
        try state.get(fd.rawValue, prefill: { bytes in
            if state == .irqchip { for i in 0..<4 { bytes[i] = UInt8(truncatingIfNeeded: chip >> (8 * UInt32(i))) } }
        }, context: state == .irqchip ? "chip \(chip)" : "VM")
    }

    /// The KVM clock is set to the saved value with its flags cleared (the saved host's
    /// TSC and real-time readings mean nothing here).
    public func restore(_ state: KVMState, _ bytes: [UInt8]) throws(KVMError) {
        var bytes = bytes
        if state == .clock && bytes.count >= 12 { for i in 8..<12 { bytes[i] = 0 } }   // kvm_clock_data.flags
        try state.set(fd.rawValue, bytes, context: "VM")
    }

    /// `KVM_GET_DIRTY_LOG`: one bit per 4 KiB page of memory slot `slot` (of `pages` pages)
    /// written since the last call, cleared as it is read.
    public func dirtyPages(slot: UInt32, pages: Int) throws(KVMError) -> [UInt64] {
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        let result = bitmap.withUnsafeMutableBytes { ckvm_dirty_log(fd.rawValue, slot, $0.baseAddress) }
        if result < 0 { throw KVMError("KVM_GET_DIRTY_LOG", .init(rawValue: -result), context: "slot \(slot)") }
        return bitmap
    }
}

extension KVMSystem {
    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM saves and restores for a vCPU.
    public func savedMSRIndices() throws(KVMError) -> [UInt32] {
        var indices = [UInt32](repeating: 0, count: 1024)
        let n = indices.withUnsafeMutableBufferPointer { ckvm_msr_index_list(fd.rawValue, $0.baseAddress, 1024) }
        if n < 0 { throw KVMError("KVM_GET_MSR_INDEX_LIST", .init(rawValue: -n)) }
        return Array(indices.prefix(Int(n)))
    }
}

import CKVM
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Why `KVM_RUN` returned. Port and MMIO data live in the `kvm_run` page: read it with
/// `ioValue(at:)` and answer reads with `setIOValue(_:at:)` / `completeMMIORead(_:)` before the
/// next `run()`.
public enum VCPUExit: Equatable, Sendable {
    case portIn(port: UInt16, size: Int, count: Int)
    case portOut(port: UInt16, size: Int, count: Int)
    case mmioRead(address: UInt64, size: Int)
    case mmioWrite(address: UInt64, size: Int, value: UInt64)
    /// HLT with no in-kernel LAPIC to handle it.
    case halt
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    case shutdown
    case systemEvent(SystemEvent)
    case internalError(suberror: UInt32, data: [UInt64])
    case failEntry(reason: UInt64)
    /// A signal or `immediate_exit` interrupted `KVM_RUN`.
    case interrupted
    case msrRead(index: UInt32)
    case msrWrite(index: UInt32, value: UInt64)
    case unknown(reason: UInt32)

    /// `kvm_run.system_event.type`.
    public enum SystemEvent: Equatable, Sendable {
        case shutdown, reset, crash, other(UInt32)
    }

    /// Every `name`, in `kind` order.
    public static let kindNames = ["io-in", "io-out", "mmio-read", "mmio-write", "hlt", "shutdown", "system-event",
                                   "internal-error", "fail-entry", "interrupted", "rdmsr", "wrmsr", "unknown"]

    /// A small index for counting exits without hashing: `kindNames[kind] == name`.
    public var kind: Int {
        switch self {
        case .portIn: 0
        case .portOut: 1
        case .mmioRead: 2
        case .mmioWrite: 3
        case .halt: 4
        case .shutdown: 5
        case .systemEvent: 6
        case .internalError: 7
        case .failEntry: 8
        case .interrupted: 9
        case .msrRead: 10
        case .msrWrite: 11
        case .unknown: 12
        }
    }

    /// A short stable name, used for exit counts in reports.
    public var name: String {
        switch self {
        case .portIn: "io-in"
        case .portOut: "io-out"
        case .mmioRead: "mmio-read"
        case .mmioWrite: "mmio-write"
        case .halt: "hlt"
        case .shutdown: "shutdown"
        case .systemEvent: "system-event"
        case .internalError: "internal-error"
        case .failEntry: "fail-entry"
        case .interrupted: "interrupted"
        case .msrRead: "rdmsr"
        case .msrWrite: "wrmsr"
        case .unknown: "unknown"
        }
    }
}

/// One virtual CPU: its fd and its `kvm_run` mapping.
///
/// Sendable by contract: the owning vCPU thread is the only caller of everything except
/// `setImmediateExit(_:)`, which other threads use to stop it (an atomic byte store).
public final class VCPU: @unchecked Sendable {
    public let id: Int
    let fd: FileDescriptor
    /// unsafe: the `kvm_run` page shared with KVM, valid until deinit.
    private let page: UnsafeMutablePointer<kvm_run>
    private let mmapSize: Int

    init(id: Int, fd: FileDescriptor, run: UnsafeMutableRawPointer, mmapSize: Int) {
        self.id = id
        self.fd = fd
        self.page = ckvm_run_cast(run)
        self.mmapSize = mmapSize
    }

    deinit {
        munmap(UnsafeMutableRawPointer(page), mmapSize)
        try? fd.close()
    }

    private var context: String { "vCPU \(id)" }

    // MARK: Running

    /// `KVM_RUN` once and decode the exit.
    public func run() throws(KVMError) -> VCPUExit {
        if ckvm_ioctl(fd.rawValue, CKVM_RUN, 0) < 0 {
            let error = Errno(rawValue: Glibc.errno)
            if error == .interrupted || error == .resourceTemporarilyUnavailable { return .interrupted }
            throw KVMError("KVM_RUN", error, context: context)
        }
        return decodeExit()
    }

    private func decodeExit() -> VCPUExit {
        let reason = ckvm_run_exit_reason(page)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let port = ckvm_io_port(page), size = Int(ckvm_io_size(page)), count = Int(ckvm_io_count(page))
            return ckvm_io_direction(page) == UInt8(KVM_EXIT_IO_OUT)
                ? .portOut(port: port, size: size, count: count)
                : .portIn(port: port, size: size, count: count)
        case KVM_EXIT_MMIO:
            let address = ckvm_mmio_address(page), size = Int(min(ckvm_mmio_length(page), 8))
            if ckvm_mmio_is_write(page) != 0 {
                var value: UInt64 = 0
                let data = ckvm_mmio_data(page)!
                for i in 0..<size { value |= UInt64(data[i]) << (8 * UInt64(i)) }
                return .mmioWrite(address: address, size: size, value: value)
            }
            return .mmioRead(address: address, size: size)
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            switch Int32(ckvm_system_event_type(page)) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .systemEvent(.shutdown)
            case KVM_SYSTEM_EVENT_RESET: return .systemEvent(.reset)
            case KVM_SYSTEM_EVENT_CRASH: return .systemEvent(.crash)
            case let other: return .systemEvent(.other(UInt32(other)))
            }
        case KVM_EXIT_INTERNAL_ERROR:
            let count = min(ckvm_internal_ndata(page), 16)
            return .internalError(suberror: ckvm_internal_suberror(page),
                                  data: (0..<count).map { ckvm_internal_data(page, $0) })
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(reason: ckvm_fail_entry_reason(page))
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_X86_RDMSR: return .msrRead(index: ckvm_msr_index(page))
        case KVM_EXIT_X86_WRMSR: return .msrWrite(index: ckvm_msr_index(page), value: ckvm_msr_data(page))
        default: return .unknown(reason: reason)
        }
    }

    /// The byte offset of element `index` of the current port-I/O exit's data, if in the page.
    private func ioDataOffset(_ index: Int) -> Int? {
        let size = Int(ckvm_io_size(page))
        let offset = Int(ckvm_io_data_offset(page)) + index * size
        guard size <= 4, index >= 0, index < Int(ckvm_io_count(page)), offset + size <= mmapSize else { return nil }
        return offset
    }

    /// Element `index` of the current port-OUT exit's data, zero-extended.
    public func ioValue(at index: Int = 0) -> UInt32 {
        guard let offset = ioDataOffset(index) else { return 0 }
        let base = UnsafeRawPointer(page) + offset
        var value: UInt32 = 0
        for i in 0..<Int(ckvm_io_size(page)) { value |= UInt32(base.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt32(i)) }
        return value
    }

    /// Answers element `index` of the current port-IN exit (low `size` bytes of `value`).
    public func setIOValue(_ value: UInt32, at index: Int = 0) {
        guard let offset = ioDataOffset(index) else { return }
        let base = UnsafeMutableRawPointer(page) + offset
        for i in 0..<Int(ckvm_io_size(page)) { base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))), toByteOffset: i, as: UInt8.self) }
    }

    /// Answers the current MMIO read exit (low `size` bytes of `value`).
    public func completeMMIORead(_ value: UInt64) {
        let data = ckvm_mmio_data(page)!
        for i in 0..<Int(min(ckvm_mmio_length(page), 8)) { data[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    /// Answers the current RDMSR/WRMSR exit; `fault` injects #GP into the guest.
    public func completeMSR(value: UInt64 = 0, fault: Bool = false) {
        ckvm_msr_complete(page, fault ? 1 : 0, value)
    }

    /// Sets `kvm_run.immediate_exit`: while set, `KVM_RUN` returns at once with EINTR. Safe from any thread.
    public func setImmediateExit(_ on: Bool) {
        ckvm_run_set_immediate_exit(page, on ? 1 : 0)
    }

    // MARK: Registers delivered with each exit (KVM_CAP_SYNC_REGS)

    /// Asks KVM to copy the general and special registers into `kvm_run` on every exit, so that
    /// `syncedRegisters()` and `syncedSpecialRegisters()` need no ioctl. Needs `KVM_CAP_SYNC_REGS`.
    public func syncRegistersOnExit(_ on: Bool) {
        ckvm_run_set_valid_regs(page, on ? CKVM_SYNC_X86_REGS | CKVM_SYNC_X86_SREGS : 0)
    }

    /// The general registers as of the last exit; valid after `syncRegistersOnExit(true)`.
    public func syncedRegisters() -> Registers { Registers(ckvm_run_regs(page).pointee) }

    /// The special registers as of the last exit; valid after `syncRegistersOnExit(true)`.
    public func syncedSpecialRegisters() -> SpecialRegisters { SpecialRegisters(ckvm_run_sregs(page).pointee) }

    // MARK: State

    public func registers() throws(KVMError) -> Registers {
        var regs = kvm_regs()
        _ = try ioctlPointer(fd.rawValue, CKVM_GET_REGS, &regs, "KVM_GET_REGS", context: context)
        return Registers(regs)
    }

    public func setRegisters(_ registers: Registers) throws(KVMError) {
        var regs = registers.kvm
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_REGS, &regs, "KVM_SET_REGS", context: context)
    }

    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        var sregs = kvm_sregs()
        _ = try ioctlPointer(fd.rawValue, CKVM_GET_SREGS, &sregs, "KVM_GET_SREGS", context: context)
        return SpecialRegisters(sregs)
    }

    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(KVMError) {
        var sregs = registers.kvm
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_SREGS, &sregs, "KVM_SET_SREGS", context: context)
    }

    /// `KVM_SET_FPU` with the x87 control word and MXCSR given, everything else zero.
    public func setFPU(controlWord: UInt16, mxcsr: UInt32) throws(KVMError) {
        var fpu = kvm_fpu()
        fpu.fcw = controlWord
        fpu.mxcsr = mxcsr
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_FPU, &fpu, "KVM_SET_FPU", context: context)
    }

    /// `KVM_SET_MSRS`; fails naming the first MSR KVM refused.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        let set = try withMSRList(msrs) { (pointer) throws(KVMError) in
            try ioctlPointer(fd.rawValue, CKVM_SET_MSRS, pointer, "KVM_SET_MSRS", context: context)
        }
        if Int(set) < msrs.count {
            throw KVMError("KVM_SET_MSRS", .invalidArgument,
                           context: "\(context): MSR 0x\(String(msrs[Int(set)].index, radix: 16)) refused")
        }
    }

    /// `KVM_GET_MSRS` for the given indices.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt64] {
        var values: [UInt64] = []
        _ = try withMSRList(indices.map { ($0, 0) }) { (pointer) throws(KVMError) in
            let got = try ioctlPointer(fd.rawValue, CKVM_GET_MSRS, pointer, "KVM_GET_MSRS", context: context)
            let entries = pointer + MemoryLayout<kvm_msrs>.size
            for i in 0..<Int(got) {
                values.append(entries.load(fromByteOffset: i * MemoryLayout<kvm_msr_entry>.stride, as: kvm_msr_entry.self).data)
            }
            return got
        }
        return values
    }

    private func withMSRList(_ msrs: [(index: UInt32, value: UInt64)],
                             _ body: (UnsafeMutableRawPointer) throws(KVMError) -> CInt) throws(KVMError) -> CInt {
        let header = MemoryLayout<kvm_msrs>.size, stride = MemoryLayout<kvm_msr_entry>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + msrs.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header)
        buffer.assumingMemoryBound(to: kvm_msrs.self).pointee.nmsrs = UInt32(msrs.count)
        for (i, msr) in msrs.enumerated() {
            (buffer + header + i * stride).storeBytes(of: kvm_msr_entry(index: msr.index, reserved: 0, data: msr.value),
                                                     as: kvm_msr_entry.self)
        }
        return try body(buffer)
    }

    /// `KVM_SET_CPUID2`.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        _ = try CPUIDEntry.withKVMList(entries) { (pointer) throws(KVMError) in
            try ioctlPointer(fd.rawValue, CKVM_SET_CPUID2, pointer, "KVM_SET_CPUID2", context: context)
        }
    }

    /// `KVM_GET_LAPIC`: the 1 KiB xAPIC register page image.
    public func localAPIC() throws(KVMError) -> [UInt8] {
        var state = kvm_lapic_state()
        _ = try ioctlPointer(fd.rawValue, CKVM_GET_LAPIC, &state, "KVM_GET_LAPIC", context: context)
        return withUnsafeBytes(of: &state.regs) { Array($0) }
    }

    /// `KVM_SET_LAPIC`.
    public func setLocalAPIC(_ registers: [UInt8]) throws(KVMError) {
        var state = kvm_lapic_state()
        withUnsafeMutableBytes(of: &state.regs) { target in
            for (i, byte) in registers.prefix(target.count).enumerated() { target[i] = byte }
        }
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_LAPIC, &state, "KVM_SET_LAPIC", context: context)
    }

    /// `KVM_GET_MP_STATE`; nil for a state Swiftlet does not model (non-x86 values).
    public func mpState() throws(KVMError) -> MPState? {
        var state = kvm_mp_state()
        _ = try ioctlPointer(fd.rawValue, CKVM_GET_MP_STATE, &state, "KVM_GET_MP_STATE", context: context)
        return MPState(rawValue: state.mp_state)
    }

    /// `KVM_SET_MP_STATE`.
    public func setMPState(_ state: MPState) throws(KVMError) {
        var value = kvm_mp_state()
        value.mp_state = state.rawValue
        _ = try ioctlPointer(fd.rawValue, CKVM_SET_MP_STATE, &value, "KVM_SET_MP_STATE", context: "\(context) -> \(state)")
    }

    /// `KVM_GET_TSC_KHZ`: the guest's TSC frequency in kHz.
    public func tscKHz() throws(KVMError) -> UInt32 {
        UInt32(truncatingIfNeeded: try ioctlValue(fd.rawValue, CKVM_GET_TSC_KHZ, 0, "KVM_GET_TSC_KHZ", context: context))
    }
}

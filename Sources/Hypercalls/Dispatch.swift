/// One hypercall as the trap delivers it: the number and five arguments, already taken from
/// the registers of the calling vCPU's ABI (64-bit: rdi, rsi, rdx, r10, r8; 32-bit: ebx, ecx,
/// edx, esi, edi).
public struct HypercallRequest: Equatable, Sendable {
    public var number: UInt64
    /// The caller's ABI: 64-bit (long mode) or 32-bit. Structure layouts with `xen_ulong_t` or
    /// `xen_pfn_t` fields differ between the two.
    public var is64Bit = true
    /// The five argument registers, stored inline: no allocation on the hypercall path.
    public var arguments: Arguments

    public struct Arguments: Equatable, Sendable {
        var a0: UInt64, a1: UInt64, a2: UInt64, a3: UInt64, a4: UInt64
        public subscript(index: Int) -> UInt64 {
            switch index {
            case 0: a0
            case 1: a1
            case 2: a2
            case 3: a3
            default: a4
            }
        }
    }

    public init(number: UInt64, _ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0, _ a3: UInt64 = 0, _ a4: UInt64 = 0) {
        self.number = number
        self.arguments = Arguments(a0: a0, a1: a1, a2: a2, a3: a3, a4: a4)
    }

    public init(number: UInt64, arguments: [UInt64]) {
        let a = arguments + [UInt64](repeating: 0, count: max(0, 5 - arguments.count))
        self.init(number: number, a[0], a[1], a[2], a[3], a[4])
    }

    public var name: String { HypercallNumber.name(of: number) }
}

/// What a hypercall does beyond its return value.
public enum HypercallEffect: Equatable, Sendable {
    case none
    /// `SCHEDOP_shutdown` with this reason: the VM ends.
    case shutdown(reason: UInt32)
    /// The last up vCPU went down: the VM powers off.
    case allVCPUsDown
}

public struct HypercallResult: Equatable, Sendable {
    public var value: Int64
    public var effect: HypercallEffect
    public static func ok(_ value: Int64 = 0) -> HypercallResult { .init(value: value, effect: .none) }
    public static func error(_ errno: XenErrno) -> HypercallResult { .init(value: -Int64(errno.rawValue), effect: .none) }
}

/// The register state `VCPUOP_initialise` accepts: everything else in the context must be zero.
public struct VCPUContext: Equatable, Sendable {
    public var flags: UInt64
    public var rip: UInt64, rsp: UInt64, rdi: UInt64, rsi: UInt64
    /// `ctrlreg[3]`: guest-physical address of the top-level page table.
    public var pageTableBase: UInt64

    public init(flags: UInt64 = 0, rip: UInt64, rsp: UInt64, rdi: UInt64 = 0, rsi: UInt64 = 0, pageTableBase: UInt64) {
        self.flags = flags; self.rip = rip; self.rsp = rsp; self.rdi = rdi; self.rsi = rsi
        self.pageTableBase = pageTableBase
    }

    /// `struct vcpu_guest_context` (x86-64) size and the offsets of the fields it may carry.
    public static let size = 5168
    static let flagsOffset = 512, userRegs = 520
    static let ripOffset = userRegs + 128, rspOffset = userRegs + 152
    static let rdiOffset = userRegs + 112, rsiOffset = userRegs + 104
    static let cr3Offset = 4984 + 3 * 8
    /// VGCF_i387_valid, in_kernel, failsafe_disables_events, syscall_disables_events, online, in_syscall.
    public static let knownFlags: UInt64 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 8

    /// Decodes and checks a context: -EINVAL for any stray non-zero byte, an unknown flag, a
    /// non-canonical rip/rsp, or a page-table base that is unaligned or not in guest RAM.
    public static func parse(_ bytes: [UInt8], pageTableInRAM: (UInt64) -> Bool) -> Result<VCPUContext, XenErrno> {
        guard bytes.count == size else { return .failure(.fault) }
        func u64(_ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) } }
        let allowed = [flagsOffset, ripOffset, rspOffset, rdiOffset, rsiOffset, cr3Offset]
        var stray = bytes
        for offset in allowed { for i in 0..<8 { stray[offset + i] = 0 } }
        guard stray.allSatisfy({ $0 == 0 }) else { return .failure(.inval) }
        let context = VCPUContext(flags: u64(flagsOffset), rip: u64(ripOffset), rsp: u64(rspOffset),
                                  rdi: u64(rdiOffset), rsi: u64(rsiOffset), pageTableBase: u64(cr3Offset))
        guard context.flags & ~knownFlags == 0,
              XenABI.isCanonical(context.rip), XenABI.isCanonical(context.rsp),
              context.pageTableBase % 4096 == 0, pageTableInRAM(context.pageTableBase) else { return .failure(.inval) }
        return .success(context)
    }
}

/// One `trap_info` entry (16 bytes: u8 vector, u8 flags, u16 cs, pad, u64 address).
public struct TrapInfo: Equatable, Sendable {
    public var vector: UInt8, flags: UInt8, cs: UInt16, address: UInt64
    public init(vector: UInt8, flags: UInt8, cs: UInt16, address: UInt64) {
        self.vector = vector; self.flags = flags; self.cs = cs; self.address = address
    }
}

/// `vcpu_runstate_info`: state (0 running, 3 offline), when it was entered, time in each state.
public struct RunstateInfo: Equatable, Sendable {
    public var state: Int32
    public var entryTime: UInt64
    public var time: [UInt64]   // running, runnable, blocked, offline

    public init(state: Int32, entryTime: UInt64, time: [UInt64]) {
        self.state = state; self.entryTime = entryTime; self.time = time
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 48)
        func put(_ value: UInt64, _ offset: Int) { for i in 0..<8 { out[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) } }
        put(UInt64(UInt32(bitPattern: state)), 0)
        put(entryTime, 8)
        for (i, t) in time.prefix(4).enumerated() { put(t, 16 + 8 * i) }
        return out
    }
}

/// What the dispatcher needs from the VMM for one call. Addresses are guest-virtual, resolved
/// through the calling vCPU's page tables.
public protocol HypercallEnvironment {
    var caller: Int { get }
    var vcpuCount: Int { get }
    func read(_ virtual: UInt64, count: Int) -> [UInt8]?
    func write(_ bytes: [UInt8], at virtual: UInt64) -> Bool
    /// True if a 4 KiB page at this guest-physical address is guest RAM.
    func isRAMPage(_ physical: UInt64) -> Bool
    func consoleWrite(_ bytes: [UInt8])

    func isUp(_ vcpu: Int) -> Bool
    /// True once the vCPU has been initialised, or has run at all (boot, INIT-SIPI).
    func isInitialised(_ vcpu: Int) -> Bool
    func initialise(_ vcpu: Int, with context: VCPUContext)
    /// Starts an initialised vCPU, or resumes one that was taken down.
    func up(_ vcpu: Int)
    /// Takes a vCPU down; returns true if no vCPU is up any more.
    func down(_ vcpu: Int) -> Bool
    func runstate(_ vcpu: Int) -> RunstateInfo

    func setTrapTable(_ entries: [TrapInfo])
    func registerCallback(type: UInt16, address: UInt64, flags: UInt16)
    func unregisterCallback(type: UInt16)

    /// The guest was entered as an HVM guest (PVH, Multiboot, Linux), not as a PV-style xen64 one.
    var isHVM: Bool { get }
    /// `HVMOP_get_param` / `set_param` storage (0 for never set).
    func hvmParam(_ index: UInt32) -> UInt64
    func setHVMParam(_ index: UInt32, _ value: UInt64)
    /// The shared_info layout latched as Xen does (`hvm_latch_shinfo_size`): by the mode of the
    /// vCPU that installed the hypercall page or set HVM_PARAM_CALLBACK_IRQ last; nil if neither.
    var sharedInfoABI: SharedInfo.ABI? { get }
    func latchSharedInfoABI(_ abi: SharedInfo.ABI)
    /// Puts the shared_info page at guest frame `frame` in layout `abi`; false if the frame is
    /// not guest RAM.
    func mapSharedInfo(frame: UInt64, abi: SharedInfo.ABI) -> Bool
    /// Puts grant-table frame `index` (zeroed) at guest frame `frame`; false if not guest RAM.
    func mapGrantFrame(_ index: UInt64, frame: UInt64) -> Bool

    /// The domain's event channels, changed under the environment's lock.
    func withEventChannels<T>(_ body: (inout EventChannelTable) -> T) -> T
    /// Marks `port` pending for `vcpu` in shared_info (2-level: the port's bit, then the vCPU's
    /// selector bit and `evtchn_upcall_pending` unless masked) and delivers the upcall.
    func raise(port: UInt32, vcpu: Int)
    /// Clears `port`'s mask bit; if it is pending, as `raise` from the selector bit on.
    func unmask(port: UInt32)
    /// The guest notified an interdomain port whose other end is the VMM's (the PV console).
    func notifyBackend(port: UInt32)
    /// `HVMOP_set_evtchn_upcall_vector`: upcalls to `vcpu` go to this vector.
    func setUpcallVector(_ vector: UInt8, vcpu: Int)
}

/// Serves hypercalls with Xen's argument checks and error codes.
public enum HypercallDispatcher {
    public static func handle(_ request: HypercallRequest, in env: some HypercallEnvironment) -> HypercallResult {
        let a = request.arguments
        guard request.number <= UInt64(UInt32.max), let call = HypercallNumber(rawValue: UInt32(request.number)) else {
            return .error(.nosys)
        }
        switch call {
        case .setTrapTable: return setTrapTable(a[0], env)
        case .setCallbacks:
            // As Xen: always 0; a non-canonical address is simply not recorded.
            for (type, address) in [(UInt16(0), a[0]), (1, a[1]), (2, a[2])] where XenABI.isCanonical(address) {
                env.registerCallback(type: type, address: address, flags: 0)
            }
            return .ok()
        case .xenVersion: return xenVersion(Int32(truncatingIfNeeded: a[0]), a[1], env)
        case .consoleIO: return consoleIO(Int32(truncatingIfNeeded: a[0]), UInt32(truncatingIfNeeded: a[1]), a[2], env)
        case .vcpuOp: return vcpuOp(Int32(truncatingIfNeeded: a[0]), UInt32(truncatingIfNeeded: a[1]), a[2], env)
        case .schedOp: return schedOp(Int32(truncatingIfNeeded: a[0]), a[1], env)
        case .callbackOp: return callbackOp(Int32(truncatingIfNeeded: a[0]), a[1], env)
        case .hvmOp: return hvmOp(a[0], a[1], is64Bit: request.is64Bit, env)
        case .memoryOp: return memoryOp(a[0], a[1], is64Bit: request.is64Bit, env)
        case .grantTableOp: return grantTableOp(UInt32(truncatingIfNeeded: a[0]), a[1], UInt32(truncatingIfNeeded: a[2]), env)
        case .eventChannelOp: return eventChannelOp(Int32(truncatingIfNeeded: a[0]), a[1], env)
        }
    }

    /// `base + offset`, or nil where a guest pointer would wrap around the address space.
    static func advance(_ base: UInt64, by offset: UInt64) -> UInt64? {
        let (sum, overflow) = base.addingReportingOverflow(offset)
        return overflow ? nil : sum
    }

    static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
    static func u64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    static func setTrapTable(_ pointer: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        if pointer == 0 {
            env.setTrapTable([])
            return .ok()
        }
        var entries: [TrapInfo] = []
        for index in 0..<XenABI.trapTableLimit {
            guard let address = advance(pointer, by: UInt64(index) * 16),
                  let bytes = env.read(address, count: 16) else { return .error(.fault) }
            let entry = TrapInfo(vector: bytes[0], flags: bytes[1], cs: UInt16(bytes[2]) | UInt16(bytes[3]) << 8,
                                 address: u64(bytes, 8))
            if entry.address == 0 {
                env.setTrapTable(entries)
                return .ok()
            }
            guard XenABI.isCanonical(entry.address) else { return .error(.inval) }
            entries.append(entry)
        }
        return .error(.tooBig)
    }

    static func xenVersion(_ command: Int32, _ argument: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        func copyOut(_ text: String, size: Int) -> HypercallResult {
            var bytes = Array(text.utf8.prefix(size - 1))
            bytes += [UInt8](repeating: 0, count: size - bytes.count)
            return env.write(bytes, at: argument) ? .ok() : .error(.fault)
        }
        switch command {
        case 0: return .ok(Int64(XenABI.version))
        case 1: return copyOut(XenABI.extraVersion, size: 16)
        case 3: return copyOut(XenABI.capabilities, size: 1024)
        case 6:
            guard let info = env.read(argument, count: 8) else { return .error(.fault) }
            guard u32(info, 0) == 0 else { return .error(.inval) }
            let submap = env.isHVM ? XenABI.hvmFeatureSubmap0 : XenABI.featureSubmap0
            let reply = Array(info[0..<4]) + (0..<4).map { UInt8(truncatingIfNeeded: submap >> (8 * UInt32($0))) }
            return env.write(reply, at: argument) ? .ok() : .error(.fault)
        case 7: return .ok(Int64(XenABI.pageSize))
        default: return .error(.nosys)
        }
    }

    static func consoleIO(_ command: Int32, _ count: UInt32, _ buffer: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        switch command {
        case 0:
            // Check every byte first, so that a fault writes nothing; then copy page-sized pieces
            // again as they are written, so a large count never holds more than a page at a time.
            func pieces(_ body: ([UInt8]) -> Void) -> Bool {
                var offset: UInt64 = 0
                while offset < UInt64(count) {
                    let length = Int(min(UInt64(count) - offset, 4096))
                    guard let address = advance(buffer, by: offset), let bytes = env.read(address, count: length) else { return false }
                    body(bytes)
                    offset += UInt64(length)
                }
                return true
            }
            guard pieces({ _ in }) else { return .error(.fault) }
            _ = pieces { env.consoleWrite($0) }
            return .ok()
        case 1: return .ok(0)
        default: return .error(.nosys)
        }
    }

    static func schedOp(_ command: Int32, _ argument: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        switch command {
        case 0, 1: return .ok()                 // yield; block returns at once
        case 2:
            guard let bytes = env.read(argument, count: 4) else { return .error(.fault) }
            return .init(value: 0, effect: .shutdown(reason: u32(bytes, 0)))
        case 5:
            guard env.read(argument, count: 4) != nil else { return .error(.fault) }
            return .ok()
        default: return .error(.nosys)
        }
    }

    static func callbackOp(_ command: Int32, _ argument: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        let validTypes: Set<UInt16> = [0, 1, 2, 4, 5, 7]
        switch command {
        case 0:
            guard let bytes = env.read(argument, count: 16) else { return .error(.fault) }
            let type = UInt16(bytes[0]) | UInt16(bytes[1]) << 8, flags = UInt16(bytes[2]) | UInt16(bytes[3]) << 8
            let address = u64(bytes, 8)
            guard XenABI.isCanonical(address) else { return .error(.inval) }
            guard validTypes.contains(type) else { return .error(.nosys) }
            env.registerCallback(type: type, address: address, flags: flags)
            return .ok()
        case 1:
            guard let bytes = env.read(argument, count: 4) else { return .error(.fault) }
            let type = UInt16(bytes[0]) | UInt16(bytes[1]) << 8
            guard type == 4 else { return .error(.inval) }   // only the NMI callback can go
            env.unregisterCallback(type: type)
            return .ok()
        default: return .error(.nosys)
        }
    }

    static func vcpuOp(_ command: Int32, _ vcpuID: UInt32, _ argument: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        guard vcpuID < UInt32(env.vcpuCount) else { return .error(.noent) }
        let target = Int(vcpuID)
        switch command {
        case 0:                                                   // initialise
            guard let bytes = env.read(argument, count: VCPUContext.size) else { return .error(.fault) }
            guard !env.isInitialised(target) else { return .error(.exist) }
            switch VCPUContext.parse(bytes, pageTableInRAM: env.isRAMPage) {
            case let .failure(errno): return .error(errno)
            case let .success(context):
                env.initialise(target, with: context)
                return .ok()
            }
        case 1:                                                   // up
            guard env.isInitialised(target) else { return .error(.inval) }
            if !env.isUp(target) { env.up(target) }
            return .ok()
        case 2:                                                   // down
            guard env.isUp(target) else { return .ok() }
            return env.down(target) ? .init(value: 0, effect: .allVCPUsDown) : .ok()
        case 3:                                                   // is_up
            return .ok(env.isUp(target) ? 1 : 0)
        case 4:                                                   // get_runstate_info
            return env.write(env.runstate(target).bytes, at: argument) ? .ok() : .error(.fault)
        default:
            return .error(.nosys)
        }
    }

    static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// `hvm_op`: HVMOP_set_param (0) and HVMOP_get_param (1) on `struct xen_hvm_param`
    /// {domid_t domid @0; uint32_t index @4; uint64_t value @8} (16 bytes in both ABIs).
    /// Xen's order of checks: copy in (-EFAULT), index (-EINVAL), domain (-ESRCH). Every
    /// parameter reads as what was set, 0 ("none": no xenstore, no PV console) otherwise; only
    /// HVM_PARAM_CALLBACK_IRQ may be set (-EPERM for the rest). Not for PV guests (-ENOSYS).
    static func hvmOp(_ command: UInt64, _ argument: UInt64, is64Bit: Bool, _ env: some HypercallEnvironment) -> HypercallResult {
        if command == 23 && env.isHVM {
            // HVMOP_set_evtchn_upcall_vector {uint32_t vcpu; uint8_t vector}: Xen checks the
            // vector (below 0x10: -EINVAL), then the vCPU (-ENOENT).
            guard let bytes = env.read(argument, count: 5) else { return .error(.fault) }
            guard bytes[4] >= 0x10 else { return .error(.inval) }
            let vcpu = u32(bytes, 0)
            guard Int(vcpu) < env.vcpuCount else { return .error(.noent) }
            env.setUpcallVector(bytes[4], vcpu: Int(vcpu))
            return .ok()
        }
        guard env.isHVM, command == 0 || command == 1 else { return .error(.nosys) }
        guard let bytes = env.read(argument, count: 16) else { return .error(.fault) }
        let index = u32(bytes, 4)
        guard index < XenABI.hvmParamCount else { return .error(.inval) }
        guard u16(bytes, 0) == XenABI.domidSelf else { return .error(.srch) }
        if command == 0 {
            guard index == XenABI.hvmParamCallbackIRQ else { return .error(.perm) }
            env.setHVMParam(index, u64(bytes, 8))
            env.latchSharedInfoABI(is64Bit ? .x86_64 : .x86_32)
            return .ok()
        }
        guard let address = advance(argument, by: 8) else { return .error(.fault) }
        return env.write(le(env.hvmParam(index)), at: address) ? .ok() : .error(.fault)
    }

    /// `memory_op`: XENMEM_add_to_physmap (7) on `struct xen_add_to_physmap` {domid_t domid @0;
    /// uint16_t size @2; unsigned int space @4; xen_ulong_t idx; xen_pfn_t gpfn} (64-bit: idx @8,
    /// gpfn @16, 24 bytes; 32-bit: idx @8, gpfn @12, 16 bytes). Spaces: shared_info (0, idx 0)
    /// and grant_table (1, idx below the frame count, no status frames); others -ENOSYS. The
    /// frame must be guest RAM (-EINVAL otherwise). Other memory_op commands: -ENOSYS. The
    /// shared_info layout is the latched one, else the caller's.
    static func memoryOp(_ command: UInt64, _ argument: UInt64, is64Bit: Bool, _ env: some HypercallEnvironment) -> HypercallResult {
        guard command & 0x3F == 7 else { return .error(.nosys) }          // MEMOP_CMD_MASK
        let size = is64Bit ? 24 : 16
        guard let bytes = env.read(argument, count: size) else { return .error(.fault) }
        guard u16(bytes, 0) == XenABI.domidSelf else { return .error(.srch) }
        let space = u32(bytes, 4)
        let index = is64Bit ? u64(bytes, 8) : UInt64(u32(bytes, 8))
        let frame = is64Bit ? u64(bytes, 16) : UInt64(u32(bytes, 12))
        switch space {
        case 0:
            guard index == 0 else { return .error(.inval) }
            let abi = env.sharedInfoABI ?? (is64Bit ? .x86_64 : .x86_32)
            return env.mapSharedInfo(frame: frame, abi: abi) ? .ok() : .error(.inval)
        case 1:
            guard index < UInt64(XenABI.grantFrames) else { return .error(.inval) }   // also refuses the status bit
            return env.mapGrantFrame(index, frame: frame) ? .ok() : .error(.inval)
        case 4:
            return .error(.inval)                                          // gmfn_foreign: not through this call
        default:
            return .error(.nosys)
        }
    }

    /// `grant_table_op(cmd, uop, count)`: GNTTABOP_query_size (6, count must be 1), set_version
    /// (8) and get_version (10) (count ignored, as Xen does); version 1 only, one frame. Others -ENOSYS.
    static func grantTableOp(_ command: UInt32, _ argument: UInt64, _ count: UInt32, _ env: some HypercallEnvironment) -> HypercallResult {
        switch command {
        case 6:                                   // {domid_t dom; u32 nr_frames @4; u32 max @8; i16 status @12}
            guard count == 1 else { return .error(.inval) }
            guard var bytes = env.read(argument, count: 16) else { return .error(.fault) }
            if u16(bytes, 0) == XenABI.domidSelf {
                bytes.replaceSubrange(4..<14, with: le(XenABI.grantFrames) + le(XenABI.grantFrames) + le(Int16(0)))
            } else {
                bytes.replaceSubrange(12..<14, with: le(Int16(-2)))       // GNTST_bad_domain
            }
            return env.write(bytes, at: argument) ? .ok() : .error(.fault)
        case 8:                                   // {u32 version}: in, and out as the current one
            guard let bytes = env.read(argument, count: 4) else { return .error(.fault) }
            let requested = u32(bytes, 0)
            let result: HypercallResult = requested == 1 ? .ok() : requested == 2 ? .error(.nosys) : .error(.inval)
            return env.write(le(UInt32(1)), at: argument) ? result : .error(.fault)
        case 10:                                  // {domid_t dom; u32 version @4}
            guard let bytes = env.read(argument, count: 8) else { return .error(.fault) }
            guard u16(bytes, 0) == XenABI.domidSelf else { return .error(.srch) }
            guard let address = advance(argument, by: 4) else { return .error(.fault) }
            return env.write(le(UInt32(1)), at: address) ? .ok() : .error(.fault)
        default:
            return .error(.nosys)
        }
    }
}

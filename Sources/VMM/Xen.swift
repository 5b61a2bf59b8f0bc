import Dispatch
import GuestMemory
import Hypercalls
import KVM
import Loader
import X86
#if canImport(Glibc)
import Glibc
#endif

/// Whether a VM offers the Xen-style interface (`--xen`).
public enum XenMode: String, Sendable, CaseIterable {
    /// `auto`: on when the notes declare a Xen guest (`XenNotes.declareXenGuest`).
    case auto, on, off

    /// Whether the interface is on for `image`.
    public func enabled(for image: KernelImage) -> Bool {
        switch self {
        case .on: return true
        case .off: return false
        case .auto:
            guard case let .elf(elf) = image else { return false }
            return elf.notes.declareXenGuest
        }
    }

}

/// The Xen state of the whole VM: HVM parameters and where the guest put shared pages.
public struct XenDomainState: Sendable {
    public var hvmParams: [UInt32: UInt64] = [:]
    /// Guest-physical address and layout of the shared_info page, once mapped.
    public var sharedInfo: (address: UInt64, abi: SharedInfo.ABI)?
    /// Grant-table frame index to guest-physical address.
    public var grantFrames: [UInt64: UInt64] = [:]
    /// The shared_info layout, latched by the mode of the vCPU that last installed the hypercall
    /// page or set HVM_PARAM_CALLBACK_IRQ (Xen's `hvm_latch_shinfo_size`).
    public var latchedABI: SharedInfo.ABI?
    /// The event channels (Xen's toolstack default of 1024 ports).
    public var eventChannels = EventChannelTable(limit: 1024)
    /// The guest-side port of the PV console's channel.
    public var consolePort: UInt32?
    /// Per-vCPU upcall vectors (HVMOP_set_evtchn_upcall_vector).
    public var upcallVectors: [Int: UInt8] = [:]

    static let tscMSR: UInt32 = 0x10

    /// The guest-physical address of 4 KiB frame `frame`, if that page is guest RAM.
    static func address(ofFrame frame: UInt64, in memory: GuestMemory) -> GuestAddress? {
        guard frame < 1 << 52 else { return nil }
        let address = GuestAddress(frame << 12)
        return memory.contains(address, length: 4096) ? address : nil
    }
}

/// How a vCPU came to run.
public enum BringUp: String, Sendable {
    case boot = "boot", initSIPI = "INIT-SIPI", vcpuOpUp = "VCPUOP_up"
}

/// A vCPU as the Xen interface sees it, plus what it registered.
public struct XenVCPUState: Sendable, Equatable {
    public var bringUp: BringUp?
    public var initialised = false
    /// Taken down by `VCPUOP_down`: its thread parks until `VCPUOP_up`.
    public var down = false
    public var context: VCPUContext?
    /// Calls by number (0..63; larger numbers share the last slot), named when reported.
    var callCounts = [Int](repeating: 0, count: 65)
    public var callbacks: [UInt16: UInt64] = [:]
    public var trapTable: [TrapInfo] = []
    // Runstate bookkeeping, nanoseconds since the run started.
    var stateEntry: UInt64 = 0
    var runningTime: UInt64 = 0
    var offlineTime: UInt64 = 0

    public var isUp: Bool { bringUp != nil && !down }

    public init() {}

    mutating func count(_ number: UInt64) { callCounts[Int(min(number, 64))] += 1 }

    /// Hypercall counts by Xen's name.
    public var hypercalls: [String: Int] {
        var named: [String: Int] = [:]
        for (number, count) in callCounts.enumerated() where count > 0 {
            named[number == 64 ? "unknown_64_or_above" : HypercallNumber.name(of: UInt64(number))] = count
        }
        return named
    }

    /// Callback types by name (callback.h).
    public static let callbackNames: [UInt16: String] = [0: "event", 1: "failsafe", 2: "syscall", 4: "nmi", 5: "sysenter", 7: "syscall32"]

    mutating func transition(toUp up: Bool, at now: UInt64) {
        let elapsed = now - min(now, stateEntry)
        if isUp { runningTime += elapsed } else { offlineTime += elapsed }
        stateEntry = now
        if up { down = false } else { down = true }
    }
}

extension Machine {
    /// Serves one hypercall trapped by the IN from `XenABI.trapPort`, on the caller's thread.
    func serveHypercall(on slot: VCPUSlot) -> VMOutcome? {
        let vcpu = slot.vcpu
        let regs: Registers, sregs: SpecialRegisters
        if registersSynced {
            regs = vcpu.syncedRegisters()
            sregs = vcpu.syncedSpecialRegisters()
        } else {
            do {
                regs = try vcpu.registers()
                sregs = try vcpu.specialRegisters()
            } catch {
                return .vmmError(vcpu: vcpu.id, message: error.description)
            }
        }
        let longMode = sregs.efer & ControlBits.lma != 0 && sregs.cs.long
        let low: UInt64 = 0xFFFF_FFFF
        var request = longMode
            ? HypercallRequest(number: regs.rax, regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8)
            : HypercallRequest(number: regs.rax & low, regs.rbx & low, regs.rcx & low, regs.rdx & low, regs.rsi & low, regs.rdi & low)
        request.is64Bit = longMode
        let view = GuestVirtualMemory(memory: memory, mode: GuestVirtualMemory.mode(
            cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer))
        let result = HypercallDispatcher.handle(request, in: XenEnvironment(machine: self, caller: slot, view: view))
        slot.xen.withLock { $0.count(request.number) }
        vcpu.setIOValue(UInt32(truncatingIfNeeded: result.value))
        switch result.effect {
        case .none: return nil
        case let .shutdown(reason): return .xenShutdown(reason: reason, vcpu: vcpu.id)
        case .allVCPUsDown: return .allVCPUsDown(vcpu: vcpu.id)
        }
    }

    /// A guest write of `gpa | index` to the hypercall-page MSR: fills the page for the writing
    /// vCPU's current mode, or raises #GP for a non-zero index or a page outside RAM.
    func installHypercallPage(_ value: UInt64, on slot: VCPUSlot) {
        let address = value & ~UInt64(0xFFF)
        guard value & 0xFFF == 0, memory.contains(GuestAddress(address), length: UInt64(HypercallPage.size)),
              let sregs = try? slot.vcpu.specialRegisters() else {
            slot.vcpu.completeMSR(fault: true)
            return
        }
        let longMode = sregs.efer & ControlBits.lma != 0 && sregs.cs.long
        try? memory.write(HypercallPage.bytes(longMode: longMode), at: GuestAddress(address))
        xenDomain.withLock { $0.latchedABI = longMode ? .x86_64 : .x86_32 }
        slot.vcpu.completeMSR()
        logger.debug("hypercall page installed", metadata: ["gpa": "0x\(String(address, radix: 16))", "64-bit": "\(longMode)"])
    }

    /// Starts a vCPU brought up by `VCPUOP_up`: registers from its context, then RUNNABLE.
    func startXenVCPU(_ target: VCPUSlot, context: VCPUContext) {
        let state = BootSetup.longModeVCPU(rip: context.rip, rsp: context.rsp, rdi: context.rdi, rsi: context.rsi,
                                           pageTableBase: context.pageTableBase)
        deliver(.start(state), to: target)
    }
}

/// The hypercall environment for one call: the Machine's vCPUs, and memory as the caller sees it.
struct XenEnvironment: HypercallEnvironment {
    let machine: Machine
    let callerSlot: VCPUSlot
    let view: GuestVirtualMemory

    init(machine: Machine, caller: VCPUSlot, view: GuestVirtualMemory) {
        self.machine = machine
        self.callerSlot = caller
        self.view = view
    }

    var caller: Int { callerSlot.vcpu.id }
    var vcpuCount: Int { machine.slots.count }
    func read(_ virtual: UInt64, count: Int) -> [UInt8]? { view.read(virtual, count: count) }
    func write(_ bytes: [UInt8], at virtual: UInt64) -> Bool { view.write(bytes, at: virtual) }
    func isRAMPage(_ physical: UInt64) -> Bool { machine.memory.contains(GuestAddress(physical), length: 4096) }
    func consoleWrite(_ bytes: [UInt8]) { machine.configuration.serialOutput(bytes) }

    func isUp(_ vcpu: Int) -> Bool { machine.slots[vcpu].xen.withLock { $0.isUp } }
    func isInitialised(_ vcpu: Int) -> Bool { machine.slots[vcpu].xen.withLock { $0.initialised || $0.bringUp != nil } }

    func initialise(_ vcpu: Int, with context: VCPUContext) {
        machine.slots[vcpu].xen.withLock { $0.initialised = true; $0.context = context }
    }

    func up(_ vcpu: Int) {
        let slot = machine.slots[vcpu]
        let now = machine.runNanoseconds()
        let (wasDown, context) = slot.xen.withLock { state -> (Bool, VCPUContext?) in
            if state.bringUp == nil { state.bringUp = .vcpuOpUp }
            return (state.down, state.context)
        }
        slot.setDown(false, at: now)
        if wasDown {
            slot.wakeup.signal()                  // resume where it stopped
        } else if let context {
            machine.startXenVCPU(slot, context: context)
        }
    }

    func down(_ vcpu: Int) -> Bool {
        let now = machine.runNanoseconds()
        machine.slots[vcpu].setDown(true, at: now)
        if vcpu != caller { machine.slots[vcpu].kick() }
        return !machine.slots.contains { $0.xen.withLock { $0.isUp } }
    }

    func runstate(_ vcpu: Int) -> RunstateInfo {
        let now = machine.runNanoseconds()
        return machine.slots[vcpu].xen.withLock { s in
            let elapsed = now - min(now, s.stateEntry)
            return RunstateInfo(state: s.isUp ? 0 : 3, entryTime: s.stateEntry,
                                time: [s.runningTime + (s.isUp ? elapsed : 0), 0, 0, s.offlineTime + (s.isUp ? 0 : elapsed)])
        }
    }

    var isHVM: Bool { machine.bootProtocol != .xen64 }
    var sharedInfoABI: SharedInfo.ABI? { machine.xenDomain.withLock { $0.latchedABI } }
    func latchSharedInfoABI(_ abi: SharedInfo.ABI) { machine.xenDomain.withLock { $0.latchedABI = abi } }
    func hvmParam(_ index: UInt32) -> UInt64 { machine.xenDomain.withLock { $0.hvmParams[index] ?? 0 } }
    /// A new `HVM_PARAM_CALLBACK_IRQ` delivers what is already pending through it, as Xen's
    /// `hvm_set_callback_via` does.
    func setHVMParam(_ index: UInt32, _ value: UInt64) {
        machine.xenDomain.withLock { $0.hvmParams[index] = value }
        if index == XenABI.hvmParamCallbackIRQ {
            for vcpu in 0..<machine.slots.count { machine.reassertXenUpcall(vcpu: vcpu) }
        }
    }

    func mapSharedInfo(frame: UInt64, abi: SharedInfo.ABI) -> Bool {
        guard let address = XenDomainState.address(ofFrame: frame, in: machine.memory) else { return false }
        let vcpu = callerSlot.vcpu
        guard let khz = try? vcpu.tscKHz(), let tsc = try? vcpu.msrs([XenDomainState.tscMSR]).first else { return false }
        let systemTime = machine.runNanoseconds()
        let (mul, shift) = SharedInfo.scale(tscHertz: UInt64(khz) * 1000)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        // The wallclock is the time of day at system time 0, the start of the run.
        let nowNanoseconds = UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
        let boot = nowNanoseconds - min(nowNanoseconds, systemTime)
        let time = SharedInfo.Time(tscTimestamp: tsc, systemTime: systemTime, mul: mul, shift: shift)
        let page = SharedInfo(abi: abi, vcpuTimes: Array(repeating: time, count: min(vcpuCount, SharedInfo.legacyMaxVCPUs)),
                              wallclockSeconds: boot / 1_000_000_000, wallclockNanoseconds: UInt32(boot % 1_000_000_000))
        guard (try? machine.memory.write(page.bytes, at: address)) != nil else { return false }
        machine.xenDomain.withLock { $0.sharedInfo = (address.rawValue, abi) }
        machine.logger.debug("shared_info mapped", metadata: ["gpa": "0x\(String(address.rawValue, radix: 16))", "abi": "\(abi)"])
        return true
    }

    func mapGrantFrame(_ index: UInt64, frame: UInt64) -> Bool {
        guard let address = XenDomainState.address(ofFrame: frame, in: machine.memory),
              (try? machine.memory.fill(0, at: address, count: 4096)) != nil else { return false }
        machine.xenDomain.withLock { $0.grantFrames[index] = address.rawValue }
        return true
    }

    func withEventChannels<T>(_ body: (inout EventChannelTable) -> T) -> T { machine.xenDomain.withLock { body(&$0.eventChannels) } }
    func raise(port: UInt32, vcpu: Int) { machine.raiseXenEvent(port: port, vcpu: vcpu) }
    func unmask(port: UInt32) { machine.unmaskXenEvent(port: port) }
    func notifyBackend(port: UInt32) { machine.notifyXenBackend(port: port) }
    /// As Xen does on `HVMOP_set_evtchn_upcall_vector`, an event already pending is delivered on the new vector.
    func setUpcallVector(_ vector: UInt8, vcpu: Int) {
        machine.xenDomain.withLock { $0.upcallVectors[vcpu] = vector }
        machine.reassertXenUpcall(vcpu: vcpu)
    }

    func setTrapTable(_ entries: [TrapInfo]) { callerSlot.xen.withLock { $0.trapTable = entries } }
    func registerCallback(type: UInt16, address: UInt64, flags: UInt16) {
        callerSlot.xen.withLock { $0.callbacks[type] = address }
    }
    func unregisterCallback(type: UInt16) { callerSlot.xen.withLock { _ = $0.callbacks.removeValue(forKey: type) } }
}

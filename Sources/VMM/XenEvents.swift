import GuestMemory
import Hypercalls
import KVM
import Synchronization
import X86

/// The back end of Xen's PV console ring (`public/io/console.h`, `struct xencons_interface`): the
/// guest writes to `out` and reads `in`; this side drains `out` and fills `in`. The page:
/// `in[1024]` at 0, `out[2048]` at 1024, then the indexes `in_cons`, `in_prod`, `out_cons`,
/// `out_prod` (u32, free-running) at 3072, 3076, 3080, 3084.
///
/// Each index is read once per pass. A guest whose producer has run more than a ring's size ahead
/// of the consumer gets at most one ring's worth taken, and never an access outside the page.
public struct XenConsoleRing: Sendable {
    public static let inSize: UInt32 = 1024, outSize: UInt32 = 2048
    static let inOffset: UInt64 = 0, outOffset: UInt64 = 1024
    static let inCons: UInt64 = 3072, inProd: UInt64 = 3076, outCons: UInt64 = 3080, outProd: UInt64 = 3084

    public let memory: GuestMemory
    public let page: GuestAddress

    public init(memory: GuestMemory, page: GuestAddress) {
        self.memory = memory
        self.page = page
    }

    private func index(_ offset: UInt64) -> UInt32? { try? memory.loadAcquire(at: GuestAddress(page.rawValue + offset)) }

    /// Takes what the guest wrote to `out` and moves `out_cons` past it.
    public func drainOutput() -> [UInt8] {
        guard let consumer = index(Self.outCons), let producer = index(Self.outProd) else { return [] }
        let count = min(producer &- consumer, Self.outSize)
        guard count > 0 else { return [] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(count))
        for i in 0..<count {
            let at = GuestAddress(page.rawValue + Self.outOffset + UInt64((consumer &+ i) % Self.outSize))
            bytes.append((try? memory.load(at: at, as: UInt8.self)) ?? 0)
        }
        try? memory.storeRelease(consumer &+ count, at: GuestAddress(page.rawValue + Self.outCons))
        return bytes
    }

    /// Puts input into `in` as far as there is room; returns how much it took.
    public func fillInput(_ bytes: [UInt8]) -> Int {
        guard let consumer = index(Self.inCons), let producer = index(Self.inProd) else { return 0 }
        let used = producer &- consumer
        guard used <= Self.inSize else { return 0 }   // a wild index: the ring has no room
        let count = min(UInt32(bytes.count), Self.inSize - used)
        for i in 0..<count {
            let at = GuestAddress(page.rawValue + Self.inOffset + UInt64((producer &+ i) % Self.inSize))
            try? memory.store(bytes[Int(i)], at: at)
        }
        guard count > 0 else { return 0 }
        try? memory.storeRelease(producer &+ count, at: GuestAddress(page.rawValue + Self.inProd))
        return Int(count)
    }
}

extension Machine {
    /// The PV console's page (a page of the legacy reserved area: backed, never usable RAM) and
    /// the guest-side port of its event channel, set up when the Xen interface is on.
    static let xenConsolePage = GuestAddress(Layout.xenConsolePage)

    /// Prepares the PV console: the page zeroed, a port bound to Swiftlet's back end, and
    /// HVM_PARAM_CONSOLE_PFN / _EVTCHN set (HVM_PARAM_STORE_PFN stays 0: there is no xenstore).
    func setUpXenConsole() {
        try? memory.fill(0, at: Self.xenConsolePage, count: 4096)
        xenDomain.withLock { d in
            guard let port = d.eventChannels.allocateBackend(remotePort: 1) else { return }
            d.consolePort = port
            d.hvmParams[XenABI.hvmParamConsolePFN] = Self.xenConsolePage.rawValue >> 12
            d.hvmParams[XenABI.hvmParamConsoleEvtchn] = UInt64(port)
        }
    }

    /// The guest notified a port whose other end is Swiftlet's: the console drains and answers.
    func notifyXenBackend(port: UInt32) {
        guard let consolePort = xenDomain.withLock({ $0.consolePort }), port == consolePort else { return }
        let output = XenConsoleRing(memory: memory, page: Self.xenConsolePage).drainOutput()
        if !output.isEmpty { configuration.serialOutput(output) }
        signalXenConsole()
    }

    /// Input for the PV console; the guest is notified. Returns how much fitted.
    func receiveXenConsoleInput(_ bytes: [UInt8]) -> Int {
        let taken = XenConsoleRing(memory: memory, page: Self.xenConsolePage).fillInput(bytes)
        if taken > 0 { signalXenConsole() }
        return taken
    }

    private func signalXenConsole() {
        guard let (port, vcpu) = xenDomain.withLock({ d -> (UInt32, UInt32)? in
            guard let port = d.consolePort, let channel = d.eventChannels[port] else { return nil }
            return (port, channel.vcpu)
        }) else { return }
        raiseXenEvent(port: port, vcpu: Int(vcpu))
    }

    /// 2-level event delivery (Xen's `evtchn_2l_set_pending`): set the port's pending bit; if it
    /// was clear and the port is not masked, set the vCPU's selector bit; if that was clear, set
    /// `evtchn_upcall_pending`; if that was clear, deliver the upcall. Without a shared_info page
    /// there is nowhere to mark it: the event is lost, as the guest has not asked for any.
    func raiseXenEvent(port: UInt32, vcpu: Int) {
        guard let (base, abi) = xenDomain.withLock({ $0.sharedInfo }) else { return }
        let o = SharedInfo.eventOffsets(abi)
        let word = UInt64(port / 32) * 4, bit = UInt32(1) << (port % 32)
        guard let pending = memory.atomicOr(bit, at: GuestAddress(base + UInt64(o.pending) + word)), pending & bit == 0 else { return }
        guard let mask: UInt32 = try? memory.loadAcquire(at: GuestAddress(base + UInt64(o.mask) + word)), mask & bit == 0 else { return }
        markSelector(port / UInt32(o.bitsPerWord), vcpu: vcpu, base: base, abi: abi)
    }

    /// `EVTCHNOP_unmask`: clear the mask bit; a port that was masked and is pending notifies.
    func unmaskXenEvent(port: UInt32) {
        guard let (base, abi) = xenDomain.withLock({ $0.sharedInfo }) else { return }
        let vcpu = xenDomain.withLock { Int($0.eventChannels[port]?.vcpu ?? 0) }
        let o = SharedInfo.eventOffsets(abi)
        let word = UInt64(port / 32) * 4, bit = UInt32(1) << (port % 32)
        guard let mask = memory.atomicAnd(~bit, at: GuestAddress(base + UInt64(o.mask) + word)), mask & bit != 0,
              let pending: UInt32 = try? memory.loadAcquire(at: GuestAddress(base + UInt64(o.pending) + word)), pending & bit != 0 else { return }
        markSelector(port / UInt32(o.bitsPerWord), vcpu: vcpu, base: base, abi: abi)
    }

    private func markSelector(_ selectorBit: UInt32, vcpu: Int, base: UInt64, abi: SharedInfo.ABI) {
        guard vcpu < min(slots.count, SharedInfo.legacyMaxVCPUs) else { return }
        let info = base + UInt64(vcpu * SharedInfo.vcpuInfoSize)
        let o = SharedInfo.eventOffsets(abi)
        let selector = GuestAddress(info + UInt64(o.pendingSelector) + UInt64(selectorBit / 32) * 4)
        let bit = UInt32(1) << (selectorBit % 32)
        guard let old = memory.atomicOr(bit, at: selector), old & bit == 0 else { return }
        // evtchn_upcall_pending is byte 0 of the vcpu_info: bit 0 of its first word.
        guard let upcall = memory.atomicOr(1, at: GuestAddress(info)), upcall & 1 == 0 else { return }
        deliverXenUpcall(vcpu: vcpu)
    }

    /// After the upcall's route changes: a vCPU whose `evtchn_upcall_pending` is already set has
    /// its upcall delivered on the new route (nothing else would deliver it, as no further event
    /// finds that flag clear).
    func reassertXenUpcall(vcpu: Int) {
        guard let (base, _) = xenDomain.withLock({ $0.sharedInfo }), vcpu < min(slots.count, SharedInfo.legacyMaxVCPUs),
              let flag: UInt8 = try? memory.loadAcquire(at: GuestAddress(base + UInt64(vcpu * SharedInfo.vcpuInfoSize))),
              flag & 1 != 0 else { return }
        deliverXenUpcall(vcpu: vcpu)
    }

    /// The upcall: the vCPU's own vector (HVMOP_set_evtchn_upcall_vector), else
    /// HVM_PARAM_CALLBACK_IRQ's (type 2: vector, injected into that vCPU's LAPIC by MSI; type 0:
    /// a GSI, pulsed through the IOAPIC). Other types are not delivered.
    func deliverXenUpcall(vcpu: Int) {
        let (perVCPU, callback) = xenDomain.withLock { ($0.upcallVectors[vcpu], $0.hvmParams[XenABI.hvmParamCallbackIRQ] ?? 0) }
        let vector: UInt8?
        if let perVCPU { vector = perVCPU } else if callback >> 56 == 2 { vector = UInt8(truncatingIfNeeded: callback) } else { vector = nil }
        if let vector {
            // Fixed delivery, physical destination: the vCPU's APIC ID is its index.
            try? vm.signalMSI(address: Layout.lapic | UInt64(vcpu) << 12, data: UInt32(vector))
        } else if callback >> 56 == 0, callback != 0 {
            let gsi = UInt32(truncatingIfNeeded: callback)
            try? vm.setInterruptLine(gsi, high: true)
            try? vm.setInterruptLine(gsi, high: false)
        }
    }
}

import GuestMemory
import Logging
import Synchronization

/// The virtio-mmio transport, version 2 (VIRTIO 1.2 §4.2): the register file of §4.2.2 at a
/// 4 KiB slot, the device status state machine of §2.1 and §3.1.1, feature negotiation, queue
/// configuration, notifications and the interrupt status. The legacy (version 1) layout is not
/// offered.
public final class MMIOTransport: Sendable {
    public static let slotSize: UInt64 = 0x1000
    public static let magic: UInt32 = 0x7472_6976   // "virt"
    public static let vendorID: UInt32 = 0x5753_4C54 // "TLSW"

    /// Device status bits (§2.1).
    public enum Status {
        public static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4
        public static let featuresOK: UInt32 = 8, needsReset: UInt32 = 64, failed: UInt32 = 128
    }

    /// Interrupt status bits (§4.2.2).
    public enum Interrupt {
        public static let usedBuffer: UInt32 = 1, configChange: UInt32 = 2
    }

    /// Register offsets (§4.2.2).
    public enum Register {
        public static let magic = 0x000, version = 0x004, deviceID = 0x008, vendorID = 0x00C
        public static let deviceFeatures = 0x010, deviceFeaturesSel = 0x014
        public static let driverFeatures = 0x020, driverFeaturesSel = 0x024
        public static let queueSel = 0x030, queueNumMax = 0x034, queueNum = 0x038, queueReady = 0x044
        public static let queueNotify = 0x050, interruptStatus = 0x060, interruptACK = 0x064, status = 0x070
        public static let queueDescLow = 0x080, queueDescHigh = 0x084, queueDriverLow = 0x090, queueDriverHigh = 0x094
        public static let queueDeviceLow = 0x0A0, queueDeviceHigh = 0x0A4
        public static let shmSel = 0x0AC, shmLenLow = 0x0B0, shmLenHigh = 0x0B4, shmBaseLow = 0x0B8, shmBaseHigh = 0x0BC
        public static let configGeneration = 0x0FC, config = 0x100
    }

    struct State {
        var status: UInt32 = 0
        var deviceFeaturesSel: UInt32 = 0
        var driverFeaturesSel: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var queueSel: UInt32 = 0
        /// What the driver configured for each queue (size, addresses, ready).
        var queues: [Virtqueue]
        var interruptStatus: UInt32 = 0
        var configGeneration: UInt32 = 0
        var activated = false
        var problemLogged = false
        /// The VM is paused: the device touches no queue (`quiesce`).
        var quiesced = false
    }

    /// What a register write asks for once the register lock is released.
    struct Effects {
        var notify: Int?
        var activate: (features: UInt64, queues: [Virtqueue])?
        var install: (index: Int, queue: Virtqueue)?
        var reset = false
        var interrupt = false
    }

    public let device: any VirtioDevice
    let memory: GuestMemory
    /// The registers. Taken briefly, by vCPU threads and the device's worker; never across I/O.
    let state: Mutex<State>
    /// The queues the device serves (indices and all). Held while the device works on them, by
    /// its worker (or the notifying thread when there is none), and by status and QueueReady
    /// writes: a reset waits for work in progress to end before it returns.
    let rings: Mutex<[Virtqueue]>
    /// Raises the device's interrupt (an edge on its pin: an irqfd, or a pulse of the line).
    let interrupt: @Sendable () -> Void
    /// Where a QueueNotify write goes: the device's worker. Without one, the writing thread
    /// serves the queue itself.
    let notify: (@Sendable (Int) -> Void)?
    let logger: Logger

    public init(device: any VirtioDevice, memory: GuestMemory, logger: Logger = Logger(label: "swiftlet.virtio"),
                notify: (@Sendable (Int) -> Void)? = nil, interrupt: @escaping @Sendable () -> Void) {
        self.device = device
        self.memory = memory
        self.logger = logger
        self.notify = notify
        self.interrupt = interrupt
        let queues = device.queueMaxSizes.map { Virtqueue(size: $0) }
        state = Mutex(State(queues: queues))
        rings = Mutex(queues)
    }

    /// Every feature the device offers: its own, VERSION_1 (required), and the ring features.
    public var offeredFeatures: UInt64 {
        device.deviceFeatures | VirtioFeature.version1 | VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex
    }

    public var status: UInt32 { state.withLock { $0.status } }
    public var interruptStatus: UInt32 { state.withLock { $0.interruptStatus } }
    public var queueCount: Int { device.queueMaxSizes.count }

    // MARK: Registers

    /// A driver read. Registers take 32-bit accesses only; the configuration space 8, 16 or 32.
    public func read(offset: Int, size: Int) -> UInt32 {
        if offset >= Register.config {
            return device.readConfig(offset: offset - Register.config, size: size)
        }
        guard size == 4, offset % 4 == 0 else { return 0 }
        return state.withLock { s in
            switch offset {
            case Register.magic: return Self.magic
            case Register.version: return 2
            case Register.deviceID: return device.deviceID
            case Register.vendorID: return Self.vendorID
            case Register.deviceFeatures:
                return s.deviceFeaturesSel < 2 ? UInt32(truncatingIfNeeded: offeredFeatures >> (32 * UInt64(s.deviceFeaturesSel))) : 0
            case Register.queueNumMax:
                return Int(s.queueSel) < s.queues.count ? UInt32(device.queueMaxSizes[Int(s.queueSel)]) : 0
            case Register.queueReady:
                return Int(s.queueSel) < s.queues.count && s.queues[Int(s.queueSel)].ready ? 1 : 0
            case Register.interruptStatus: return s.interruptStatus
            case Register.status: return s.status
            case Register.shmLenLow, Register.shmLenHigh, Register.shmBaseLow, Register.shmBaseHigh:
                return 0xFFFF_FFFF   // no shared memory regions (§4.2.2: length -1 for one that does not exist)
            case Register.configGeneration: return s.configGeneration
            default: return 0
            }
        }
    }

    /// A driver write. A notification goes to the device's worker (or is served here without one).
    public func write(offset: Int, size: Int, value: UInt32) {
        if offset >= Register.config {
            device.writeConfig(offset: offset - Register.config, size: size, value: value)
            return
        }
        guard size == 4, offset % 4 == 0 else { return }
        if offset == Register.status || offset == Register.queueReady {
            // What the device serves changes (activation, a reset, a queue enabled late): under
            // the rings' lock, so that no notification finds the device live and its queue not
            // yet installed, and a reset waits for work in progress. Rare writes, and short.
            let effects = rings.withLock { rings -> Effects in
                let effects = state.withLock { s -> Effects in
                    var effects = Effects()
                    if offset == Register.status { setStatus(&s, value, &effects) } else { setQueueReady(&s, value == 1, &effects) }
                    return effects
                }
                if effects.reset {
                    rings = device.queueMaxSizes.map { Virtqueue(size: $0) }
                    device.reset()
                }
                if let (features, queues) = effects.activate {
                    rings = queues
                    device.activate(features: features)
                }
                if let (index, queue) = effects.install { rings[index] = queue }
                return effects
            }
            if effects.interrupt { interrupt() }
            return
        }
        let effects = state.withLock { s -> Effects in
            var effects = Effects()
            switch offset {
            case Register.deviceFeaturesSel: s.deviceFeaturesSel = value
            case Register.driverFeaturesSel: s.driverFeaturesSel = value
            case Register.driverFeatures:
                // Only while negotiating (§3.1.1: after DRIVER, before FEATURES_OK).
                guard s.status & Status.driver != 0, s.status & Status.featuresOK == 0, s.driverFeaturesSel < 2 else { break }
                let shift = 32 * UInt64(s.driverFeaturesSel)
                s.driverFeatures = (s.driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(value) << shift)
            case Register.queueSel: s.queueSel = value
            case Register.queueNum, Register.queueDescLow, Register.queueDescHigh, Register.queueDriverLow,
                 Register.queueDriverHigh, Register.queueDeviceLow, Register.queueDeviceHigh:
                configureQueue(&s, offset, value, &effects)
            case Register.queueNotify:
                if Int(value) < s.queues.count, s.queues[Int(value)].ready, s.activated,
                   s.status & Status.needsReset == 0 {
                    effects.notify = Int(value)
                }
            case Register.interruptACK:
                s.interruptStatus &= ~value
            default: break
            }
            return effects
        }
        if effects.interrupt { interrupt() }
        if let index = effects.notify {
            if let notify { notify(index) } else { process(queue: index) }
        }
    }

    // MARK: Status and queues

    /// §2.1 and §3.1.1: 0 resets; otherwise bits are only added, in order. FEATURES_OK stays set
    /// only if the driver's features are a subset of the offer and include VERSION_1 (§2.2.2).
    /// DRIVER_OK before FEATURES_OK is refused: the device asks for a reset.
    private func setStatus(_ s: inout State, _ value: UInt32, _ effects: inout Effects) {
        if value == 0 {
            s = State(queues: device.queueMaxSizes.map { Virtqueue(size: $0) })
            effects.reset = true
            return
        }
        var added = value & ~s.status
        if added & Status.featuresOK != 0 {
            let ok = s.status & Status.driver != 0
                && s.driverFeatures & ~offeredFeatures == 0 && s.driverFeatures & VirtioFeature.version1 != 0
            if !ok { added &= ~Status.featuresOK }
        }
        if added & Status.driverOK != 0 && (s.status | added) & Status.featuresOK == 0 {
            logOnce(&s, "the driver set DRIVER_OK without FEATURES_OK")
            needsReset(&s, &effects)
            return
        }
        s.status |= added & (Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK | Status.failed)
        if added & Status.driverOK != 0 && !s.activated {
            for index in s.queues.indices {
                s.queues[index].indirect = s.driverFeatures & VirtioFeature.indirectDescriptors != 0
                s.queues[index].eventIndex = s.driverFeatures & VirtioFeature.eventIndex != 0
            }
            s.activated = true
            effects.activate = (s.driverFeatures, s.queues)
        }
    }

    private func configureQueue(_ s: inout State, _ offset: Int, _ value: UInt32, _ effects: inout Effects) {
        guard Int(s.queueSel) < s.queues.count else { return }
        let index = Int(s.queueSel)
        if s.queues[index].ready {
            // §4.2.3.2: the driver must not change a ready queue. A hostile one gets a reset request.
            logOnce(&s, "the driver changed queue \(index)'s configuration while it was ready")
            needsReset(&s, &effects)
            return
        }
        func low(_ old: UInt64) -> UInt64 { (old & 0xFFFF_FFFF_0000_0000) | UInt64(value) }
        func high(_ old: UInt64) -> UInt64 { (old & 0xFFFF_FFFF) | UInt64(value) << 32 }
        switch offset {
        case Register.queueNum:
            if Virtqueue.isValidSize(value) && value <= UInt32(device.queueMaxSizes[index]) {
                s.queues[index].size = UInt16(value)
            }
        case Register.queueDescLow: s.queues[index].descriptorTable = low(s.queues[index].descriptorTable)
        case Register.queueDescHigh: s.queues[index].descriptorTable = high(s.queues[index].descriptorTable)
        case Register.queueDriverLow: s.queues[index].availableRing = low(s.queues[index].availableRing)
        case Register.queueDriverHigh: s.queues[index].availableRing = high(s.queues[index].availableRing)
        case Register.queueDeviceLow: s.queues[index].usedRing = low(s.queues[index].usedRing)
        case Register.queueDeviceHigh: s.queues[index].usedRing = high(s.queues[index].usedRing)
        default: break
        }
    }

    /// QueueReady: 1 checks the areas first; after DRIVER_OK the change reaches the served queue
    /// too (a queue enabled late, or one the driver stops using).
    private func setQueueReady(_ s: inout State, _ ready: Bool, _ effects: inout Effects) {
        guard Int(s.queueSel) < s.queues.count else { return }
        let index = Int(s.queueSel)
        guard s.queues[index].ready != ready else { return }
        if ready {
            do throws(VirtqueueError) { try s.queues[index].validate(in: memory) } catch {
                logOnce(&s, "queue \(index): \(error)")
                needsReset(&s, &effects)
                return
            }
        }
        s.queues[index].ready = ready
        if s.activated { effects.install = (index, s.queues[index]) }
    }

    /// DEVICE_NEEDS_RESET with a configuration-change interrupt (§2.1.2), once the driver is running.
    private func needsReset(_ s: inout State, _ effects: inout Effects) {
        s.status |= Status.needsReset
        if s.status & Status.driverOK != 0 { raise(&s, Interrupt.configChange, &effects) }
    }

    /// Sets an interrupt status bit; the pin gets an edge (§4.2.2: the driver reads and
    /// acknowledges the bits).
    private func raise(_ s: inout State, _ bit: UInt32, _ effects: inout Effects) {
        s.interruptStatus |= bit
        effects.interrupt = true
    }

    private func logOnce(_ s: inout State, _ message: String) {
        guard !s.problemLogged else { return }
        s.problemLogged = true
        logger.warning("virtio device \(device.deviceID): \(message); the device needs a reset")
    }

    /// The device's configuration space changed (a drive's new capacity): a new ConfigGeneration,
    /// and a configuration-change interrupt once the driver is running (§2.5.1, §4.2.2).
    public func configurationChanged() {
        let effects = state.withLock { s -> Effects in
            var effects = Effects()
            s.configGeneration &+= 1
            if s.status & Status.driverOK != 0 { raise(&s, Interrupt.configChange, &effects) }
            return effects
        }
        if effects.interrupt { interrupt() }
    }

    /// The transport's registers and the queues as the device serves them, for a snapshot (the
    /// VM is paused: no vCPU writes a register and the worker is idle).
    public struct SavedState: Equatable, Sendable {
        public var status: UInt32, deviceFeaturesSel: UInt32, driverFeaturesSel: UInt32, driverFeatures: UInt64
        public var queueSel: UInt32, interruptStatus: UInt32, configGeneration: UInt32, activated: Bool
        /// Each queue: the driver's configuration (`size`, the three areas, `ready`) and the
        /// device's place in its rings.
        public var queues: [Virtqueue]

        public init(status: UInt32, deviceFeaturesSel: UInt32, driverFeaturesSel: UInt32, driverFeatures: UInt64, queueSel: UInt32,
                    interruptStatus: UInt32, configGeneration: UInt32, activated: Bool, queues: [Virtqueue]) {
            self.status = status; self.deviceFeaturesSel = deviceFeaturesSel; self.driverFeaturesSel = driverFeaturesSel
            self.driverFeatures = driverFeatures; self.queueSel = queueSel; self.interruptStatus = interruptStatus
            self.configGeneration = configGeneration; self.activated = activated; self.queues = queues
        }
    }

    public var savedState: SavedState {
        rings.withLock { rings in
            state.withLock { s in
                // The served queue carries the place; before activation the registers' copy is all there is.
                let queues = s.activated ? rings : s.queues
                return SavedState(status: s.status, deviceFeaturesSel: s.deviceFeaturesSel, driverFeaturesSel: s.driverFeaturesSel,
                                  driverFeatures: s.driverFeatures, queueSel: s.queueSel, interruptStatus: s.interruptStatus,
                                  configGeneration: s.configGeneration, activated: s.activated, queues: queues)
            }
        }
    }

    /// Puts a saved transport back (a restore, before any vCPU runs): the registers, the queues
    /// with their places, and an activated device told its features again. A saved state that
    /// does not fit this device (another number of queues, a size over its maximum, rings not in
    /// guest RAM) is refused, naming what.
    public func restore(_ saved: SavedState) throws(VirtqueueError) {
        guard saved.queues.count == device.queueMaxSizes.count else {
            throw .savedStateMismatch(why: "the snapshot has \(saved.queues.count) queues for a device with \(device.queueMaxSizes.count)")
        }
        for (index, queue) in saved.queues.enumerated() {
            guard Virtqueue.isValidSize(UInt32(queue.size)), queue.size <= device.queueMaxSizes[index] else {
                throw .savedStateMismatch(why: "queue \(index)'s size \(queue.size) does not fit the device")
            }
            if queue.ready { try queue.validate(in: memory) }
        }
        rings.withLock { rings in
            state.withLock { s in
                s = State(queues: saved.queues)
                s.status = saved.status; s.deviceFeaturesSel = saved.deviceFeaturesSel; s.driverFeaturesSel = saved.driverFeaturesSel
                s.driverFeatures = saved.driverFeatures; s.queueSel = saved.queueSel; s.interruptStatus = saved.interruptStatus
                s.configGeneration = saved.configGeneration; s.activated = saved.activated
            }
            rings = saved.queues
            if saved.activated { device.activate(features: saved.driverFeatures) }
        }
    }

    /// Stops the device touching its queues and guest memory (the VM is paused), once the work in
    /// progress is done. Notifications meanwhile are remembered by the rings themselves.
    public func quiesce() {
        rings.withLock { _ in state.withLock { $0.quiesced = true } }
    }

    /// Lets the device work again, and has it look at every queue for what arrived meanwhile.
    public func resumeProcessing() {
        let live = state.withLock { s -> Bool in
            defer { s.quiesced = false }
            return s.quiesced && s.activated
        }
        guard live else { return }
        for index in 0..<queueCount {
            if let notify { notify(index) } else { process(queue: index) }
        }
    }

    /// True once the driver has set DRIVER_OK and until a reset or a reset request: the device
    /// may use its queues.
    public var isLive: Bool {
        state.withLock { $0.activated && $0.status & Status.needsReset == 0 }
    }

    /// Serves queue `index` (its worker calls this on a notification, or when the device has
    /// something for the driver): the device takes what it can; an error in the ring puts the
    /// device in DEVICE_NEEDS_RESET. Raises the used-buffer interrupt if the driver wants it.
    /// The registers stay free while the device works.
    public func process(queue index: Int) {
        rings.withLock { rings in
            // A reset or an activation takes this lock too: neither can happen while the device works.
            guard index < rings.count, rings[index].ready,
                  state.withLock({ $0.activated && !$0.quiesced && $0.status & Status.needsReset == 0 }) else { return }
            var queue = rings[index]
            var failure: VirtqueueError?
            var wanted = false
            do throws(VirtqueueError) {
                wanted = try device.process(queue: index, &queue, memory: memory) && queue.needsInterrupt(memory)
            } catch {
                failure = error
            }
            rings[index] = queue
            let effects = state.withLock { s -> Effects in
                var effects = Effects()
                if let failure {
                    logOnce(&s, "queue \(index): \(failure)")
                    needsReset(&s, &effects)
                } else if wanted {
                    raise(&s, Interrupt.usedBuffer, &effects)
                }
                return effects
            }
            if effects.interrupt { interrupt() }
        }
    }
}

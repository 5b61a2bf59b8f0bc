import Devices
import GuestMemory
import Hypercalls
import KVM
import Loader
import Logging
import Dispatch
import Synchronization
import Snapshot
import Virtio
import X86
#if canImport(Glibc)
import Glibc
#endif

/// What to run.
public struct MachineConfiguration: Sendable {
    /// The least guest RAM Swiftlet accepts.
    public static let minimumMemory = Layout.minimumMemory
    /// The most vCPUs an MP table can describe (8-bit xAPIC IDs, one kept for the I/O APIC).
    public static let maxCPUsWithMPTable = MPTable.maxCPUs

    public var kernel: KernelFile
    public var initrd: KernelFile?
    public var commandLine: [UInt8]
    /// The command line is the CLI's default, not the user's: a Multiboot kernel then gets none
    /// (as under QEMU without -append), since its arguments are its own, not Linux's.
    public var commandLineIsDefault = false
    /// More Multiboot modules after the initrd, each with the string the kernel sees.
    public var modules: [(file: KernelFile, string: String)] = []
    public var memorySize: UInt64
    public var cpus: Int
    public var bootCPU: Int
    /// nil: pick automatically (PVH > xen64 > linux).
    public var bootProtocol: BootProtocol?
    /// Write ACPI tables (RSDP, RSDT/XSDT, FADT, DSDT, MADT).
    public var acpi: Bool = true
    /// Write an Intel MP table (limits the VM to `MPTable.maxCPUs` vCPUs).
    public var mpTable: Bool = true
    /// Offer the Xen-style hypercall interface.
    public var xen: XenMode = .auto
    /// A CPU template applied to every vCPU's CPUID and MSRs (nil: KVM's supported CPUID as is).
    public var cpuTemplate: CPUTemplate?
    /// Install the syscall filter once the vCPU threads run (the CLI's default; off in-process).
    public var seccomp = false
    /// The process serves the API: the filter lets its connections through.
    public var serveAPI = false
    /// After installing the filter, make a forbidden call (tests: the VMM must die with a message).
    public var probeForbiddenSyscall = false
    /// virtio-mmio devices, in order: windows from `Layout.virtioBase`, pins from `Layout.virtioIRQs`.
    public var virtio: [VirtioDeviceSpec] = []
    /// `KVM_MEM_LOG_DIRTY_PAGES` on guest RAM, so that a diff snapshot can save only written pages.
    public var trackDirtyPages = false
    /// Standard input goes to the Xen PV console's `in` ring (`--console xen`).
    public var xenConsoleInput = false
    /// Forward standard input to the serial port.
    public var forwardInput: Bool
    /// Where the serial port's output goes (stdout by default).
    public var serialOutput: @Sendable ([UInt8]) -> Void

    public init(kernel: KernelFile, initrd: KernelFile? = nil, commandLine: [UInt8] = [],
                memorySize: UInt64 = 128 << 20, cpus: Int = 1, bootCPU: Int = 0,
                bootProtocol: BootProtocol? = nil, forwardInput: Bool = true,
                serialOutput: @escaping @Sendable ([UInt8]) -> Void = { writeAll(STDOUT_FILENO, $0) }) {
        self.kernel = kernel; self.initrd = initrd; self.commandLine = commandLine
        self.memorySize = memorySize; self.cpus = cpus; self.bootCPU = bootCPU
        self.bootProtocol = bootProtocol; self.forwardInput = forwardInput; self.serialOutput = serialOutput
    }
}

/// A virtio device to attach.
public enum VirtioDeviceSpec: Sendable, Equatable {
    /// A block device on a raw image; `root` adds `root=/dev/vdX` to the command line.
    case block(path: String, readOnly: Bool, id: String, root: Bool)
    /// The entropy device, filled from getrandom.
    case entropy
    /// A network device on TAP device `tap`; `mac` nil lets the guest's driver pick one.
    case net(tap: String, mac: [UInt8]?, id: String)
    /// The socket device: guest CID, and the host's Unix socket (Firecracker's model).
    case vsock(cid: UInt64, udsPath: String)
    /// The virtio console (hvc0); standard input then goes to it instead of the 16550.
    case console

    /// A MAC address written `aa:bb:cc:dd:ee:ff`: six bytes, or nil.
    public static func parseMAC(_ text: String) -> [UInt8]? { NetDevice.parseMAC(text) }

    /// Linux's name for the n-th virtio disk: vda, vdb, ..., vdz, vdaa, ...
    public static func diskName(_ index: Int) -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var n = index, name = ""
        repeat {
            name = String(letters[n % 26]) + name
            n = n / 26 - 1
        } while n >= 0
        return "vd" + name
    }
}

/// A set-up failure, naming its cause. Each layer's error is wrapped, not flattened.
public enum MachineError: Error, CustomStringConvertible {
    case kvm(KVMError)
    case loader(LoaderError)
    case boot(BootError)
    case memory(GuestMemoryError)
    case configuration(String)
    case thread(NativeThread.SpawnError)
    case cpuTemplate(CPUTemplateError)

    public var description: String {
        switch self {
        case let .kvm(error) where error.call.hasPrefix("open("):
            "cannot open \(error.call.dropFirst(5).dropLast()): \(error.errno.description); "
                + "is KVM enabled on this host, and may you read and write it (group kvm)?"
        case let .kvm(error): error.description
        case let .loader(error): error.description
        case let .boot(error): error.description
        case let .memory(error): error.description
        case let .configuration(message): message
        case let .thread(error): error.description
        case let .cpuTemplate(error): error.description
        }
    }
}

/// A labelled snapshot of every vCPU, taken when the guest wrote to the checkpoint port.
public struct Checkpoint: Sendable, Equatable {
    public var label: UInt32
    public var vcpu: Int
    /// Nanoseconds from the start of `run()`, on the clock of `VCPUStatus.firstExitNanoseconds`.
    public var atNanoseconds: UInt64
    public var states: [VCPUStatus]
}

/// A refused per-vCPU pause or resume.
public enum VCPUControlError: Error, Equatable, CustomStringConvertible {
    case noSuchVCPU(Int, count: Int)
    case state(VCPURunStateError)

    public var description: String {
        switch self {
        case let .noSuchVCPU(id, count): "no vCPU \(id): this VM has vCPUs 0 to \(count - 1)"
        case let .state(error): error.description
        }
    }
}

/// A refused `setMPState`.
public enum MPStateError: Error, Equatable, CustomStringConvertible {
    case noSuchVCPU(Int, count: Int)
    case invalidTransition(vcpu: Int, from: MPState?, to: MPState)
    case kvm(KVMError)

    public var description: String {
        switch self {
        case let .noSuchVCPU(id, count): "no vCPU \(id): this VM has vCPUs 0 to \(count - 1)"
        case let .invalidTransition(vcpu, from, to):
            "vCPU \(vcpu) cannot go from \(from.map(\.description) ?? "an unknown state") to \(to): \(MPStateRules.why(to))"
        case let .kvm(error): error.description
        }
    }
}

/// Which MP-state changes the VMM may make (Intel SDM Vol. 3, 9.4, the MP initialization
/// protocol): INIT may arrive in any state; a SIPI only matters to a vCPU waiting after INIT;
/// only a running vCPU halts; a VMM-driven start (`RUNNABLE`) is allowed from any state, since
/// the VMM sets the registers itself; any vCPU may be parked again (`UNINITIALIZED`).
public enum MPStateRules {
    public static func allows(from: MPState?, to: MPState) -> Bool {
        if from == to { return true }
        switch to {
        case .runnable, .uninitialized, .initReceived: return true
        case .sipiReceived: return from == .initReceived
        case .halted: return from == .runnable
        }
    }

    static func why(_ to: MPState) -> String {
        switch to {
        case .sipiReceived: "a SIPI is only accepted after INIT (INIT_RECEIVED)"
        case .halted: "only a RUNNABLE vCPU can halt"
        default: "not allowed"
        }
    }
}

/// A built virtual machine, ready to run once.
public final class Machine: Sendable {
    public let configuration: MachineConfiguration
    public let bootProtocol: BootProtocol
    public let protocolReason: String
    /// The Xen-style interface is on: Xen CPUID leaves, the hypercall trap and MSR.
    public let xenEnabled: Bool
    /// KVM delivers registers with each exit (`KVM_CAP_SYNC_REGS`): hypercalls read them there.
    let registersSynced: Bool
    public let bootState: BootState
    let system: KVMSystem
    let vm: VirtualMachine
    let memory: GuestMemory
    let vcpus: [VCPU]
    /// The buses and the devices the VMM talks to (`MachineBuilder.devices`).
    let devices: MachineBuilder.DeviceSet
    var ports: Bus { devices.ports }
    var mmio: Bus { devices.mmio }
    var serial: Serial16550 { devices.serial }
    /// The i8042 with its AT keyboard (Ctrl-Alt-Del reaches the guest through it).
    var keyboard: I8042 { devices.keyboard }
    /// The virtio block devices by drive id.
    var drives: [String: (device: BlockDevice, transport: MMIOTransport)] { devices.drives }
    /// The virtio console, if there is one: standard input goes to it.
    var virtioConsole: ConsoleDevice? { devices.console }
    /// Each virtio device's worker thread and eventfds, and its transport, in window order.
    var virtioWorkers: [VirtioWorker] { devices.workers }
    var transports: [MMIOTransport] { devices.transports }
    var firmwareConfig: FirmwareConfig { devices.firmwareConfig }
    /// The CPUID every vCPU was given (before each one's APIC ID), for snapshots.
    let cpuid: [CPUIDEntry]
    let logger: Logger
    let stopState = Mutex<VMOutcome?>(nil)
    let slots: [VCPUSlot]
    let checkpointLog = Mutex<[Checkpoint]>([])
    /// HVM parameters and shared pages of the Xen-style interface.
    let xenDomain = Mutex(XenDomainState())
    let runStarted = Mutex<UInt64>(0)
    let lifecycle = Mutex(VMLifecycle())
    /// `run()` has been called (it runs once).
    let runEntered = Atomic<Bool>(false)
    /// Each vCPU's MP state when the machine was built, before any guest code ran.
    public let initialMPStates: [MPState?]

    /// Builds the VM from a configuration, phase by phase (`MachineBuilder`): the checks and the
    /// kernel, guest memory and boot structures first (input errors come before /dev/kvm is
    /// opened), then the VM and its irqchip, the CPUID every vCPU gets and the MP table that
    /// reports it, the memory slots, the devices, the vCPUs. No guest code runs.
    public init(_ configuration: MachineConfiguration, kvmPath: String = "/dev/kvm",
                logger: Logger = Logger(label: "swiftlet")) throws(MachineError) {
        self.configuration = configuration
        self.logger = logger
        try MachineBuilder.checkConfiguration(configuration)
        let kernel = try MachineBuilder.kernel(configuration)
        bootProtocol = kernel.protocol
        protocolReason = kernel.reason
        xenEnabled = configuration.xen.enabled(for: kernel.image)

        memory = try MachineBuilder.guestMemory(size: configuration.memorySize)
        let virtio = try MachineBuilder.virtioDevices(configuration)
        let (boot, entry) = try MachineBuilder.bootStructures(configuration, kernel: kernel, xen: xenEnabled,
                                                              virtio: virtio.windows, in: memory)

        let created = try MachineBuilder.virtualMachine(configuration, kvmPath: kvmPath, xen: xenEnabled)
        system = created.system
        vm = created.vm
        let cpuid = try MachineBuilder.cpuid(configuration, system: system, xen: xenEnabled)
        self.cpuid = cpuid
        var bootState = boot
        if configuration.mpTable {
            try MachineBuilder.writeMPTable(configuration, cpuid: cpuid, in: memory)
            bootState.placements["mp_table"] = MPTable.floatingPointerAddress
        }
        self.bootState = bootState
        try MachineBuilder.registerMemory(memory, with: vm, trackDirtyPages: configuration.trackDirtyPages)

        let devices = try MachineBuilder.devices(configuration, vm: vm, commandLine: kernel.guestCommandLine(configuration),
                                                 virtio: virtio, memory: memory, logger: logger)
        self.devices = devices

        vcpus = try MachineBuilder.vcpus(configuration, vm: vm, cpuid: cpuid, boot: bootState)
        // Hypercalls need the caller's registers; with sync regs they come with the exit.
        registersSynced = xenEnabled && system.check(.syncRegs) & 0x3 == 0x3
        if registersSynced { for vcpu in vcpus { vcpu.syncRegistersOnExit(true) } }
        slots = vcpus.map(VCPUSlot.init)
        slots[configuration.bootCPU].xen.withLock { $0.bringUp = .boot; $0.initialised = true }
        initialMPStates = vcpus.map { try? $0.mpState() }
        if configuration.xenConsoleInput && !xenEnabled {
            throw .configuration("--console xen needs the Xen-style interface: add --xen on")
        }
        if xenEnabled { setUpXenConsole() }
        logger.debug("machine built", metadata: [
            "protocol": "\(bootProtocol.rawValue)", "entry": "0x\(String(entry, radix: 16))",
            "memory": "\(configuration.memorySize)", "cpus": "\(configuration.cpus)"])
    }

    /// Builds a machine from a snapshot (`swiftlet run --restore`, `PUT /snapshot/load`): guest
    /// memory mapped copy-on-write from `memoryPath` (pages load when first touched), the devices
    /// the snapshot names reopened, every vCPU's and the VM's KVM state applied in the order KVM
    /// requires (CPUID first; MP state, registers, XSAVE, XCRs, debug registers, LAPIC, MSRs; pending
    /// events last; then the irqchips, the PIT and the clock), then each device's state. No guest
    /// code runs until it is launched (`startPaused()` first to keep it paused).
    /// `base` gives what a snapshot does not hold (console, syscall filter, API).
    public init(restoringFrom statePath: String, memoryPath: String, base: MachineConfiguration, kvmPath: String = "/dev/kvm",
                logger: Logger = Logger(label: "swiftlet")) throws(MachineError) {
        func refuse(_ problem: String) -> MachineError { .configuration("\(statePath): \(problem)") }
        let saved: MachineState
        do { saved = try SnapshotFile.read(path: statePath) } catch { throw .configuration(error.description) }
        guard !saved.configuration.xen else { throw refuse("a snapshot with the Xen-style interface cannot be restored yet") }
        var configuration = base
        configuration.kernel = KernelFile(path: statePath, bytes: [])
        configuration.commandLine = Array(saved.configuration.commandLine.utf8)
        configuration.memorySize = saved.configuration.memorySize
        configuration.cpus = saved.configuration.cpus
        configuration.bootCPU = saved.configuration.bootCPU
        configuration.trackDirtyPages = saved.configuration.trackDirtyPages || base.trackDirtyPages
        configuration.xen = .off
        var specs: [VirtioDeviceSpec] = []
        for spec in saved.configuration.virtio {
            guard let device = VirtioDeviceSpec(saved: spec) else { throw refuse("a virtio device of kind \"\(spec.kind)\" this Swiftlet does not know") }
            specs.append(device)
        }
        configuration.virtio = specs
        self.configuration = configuration
        self.logger = logger
        try MachineBuilder.checkConfiguration(configuration)
        bootProtocol = BootProtocol(rawValue: saved.configuration.bootProtocol) ?? .pvh
        protocolReason = "restored from \(statePath)"
        xenEnabled = false

        // Guest memory: the layout must be this Swiftlet's for that size, the file big enough.
        let layout = Layout.ramRegions(size: configuration.memorySize)
        guard layout.map({ [$0.start, $0.size] }) == saved.memory.regions.map({ [$0.guestAddress, $0.size] }),
              saved.memory.regions.allSatisfy({ $0.fileOffset + $0.size <= saved.memory.fileSize }) else {
            throw refuse("its memory layout is not the one this Swiftlet gives \(configuration.memorySize >> 20) MiB")
        }
        let fd = open(memoryPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .configuration("\(memoryPath): cannot open the memory file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, UInt64(info.st_size) == saved.memory.fileSize else {
            throw .configuration("\(memoryPath): the memory file has \(info.st_size) bytes; the snapshot \(statePath) needs \(saved.memory.fileSize)")
        }
        var offset: UInt64 = 0
        for region in saved.memory.regions {   // mapped in order, each at its offset
            guard region.fileOffset == offset else { throw refuse("its memory regions are not in file order") }
            offset += region.size
        }
        do { memory = try GuestMemory(regions: layout, mappingFile: fd) } catch { throw .memory(error) }

        let virtio: MachineBuilder.VirtioSet
        do { virtio = try MachineBuilder.virtioDevices(configuration) } catch {
            throw refuse("a device it needs cannot be opened: \(error.description)")
        }
        let created = try MachineBuilder.virtualMachine(configuration, kvmPath: kvmPath, xen: false)
        system = created.system
        vm = created.vm
        let cpuid = saved.host.cpuid.map {
            CPUIDEntry(function: $0.function, index: $0.index, flags: $0.flags, eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx)
        }
        self.cpuid = cpuid
        let hostVendor: String
        do { hostVendor = Self.vendor(try system.supportedCPUID()) } catch { throw .kvm(error) }
        guard hostVendor == saved.host.cpuVendor else {
            throw refuse("it was made on a \(saved.host.cpuVendor) CPU; this host's is \(hostVendor)")
        }
        bootState = BootState()
        try MachineBuilder.registerMemory(memory, with: vm, trackDirtyPages: configuration.trackDirtyPages)
        let devices = try MachineBuilder.devices(configuration, vm: vm, commandLine: configuration.commandLine,
                                                 virtio: virtio, memory: memory, logger: logger)
        self.devices = devices

        guard saved.vcpus.map(\.id) == Array(0..<configuration.cpus) else { throw refuse("its vCPU list does not match its \(configuration.cpus) vCPUs") }
        guard saved.devices.virtio.count == devices.transports.count, saved.vm.irqchips.count == 3 else {
            throw refuse("its device state does not match its configuration")
        }
        var vcpus: [VCPU] = []
        do {
            for state in saved.vcpus {
                let vcpu = try vm.createVCPU(id: state.id)
                try vcpu.setCPUID(CPUIDTemplate.entries(from: cpuid, apicID: UInt32(state.id), count: configuration.cpus))
                try vcpu.setMPState(MPState(rawValue: state.mpState) ?? .runnable)
                for part in KVMState.perVCPU where part != .events {
                    guard let bytes = state.kvm[part.rawValue] else { throw refuse("vCPU \(state.id) has no \(part.rawValue)") }
                    try vcpu.restore(part, bytes.bytes)
                }
                try vcpu.setMSRs(state.msrs.map { ($0.index, $0.value) })
                guard let events = state.kvm[KVMState.events.rawValue] else { throw refuse("vCPU \(state.id) has no events") }
                try vcpu.restore(.events, events.bytes)
                vcpus.append(vcpu)
            }
            for (chip, bytes) in saved.vm.irqchips.enumerated() {
                var chipBytes = bytes.bytes
                if chipBytes.count >= 4 { chipBytes[0] = UInt8(chip); chipBytes[1] = 0; chipBytes[2] = 0; chipBytes[3] = 0 }
                try vm.restore(.irqchip, chipBytes)
            }
            try vm.restore(.pit2, saved.vm.pit.bytes)
            try vm.restore(.clock, saved.vm.clock.bytes)
        } catch let error as MachineError {
            throw error
        } catch let error as KVMError {
            throw .kvm(error)
        } catch {
            throw refuse("\(error)")
        }
        self.vcpus = vcpus
        devices.serial.restore(registers: saved.devices.serial.registers, receiveFIFO: saved.devices.serial.receiveFIFO.bytes)
        devices.firmwareConfig.restore(selector: saved.devices.firmwareConfig.selector, offset: saved.devices.firmwareConfig.offset)
        for (transport, t) in zip(devices.transports, saved.devices.virtio) {
            let queues = t.queues.map { q -> Virtqueue in
                var queue = Virtqueue(size: q.size)
                queue.descriptorTable = q.descriptorTable; queue.availableRing = q.availableRing; queue.usedRing = q.usedRing
                queue.ready = q.ready
                queue.indirect = t.driverFeatures & VirtioFeature.indirectDescriptors != 0
                queue.eventIndex = t.driverFeatures & VirtioFeature.eventIndex != 0
                queue.resume(nextAvailable: q.nextAvailable, nextUsed: q.nextUsed, signalledUsed: q.signalledUsed)
                return queue
            }
            do {
                try transport.restore(.init(status: t.status, deviceFeaturesSel: t.deviceFeaturesSel, driverFeaturesSel: t.driverFeaturesSel,
                                            driverFeatures: t.driverFeatures, queueSel: t.queueSel, interruptStatus: t.interruptStatus,
                                            configGeneration: t.configGeneration, activated: t.activated, queues: queues))
            } catch { throw refuse("a virtio device's state does not fit it: \(error)") }
        }
        // Held until the VM runs: then each queue is looked at once, for what the guest made
        // available before the snapshot (its notification went to the old process).
        for transport in devices.transports { transport.quiesce() }
        registersSynced = false
        slots = vcpus.map(VCPUSlot.init)
        for (slot, state) in zip(slots, saved.vcpus) where state.runState == "Parked" { slot.parked.store(true, ordering: .releasing) }
        initialMPStates = vcpus.map { try? $0.mpState() }
        logger.debug("machine restored", metadata: ["snapshot": "\(statePath)", "memory": "\(memoryPath)"])
    }

    /// LVT LINT0 = ExtINT, LINT1 = NMI, as a PC's BIOS leaves them (Intel MP spec 3.6.2.3).
    static func configureLocalAPIC(_ vcpu: VCPU) throws(KVMError) {
        var page = try vcpu.localAPIC()
        func setDeliveryMode(_ offset: Int, _ mode: UInt32) {
            var value = UInt32(page[offset]) | UInt32(page[offset + 1]) << 8 | UInt32(page[offset + 2]) << 16 | UInt32(page[offset + 3]) << 24
            value = (value & ~0x700) | (mode << 8)
            for i in 0..<4 { page[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        }
        setDeliveryMode(0x350, 7)   // LINT0: ExtINT
        setDeliveryMode(0x360, 4)   // LINT1: NMI
        try vcpu.setLocalAPIC(page)
    }

    // MARK: Running

    /// Not started → Running, before `run()` enters the guest: from here on the VM accepts pause,
    /// resume and vCPU events (queued for the vCPU threads `run()` starts). For a caller that runs
    /// `run()` on another thread and must answer for the VM's state at once (the API's
    /// InstanceStart). `run()` calls it itself if nobody has.
    /// Not started → Paused: the vCPU threads will hold before their first `KVM_RUN` (a restore
    /// asked to stay paused); `resume()` lets them go.
    public func startPaused() throws(VMStateError) {
        try lifecycle.withLock { lifecycle throws(VMStateError) in
            try lifecycle.apply(.start)
            try lifecycle.apply(.pause)
            for slot in slots { slot.activatePaused() }
        }
        for transport in transports { transport.quiesce() }
    }

    public func start() throws(VMStateError) {
        try lifecycle.withLock { lifecycle throws(VMStateError) in
            try lifecycle.apply(.start)
            for slot in slots { slot.activate() }
        }
    }

    /// Runs the VM until the guest stops it or an error occurs, then stops every vCPU thread and
    /// joins it. Returns how the VM ended. The calling thread serves the console and the watchdog
    /// on a main loop of its own meanwhile. A second call is refused (the lifecycle has no way back).
    public func run() -> VMOutcome {
        let loop: MainLoop
        do { loop = try MainLoop() } catch { return .vmmError(vcpu: nil, message: error.description) }
        let result = Mutex<VMOutcome?>(nil)
        launch(on: loop) { outcome in
            result.withLock { $0 = outcome }
            loop.stop()
        }
        loop.run()
        return result.withLock { $0 } ?? .vmmError(vcpu: nil, message: "the main loop ended before the VM")
    }

    /// Starts the VM's vCPU threads and returns at once; the console input and the deadlock
    /// watchdog are served by `loop` (which the caller runs, and which may serve the API too).
    /// When the VM has ended and every vCPU thread has been joined, `onExit` is called on the
    /// loop's thread, once. A second launch (or `run`) is refused through `onExit`.
    public func launch(on loop: MainLoop, onExit: @escaping @Sendable (VMOutcome) -> Void) {
        guard !runEntered.exchange(true, ordering: .acquiringAndReleasing) else {
            loop.execute { onExit(.vmmError(vcpu: nil, message: "cannot run this machine: it has already run")) }
            return
        }
        if state == .notStarted {
            do throws(VMStateError) { try start() } catch {
                loop.execute { onExit(.vmmError(vcpu: nil, message: "cannot run this machine: \(error)")) }
                return
            }
        }
        if let early = stopState.withLock({ $0 }) {   // stopped before it ran
            lifecycle.withLock { try? $0.apply(.stop) }
            for slot in slots { slot.detach { serve($0, on: slot) } }
            loop.execute { onExit(early) }
            return
        }
        KickSignal.ensureInstalled()
        runStarted.withLock { $0 = monotonicNanoseconds() }
        let run = RunResources(vcpus: slots.count, workers: virtioWorkers)
        for worker in virtioWorkers {   // before the vCPUs: a notification finds its worker running
            do { try worker.start() } catch { stop(.vmmError(vcpu: nil, message: error.description)) }
        }
        if state == .running { for transport in transports { transport.resumeProcessing() } }   // a restored VM's
        // The last vCPU thread to end hands the teardown to the loop, which joins them all.
        let finish: @Sendable () -> Void = { [self] in
            guard run.running.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
            loop.execute { [self] in
                for thread in run.threads.withLock({ $0 }) { thread.join() }
                run.end(on: loop)
                lifecycle.withLock { try? $0.apply(.stop) }
                onExit(stopState.withLock { $0 } ?? .vmmError(vcpu: nil, message: "all vCPU threads ended without a reason"))
            }
        }
        for slot in slots {
            do {
                let thread = try NativeThread(name: "vcpu\(slot.vcpu.id)") { [self] in
                    KickSignal.unblockOnCurrentThread()
                    slot.attach(NativeThread.current())
                    runLoop(slot)
                    slot.detach { serve($0, on: slot) }
                    finish()
                }
                run.threads.withLock { $0.append(thread) }
            } catch {
                stop(.vmmError(vcpu: slot.vcpu.id, message: error.description))
                slot.detach { serve($0, on: slot) }
                finish()
            }
        }
        if configuration.forwardInput {
            let serial = serial
            let receive: @Sendable ([UInt8]) -> Int
            if configuration.xenConsoleInput && xenEnabled {
                receive = { [self] in receiveXenConsoleInput($0) }
            } else if let console = virtioConsole { receive = { console.receive($0) } } else { receive = { serial.receive($0) } }
            do { run.input = try ConsoleInput(into: receive, on: loop) } catch {
                stop(.vmmError(vcpu: nil, message: error.description))
            }
        }
        do {
            run.watchdog = try loop.schedule(after: Self.deadlockQuietPeriod, every: Self.deadlockQuietPeriod) { [self] in
                checkForDeadlock(run)
            }
        } catch {
            stop(.vmmError(vcpu: nil, message: error.description))
        }
        if configuration.seccomp && SyscallFilter.sanitizedBuild {
            logger.notice("seccomp filter not installed: this is a sanitizer build")
        } else if configuration.seccomp {
            do {
                let vsock = configuration.virtio.contains { if case .vsock = $0 { true } else { false } }
                try SyscallFilter.install(serveAPI: configuration.serveAPI, unixConnect: vsock)
                logger.debug("seccomp filter installed", metadata: ["allowed": "\(SyscallFilter.allowed.count) calls"])
            } catch {
                stop(.vmmError(vcpu: nil, message: error.description))
            }
        }
        if configuration.probeForbiddenSyscall {
            let allowed = SyscallFilter.probeForbiddenCall()
            logger.warning("forbidden-call probe", metadata: ["socket(2)": "\(allowed ? "allowed" : "refused")"])
        }
    }

    /// What one run holds on the main loop, released when the run ends.
    final class RunResources: @unchecked Sendable {   // the vars: set before the loop sees them, then loop-only
        let threads = Mutex<[NativeThread]>([])
        /// vCPU threads still running.
        let running: Atomic<Int>
        var input: ConsoleInput?
        var watchdog: MainLoop.Timer?
        var lastExits = -1
        let workers: [VirtioWorker]

        init(vcpus: Int, workers: [VirtioWorker]) {
            running = Atomic(vcpus)
            self.workers = workers
        }

        func end(on loop: MainLoop) {
            for worker in workers { worker.stop() }
            if let watchdog { loop.cancel(watchdog) }
            input?.stop()
            input = nil
        }
    }

    /// The watchdog's tick, on the main loop: ends the VM when no vCPU can ever run again. Cheap
    /// while the guest works: it looks closer (a status snapshot, which kicks every vCPU) only
    /// after a whole period without a single exit.
    private func checkForDeadlock(_ run: RunResources) {
        if isStopping { return }
        let exits = slots.reduce(0) { $0 + $1.counters.withLock { $0.total } }
        defer { run.lastExits = exits }
        guard exits == run.lastExits else { return }
        // A paused vCPU makes no exits by design; the VMM, not the guest, holds it.
        guard !slots.contains(where: { $0.runState == .paused }) else { return }
        let states = status()
        guard Self.canNeverRun(states, down: slots.map { $0.xen.withLock { $0.down } }) else { return }
        let summary = states.map { "vCPU \($0.id) \($0.mpState?.description ?? "?")" }.joined(separator: ", ")
        stop(.deadlocked(states: summary))
    }

    /// The watchdog's period, in nanoseconds.
    static let deadlockQuietPeriod: UInt64 = 200_000_000
    static let interruptFlag: UInt64 = 1 << 9

    /// True if no vCPU can run again: each is HALTED with RFLAGS.IF clear (no maskable interrupt
    /// ends that halt, and no running vCPU is left to send an NMI or INIT), waiting for INIT
    /// (UNINITIALIZED), or taken down by VCPUOP_down; and at least one of them is halted.
    public static func canNeverRun(_ states: [VCPUStatus], down: [Bool]) -> Bool {
        var halted = false
        for (index, state) in states.enumerated() {
            if down.indices.contains(index) && down[index] { continue }
            switch state.mpState {
            case .halted?:
                guard let flags = state.rflags, flags & interruptFlag == 0 else { return false }
                halted = true
            case .uninitialized?:
                continue
            default:
                return false
            }
        }
        return halted
    }

    /// Records the first stop reason and knocks every vCPU out of `KVM_RUN`. Safe from any thread.
    public func stop(_ outcome: VMOutcome) {
        let first = stopState.withLock { state -> Bool in
            guard state == nil else { return false }
            state = outcome
            return true
        }
        guard first else { return }
        for slot in slots { slot.kick() }
    }

    var isStopping: Bool { stopState.withLock { $0 != nil } }

    /// Nanoseconds since `run()` started.
    func runNanoseconds() -> UInt64 { monotonicNanoseconds() - runStarted.withLock { $0 } }

    /// `KVM_MSR_EXIT_REASON_INVAL` and `_UNKNOWN`.
    static let msrExitInvalid: UInt64 = 1 << 0, msrExitUnknown: UInt64 = 1 << 1

    /// The vCPU's loop: enter the guest, serve the exit, serve events between runs; hold while
    /// paused or parked (`VCPUOP_down`), waiting on the slot's semaphore only.
    private func runLoop(_ slot: VCPUSlot) {
        let vcpu = slot.vcpu
        let start = runStarted.withLock { $0 }
        var started = slot.xen.withLock { $0.bringUp != nil }
        while !isStopping {
            if slot.paused.load(ordering: .acquiring) || slot.parked.load(ordering: .acquiring) {
                slot.wakeup.wait()
                serveEvents(slot)
                continue
            }
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                stop(.vmmError(vcpu: vcpu.id, message: error.description))
                return
            }
            if case .interrupted = exit {
                // A kick. Clear immediate_exit first, then serve the queue: an event queued after
                // the clear sets the flag again, so the next KVM_RUN returns at once and serves
                // it. (Serving first would let the clear swallow that event's kick, leaving a
                // parked AP blocked in KVM_RUN with its request unserved.) The loop condition is
                // checked after the clear, so no stop is lost either. KVM completes a pending
                // port or MMIO access before it honours immediate_exit, so a vCPU that pauses
                // here has consistent registers.
                vcpu.setImmediateExit(false)
                if let outcome = serveEvents(slot) {
                    stop(outcome)
                    return
                }
                continue
            }
            let now = monotonicNanoseconds() - start
            slot.record(exit, at: now)
            if !started {
                // An AP's first exit: nothing but INIT-SIPI (or VCPUOP_up, already noted) starts one.
                slot.xen.withLock { state in
                    if state.bringUp == nil { state.transition(toUp: true, at: now); state.bringUp = .initSIPI }
                }
                started = true
            }
            if let outcome = handle(exit, on: slot) {
                stop(outcome)
                return
            }
        }
    }

    /// Serves the slot's queued events on its own thread, at the top of its run loop. A pause
    /// takes effect once the vCPU has been through `KVM_RUN` with `immediate_exit` set (see
    /// `settle`). Returns an outcome if settling ended the VM.
    @discardableResult
    private func serveEvents(_ slot: VCPUSlot) -> VMOutcome? {
        for event in slot.takeEvents(controlToo: true) { serve(event, on: slot) }
        let pauseReply = slot.control.withLock { c -> Reply<Result<Void, VCPURunStateError>>? in
            defer { c.pauseReply = nil }
            return c.pauseReply
        }
        guard let pauseReply else { return nil }
        let outcome = settle(slot)
        if outcome == nil { slot.control.withLock { slot.setRunState(&$0, .paused) } }
        pauseReply.send(outcome == nil ? .success(()) : .failure(VCPURunStateError(vcpu: slot.vcpu.id, action: .pause, state: .stopped)))
        return outcome
    }

    /// Re-enters `KVM_RUN` with `immediate_exit` set until it returns without running the guest:
    /// KVM first completes a port or MMIO access still in flight (a parked vCPU's hypercall, say;
    /// a string I/O may need more than one round), so the registers are consistent afterwards.
    private func settle(_ slot: VCPUSlot) -> VMOutcome? {
        let vcpu = slot.vcpu
        vcpu.setImmediateExit(true)
        defer { vcpu.setImmediateExit(false) }
        while true {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch { return .vmmError(vcpu: vcpu.id, message: error.description) }
            if case .interrupted = exit { return nil }
            slot.record(exit, at: runNanoseconds())
            if let outcome = handle(exit, on: slot) { return outcome }
        }
    }

    /// One event, on the thread that owns the vCPU (its own, or the caller's when none runs it).
    private func serve(_ event: VCPUEvent, on slot: VCPUSlot) {
        let vcpu = slot.vcpu
        switch event {
        case let .readStatus(reply):
            let regs = try? vcpu.registers()
            reply.send(VCPURegisterSnapshot(mpState: (try? vcpu.mpState()) ?? nil, rip: regs?.rip, rflags: regs?.rflags))
        case let .setMPState(state, reply):
            do throws(KVMError) {
                let current = try vcpu.mpState()
                if MPStateRules.allows(from: current, to: state) {
                    try vcpu.setMPState(state)
                    reply.send(.success(()))
                } else {
                    reply.send(.failure(.invalidTransition(vcpu: vcpu.id, from: current, to: state)))
                }
            } catch {
                reply.send(.failure(.kvm(error)))
            }
        case let .start(state):
            do throws(KVMError) {
                try vcpu.setRegisters(state.registers)
                var sregs = try vcpu.specialRegisters()
                state.apply(to: &sregs)
                try vcpu.setSpecialRegisters(sregs)
                try vcpu.setMPState(.runnable)
            } catch {
                logger.error("VCPUOP_up failed", metadata: ["vcpu": "\(vcpu.id)", "error": "\(error)"])
            }
        case let .pause(reply):
            slot.control.withLock { c in
                do throws(VCPURunStateError) {
                    if c.pauseReply != nil { throw VCPURunStateError(vcpu: vcpu.id, action: .pause, state: .paused) }
                    _ = try VCPURunRules.next(after: .pause, from: c.runState, vcpu: vcpu.id)
                    c.pauseReply = reply   // answered by serveEvents once held
                } catch {
                    reply.send(.failure(error))
                }
            }
        case let .resume(reply):
            let result = slot.control.withLock { c -> Result<Void, VCPURunStateError> in
                do throws(VCPURunStateError) {
                    slot.setRunState(&c, try VCPURunRules.next(after: .resume, from: c.runState, vcpu: vcpu.id))
                    return .success(())
                } catch { return .failure(error) }
            }
            reply.send(result)
        }
    }

    /// Hands `event` to the vCPU's thread, or serves it here when no thread runs the vCPU.
    func deliver(_ event: VCPUEvent, to slot: VCPUSlot) {
        if !slot.post(event) { serve(event, on: slot) }
    }

    /// A device's request: checkpoints are served here, everything else stops the VM.
    private func serve(_ request: GuestRequest, from slot: VCPUSlot) -> VMOutcome? {
        if case let .checkpoint(label) = request {
            let at = monotonicNanoseconds() - runStarted.withLock { $0 }
            let states = status(servingOwnQueue: slot)
            checkpointLog.withLock { $0.append(Checkpoint(label: label, vcpu: slot.vcpu.id, atNanoseconds: at, states: states)) }
            return nil
        }
        return .guestStop(request, vcpu: slot.vcpu.id)
    }

    /// Serves one exit (`ExitPolicy` decides, this carries it out); returns an outcome when the
    /// VM must stop.
    private func handle(_ exit: VCPUExit, on slot: VCPUSlot) -> VMOutcome? {
        let vcpu = slot.vcpu
        switch ExitPolicy.action(for: exit, xen: xenEnabled) {
        case .hypercall:
            return serveHypercall(on: slot)
        case let .installHypercallPage(value):
            installHypercallPage(value, on: slot)
        case let .portIn(port, size, count):
            for index in 0..<count {
                vcpu.setIOValue(UInt32(truncatingIfNeeded: ports.read(UInt64(port), size: size)), at: index)
            }
        case let .portOut(port, size, count):
            for index in 0..<count {
                if let request = ports.write(UInt64(port), size: size, value: UInt64(vcpu.ioValue(at: index))),
                   let outcome = serve(request, from: slot) {
                    return outcome
                }
            }
        case let .mmioRead(address, size):
            vcpu.completeMMIORead(mmio.read(address, size: size))
        case let .mmioWrite(address, size, value):
            if let request = mmio.write(address, size: size, value: value), let outcome = serve(request, from: slot) {
                return outcome
            }
        case .refuseMSR:
            vcpu.completeMSR(fault: true)
        case .resume:
            break
        case let .stop(reason):
            switch reason {
            case let .guest(request): return .guestStop(request, vcpu: vcpu.id)
            case .tripleFault: return .tripleFault(vcpu: vcpu.id, registers: registerDump(vcpu))
            case let .kvmFailure(what): return .kvmFailure(vcpu: vcpu.id, what: what, registers: registerDump(vcpu))
            case let .vmmError(message): return .vmmError(vcpu: vcpu.id, message: message)
            }
        }
        return nil
    }

    // MARK: Inspection and control (for signals, reports, and the future API)

    /// Every vCPU's MP state, RIP and exit counts, read on each vCPU's own thread.
    public func status() -> [VCPUStatus] { status(servingOwnQueue: nil) }

    /// `own` is the calling vCPU's slot when a vCPU thread asks: it reads itself directly and
    /// keeps serving its own (non-control) events while it waits, so two vCPUs asking at once
    /// cannot deadlock.
    func status(servingOwnQueue own: VCPUSlot?) -> [VCPUStatus] {
        let replies = slots.map { slot -> Reply<VCPURegisterSnapshot> in
            let reply = Reply<VCPURegisterSnapshot>()
            if slot === own { serve(.readStatus(reply), on: slot) } else { deliver(.readStatus(reply), to: slot) }
            return reply
        }
        let serveOwn = { [self] in
            if let own { for event in own.takeEvents(controlToo: false) { serve(event, on: own) } }
        }
        return slots.enumerated().map { index, slot in
            let registers = replies[index].wait(meanwhile: serveOwn)
            let counters = slot.counters.withLock { $0 }
            return VCPUStatus(id: slot.vcpu.id, mpState: registers.mpState, rip: registers.rip, rflags: registers.rflags,
                              lastExit: counters.lastExit, exitCounts: counters.exitCounts,
                              firstExitNanoseconds: counters.firstExit, xen: slot.xen.withLock { $0 },
                              runState: slot.runState)
        }
    }

    /// `KVM_SET_MP_STATE` on one vCPU, for a VMM-driven start; refuses transitions the MP
    /// initialization protocol does not have (`MPStateRules`).
    public func setMPState(_ state: MPState, vcpu id: Int) throws(MPStateError) {
        guard slots.indices.contains(id) else { throw .noSuchVCPU(id, count: slots.count) }
        let reply = Reply<Result<Void, MPStateError>>()
        deliver(.setMPState(state, reply), to: slots[id])
        try reply.wait().get()
    }

    // MARK: Pause and resume

    /// Pauses every vCPU and returns once each is held out of the guest with its in-flight
    /// access completed. Refused unless the VM is running.
    public func pause() throws(VMStateError) {
        try lifecycle.withLock { lifecycle throws(VMStateError) in try lifecycle.apply(.pause) }
        for slot in slots where slot.runState == .running {
            _ = pauseVCPU(slot)
        }
        // Then the devices: nothing writes guest memory while the VM is paused (a snapshot's
        // memory and queue state agree).
        for transport in transports { transport.quiesce() }
    }

    /// Resumes every vCPU (those paused one by one too). Refused unless the VM is paused.
    public func resume() throws(VMStateError) {
        try lifecycle.withLock { lifecycle throws(VMStateError) in try lifecycle.apply(.resume) }
        for transport in transports { transport.resumeProcessing() }
        for slot in slots where slot.runState == .paused { _ = resumeVCPU(slot) }
    }

    /// Pauses one vCPU while the others run.
    public func pause(vcpu id: Int) throws(VCPUControlError) {
        let slot = try controllableSlot(id)
        try pauseVCPU(slot).mapError(VCPUControlError.state).get()
    }

    /// Resumes one paused vCPU.
    public func resume(vcpu id: Int) throws(VCPUControlError) {
        let slot = try controllableSlot(id)
        try resumeVCPU(slot).mapError(VCPUControlError.state).get()
        // A VM paused as a whole counts as running again once every vCPU runs.
        lifecycle.withLock { lifecycle in
            if lifecycle.state == .paused, !slots.contains(where: { $0.runState == .paused }) { try? lifecycle.apply(.resume) }
        }
    }

    private func controllableSlot(_ id: Int) throws(VCPUControlError) -> VCPUSlot {
        guard slots.indices.contains(id) else { throw .noSuchVCPU(id, count: slots.count) }
        return slots[id]
    }

    private func pauseVCPU(_ slot: VCPUSlot) -> Result<Void, VCPURunStateError> {
        let state = slot.runState
        guard state == .running else { return .failure(VCPURunStateError(vcpu: slot.vcpu.id, action: .pause, state: state)) }
        let reply = Reply<Result<Void, VCPURunStateError>>()
        deliver(.pause(reply), to: slot)
        return reply.wait()
    }

    private func resumeVCPU(_ slot: VCPUSlot) -> Result<Void, VCPURunStateError> {
        let reply = Reply<Result<Void, VCPURunStateError>>()
        deliver(.resume(reply), to: slot)
        return reply.wait()
    }

    /// Puts another image behind a drive while the VM runs (Firecracker's `PATCH /drives`), and
    /// tells the guest its configuration (the capacity) changed.
    public func replaceDrive(id: String, path: String) throws(MachineError) {
        guard let drive = drives[id] else {
            throw .configuration("no drive \"\(id)\": this VM has \(drives.keys.sorted().joined(separator: ", ").isEmpty ? "none" : drives.keys.sorted().joined(separator: ", "))")
        }
        do { try drive.device.replace(path: path) } catch { throw .configuration(error.description) }
        drive.transport.configurationChanged()
    }

    /// Presses and releases Ctrl-Alt-Del on the i8042's AT keyboard (what Firecracker's
    /// `SendCtrlAltDel` does): a Linux guest with the i8042 driver reboots, which ends the VM.
    public func sendCtrlAltDel() { keyboard.sendCtrlAltDel() }

    /// Each vCPU's run state, without asking the vCPUs (cheap; never blocks).
    public var vcpuRunStates: [VCPURunState] { slots.map(\.runState) }

    /// Where the VM is in its lifecycle (Not started, Running, Paused, Stopped).
    public var state: VMState { lifecycle.withLock { $0.state } }

    /// CLOCK_MONOTONIC nanoseconds when `run()` started: the zero of every run-relative time.
    public var runStartMonotonicNanoseconds: UInt64 { runStarted.withLock { $0 } }

    /// Guest RAM the host has backed so far.
    public var guestResidentBytes: UInt64 { memory.residentBytes }

    /// The checkpoints the guest asked for, in order.
    public var checkpoints: [Checkpoint] { checkpointLog.withLock { $0 } }

    /// A table of every vCPU for humans (SIGUSR1).
    public func statusTable() -> String {
        var lines = ["vCPU  MP state        up by       last exit       exits    hcalls   first exit    rip"]
        for s in status() {
            let first = s.firstExitNanoseconds.map { "\($0 / 1000) us" } ?? "-"
            let rip = s.rip.map { "0x" + String($0, radix: 16) } ?? "-"
            let upBy = (s.xen.bringUp?.rawValue ?? "-") + (s.xen.down ? " (down)" : "")
            lines.append(pad("\(s.id)\(s.id == configuration.bootCPU ? "*" : "")", 6) + pad(s.mpState?.description ?? "?", 16)
                         + pad(upBy, 12) + pad(s.lastExit ?? "-", 16) + pad("\(s.totalExits)", 9)
                         + pad("\(s.xen.hypercalls.values.reduce(0, +))", 9) + pad(first, 14) + rip)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

import Devices
import GuestMemory
import KVM
import Loader
import Logging
import Synchronization
import X86
#if canImport(Glibc)
import Glibc
#endif

/// What to run.
public struct MachineConfiguration: Sendable {
    /// The least guest RAM Swiftlet accepts.
    public static let minimumMemory = Layout.minimumMemory

    public var kernel: KernelFile
    public var initrd: KernelFile?
    public var commandLine: [UInt8]
    public var memorySize: UInt64
    public var cpus: Int
    public var bootCPU: Int
    /// nil: pick automatically (PVH > xen64 > linux).
    public var bootProtocol: BootProtocol?
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

/// A set-up failure, naming its cause. Each layer's error is wrapped, not flattened.
public enum MachineError: Error, CustomStringConvertible {
    case kvm(KVMError)
    case loader(LoaderError)
    case boot(BootError)
    case memory(GuestMemoryError)
    case configuration(String)
    case thread(NativeThread.SpawnError)

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
        }
    }
}

/// Per-vCPU counters, written by the vCPU's own thread and read by anyone.
public struct VCPUStatistics: Sendable, Equatable {
    public var exitCounts: [String: Int] = [:]
    public var lastExit: String?
}

final class StatisticsCell: Sendable {
    let value = Mutex(VCPUStatistics())
}

/// A built virtual machine, ready to run once.
public final class Machine: Sendable {
    public let configuration: MachineConfiguration
    public let bootProtocol: BootProtocol
    public let protocolReason: String
    public let bootState: BootState
    let system: KVMSystem
    let vm: VirtualMachine
    let memory: GuestMemory
    let vcpus: [VCPU]
    let ports: Bus
    let mmio: Bus
    let serial: Serial16550
    let logger: Logger
    let stopState = Mutex<VMOutcome?>(nil)
    let statistics: [StatisticsCell]

    /// Builds the VM: memory, irqchip, kernel, boot structures, devices, vCPUs. No guest code runs.
    public init(_ configuration: MachineConfiguration, kvmPath: String = "/dev/kvm",
                logger: Logger = Logger(label: "swiftlet")) throws(MachineError) {
        self.configuration = configuration
        self.logger = logger
        let image: KernelImage
        let selection: (BootProtocol, reason: String)
        do {
            image = try KernelImage.parse(configuration.kernel)
            selection = try image.selectProtocol(configuration.bootProtocol)
        } catch { throw .loader(error) }
        bootProtocol = selection.0
        protocolReason = selection.reason

        do {
            memory = try GuestMemory(regions: Layout.ramRegions(size: configuration.memorySize))
        } catch { throw .memory(error) }
        // Kernel, initrd, boot structures.
        let loaded: LoadedKernel
        do {
            loaded = try image.load(into: memory, protocol: bootProtocol, floor: Layout.kernelFloor,
                                    path: configuration.kernel.path)
        } catch { throw .loader(error) }
        var boot = BootConfiguration(protocol: bootProtocol, kernel: loaded, memorySize: configuration.memorySize,
                                     commandLine: configuration.commandLine, initrd: configuration.initrd?.bytes)
        if case let .bzImage(bz) = image {
            boot.kernelCommandLineLimit = bz.version >= 0x0206 ? Int(bz.cmdlineSize) : 255
            boot.initrdCeiling = UInt64(bz.initrdAddressMax) + 1
        } else if bootProtocol == .linux {
            boot.initrdCeiling = 0x8000_0000
        }
        do { bootState = try BootSetup.prepare(boot, in: memory) } catch { throw .boot(error) }

        // KVM: the VM, its interrupt controllers and its memory. Input errors were found above,
        // before /dev/kvm was opened.
        do {
            system = try KVMSystem(path: kvmPath)
            let limit = system.maxVCPUs
            guard (1...limit).contains(configuration.cpus) else {
                throw MachineError.configuration("--cpus \(configuration.cpus) is out of range: this KVM allows 1 to \(limit)")
            }
            guard (0..<configuration.cpus).contains(configuration.bootCPU) else {
                throw MachineError.configuration("--boot-cpu \(configuration.bootCPU) is out of range: use 0 to \(configuration.cpus - 1)")
            }
            vm = try system.createVM()
            try vm.setTSSAddress(Layout.kvmTSS)
            try vm.createInterruptController()
            try vm.createPIT()
            if configuration.bootCPU != 0 { try vm.setBootCPU(configuration.bootCPU) }
        } catch let error as KVMError {
            throw .kvm(error)
        } catch let error as MachineError {
            throw error
        } catch {
            throw .configuration("\(error)")
        }

        do {
            for (slot, region) in memory.regions.enumerated() {
                try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: region.start.rawValue,
                                       size: region.size, hostAddress: region.hostAddress)
            }
        } catch { throw .kvm(error) }

        // Devices. The serial IRQ goes through the in-kernel PIC/IOAPIC.
        let vmForIRQ = vm
        serial = Serial16550(output: configuration.serialOutput, interruptLine: { high in
            try? vmForIRQ.setInterruptLine(Serial16550.com1IRQ, high: high)
        })
        do {
            ports = try Bus(.port, devices: [
                (Serial16550.com1Port, Serial16550.registerCount, serial),
                (DebugExitPort.defaultPort, DebugExitPort.width, DebugExitPort()),
                (PowerOffPort.defaultPort, PowerOffPort.width, PowerOffPort()),
                (I8042.dataPort, I8042.commandPort - I8042.dataPort + 1, I8042()),
            ], logger: logger)
            mmio = try Bus(.mmio, devices: [], logger: logger)
        } catch { throw .configuration(error.description) }

        // vCPUs: CPUID, MSRs, FPU, LAPIC for all; registers only for the boot vCPU. The others
        // stay UNINITIALIZED until the guest sends INIT-SIPI-SIPI.
        do {
            let supported = try system.supportedCPUID()
            var vcpus: [VCPU] = []
            for id in 0..<configuration.cpus {
                let vcpu = try vm.createVCPU(id: id)
                try vcpu.setCPUID(CPUIDTemplate.entries(from: supported, apicID: UInt32(id), count: configuration.cpus))
                try vcpu.setMSRs(BootMSRs.values)
                try vcpu.setFPU(controlWord: 0x37F, mxcsr: 0x1F80)
                try Self.configureLocalAPIC(vcpu)
                if id == configuration.bootCPU {
                    try vcpu.setRegisters(bootState.registers)
                    var sregs = try vcpu.specialRegisters()
                    bootState.apply(to: &sregs)
                    try vcpu.setSpecialRegisters(sregs)
                }
                vcpus.append(vcpu)
            }
            self.vcpus = vcpus
        } catch { throw .kvm(error) }
        statistics = (0..<configuration.cpus).map { _ in StatisticsCell() }
        logger.debug("machine built", metadata: [
            "protocol": "\(bootProtocol.rawValue)", "entry": "0x\(String(loaded.entry, radix: 16))",
            "memory": "\(configuration.memorySize)", "cpus": "\(configuration.cpus)"])
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

    /// Runs the VM until the guest stops it or an error occurs, then stops every vCPU thread and
    /// joins it. Returns how the VM ended.
    public func run() -> VMOutcome {
        KickSignal.ensureInstalled()
        let input = configuration.forwardInput ? ConsoleInput() : nil
        var threads: [NativeThread] = []
        for vcpu in vcpus {
            do {
                threads.append(try NativeThread(name: "vcpu\(vcpu.id)") { [self] in runLoop(vcpu) })
            } catch {
                stop(.vmmError(vcpu: vcpu.id, message: error.description))
                break
            }
        }
        do { try input?.start(into: serial) } catch { stop(.vmmError(vcpu: nil, message: error.description)) }
        for thread in threads { thread.join() }
        input?.stop()
        return stopState.withLock { $0 } ?? .vmmError(vcpu: nil, message: "all vCPU threads ended without a reason")
    }

    /// Records the first stop reason and knocks every vCPU out of `KVM_RUN`. Safe from any thread.
    public func stop(_ outcome: VMOutcome) {
        let first = stopState.withLock { state -> Bool in
            guard state == nil else { return false }
            state = outcome
            return true
        }
        guard first else { return }
        for vcpu in vcpus { vcpu.setImmediateExit(true) }
        for (index, _) in vcpus.enumerated() { threadsToKick.withLock { $0[index] }?.signal(KickSignal.number) }
    }

    var isStopping: Bool { stopState.withLock { $0 != nil } }

    private let threadsToKick = Mutex<[Int: NativeThread]>([:])

    private func runLoop(_ vcpu: VCPU) {
        threadsToKick.withLock { $0[vcpu.id] = NativeThread.current() }
        let stats = statistics[vcpu.id]
        while !isStopping {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                stop(.vmmError(vcpu: vcpu.id, message: error.description))
                return
            }
            stats.value.withLock {
                $0.exitCounts[exit.name, default: 0] += 1
                $0.lastExit = exit.name
            }
            if let outcome = handle(exit, on: vcpu) {
                stop(outcome)
                return
            }
        }
    }

    /// Serves one exit; returns an outcome when the VM must stop.
    private func handle(_ exit: VCPUExit, on vcpu: VCPU) -> VMOutcome? {
        switch exit {
        case let .portIn(port, size, count):
            for index in 0..<count {
                vcpu.setIOValue(UInt32(truncatingIfNeeded: ports.read(UInt64(port), size: size)), at: index)
            }
        case let .portOut(port, size, count):
            for index in 0..<count {
                if let request = ports.write(UInt64(port), size: size, value: UInt64(vcpu.ioValue(at: index))) {
                    return .guestStop(request, vcpu: vcpu.id)
                }
            }
        case let .mmioRead(address, size):
            vcpu.completeMMIORead(mmio.read(address, size: size))
        case let .mmioWrite(address, size, value):
            if let request = mmio.write(address, size: size, value: value) {
                return .guestStop(request, vcpu: vcpu.id)
            }
        case .interrupted:
            break
        case .shutdown:
            return .tripleFault(vcpu: vcpu.id, registers: registerDump(vcpu))
        case let .systemEvent(event):
            switch event {
            case .shutdown: return .guestStop(.powerOff(status: 0), vcpu: vcpu.id)
            case .reset: return .guestStop(.reset(source: "KVM system event"), vcpu: vcpu.id)
            case .crash: return .kvmFailure(vcpu: vcpu.id, what: "guest crash (KVM_SYSTEM_EVENT_CRASH)", registers: registerDump(vcpu))
            case let .other(type): return .vmmError(vcpu: vcpu.id, message: "unexpected KVM system event \(type)")
            }
        case let .internalError(suberror, data):
            let kind = [1: "emulation failure", 2: "exception while delivering an exception", 3: "event delivery failure",
                        4: "unexpected exit reason"][Int(suberror)] ?? "suberror \(suberror)"
            let detail = data.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
            return .kvmFailure(vcpu: vcpu.id, what: "KVM_EXIT_INTERNAL_ERROR: \(kind)\(detail.isEmpty ? "" : " [\(detail)]")",
                               registers: registerDump(vcpu))
        case let .failEntry(reason):
            return .kvmFailure(vcpu: vcpu.id, what: "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x\(String(reason, radix: 16))",
                               registers: registerDump(vcpu))
        case .halt:
            return .vmmError(vcpu: vcpu.id, message: "unexpected KVM_EXIT_HLT with an in-kernel LAPIC")
        case .msrRead, .msrWrite:
            vcpu.completeMSR(fault: true)
        case let .unknown(reason):
            return .vmmError(vcpu: vcpu.id, message: "unexpected KVM exit reason \(reason)")
        }
        return nil
    }

    /// Exit counts and last exit of each vCPU, for reports.
    public func vcpuStatistics() -> [VCPUStatistics] { statistics.map { $0.value.withLock { $0 } } }
}

import API
import APISocket
import ArgumentParser
import DemoGuest
import FoundationEssentials
import Loader
import Logging
import VMM
#if canImport(Glibc)
import Glibc
#endif

extension BootProtocol: ExpressibleByArgument {}
extension XenMode: ExpressibleByArgument {}

/// `on` / `off` switches.
enum Switch: String, ExpressibleByArgument, CaseIterable {
    case on, off
    var isOn: Bool { self == .on }
}

/// `--boot auto|pvh|multiboot|xen64|linux`.
enum BootChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, pvh, multiboot, xen64, linux
    var requested: BootProtocol? { self == .auto ? nil : BootProtocol(rawValue: rawValue) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a guest kernel and attach its serial console to this terminal.",
        discussion: """
            The guest ends the run through port 0x500 (status = value & 0xff), QEMU's \
            isa-debug-exit at port 0xf4 (status = (value << 1) | 1), an i8042 reset (status 32) \
            or a triple fault (status 34). 36 means KVM could not run the guest, 1 a Swiftlet \
            error, 2 a usage error.
            """)

    @Option(help: ArgumentHelp("Guest kernel: an ELF (PVH, Xen 64-bit or Linux vmlinux) or a bzImage. Default: the built-in demo guest.", valueName: "path"))
    var kernel: String?

    @Option(help: ArgumentHelp("Initial ramdisk, passed as module 0 (PVH and Multiboot), mod_start (xen64) or ramdisk_image (linux).", valueName: "path"))
    var initrd: String?

    @Option(help: ArgumentHelp("Multiboot module: a file and the string the kernel sees with it (default: the path). Repeat for more; the --initrd file, if any, is module 0.", valueName: "path[,string]"))
    var module: [String] = []

    @Option(help: ArgumentHelp("Kernel command line (default \"console=ttyS0\", none for Multiboot kernels, which see \"PATH CMDLINE\" as GRUB and QEMU pass it).", valueName: "text"))
    var cmdline: String?

    @Option(help: ArgumentHelp("Guest RAM, e.g. 512M or 4G (binary units; a bare number is MiB). RAM above 3 GiB is placed above 4 GiB.", valueName: "size"))
    var memory: String = "128M"

    @Option(help: ArgumentHelp("Number of vCPUs: 1 to 254 with the MP table (8-bit xAPIC IDs, one kept for the I/O APIC); with --mptable off, up to this KVM's limit (KVM_CAP_MAX_VCPUS), IDs of 255 and above as ACPI x2APIC entries. Only the boot vCPU runs at first; the others wait for INIT-SIPI-SIPI.", valueName: "n"))
    var cpus: Int = 1

    @Option(name: .customLong("boot-cpu"), help: ArgumentHelp("Index of the boot vCPU (the BSP).", valueName: "k"))
    var bootCPU: Int = 0

    @Option(help: ArgumentHelp("Boot protocol: auto picks pvh, then multiboot, then xen64, then linux.", valueName: "auto|pvh|multiboot|xen64|linux"))
    var boot: BootChoice = .auto

    @Option(help: ArgumentHelp("ACPI tables (RSDP at 0xE0000, XSDT, FADT, DSDT, MADT).", valueName: "on|off"))
    var acpi: Switch = .on

    @Option(help: ArgumentHelp("Intel MP table (floating pointer at 0x9FC00).", valueName: "on|off"))
    var mptable: Switch = .on

    @Option(help: ArgumentHelp("Xen-style hypercall interface (CPUID 0x40000000 \"XenVMMXenVMM\", hypercall page, vcpu_op and friends): auto turns it on when the kernel's notes declare a hypercall page or Xen features.", valueName: "auto|on|off"))
    var xen: XenMode = .auto

    @Option(name: .customLong("cpu-template"), help: ArgumentHelp("CPU template: x86-64-v1, x86-64-v2 or x86-64-v3 (hide the instruction-set extensions above that x86-64 level), or a Firecracker custom CPU template file (x86_64 JSON). 'help' lists the built-ins and prints their JSON.", valueName: "file|name"))
    var cpuTemplate: String?

    @Option(help: ArgumentHelp("Write a JSON report when the VM ends: why it ended, and per vCPU its MP state, last exit, exit counts, time to first exit, and the guest's checkpoints. Send SIGUSR1 during the run for a table of the vCPUs on stderr.", valueName: "file"))
    var report: String?

    @Option(help: ArgumentHelp("A virtio block device on a raw image (its size a multiple of 512): path=FILE, and optionally readonly=on, id=ID (what GET_ID returns; default driveN), root=on (adds root=/dev/vdX to the command line). Repeat for more.", valueName: "path=FILE[,readonly=on][,id=ID][,root=on]"))
    var drive: [String] = []

    @Flag(help: "A virtio entropy device (filled from getrandom).")
    var entropy = false

    @Option(help: ArgumentHelp("A virtio network device on an existing TAP device: tap=NAME, and optionally mac=MAC (the guest's address, aa:bb:cc:dd:ee:ff; default: the guest driver picks one), id=ID (default ethN). Repeat for more.", valueName: "tap=NAME[,mac=MAC][,id=ID]"))
    var net: [String] = []

    @Option(help: ArgumentHelp("A virtio socket device, Firecracker's way: the guest's CID (3 or more) and a Unix socket the host connects to (write CONNECT <port>\\n); guest connections to host port P go to the socket PATH_P.", valueName: "cid=CID,uds=PATH"))
    var vsock: String?

    @Option(help: ArgumentHelp("Where standard input goes: serial (the 16550, ttyS0), virtio (a virtio console, hvc0; the default command line then says console=hvc0) or xen (the Xen PV console's in ring; needs --xen on). The 16550, and with Xen the PV console's output, stay either way.", valueName: "serial|virtio|xen"))
    var console: ConsoleChoice = .serial

    @Option(help: ArgumentHelp("Restore a VM from this snapshot file (made by PUT /snapshot/create) instead of booting a kernel; needs --memory-file. The machine's size, vCPUs and devices are the snapshot's.", valueName: "file"))
    var restore: String?

    @Option(name: .customLong("memory-file"), help: ArgumentHelp("The guest memory file of --restore's snapshot (mapped copy-on-write: pages load when first touched, and several VMs can share it).", valueName: "file"))
    var memoryFile: String?

    @Flag(help: "With --restore: keep the restored VM paused (resume it with PATCH /vm over --api-sock).")
    var paused = false

    @Option(name: .customLong("api-sock"), help: ArgumentHelp("Also serve Firecracker's API on this Unix socket while the VM runs: GET /, /vcpus, PATCH /vm to pause and resume, PUT /vcpus/N/mp-state (see the README's API section).", valueName: "path"))
    var apiSock: String?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("Log level on stderr: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String = "warning"

    @Flag(name: .customLong("no-stdin"), help: "Do not forward standard input to the serial port.")
    var noStdin = false

    @Flag(name: .customLong("no-seccomp"), help: "Do not install the syscall filter (for debugging; see the README's Security section).")
    var noSeccomp = false

    @Flag(name: .customLong("debug-forbidden-syscall"), help: .hidden)
    var debugForbiddenSyscall = false

    func validate() throws {
        let size: MemorySize
        do { size = try MemorySize.parse(memory) } catch {
            switch error {
            case .zero: throw ValidationError("--memory \(memory): the size must be greater than zero")
            case .overflow: throw ValidationError("--memory \(memory): the size is too large to represent")
            case .notASize: throw ValidationError("--memory \(memory): not a size; write a number with an optional unit K, M, G or T, e.g. 512M or 4G")
            }
        }
        do throws(ConfigurationError) {
            try ConfigurationRules.check(memoryBytes: size.bytes, cpus: cpus, bootCPU: bootCPU, mpTable: mptable.isOn)
        } catch {
            let value = switch error.field {
            case .memory: memory
            case .cpus: String(cpus)
            case .bootCPU: String(bootCPU)
            }
            throw ValidationError(error.commandLineMessage(value: value))
        }
        for spec in drive { _ = try DriveOption.parse(spec, index: 0) }
        if (restore == nil) != (memoryFile == nil) {
            throw ValidationError("--restore and --memory-file go together: a snapshot's state and its guest memory")
        }
        if paused && restore == nil { throw ValidationError("--paused is for --restore") }
        if restore != nil && (kernel != nil || initrd != nil || !drive.isEmpty || !net.isEmpty || vsock != nil) {
            throw ValidationError("--restore takes the kernel, memory and devices from the snapshot: drop --kernel, --initrd, --drive, --net and --vsock")
        }
        for spec in net { _ = try NetOption.parse(spec, index: 0) }
        if let vsock { _ = try VsockOption.parse(vsock) }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel): use trace, debug, info, notice, warning, error or critical")
        }
    }

    func run() throws {
        let template = try cpuTemplate.map(CPUTemplateOption.load)
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swiftlet")
        let memoryBytes = try! MemorySize.parse(memory).bytes   // checked in validate()

        let kernelFile: KernelFile
        do throws(LoaderError) {
            if let kernel { kernelFile = try KernelFile.read(path: kernel) }
            else { kernelFile = KernelFile(path: "<demo guest>", bytes: demoGuestImage) }
        } catch { throw RuntimeFailure(error.description) }
        var initrdFile: KernelFile?
        do throws(LoaderError) { if let initrd { initrdFile = try KernelFile.read(path: initrd) } } catch {
            switch error {
            case let .unreadable(path, code): throw RuntimeFailure("\(path): cannot read initrd: \(String(cString: strerror(code)))")
            case let .empty(path): throw RuntimeFailure("\(path): the initrd is empty")
            default: throw RuntimeFailure(error.description)
            }
        }

        var modules: [(file: KernelFile, string: String)] = []
        for spec in module {
            let path = spec.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? spec
            let string = path.count < spec.count ? String(spec.dropFirst(path.count + 1)) : path
            do throws(LoaderError) { modules.append((try KernelFile.read(path: path), string)) } catch {
                switch error {
                case let .unreadable(path, code): throw RuntimeFailure("\(path): cannot read module: \(String(cString: strerror(code)))")
                case let .empty(path): modules.append((KernelFile(path: path, bytes: []), string))   // empty modules are valid
                default: throw RuntimeFailure(error.description)
                }
            }
        }

        var config = MachineConfiguration(
            kernel: kernelFile, initrd: initrdFile, commandLine: Array((cmdline ?? (console == .virtio ? "console=hvc0" : "console=ttyS0")).utf8), memorySize: memoryBytes,
            cpus: cpus, bootCPU: bootCPU, bootProtocol: boot.requested, forwardInput: !noStdin)
        config.commandLineIsDefault = cmdline == nil
        config.seccomp = !noSeccomp
        config.probeForbiddenSyscall = debugForbiddenSyscall
        config.modules = modules
        config.acpi = acpi.isOn
        config.mpTable = mptable.isOn
        config.xen = xen
        config.cpuTemplate = template
        config.virtio = try drive.enumerated().map { try DriveOption.parse($1, index: $0) }
            + net.enumerated().map { try NetOption.parse($1, index: $0) }
            + (try vsock.map { [try VsockOption.parse($0)] } ?? [])
            + (entropy ? [.entropy] : []) + (console == .virtio ? [.console] : [])
        config.xenConsoleInput = console == .xen
        config.serveAPI = apiSock != nil
        if let apiSock {   // a bad socket path is refused before /dev/kvm is opened
            do { try APIServer.check(path: apiSock) } catch { throw RuntimeFailure(error.description) }
        }
        // Before any thread exists: the signals go to the main loop's signalfd only.
        MainLoop.blockSignals(LaunchOptions.signals)
        let machine: Machine
        do {
            if let restore, let memoryFile {
                machine = try Machine(restoringFrom: restore, memoryPath: memoryFile, base: config, logger: logger)
                if paused { try? machine.startPaused() }
            } else {
                machine = try Machine(config, logger: logger)
            }
        } catch {
            throw RuntimeFailure(error.description)
        }
        logger.info("booting", metadata: ["kernel": "\(kernelFile.path)", "protocol": "\(machine.bootProtocol.rawValue)",
                                          "why": "\(machine.protocolReason)"])
        let loop: MainLoop
        do {
            loop = try MainLoop()
            try loop.handleSignals(LaunchOptions.signals) { signal in
                if signal == SIGUSR1 { printError(machine.statusTable(), newline: false) } else { machine.stop(.signal(signal)) }
            }
        } catch { throw RuntimeFailure(error.description) }
        var server: APIServer?
        if let apiSock {
            let controller = VMController(id: "anonymous-instance", vmmVersion: Swiftlet.version, loop: loop,
                                          build: { _ throws(MachineError) in throw .configuration("this VM was configured on the command line") },
                                          serialOutput: { _ in })
            controller.adopt(machine, machineConfig: MachineConfigBody(
                vcpu_count: cpus, mem_size_mib: Int(memoryBytes >> 20), smt: false, track_dirty_pages: false,
                cpu_template: cpuTemplate.flatMap { CPUTemplate.builtInNames.contains($0) ? $0 : nil } ?? "None", huge_pages: "None"),
                bootSource: BootSourceBody(kernel_image_path: kernelFile.path, boot_args: cmdline, initrd_path: initrd))
            do { server = try APIServer.start(path: apiSock, router: APIRouter(controller: controller), on: loop) } catch {
                throw RuntimeFailure(error.description)
            }
        }
        let ended = FirstOutcome()
        machine.launch(on: loop) { result in
            _ = ended.record(result)
            loop.stop()
        }
        loop.run()
        server?.shutdown()
        let outcome = ended.value ?? .vmmError(vcpu: nil, message: "the main loop ended before the VM")

        if !outcome.isCleanExit {
            printError("swiftlet: \(outcome.summary)")
            if let dump = outcome.registerDump { printError(dump) }
        }
        if let report {
            do { try RunReport(machine: machine, outcome: outcome).write(to: report) } catch {
                printError("swiftlet: could not write the report to \(report): \(error)")
                throw ExitCode(ExitStatus.vmmError)
            }
        }
        throw ExitCode(outcome.exitStatus)
    }
}

/// The `--report` file.
struct RunReport: Encodable {
    struct VCPU: Encodable {
        let id: Int
        let boot: Bool
        let mpState: String?
        let initialMPState: String?
        let lastExit: String?
        let exitCounts: [String: Int]
        let firstExitMicroseconds: UInt64?
        let bringUp: String?
        let xenDown: Bool
        let hypercalls: [String: Int]
        let callbacks: [String: String]
        let trapTable: Int
    }
    struct CheckpointEntry: Encodable {
        struct State: Encodable { let id: Int; let mpState: String?; let exits: Int }
        let label: UInt32
        let vcpu: Int
        let atMicroseconds: UInt64
        let states: [State]
    }
    let kernel: String
    let bootProtocol: String
    let protocolReason: String
    let memoryBytes: UInt64
    let cpus: Int
    let bootCPU: Int
    let xen: Bool
    let exitStatus: Int32
    let reason: String
    let vcpus: [VCPU]
    let checkpoints: [CheckpointEntry]
    /// CLOCK_MONOTONIC at the start of the run, for tools that time this process from outside.
    let runStartMonotonicNanoseconds: UInt64
    /// The VMM's peak resident set (VmHWM) and how much of it is guest RAM the guest touched.
    let peakRSSBytes: UInt64
    /// RssAnon at the end: private memory, guest RAM included; the rest of the RSS is shared code.
    let anonymousRSSBytes: UInt64
    let guestResidentBytes: UInt64

    init(machine: Machine, outcome: VMOutcome) {
        let config = machine.configuration
        kernel = config.kernel.path
        bootProtocol = machine.bootProtocol.rawValue
        protocolReason = machine.protocolReason
        memoryBytes = config.memorySize
        cpus = config.cpus
        bootCPU = config.bootCPU
        xen = machine.xenEnabled
        exitStatus = outcome.exitStatus
        reason = outcome.summary
        vcpus = machine.status().map { s in
            VCPU(id: s.id, boot: s.id == config.bootCPU, mpState: s.mpState?.description,
                 initialMPState: machine.initialMPStates[s.id]?.description, lastExit: s.lastExit,
                 exitCounts: s.exitCounts, firstExitMicroseconds: s.firstExitNanoseconds.map { $0 / 1000 },
                 bringUp: s.xen.bringUp?.rawValue, xenDown: s.xen.down, hypercalls: s.xen.hypercalls,
                 callbacks: Dictionary(uniqueKeysWithValues: s.xen.callbacks.map {
                     (XenVCPUState.callbackNames[$0.key] ?? "type\($0.key)", "0x" + String($0.value, radix: 16))
                 }),
                 trapTable: s.xen.trapTable.count)
        }
        runStartMonotonicNanoseconds = machine.runStartMonotonicNanoseconds
        peakRSSBytes = Self.statusField("VmHWM:")
        anonymousRSSBytes = Self.statusField("RssAnon:")
        guestResidentBytes = machine.guestResidentBytes
        checkpoints = machine.checkpoints.map { c in
            CheckpointEntry(label: c.label, vcpu: c.vcpu, atMicroseconds: c.atNanoseconds / 1000,
                            states: c.states.map { .init(id: $0.id, mpState: $0.mpState?.description, exits: $0.totalExits) })
        }
    }

    /// A kB field of /proc/self/status (VmHWM, RssAnon), in bytes.
    static func statusField(_ name: String) -> UInt64 {
        let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 8192)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return 0 }
        let text = String(decoding: buffer.prefix(count), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let kib = line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
            return kib * 1024
        }
        return 0
    }

    func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RuntimeFailure(String(cString: strerror(errno))) }
        defer { close(fd) }
        writeAll(fd, Array(data) + [UInt8(ascii: "\n")])
    }
}

/// `--console serial|virtio`.
enum ConsoleChoice: String, ExpressibleByArgument, CaseIterable {
    case serial, virtio, xen
}

/// `--net tap=NAME[,mac=MAC][,id=ID]`.
enum NetOption {
    static func parse(_ spec: String, index: Int) throws -> VirtioDeviceSpec {
        var tap: String?, mac: [UInt8]?, id = "eth\(index)"
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else {
                throw ValidationError("--net \(spec): \"\(item)\" is not key=value; write tap=NAME[,mac=MAC][,id=ID]")
            }
            switch pair[0] {
            case "tap":
                guard !pair[1].isEmpty, pair[1].utf8.count < 16 else { throw ValidationError("--net \(spec): a TAP device's name has 1 to 15 bytes") }
                tap = pair[1]
            case "mac":
                guard let bytes = VirtioDeviceSpec.parseMAC(pair[1]) else { throw ValidationError("--net \(spec): mac \"\(pair[1])\" is not six hex bytes like 06:00:ac:10:00:02") }
                guard bytes[0] & 1 == 0 else { throw ValidationError("--net \(spec): mac \(pair[1]) is a multicast address; a NIC's must have bit 0 of its first byte clear") }
                mac = bytes
            case "id":
                guard !pair[1].isEmpty else { throw ValidationError("--net \(spec): id is empty") }
                id = pair[1]
            default:
                throw ValidationError("--net \(spec): unknown key \"\(pair[0])\"; the keys are tap, mac and id")
            }
        }
        guard let tap else { throw ValidationError("--net \(spec): tap=NAME is required") }
        return .net(tap: tap, mac: mac, id: id)
    }
}

/// `--vsock cid=CID,uds=PATH`.
enum VsockOption {
    static func parse(_ spec: String) throws -> VirtioDeviceSpec {
        var cid: UInt64?, path: String?
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { throw ValidationError("--vsock \(spec): \"\(item)\" is not key=value; write cid=CID,uds=PATH") }
            switch pair[0] {
            case "cid":
                guard let value = UInt64(pair[1]), value >= 3, value < UInt64(UInt32.max) else {
                    throw ValidationError("--vsock \(spec): cid must be a number from 3 to 4294967294 (0-2 are reserved)")
                }
                cid = value
            case "uds", "path":
                guard !pair[1].isEmpty else { throw ValidationError("--vsock \(spec): uds is empty") }
                path = pair[1]
            default:
                throw ValidationError("--vsock \(spec): unknown key \"\(pair[0])\"; the keys are cid and uds")
            }
        }
        guard let cid, let path else { throw ValidationError("--vsock \(spec): both cid=CID and uds=PATH are required") }
        return .vsock(cid: cid, udsPath: path)
    }
}

/// `--drive path=FILE[,readonly=on][,id=ID][,root=on]`.
enum DriveOption {
    static func parse(_ spec: String, index: Int) throws -> VirtioDeviceSpec {
        var path: String?, readOnly = false, id = "drive\(index)", root = false
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else {
                throw ValidationError("--drive \(spec): \"\(item)\" is not key=value; write path=FILE[,readonly=on][,id=ID][,root=on]")
            }
            switch pair[0] {
            case "path": path = pair[1]
            case "id":
                guard !pair[1].isEmpty, pair[1].utf8.count <= 20 else { throw ValidationError("--drive \(spec): id must be 1 to 20 bytes (the virtio-blk ID is 20)") }
                id = pair[1]
            case "readonly", "root":
                guard pair[1] == "on" || pair[1] == "off" else { throw ValidationError("--drive \(spec): \(pair[0]) takes on or off") }
                if pair[0] == "readonly" { readOnly = pair[1] == "on" } else { root = pair[1] == "on" }
            default:
                throw ValidationError("--drive \(spec): unknown key \"\(pair[0])\"; the keys are path, readonly, id and root")
            }
        }
        guard let path, !path.isEmpty else { throw ValidationError("--drive \(spec): path=FILE is required") }
        return .block(path: path, readOnly: readOnly, id: id, root: root)
    }
}

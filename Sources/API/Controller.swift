import KVM
import Loader
import Synchronization
import VMM
import X86
#if canImport(Glibc)
import Glibc
#endif

/// What the controller needs of a built VM. `Machine` is one; tests drive the controller and
/// the API with a fake, without /dev/kvm.
public protocol RunningVM: AnyObject, Sendable {
    var state: VMState { get }
    /// Not started → Running: from here on pause, resume and vCPU requests are accepted.
    func start() throws(VMStateError)
    /// Starts the guest; `onExit` is called once when the VM has ended (`Machine`: on `loop`).
    func launch(on loop: MainLoop, onExit: @escaping @Sendable (VMOutcome) -> Void)
    func stop(_ outcome: VMOutcome)
    func pause() throws(VMStateError)
    func resume() throws(VMStateError)
    func pause(vcpu: Int) throws(VCPUControlError)
    func resume(vcpu: Int) throws(VCPUControlError)
    func setMPState(_ state: MPState, vcpu: Int) throws(MPStateError)
    func status() -> [VCPUStatus]
    func sendCtrlAltDel()
    /// A new backing file for a running drive (`PATCH /drives/{id}`).
    func replaceDrive(id: String, path: String) throws(MachineError)
    /// Saves the paused VM (`PUT /snapshot/create`).
    func createSnapshot(statePath: String, memoryPath: String, kind: SnapshotKind, swiftletVersion: String) throws(MachineError)
    /// Not started → Paused, for a restored VM that stays paused.
    func startPaused() throws(VMStateError)
}

/// Builds a VM from a snapshot (`PUT /snapshot/load`): `Machine(restoringFrom:)` in the product.
public typealias VMRestorer = @Sendable (_ statePath: String, _ memoryPath: String, _ base: MachineConfiguration) throws(MachineError) -> any RunningVM

extension Machine: RunningVM {}

/// The host files the controller touches: kernels and initrds it reads, log and metrics files it
/// appends to. Tests, the fuzz target and schema checks replace them so nothing on disk changes.
public struct HostFiles: Sendable {
    public var read: @Sendable (String) throws(LoaderError) -> KernelFile
    /// Opens a file for appending (created 0644; a FIFO without blocking); a descriptor or -errno.
    public var openForAppend: @Sendable (String) -> Int32

    public init(read: @escaping @Sendable (String) throws(LoaderError) -> KernelFile,
                openForAppend: @escaping @Sendable (String) -> Int32) {
        self.read = read; self.openForAppend = openForAppend
    }

    /// The real file system.
    public static let host = HostFiles(read: { path throws(LoaderError) in try KernelFile.read(path: path) }, openForAppend: { path in
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_CLOEXEC, 0o644)
        return fd >= 0 ? fd : -errno
    })

    /// Nothing read or written: every kernel is a few bytes, every log and metrics file /dev/null.
    public static let none = HostFiles(read: { path throws(LoaderError) in KernelFile(path: path, bytes: [0]) }, openForAppend: { _ in
        let fd = open("/dev/null", O_WRONLY | O_CLOEXEC)
        return fd >= 0 ? fd : -errno
    })
}

/// Builds a VM from a configuration: `Machine.init` in the product.
public typealias VMBuilder = @Sendable (MachineConfiguration) throws(MachineError) -> any RunningVM

/// An API error: the status (Firecracker answers 400 for all of these) and the fault message.
public struct APIError: Error, Equatable, Sendable {
    public var status: Int
    public var message: String
    public init(_ message: String, status: Int = 400) { self.message = message; self.status = status }
}

/// The VM controller: it owns the configuration before start, the VM after, the lifecycle both
/// sides of it, the logger and metrics settings, and the counters. Every front end (the API, the
/// config file, `swiftlet run --api-sock`) goes through it, so one set of rules applies.
public final class VMController: Sendable {
    public static let defaultBootArgs = "console=ttyS0 reboot=k panic=1 pci=off"

    struct State {
        var machineConfig = MachineConfigBody(vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false,
                                              cpu_template: "None", huge_pages: "None")
        var bootSource: BootSourceBody?
        var logger: LoggerBody?
        var metrics: MetricsBody?
        var drives: [DriveBody] = []
        var entropy: EntropyBody?
        var networkInterfaces: [NetworkInterfaceBody] = []
        var vsock: VsockBody?
        var console: ConsoleBody?
        /// A custom CPU template from `PUT /cpu-config`.
        var cpuConfig: CPUTemplate?
        var vm: (any RunningVM)?
        /// Set once InstanceStart has been accepted, even before the VM is built.
        var started = false
        var outcome: VMOutcome?
    }

    public let id: String
    public let vmmVersion: String
    /// The main loop the VM's console and watchdog (and the API) are served on.
    let loop: MainLoop
    let state = Mutex(State())
    let build: VMBuilder
    let restorer: VMRestorer
    /// Called on the VM's thread when the VM has ended.
    let onExit: @Sendable (VMOutcome) -> Void
    /// Where the guest's serial output goes.
    let serialOutput: @Sendable ([UInt8]) -> Void
    let forwardInput: Bool
    let seccomp: Bool
    let serveAPI: Bool
    let files: HostFiles
    public let metrics: MetricsRecorder
    public let logSink: LogSink

    public init(id: String, vmmVersion: String, loop: MainLoop, build: @escaping VMBuilder,
                serialOutput: @escaping @Sendable ([UInt8]) -> Void, forwardInput: Bool = false, seccomp: Bool = false,
                serveAPI: Bool = true, logSink: LogSink = LogSink(),
                files: HostFiles = .host,
                restore: @escaping VMRestorer = { state, memory, base throws(MachineError) in
                    try Machine(restoringFrom: state, memoryPath: memory, base: base)
                },
                onExit: @escaping @Sendable (VMOutcome) -> Void = { _ in }) {
        self.id = id; self.vmmVersion = vmmVersion; self.loop = loop; self.build = build; self.restorer = restore
        self.forwardInput = forwardInput; self.seccomp = seccomp; self.serveAPI = serveAPI; self.onExit = onExit
        self.files = files
        self.logSink = logSink
        let metrics = MetricsRecorder()
        self.metrics = metrics
        self.serialOutput = { bytes in metrics.countSerial(bytes.count); serialOutput(bytes) }
    }

    // MARK: Reading

    public var vmState: VMState {
        state.withLock { s in
            if let vm = s.vm { return vm.state }
            return s.outcome != nil ? .stopped : .notStarted
        }
    }

    public var instanceInfo: InstanceInfo {
        InstanceInfo(id: id, state: vmState.rawValue, vmm_version: vmmVersion, app_name: "Swiftlet")
    }

    public var machineConfig: MachineConfigBody { state.withLock { $0.machineConfig } }

    /// The whole configuration, in the config file's shape.
    public var fullConfig: VMConfigFile {
        state.withLock {
            VMConfigFile(bootSource: $0.bootSource, machineConfig: $0.machineConfig, logger: $0.logger, metrics: $0.metrics,
                         drives: $0.drives.isEmpty ? nil : $0.drives, entropy: $0.entropy,
                         networkInterfaces: $0.networkInterfaces.isEmpty ? nil : $0.networkInterfaces, vsock: $0.vsock,
                         console: $0.console)
        }
    }

    var vm: (any RunningVM)? { state.withLock { $0.vm } }

    // MARK: Pre-boot configuration

    /// Refuses a change once InstanceStart has been accepted.
    private func preBoot(_ s: State, _ what: String) throws(APIError) {
        if s.started { throw APIError("\(what) is a pre-boot setting: the requested operation is not supported after starting the microVM") }
    }

    public func putMachineConfig(_ body: MachineConfigBody) throws(APIError) {
        guard let vcpus = body.vcpu_count else { throw APIError("missing field `vcpu_count`") }
        guard let mib = body.mem_size_mib else { throw APIError("missing field `mem_size_mib`") }
        var config = MachineConfigBody(vcpu_count: vcpus, mem_size_mib: mib, smt: body.smt ?? false,
                                       track_dirty_pages: body.track_dirty_pages ?? false,
                                       cpu_template: body.cpu_template ?? "None", huge_pages: body.huge_pages ?? "None")
        try Self.validate(&config)
        try state.withLock { s throws(APIError) in
            try preBoot(s, "machine-config")
            s.machineConfig = config
        }
    }

    public func patchMachineConfig(_ body: MachineConfigBody) throws(APIError) {
        if body.isEmpty { throw APIError("Empty PATCH request.") }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "machine-config")
            var config = s.machineConfig
            if let v = body.vcpu_count { config.vcpu_count = v }
            if let v = body.mem_size_mib { config.mem_size_mib = v }
            if let v = body.smt { config.smt = v }
            if let v = body.track_dirty_pages { config.track_dirty_pages = v }
            if let v = body.cpu_template { config.cpu_template = v }
            if let v = body.huge_pages { config.huge_pages = v }
            try Self.validate(&config)
            s.machineConfig = config
        }
    }

    /// The rules of `ConfigurationRules`, with the JSON field names; plus what Swiftlet does not
    /// offer of Firecracker's machine configuration.
    static func validate(_ config: inout MachineConfigBody) throws(APIError) {
        let vcpus = config.vcpu_count ?? 1, mib = config.mem_size_mib ?? 0
        guard mib >= 0, mib <= Int(UInt64.max >> 20) else {
            throw APIError("`mem_size_mib` \(mib): not a size in MiB")
        }
        do throws(ConfigurationError) {
            try ConfigurationRules.check(memoryBytes: UInt64(mib) << 20, cpus: vcpus, bootCPU: 0, mpTable: true)
        } catch {
            let value = error.field == .memory ? "\(mib)" : "\(vcpus)"
            throw APIError("`\(error.field.jsonField)` \(value): \(error.problem.replacing("add --mptable off", with: "run `swiftlet run --mptable off`"))")
        }
        if config.smt == true && vcpus > 1 && vcpus % 2 != 0 {
            throw APIError("`smt`: with SMT on, `vcpu_count` must be 1 or even (it is \(vcpus))")
        }
        if let name = config.cpu_template, name != "None", ((try? CPUTemplate.builtIn(named: name)) ?? nil) == nil {
            throw APIError("`cpu_template` \"\(name)\": Swiftlet's templates are \(CPUTemplate.builtInNames.joined(separator: ", ")) (or \"None\"); Firecracker's static templates (C3, T2, T2S, T2CL, T2A) are not offered")
        }
        if let pages = config.huge_pages, pages != "None" {
            throw APIError("`huge_pages` \"\(pages)\": Swiftlet backs guest memory with ordinary pages; use \"None\"")
        }
    }

    public func putBootSource(_ body: BootSourceBody) throws(APIError) {
        guard !body.kernel_image_path.isEmpty else { throw APIError("`kernel_image_path` is empty") }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "boot-source")
            s.bootSource = body
        }
    }

    public func putLogger(_ body: LoggerBody) throws(APIError) {
        try state.withLock { s throws(APIError) in try preBoot(s, "logger") }
        try logSink.configure(body, open: files.openForAppend)
        state.withLock { $0.logger = body }
    }

    public func putMetrics(_ body: MetricsBody) throws(APIError) {
        try state.withLock { s throws(APIError) in
            try preBoot(s, "metrics")
            if s.metrics != nil { throw APIError("metrics are already configured (to \(s.metrics!.metrics_path)); they can be set once") }
        }
        try metrics.open(path: body.metrics_path, with: files.openForAppend)
        state.withLock { $0.metrics = body }
    }

    /// Adds or replaces a drive (pre-boot). One root device at most; the id in the path and the
    /// body must agree, as Firecracker checks.
    public func putDrive(_ body: DriveBody, pathID: String) throws(APIError) {
        guard body.drive_id == pathID else { throw APIError("The id from the path does not match the id from the body!") }
        try Self.checkID(body.drive_id)
        guard !body.path_on_host.isEmpty else { throw APIError("`path_on_host` is empty") }
        if let engine = body.io_engine, engine != "Sync" {
            throw APIError("`io_engine` \"\(engine)\": Swiftlet has the synchronous engine only; use \"Sync\"")
        }
        if let cache = body.cache_type, cache != "Unsafe", cache != "Writeback" {
            throw APIError("`cache_type` \"\(cache)\": use \"Unsafe\" or \"Writeback\"")
        }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "drives")
            if body.is_root_device, let root = s.drives.first(where: { $0.is_root_device && $0.drive_id != body.drive_id }) {
                throw APIError("A root block device already exists (\(root.drive_id)); a VM has one")
            }
            if !s.drives.contains(where: { $0.drive_id == body.drive_id }) { try Self.roomForDevice(s) }
            if let index = s.drives.firstIndex(where: { $0.drive_id == body.drive_id }) { s.drives[index] = body } else { s.drives.append(body) }
        }
    }

    public func putEntropy(_ body: EntropyBody) throws(APIError) {
        try state.withLock { s throws(APIError) in
            try preBoot(s, "entropy")
            if s.entropy == nil { try Self.roomForDevice(s) }
            s.entropy = body
        }
    }

    /// Adds or replaces a network interface (pre-boot), Firecracker's rules: the ids in the path
    /// and body agree, a TAP device and a guest MAC belong to one interface only.
    public func putNetworkInterface(_ body: NetworkInterfaceBody, pathID: String) throws(APIError) {
        guard body.iface_id == pathID else { throw APIError("The id from the path does not match the id from the body!") }
        try Self.checkID(body.iface_id)
        guard !body.host_dev_name.isEmpty, body.host_dev_name.utf8.count < 16 else {
            throw APIError("`host_dev_name` \"\(body.host_dev_name)\": a TAP device's name has 1 to 15 bytes")
        }
        if let mac = body.guest_mac {
            guard let bytes = VirtioDeviceSpec.parseMAC(mac) else {
                throw APIError("`guest_mac` \"\(mac)\": not a MAC address; write six hex bytes like 06:00:ac:10:00:02")
            }
            guard bytes[0] & 1 == 0 else { throw APIError("`guest_mac` \(mac): a multicast address; a NIC's has bit 0 of its first byte clear") }
        }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "network-interfaces")
            let others = s.networkInterfaces.filter { $0.iface_id != body.iface_id }
            if others.contains(where: { $0.host_dev_name == body.host_dev_name }) {
                throw APIError("The host device name \(body.host_dev_name) is already in use by another interface")
            }
            if let mac = body.guest_mac, others.contains(where: { $0.guest_mac.flatMap(VirtioDeviceSpec.parseMAC) == VirtioDeviceSpec.parseMAC(mac) }) {
                throw APIError("The MAC address \(mac) is already in use by another interface")
            }
            if let index = s.networkInterfaces.firstIndex(where: { $0.iface_id == body.iface_id }) {
                s.networkInterfaces[index] = body
            } else {
                try Self.roomForDevice(s)
                s.networkInterfaces.append(body)
            }
        }
    }

    /// Sets the vsock device (pre-boot; a second PUT replaces the first).
    public func putVsock(_ body: VsockBody) throws(APIError) {
        guard body.guest_cid >= 3, body.guest_cid < Int(UInt32.max) else {
            throw APIError("`guest_cid` \(body.guest_cid): CIDs 0 to 2 are reserved; use 3 or more (below 2^32 - 1)")
        }
        guard !body.uds_path.isEmpty else { throw APIError("`uds_path` is empty") }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "vsock")
            if s.vsock == nil { try Self.roomForDevice(s) }
            s.vsock = body
        }
    }

    /// Sets a custom CPU template (Firecracker's `PUT /cpu-config`: its custom template JSON,
    /// `cpuid_modifiers` and `msr_modifiers`; pre-boot). It is applied as `--cpu-template FILE`
    /// is, and over a static `cpu_template` of machine-config; a second PUT replaces the first.
    public func putCPUConfig(_ json: [UInt8]) throws(APIError) {
        let template: CPUTemplate
        do { template = try CPUTemplate(json: json, source: "PUT /cpu-config") } catch { throw APIError(error.description) }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "cpu-config")
            s.cpuConfig = template
        }
    }

    /// Chooses the guest's console (Swiftlet's extension, pre-boot).
    public func putConsole(_ body: ConsoleBody) throws(APIError) {
        guard body.kind == "serial" || body.kind == "virtio" else {
            throw APIError("`kind` \"\(body.kind)\": use \"serial\" (the 16550, ttyS0) or \"virtio\" (hvc0)")
        }
        try state.withLock { s throws(APIError) in
            try preBoot(s, "console")
            if body.kind == "virtio" && s.console?.kind != "virtio" { try Self.roomForDevice(s) }
            s.console = body
        }
    }

    /// The virtio devices the configuration asks for so far.
    static func virtioCount(_ s: State) -> Int {
        s.drives.count + s.networkInterfaces.count + (s.vsock == nil ? 0 : 1) + (s.entropy == nil ? 0 : 1)
            + (s.console?.kind == "virtio" ? 1 : 0)
    }

    static func roomForDevice(_ s: State) throws(APIError) {
        guard virtioCount(s) < Layout.virtioIRQs.count else {
            throw APIError("at most \(Layout.virtioIRQs.count) virtio devices fit (drives, network interfaces, vsock, entropy and a virtio console together)")
        }
    }

    /// `PATCH /drives/{id}` after start: a new backing file (Firecracker's `PartialDrive`).
    public func patchDrive(_ body: PartialDriveBody, pathID: String) throws(APIError) {
        guard body.drive_id == pathID else { throw APIError("The id from the path does not match the id from the body!") }
        guard let vm, vm.state == .running || vm.state == .paused else {
            throw APIError("PATCH /drives: the requested operation is not supported before starting the microVM")
        }
        guard let path = body.path_on_host else { return }   // nothing to change
        do { try vm.replaceDrive(id: pathID, path: path) } catch { throw APIError(error.description) }
        state.withLock { s in
            if let index = s.drives.firstIndex(where: { $0.drive_id == pathID }) { s.drives[index].path_on_host = path }
        }
    }

    /// Firecracker's rule for resource ids: not empty, letters, digits and underscores.
    static func checkID(_ id: String) throws(APIError) {
        guard !id.isEmpty else { throw APIError("The ID cannot be empty.") }
        guard id.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }) else {
            throw APIError("API Resource IDs can only contain alphanumeric characters and underscores.")
        }
    }

    /// Applies a whole configuration file, section by section, with the API's rules.
    public func apply(_ file: VMConfigFile) throws(APIError) {
        if let logger = file.logger { try putLogger(logger) }
        if let metrics = file.metrics { try putMetrics(metrics) }
        if let machine = file.machineConfig { try putMachineConfig(machine) }
        if let boot = file.bootSource { try putBootSource(boot) }
        for drive in file.drives ?? [] { try putDrive(drive, pathID: drive.drive_id) }
        if let entropy = file.entropy { try putEntropy(entropy) }
        for interface in file.networkInterfaces ?? [] { try putNetworkInterface(interface, pathID: interface.iface_id) }
        if let vsock = file.vsock { try putVsock(vsock) }
        if let console = file.console { try putConsole(console) }
    }

    /// Takes a VM built and about to be run elsewhere (`swiftlet run --api-sock`): the API then
    /// reports and controls it, and its configuration is what the command line said.
    public func adopt(_ vm: any RunningVM, machineConfig: MachineConfigBody, bootSource: BootSourceBody) {
        state.withLock { s in
            s.started = true
            s.vm = vm
            s.machineConfig = machineConfig
            s.bootSource = bootSource
        }
    }

    /// Ends the VM if it runs (a signal); returns false if there is none.
    public func stopVM(_ outcome: VMOutcome) -> Bool {
        guard let vm else { return false }
        vm.stop(outcome)
        return true
    }

    // MARK: Actions

    /// Builds the VM from the configuration and starts it on a thread of its own.
    public func start() throws(APIError) {
        let (config, boot, virtio, custom) = try state.withLock { s throws(APIError) -> (MachineConfigBody, BootSourceBody, [VirtioDeviceSpec], CPUTemplate?) in
            if s.started { throw APIError("InstanceStart: the microVM has already been started (it is \(s.vm?.state.rawValue ?? "starting")); the requested operation is not supported after starting the microVM") }
            guard let boot = s.bootSource else {
                throw APIError("InstanceStart: no boot source; PUT /boot-source with a kernel_image_path first")
            }
            s.started = true
            // The root drive first, so that it is /dev/vda, as Firecracker attaches it.
            let drives = s.drives.filter(\.is_root_device) + s.drives.filter { !$0.is_root_device }
            let specs: [VirtioDeviceSpec] = drives.map {
                .block(path: $0.path_on_host, readOnly: $0.is_read_only ?? false, id: $0.drive_id, root: $0.is_root_device)
            } + s.networkInterfaces.map {
                .net(tap: $0.host_dev_name, mac: $0.guest_mac.flatMap(VirtioDeviceSpec.parseMAC), id: $0.iface_id)
            } + (s.vsock.map { [.vsock(cid: UInt64($0.guest_cid), udsPath: $0.uds_path)] } ?? [])
              + (s.entropy != nil ? [.entropy] : []) + (s.console?.kind == "virtio" ? [.console] : [])
            return (s.machineConfig, boot, specs, s.cpuConfig)
        }
        let vm: any RunningVM
        do throws(APIError) {
            var configuration = try machineConfiguration(config, boot)
            configuration.virtio = virtio
            if let custom { configuration.cpuTemplate = custom }
            do throws(MachineError) { vm = try build(configuration) } catch { throw APIError(error.description) }
        } catch {
            state.withLock { $0.started = false }
            throw APIError("InstanceStart: \(error.message)")
        }
        do throws(VMStateError) { try vm.start() } catch {
            state.withLock { $0.started = false }
            throw APIError("InstanceStart: \(error)")
        }
        state.withLock { $0.vm = vm }
        vm.launch(on: loop) { [self] outcome in
            state.withLock { $0.outcome = outcome }
            onExit(outcome)
        }
    }

    /// Firecracker's default boot arguments, with hvc0 for the console when it is the virtio one.
    var defaultBootArgs: String {
        let virtio = state.withLock { $0.console?.kind == "virtio" }
        return virtio ? "console=hvc0" + Self.defaultBootArgs.dropFirst("console=ttyS0".count) : Self.defaultBootArgs
    }

    /// The machine configuration the builder gets: files read, defaults filled.
    func machineConfiguration(_ config: MachineConfigBody, _ boot: BootSourceBody) throws(APIError) -> MachineConfiguration {
        let kernel: KernelFile
        do { kernel = try files.read(boot.kernel_image_path) } catch {
            throw APIError("`kernel_image_path`: \(error.description)")
        }
        var initrd: KernelFile?
        if let path = boot.initrd_path {
            do { initrd = try files.read(path) } catch {
                throw APIError("`initrd_path`: \(error.description)")
            }
        }
        var machine = MachineConfiguration(kernel: kernel, initrd: initrd,
                                           commandLine: Array((boot.boot_args ?? defaultBootArgs).utf8),
                                           memorySize: UInt64(config.mem_size_mib ?? 128) << 20, cpus: config.vcpu_count ?? 1,
                                           forwardInput: forwardInput, serialOutput: serialOutput)
        machine.commandLineIsDefault = boot.boot_args == nil
        machine.trackDirtyPages = config.track_dirty_pages ?? false
        machine.seccomp = seccomp
        machine.serveAPI = serveAPI
        if let name = config.cpu_template, name != "None" { machine.cpuTemplate = (try? CPUTemplate.builtIn(named: name)) ?? nil }
        return machine
    }

    public func sendCtrlAltDel() throws(APIError) {
        guard let vm, vm.state == .running || vm.state == .paused else {
            throw APIError("SendCtrlAltDel: the requested operation is not supported before starting the microVM")
        }
        vm.sendCtrlAltDel()
    }

    public func flushMetrics() throws(APIError) {
        guard metrics.isOpen else { throw APIError("FlushMetrics: metrics are not configured; PUT /metrics first") }
        metrics.flush(vcpus: vm?.status() ?? [])
    }

    // MARK: Snapshots

    /// `PUT /snapshot/create`: the VM must be paused.
    public func createSnapshot(_ body: SnapshotCreateBody) throws(APIError) {
        let kind = SnapshotKind(rawValue: body.snapshot_type ?? "Full")
        guard let kind else { throw APIError("`snapshot_type` \"\(body.snapshot_type ?? "")\": use \"Full\" or \"Diff\"") }
        guard !body.snapshot_path.isEmpty, !body.mem_file_path.isEmpty else { throw APIError("`snapshot_path` and `mem_file_path` must not be empty") }
        guard let vm, vm.state == .paused else {
            throw APIError("CreateSnapshot: the microVM must be paused first (it is \(vmState.rawValue)); PATCH /vm {\"state\": \"Paused\"}")
        }
        do { try vm.createSnapshot(statePath: body.snapshot_path, memoryPath: body.mem_file_path, kind: kind, swiftletVersion: vmmVersion) } catch {
            throw APIError("CreateSnapshot: \(error.description)")
        }
    }

    /// `PUT /snapshot/load`: before any boot; the restored VM runs (`resume_vm`) or stays paused.
    public func loadSnapshot(_ body: SnapshotLoadBody) throws(APIError) {
        let memoryPath: String
        switch (body.mem_backend, body.mem_file_path) {
        case let (backend?, nil):
            guard backend.backend_type == "File" else {
                throw APIError("`mem_backend.backend_type` \"\(backend.backend_type)\": Swiftlet loads memory from a \"File\" only (no userfaultfd)")
            }
            memoryPath = backend.backend_path
        case let (nil, path?): memoryPath = path
        case (nil, nil): throw APIError("missing field `mem_backend`")
        case (_?, _?): throw APIError("`mem_backend` and `mem_file_path` cannot both be given")
        }
        guard !body.snapshot_path.isEmpty, !memoryPath.isEmpty else { throw APIError("`snapshot_path` and the memory file's path must not be empty") }
        try state.withLock { s throws(APIError) in
            if s.started { throw APIError("LoadSnapshot: the requested operation is not supported after starting the microVM") }
            if s.bootSource != nil || !s.drives.isEmpty || !s.networkInterfaces.isEmpty || s.vsock != nil {
                throw APIError("LoadSnapshot: the microVM is already configured; a snapshot is loaded into a fresh process")
            }
            s.started = true
        }
        var base = MachineConfiguration(kernel: KernelFile(path: body.snapshot_path, bytes: []), forwardInput: forwardInput,
                                        serialOutput: serialOutput)
        base.seccomp = seccomp
        base.serveAPI = serveAPI
        base.trackDirtyPages = body.track_dirty_pages ?? body.enable_diff_snapshots ?? false
        let vm: any RunningVM
        do throws(APIError) {
            do throws(MachineError) { vm = try restorer(body.snapshot_path, memoryPath, base) } catch {
                throw APIError("LoadSnapshot: \(error.description)")
            }
            do throws(VMStateError) {
                if body.resume_vm == true { try vm.start() } else { try vm.startPaused() }
            } catch { throw APIError("LoadSnapshot: \(error)") }
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        state.withLock { $0.vm = vm }
        vm.launch(on: loop) { [self] outcome in
            state.withLock { $0.outcome = outcome }
            onExit(outcome)
        }
    }

    // MARK: Pause and resume, per VM and per vCPU

    public func setVMState(_ requested: String) throws(APIError) {
        let pause = try Self.pauseRequested(requested)
        guard let vm else { throw APIError("the VM has not started; there is nothing to \(pause ? "pause" : "resume")") }
        do throws(VMStateError) {
            if pause { try vm.pause() } else { try vm.resume() }
        } catch { throw APIError(error.description) }
    }

    public func setVCPUState(_ requested: String, vcpu id: Int) throws(APIError) {
        let pause = try Self.pauseRequested(requested)
        guard let vm else { throw APIError("vCPU \(id): the VM has not started; the requested operation is not supported before starting the microVM") }
        do throws(VCPUControlError) {
            if pause { try vm.pause(vcpu: id) } else { try vm.resume(vcpu: id) }
        } catch {
            throw APIError(error.description, status: Self.isMissing(error) ? 404 : 400)
        }
    }

    /// Firecracker's `state` values: "Paused" or "Resumed".
    static func pauseRequested(_ value: String) throws(APIError) -> Bool {
        switch value {
        case "Paused": return true
        case "Resumed": return false
        default: throw APIError("`state` \"\(value)\": use \"Paused\" or \"Resumed\"")
        }
    }

    static func isMissing(_ error: VCPUControlError) -> Bool {
        if case .noSuchVCPU = error { true } else { false }
    }

    public func setMPState(_ name: String, vcpu id: Int) throws(APIError) {
        guard let state = MPState.allCases.first(where: { $0.description == name }) else {
            throw APIError("`mp_state` \"\(name)\": use one of \(MPState.allCases.map { "\"\($0)\"" }.joined(separator: ", "))")
        }
        guard let vm else { throw APIError("vCPU \(id): the VM has not started; the requested operation is not supported before starting the microVM") }
        do throws(MPStateError) { try vm.setMPState(state, vcpu: id) } catch {
            if case .noSuchVCPU = error { throw APIError(error.description, status: 404) }
            throw APIError(error.description)
        }
    }

    /// The running VM's vCPU status (empty before start).
    public func vcpuStatus() -> [VCPUStatus] { vm?.status() ?? [] }

    /// How many vCPUs the VM has (or will have).
    public var vcpuCount: Int { machineConfig.vcpu_count ?? 1 }

    /// Every vCPU; before start, the configured ones, not started.
    public func vcpus() -> [VCPUInfo] {
        guard let vm else {
            return (0..<(machineConfig.vcpu_count ?? 1)).map {
                VCPUInfo(id: $0, apic_id: $0, mp_state: nil, run_state: VCPURunState.notStarted.rawValue,
                         brought_up_by: nil, exits: [:], last_exit: nil)
            }
        }
        return vm.status().map(Self.info)
    }

    static func info(_ s: VCPUStatus) -> VCPUInfo {
        let runState = s.runState == .running && s.xen.down ? "Parked" : s.runState.rawValue
        return VCPUInfo(id: s.id, apic_id: s.id, mp_state: s.mpState?.description, run_state: runState,
                        brought_up_by: s.xen.bringUp?.rawValue, exits: s.exitCounts, last_exit: s.lastExit)
    }
}

import API
import APISocket
import ArgumentParser
import FoundationEssentials
import Logging
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// `swiftlet --api-sock PATH [--id ID] [--config-file FILE] [--no-api] [--level LEVEL]
/// [--log-path PATH]`: the flags `firecracker` takes, with the same meaning, so tools that start
/// Firecracker can start Swiftlet. The guest's serial console is on standard output.
struct LaunchOptions: ParsableArguments {
    @Option(name: .customLong("api-sock"), help: ArgumentHelp("Serve Firecracker's API on this Unix socket (mode 0600; a stale socket is replaced, a live one refused; removed at exit).", valueName: "path"))
    var apiSock: String?

    @Option(help: ArgumentHelp("The VM's id, reported by GET /.", valueName: "id"))
    var id: String = "anonymous-instance"

    @Option(name: .customLong("config-file"), help: ArgumentHelp("Firecracker's JSON configuration (boot-source, machine-config, logger, metrics): the VM starts at once.", valueName: "file"))
    var configFile: String?

    @Flag(name: .customLong("no-api"), help: "Serve no API (needs --config-file).")
    var noAPI = false

    @Option(help: ArgumentHelp("Log level: Error, Warning, Info, Debug, Trace or Off (Firecracker's names).", valueName: "level"))
    var level: String?

    @Option(name: .customLong("log-path"), help: ArgumentHelp("Write log lines to this file (or FIFO) instead of standard error.", valueName: "path"))
    var logPath: String?

    @Option(name: .customLong("metrics-path"), help: ArgumentHelp("Write metrics as JSON lines to this file (or FIFO), as PUT /metrics does.", valueName: "path"))
    var metricsPath: String?

    @Option(name: .customLong("http-api-max-payload-size"), help: ArgumentHelp("Largest request body the API accepts, in bytes.", valueName: "bytes"))
    var maxPayload: Int = APIServer.defaultMaxBodyBytes

    @Flag(name: .customLong("no-seccomp"), help: "Do not install the syscall filter.")
    var noSeccomp = false

    /// Installs the filter before serving (tests: the API must work under it without a VM).
    @Flag(name: .customLong("debug-seccomp-now"), help: .hidden)
    var seccompNow = false

    /// Boots a simulated VM (no KVM, kernel files not read) so that schema checks reach every
    /// state of the API: Tests/schemathesis.sh.
    @Flag(name: .customLong("debug-simulated-vm"), help: .hidden)
    var simulatedVM = false

    var isLaunch: Bool { apiSock != nil || configFile != nil || noAPI }

    func validate() throws {
        if noAPI && configFile == nil {
            throw ValidationError("--no-api needs --config-file: with neither, nothing could configure or start the VM")
        }
        if noAPI && apiSock != nil { throw ValidationError("--no-api and --api-sock contradict each other; give one") }
        if !noAPI && apiSock == nil && configFile != nil {
            throw ValidationError("--config-file without --api-sock: add --api-sock PATH to serve the API, or --no-api")
        }
        if let level, LogSink.level(named:)(level) == nil {
            throw ValidationError("--level \(level): use Error, Warning, Info, Debug, Trace or Off")
        }
        if maxPayload < 1 { throw ValidationError("--http-api-max-payload-size \(maxPayload): must be at least 1") }
    }

    /// Runs the VMM until the VM ends (or, with no VM started, until SIGINT or SIGTERM). The main
    /// thread runs the main loop: the API, signals, the console and the watchdog.
    func launch(version: String) throws {
        // Before any other thread exists, so that every thread inherits the blocked signals and
        // only the loop's signalfd sees them.
        MainLoop.blockSignals(Self.signals)
        let loop: MainLoop
        do { loop = try MainLoop() } catch { throw RuntimeFailure(error.description) }
        let outcome = FirstOutcome()
        let finish: @Sendable (VMOutcome) -> Void = { result in
            if outcome.record(result) { loop.stop() }
        }
        let sink = LogSink(level: level.flatMap(LogSink.level(named:)) ?? .warning)
        LoggingSystem.bootstrap(sink.handler)
        if let logPath {
            do { try sink.configure(path: logPath) } catch { throw RuntimeFailure("--log-path \(logPath): \(error.message)") }
        }
        let simulated = simulatedVM
        let controller = VMController(id: id, vmmVersion: version, loop: loop, build: { configuration throws(MachineError) in
            if simulated { return SimulatedVM(cpus: configuration.cpus) }
            return try Machine(configuration, logger: Logger(label: "swiftlet"))
        }, serialOutput: { writeAll(STDOUT_FILENO, $0) }, forwardInput: true, seccomp: !noSeccomp, serveAPI: !noAPI,
            logSink: sink, files: simulated ? .none : .host,
            restore: { state, memory, base throws(MachineError) in
                if simulated { return SimulatedVM(cpus: 1) }
                return try Machine(restoringFrom: state, memoryPath: memory, base: base, logger: Logger(label: "swiftlet"))
            }, onExit: finish)
        do {
            try loop.handleSignals(Self.signals) { signal in
                if signal == SIGUSR1 {
                    printError(controller.vcpus().map { "vCPU \($0.id): \($0.run_state), \($0.mp_state ?? "-")" }.joined(separator: "\n"))
                } else if !controller.stopVM(.signal(signal)) {
                    finish(.signal(signal))
                }
            }
        } catch { throw RuntimeFailure(error.description) }
        if let metricsPath {
            do { try controller.putMetrics(MetricsBody(metrics_path: metricsPath)) } catch {
                throw RuntimeFailure("--metrics-path: \(error.message)")
            }
        }
        var server: APIServer?
        if let apiSock {
            do {
                server = try APIServer.start(path: apiSock, router: APIRouter(controller: controller), on: loop, maxBodyBytes: maxPayload)
            } catch {
                throw RuntimeFailure(error.description)
            }
        }
        defer { server?.shutdown() }
        if seccompNow {
            do { try SyscallFilter.install(serveAPI: true) } catch { throw RuntimeFailure(error.description) }
        }
        if let configFile {
            do throws(APIError) {
                try controller.apply(try ConfigFile.read(configFile))
                try controller.start()
            } catch {
                throw RuntimeFailure(error.message)
            }
        }
        loop.run()
        let result = outcome.value ?? .vmmError(vcpu: nil, message: "ended without a reason")
        if case .signal = result {} else if !result.isCleanExit {
            printError("swiftlet: \(result.summary)")
            if let dump = result.registerDump { printError(dump) }
        }
        server?.shutdown()
        server = nil
        throw ExitCode(result.exitStatus)
    }

    /// SIGINT and SIGTERM stop the VM; SIGUSR1 prints the vCPUs.
    static let signals = [SIGINT, SIGTERM, SIGUSR1]
}

/// Reads a Firecracker JSON configuration file, naming the file in every error.
enum ConfigFile {
    static func read(_ path: String) throws(APIError) -> VMConfigFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw APIError("\(path): cannot read the config file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw APIError("\(path): cannot read the config file: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 16 << 20 { throw APIError("\(path): the config file is larger than 16 MiB; is it the right file?") }
        }
        do { return try VMConfigFile.decode(bytes) } catch { throw APIError("\(path): \(error.message)") }
    }
}

/// The first reason the VMM ends with (the VM's end, or a signal before any VM ran).
final class FirstOutcome: Sendable {
    private let stored = Mutex<VMOutcome?>(nil)
    /// Records `outcome` if none was; true if this one was recorded.
    func record(_ outcome: VMOutcome) -> Bool {
        stored.withLock { value in
            guard value == nil else { return false }
            value = outcome
            return true
        }
    }
    var value: VMOutcome? { stored.withLock { $0 } }
}

import FoundationEssentials
import Logging
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Counters for `PUT /metrics`, written as one JSON object per line on `FlushMetrics` and every
/// 60 seconds: API requests by method and errors, exits by kind per vCPU, device counters.
public final class MetricsRecorder: Sendable {
    public static let flushInterval: Int64 = 60

    struct Counts {
        var fd: Int32 = -1
        var path: String?
        var requests: [String: Int] = [:]
        var errors = 0
        var serialBytes = 0
        var flushes = 0
    }

    private let counts = Mutex(Counts())

    public init() {}

    public var isOpen: Bool { counts.withLock { $0.fd >= 0 } }

    /// Opens (creating, appending) the metrics file; a FIFO is opened without blocking, as
    /// Firecracker does, so a reader may attach later.
    func open(path: String, with open: (String) -> Int32) throws(APIError) {
        let fd = open(path)
        guard fd >= 0 else {
            throw APIError("`metrics_path` \(path): cannot open: \(String(cString: strerror(-fd)))")
        }
        counts.withLock { $0.fd = fd; $0.path = path }
    }

    public func countRequest(method: String, failed: Bool) {
        counts.withLock {
            $0.requests[method, default: 0] += 1
            if failed { $0.errors += 1 }
        }
    }

    func countSerial(_ bytes: Int) { counts.withLock { $0.serialBytes += bytes } }

    struct Line: Encodable {
        struct API: Encodable { var requests: [String: Int]; var errors: Int }
        struct VCPU: Encodable { var id: Int; var exits: [String: Int] }
        struct Serial: Encodable { var tx_bytes: Int }
        struct Devices: Encodable { var serial: Serial }
        var utc_timestamp_ms: Int64
        var api_server: API
        var vcpus: [VCPU]
        var devices: Devices
    }

    /// Appends one line. Writes that would block (a FIFO nobody reads) are dropped, never waited for.
    public func flush(vcpus: [VCPUStatus]) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let (fd, line) = counts.withLock { c -> (Int32, Line) in
            c.flushes += 1
            return (c.fd, Line(utc_timestamp_ms: Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000,
                               api_server: .init(requests: c.requests, errors: c.errors),
                               vcpus: vcpus.map { .init(id: $0.id, exits: $0.exitCounts) },
                               devices: .init(serial: .init(tx_bytes: c.serialBytes))))
        }
        guard fd >= 0 else { return }
        writeAll(fd, encodeJSON(line) + [UInt8(ascii: "\n")])
    }
}

/// Where log lines go, changeable while running (`PUT /logger`): standard error until a
/// `log_path` is given. swift-log is bootstrapped once, with handlers that ask this sink.
public final class LogSink: Sendable {
    struct Settings {
        var fd: Int32 = STDERR_FILENO
        var level: Logger.Level
        var showLevel = true
        var showOrigin = false
        var module: String?
    }

    private let settings: Mutex<Settings>

    public init(level: Logger.Level = .warning) { settings = Mutex(Settings(level: level)) }

    public var level: Logger.Level { settings.withLock { $0.level } }

    /// Firecracker's level names (any case), mapped onto swift-log's.
    public static func level(named name: String) -> Logger.Level? {
        switch name.lowercased() {
        case "off": .critical
        case "error": .error
        case "warn", "warning": .warning
        case "info": .info
        case "debug": .debug
        case "trace": .trace
        default: nil
        }
    }

    /// Sends log lines to `path` from now on (`--log-path`).
    public func configure(path: String) throws(APIError) {
        try configure(LoggerBody(log_path: path), open: HostFiles.host.openForAppend)
    }

    func configure(_ body: LoggerBody, open: (String) -> Int32) throws(APIError) {
        var level: Logger.Level?
        if let name = body.level {
            guard let known = Self.level(named: name) else {
                throw APIError("`level` \"\(name)\": use Error, Warning, Info, Debug, Trace or Off")
            }
            level = known
        }
        var fd: Int32?
        if let path = body.log_path {
            let opened = open(path)
            guard opened >= 0 else { throw APIError("`log_path` \(path): cannot open: \(String(cString: strerror(-opened)))") }
            fd = opened
        }
        settings.withLock { s in
            if let fd {
                if s.fd != STDERR_FILENO { close(s.fd) }
                s.fd = fd
            }
            if let level { s.level = level }
            if let show = body.show_level { s.showLevel = show }
            if let show = body.show_log_origin { s.showOrigin = show }
            if let module = body.module { s.module = module }
        }
    }

    /// A handler for `LoggingSystem.bootstrap`.
    public func handler(label: String) -> any LogHandler { SinkHandler(label: label, sink: self) }

    func write(label: String, level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata,
               file: String, line: UInt) {
        let s = settings.withLock { $0 }
        guard level >= s.level, s.module.map({ label.hasPrefix($0) }) ?? true else { return }
        var text = ""
        if s.showLevel { text += "[\(level)] " }
        if s.showOrigin { text += "\(file.split(separator: "/").last ?? ""):\(line) " }
        text += "\(label): \(message)"
        if !metadata.isEmpty {
            text += " " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        writeAll(s.fd, Array((text + "\n").utf8))
    }
}

struct SinkHandler: LogHandler {
    let label: String
    let sink: LogSink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level {
        get { sink.level }
        set {}
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        sink.write(label: label, level: event.level, message: event.message,
                   metadata: metadata.merging(event.metadata ?? [:]) { $1 }, file: event.file, line: event.line)
    }
}

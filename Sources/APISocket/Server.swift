import API
import CSwiftletSystem
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The API over HTTP/1.1 on a Unix domain socket, served by the VMM's main loop (`MainLoop`: one
/// epoll set that also serves the console, signals and the watchdog). The socket and its
/// connections are the loop's descriptors; SwiftNIO's HTTP/1.1 codec (the server pipeline, run
/// in an `EmbeddedChannel` per connection) turns their bytes into requests and answers into bytes.
///
/// Requests from every connection are routed on the loop's thread, one at a time, so the VM sees
/// one request at a time. A request that waits for the vCPUs (a pause, a status read) holds the
/// loop for that long: other clients wait their turn, which is the serialisation Firecracker's
/// API has too.
public final class APIServer: Sendable {
    /// Firecracker's default `--http-api-max-payload-size`.
    public static let defaultMaxBodyBytes = 51_200
    /// Connections beyond this are closed as soon as they are accepted.
    static let maxConnections = 64
    /// A client that sends requests without reading the answers is not read from beyond this.
    static let maxPendingOutput = 1 << 20

    public let path: String
    let loop: MainLoop
    let listener: Int32
    let state = Mutex(ServerState())
    let router: APIRouter
    let maxBodyBytes: Int
    let logger: Logger

    struct ServerState {
        var connections: [Int32: Connection] = [:]
        var metricsTimer: MainLoop.Timer?
        var closed = false
    }

    /// Binds `path` (mode 0600) and serves it on `loop`. A path that is a live socket is refused,
    /// a stale one (nobody accepting) replaced, anything else refused.
    public static func start(path: String, router: APIRouter, on loop: MainLoop, maxBodyBytes: Int = defaultMaxBodyBytes,
                             logger: Logger = Logger(label: "swiftlet.api")) throws(APIServerError) -> APIServer {
        try SocketPath.prepare(path)
        var address = sockaddr_un()
        guard SocketPath.fill(&address, path) else { throw SocketPath.tooLong(path) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .bind(path: path, reason: String(cString: strerror(errno))) }
        // umask, not chmod after bind: no moment when another user could connect.
        let old = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let error = errno
        umask(old)
        guard bound == 0, listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw .bind(path: path, reason: String(cString: strerror(bound == 0 ? errno : error)))
        }
        let server = APIServer(path: path, loop: loop, listener: fd, router: router, maxBodyBytes: maxBodyBytes, logger: logger)
        do {
            try loop.watch(fd, for: .readable) { [server] _ in server.accept() }
            let period = UInt64(MetricsRecorder.flushInterval) * 1_000_000_000
            let timer = try loop.schedule(after: period, every: period) { [router] in
                let controller = router.controller
                if controller.metrics.isOpen {
                    controller.metrics.flush(vcpus: controller.vmState == .notStarted ? [] : controller.vcpuStatus())
                }
            }
            server.state.withLock { $0.metricsTimer = timer }
        } catch {
            server.shutdown()
            throw .bind(path: path, reason: error.description)
        }
        return server
    }

    private init(path: String, loop: MainLoop, listener: Int32, router: APIRouter, maxBodyBytes: Int, logger: Logger) {
        self.path = path; self.loop = loop; self.listener = listener; self.router = router
        self.maxBodyBytes = maxBodyBytes; self.logger = logger
    }

    /// Stops listening, closes every connection and removes the socket; from any thread (the
    /// work is done on the loop's thread while it runs).
    public func shutdown() {
        loop.perform { [self] in closeAll() }
    }

    private func closeAll() {
        let (connections, timer, first) = state.withLock { s -> ([Connection], MainLoop.Timer?, Bool) in
            guard !s.closed else { return ([], nil, false) }
            s.closed = true
            defer { s.connections = [:] }
            return (Array(s.connections.values), s.metricsTimer, true)
        }
        guard first else { return }
        if let timer { loop.cancel(timer) }
        loop.unwatch(listener)
        Glibc.close(listener)
        unlink(path)
        for connection in connections { connection.close() }
    }

    private func accept() {
        while true {
            let fd = cswiftlet_accept(listener)
            if fd < 0 { return }   // EAGAIN: all taken; other errors: the next readiness retries
            let full = state.withLock { $0.connections.count >= Self.maxConnections || $0.closed }
            if full {
                Glibc.close(fd)
                continue
            }
            do {
                let connection = try Connection(fd: fd, server: self)
                state.withLock { $0.connections[fd] = connection }
                try loop.watch(fd, for: .readable) { [connection] events in connection.ready(events) }
            } catch {
                logger.debug("API connection refused", metadata: ["error": "\(error)"])
                state.withLock { _ = $0.connections.removeValue(forKey: fd) }
                Glibc.close(fd)
            }
        }
    }

    func forget(_ fd: Int32) { state.withLock { _ = $0.connections.removeValue(forKey: fd) } }
}

public enum APIServerError: Error, CustomStringConvertible {
    case live(path: String)
    case notASocket(path: String)
    case bind(path: String, reason: String)

    public var description: String {
        switch self {
        case let .live(path): "--api-sock \(path): another process is serving on this socket; stop it or choose another path"
        case let .notASocket(path): "--api-sock \(path): the path exists and is not a socket; remove it or choose another path"
        case let .bind(path, reason): "--api-sock \(path): cannot listen: \(reason)"
        }
    }
}

extension APIServer {
    /// The checks `start` makes on `path` before binding, without touching it: for callers that
    /// want a bad path refused before anything else is set up.
    public static func check(path: String) throws(APIServerError) {
        var address = sockaddr_un()
        guard SocketPath.fill(&address, path) else { throw SocketPath.tooLong(path) }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }   // nothing there
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path: path) }
        if SocketPath.isLive(path) { throw .live(path: path) }
    }
}

/// Checks an API socket path before binding.
enum SocketPath {
    /// `APIServer.check`, then a stale socket (its server gone) removed.
    static func prepare(_ path: String) throws(APIServerError) {
        try APIServer.check(path: path)
        unlink(path)
    }

    static func tooLong(_ path: String) -> APIServerError {
        .bind(path: path, reason: "the path is longer than a Unix socket address allows (107 bytes)")
    }

    static func fill(_ address: inout sockaddr_un, _ path: String) -> Bool {
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return true
    }

    /// True if something accepts connections on the socket at `path`.
    static func isLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        guard fill(&address, path) else { return false }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }
}

/// One client connection, on the loop's thread only: bytes read go through the HTTP codec and
/// the handler; the answers' bytes are written back, the rest kept until the socket takes them.
final class Connection: @unchecked Sendable {   // confined to the main loop's thread
    let fd: Int32
    unowned let server: APIServer
    let channel: EmbeddedChannel
    private var output: [UInt8] = []
    /// Reused for every read (a request rarely needs more than one).
    private var input = [UInt8](repeating: 0, count: 65536)
    private var closed = false
    private var wantsWrite = false

    init(fd: Int32, server: APIServer) throws {
        self.fd = fd
        self.server = server
        channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(
            HTTPHandler(router: server.router, maxBodyBytes: server.maxBodyBytes, logger: server.logger))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/swiftlet-api")).wait()
    }

    func ready(_ events: MainLoop.Events) {
        if events.contains(.writable) { flush() }
        if events.contains(.readable) || events.contains(.hangUp) || events.contains(.error) { read() }
    }

    private func read() {
        guard !closed else { return }
        let n = input.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        guard n > 0 else { close(); return }   // the client hung up (mid-request or not)
        do {
            try channel.writeInbound(channel.allocator.buffer(bytes: input[0..<n]))
        } catch {
            server.logger.debug("API request error", metadata: ["error": "\(error)"])
        }
        channel.embeddedEventLoop.run()
        collect()
        flush()
    }

    /// Takes what the pipeline wrote.
    private func collect() {
        while let part = try? channel.readOutbound(as: IOData.self) {
            switch part {
            case let .byteBuffer(buffer): output += buffer.readableBytesView
            case .fileRegion: break   // never written by the handler
            }
        }
    }

    private func flush() {
        while !output.isEmpty {
            let n = output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n > 0 { output.removeFirst(n); continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { break }
            close()
            return
        }
        if output.isEmpty && !channel.isActive { close(); return }
        let events: MainLoop.Events = output.isEmpty ? .readable
            : output.count > APIServer.maxPendingOutput ? .writable : [.readable, .writable]
        if events.contains(.writable) != wantsWrite || output.count > APIServer.maxPendingOutput {
            server.loop.change(fd, to: events)
            wantsWrite = events.contains(.writable)
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        server.loop.unwatch(fd)
        Glibc.close(fd)
        server.forget(fd)
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }
}

/// Collects a request (head and body, up to the size limit), has the router answer it, writes
/// the answer. A client that hangs up mid-request only loses its own request.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let router: APIRouter
    let maxBodyBytes: Int
    let logger: Logger
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var refused = false

    init(router: APIRouter, maxBodyBytes: Int, logger: Logger) {
        self.router = router; self.maxBodyBytes = maxBodyBytes; self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(request):
            head = request
            body = []
            refused = false
            if let length = request.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                refuseOversize(context: context, size: length)
            }
        case var .body(chunk):
            guard !refused else { return }
            if body.count + chunk.readableBytes > maxBodyBytes {
                refuseOversize(context: context, size: body.count + chunk.readableBytes)
                return
            }
            body += chunk.readBytes(length: chunk.readableBytes) ?? []
        case .end:
            guard !refused, let head else { return }
            self.head = nil
            let request = APIRequest(method: head.method.rawValue, uri: head.uri, body: body)
            body = []
            write(router.handle(request), keepAlive: head.isKeepAlive, context: context)
        }
    }

    /// Firecracker's answer to a body over the limit: 400 with a fault message, then the
    /// connection is closed (the rest of the body is not read).
    private func refuseOversize(context: ChannelHandlerContext, size: Int) {
        refused = true
        let response = APIResponse.fault(APIError(
            "Request payload with size \(size) is larger than the limit of \(maxBodyBytes) allowed by server."))
        write(response, keepAlive: false, context: context)
    }

    private func write(_ response: APIResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Server", value: "Swiftlet API")
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        if !response.body.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if !keepAlive { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("API connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

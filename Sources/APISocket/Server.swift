import API
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The API over HTTP/1.1 on a Unix domain socket, served by SwiftNIO on one event loop (epoll,
/// with an eventfd for wake-ups and a timerfd for its timers: the periodic metrics flush).
/// Requests from every connection are routed on that one loop thread, one at a time, so the VM sees
/// one request at a time and no request waits for a thread hand-off. A request that waits for the
/// vCPUs (a pause, a status read) holds the loop for that long: other clients wait their turn,
/// which is the serialisation Firecracker's API has too.
public final class APIServer: Sendable {
    /// Firecracker's default `--http-api-max-payload-size`.
    public static let defaultMaxBodyBytes = 51_200

    public let path: String
    let channel: any Channel
    let group: MultiThreadedEventLoopGroup
    let metricsTask: RepeatedTask?

    /// Binds `path` (mode 0600) and starts serving. A path that is a live socket is refused, a
    /// stale one (nobody accepting) replaced, anything else refused.
    public static func start(path: String, router: APIRouter, maxBodyBytes: Int = defaultMaxBodyBytes,
                             logger: Logger = Logger(label: "swiftlet.api")) throws(APIServerError) -> APIServer {
        try SocketPath.prepare(path)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true,
                                                                                    withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPHandler(router: router, maxBodyBytes: maxBodyBytes, logger: logger))
                }
            }
        let channel: any Channel
        do {
            // umask, not chmod after bind: no moment when another user could connect.
            let old = umask(0o177)
            defer { umask(old) }
            channel = try bootstrap.bind(unixDomainSocketPath: path).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw .bind(path: path, reason: "\(error)")
        }
        let metrics = router.controller.metrics
        let controller = router.controller
        let task = group.next().scheduleRepeatedTask(initialDelay: .seconds(MetricsRecorder.flushInterval),
                                                     delay: .seconds(MetricsRecorder.flushInterval)) { _ in
            if metrics.isOpen { metrics.flush(vcpus: controller.vmState == .notStarted ? [] : controller.vcpuStatus()) }
        }
        return APIServer(path: path, channel: channel, group: group, metricsTask: task)
    }

    private init(path: String, channel: any Channel, group: MultiThreadedEventLoopGroup, metricsTask: RepeatedTask?) {
        self.path = path; self.channel = channel; self.group = group; self.metricsTask = metricsTask
    }

    /// Stops listening and removes the socket. `graceful` also closes every connection and ends
    /// the server's threads; a process about to exit skips that, because NIO completes a graceful
    /// shutdown on a libdispatch worker thread, and the syscall filter forbids new threads.
    public func shutdown(graceful: Bool = true) {
        metricsTask?.cancel()
        try? channel.close().wait()
        unlink(path)
        guard graceful else { return }
        try? group.syncShutdownGracefully()
    }
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

/// Checks an API socket path before binding.
enum SocketPath {
    static func prepare(_ path: String) throws(APIServerError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }   // nothing there
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path: path) }
        if isLive(path) { throw .live(path: path) }
        unlink(path)   // stale: its server is gone
    }

    /// True if something accepts connections on the socket at `path`.
    static func isLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }
}

/// One connection: collects a request (head and body, up to the size limit), has the router
/// answer it, writes the answer. A client that hangs up mid-request only
/// loses its own request.
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
        let done = context.writeAndFlushPromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("API connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

extension ChannelHandlerContext {
    func writeAndFlushPromise() -> EventLoopPromise<Void> { eventLoop.makePromise() }
}

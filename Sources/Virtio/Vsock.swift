import CSwiftletSystem
import EventLoop
import GuestMemory
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A vsock back end that cannot be set up, naming the socket path and what to fix.
public struct VsockError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "vsock socket \(path): \(problem)" }
}

/// One packet's header (`struct virtio_vsock_hdr`, VIRTIO 1.2 §5.10.6: 44 bytes, little-endian).
public struct VsockHeader: Equatable, Sendable {
    public static let size = 44
    public enum Op {
        public static let request: UInt16 = 1, response: UInt16 = 2, reset: UInt16 = 3, shutdown: UInt16 = 4
        public static let rw: UInt16 = 5, creditUpdate: UInt16 = 6, creditRequest: UInt16 = 7
    }
    public static let typeStream: UInt16 = 1
    /// SHUTDOWN flags: the sender will receive (RCV) or send (SEND) no more.
    public static let shutdownReceive: UInt32 = 1, shutdownSend: UInt32 = 2

    public var srcCID: UInt64 = 0, dstCID: UInt64 = 0
    public var srcPort: UInt32 = 0, dstPort: UInt32 = 0
    public var length: UInt32 = 0
    public var type: UInt16 = typeStream
    public var op: UInt16 = 0
    public var flags: UInt32 = 0
    public var bufAlloc: UInt32 = 0, fwdCnt: UInt32 = 0

    public init(srcCID: UInt64 = 0, dstCID: UInt64 = 0, srcPort: UInt32 = 0, dstPort: UInt32 = 0, length: UInt32 = 0,
                type: UInt16 = typeStream, op: UInt16 = 0, flags: UInt32 = 0, bufAlloc: UInt32 = 0, fwdCnt: UInt32 = 0) {
        self.srcCID = srcCID; self.dstCID = dstCID; self.srcPort = srcPort; self.dstPort = dstPort; self.length = length
        self.type = type; self.op = op; self.flags = flags; self.bufAlloc = bufAlloc; self.fwdCnt = fwdCnt
    }

    public init?(_ b: [UInt8]) {
        guard b.count >= Self.size else { return nil }
        func le<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
            (0..<MemoryLayout<T>.size).reduce(T(0)) { $0 | T(b[at + $1]) << (8 * $1) }
        }
        srcCID = le(0, UInt64.self); dstCID = le(8, UInt64.self)
        srcPort = le(16, UInt32.self); dstPort = le(20, UInt32.self); length = le(24, UInt32.self)
        type = le(28, UInt16.self); op = le(30, UInt16.self); flags = le(32, UInt32.self)
        bufAlloc = le(36, UInt32.self); fwdCnt = le(40, UInt32.self)
    }

    public var bytes: [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(Self.size)
        func put<T: FixedWidthInteger>(_ v: T) { for i in 0..<MemoryLayout<T>.size { b.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        put(srcCID); put(dstCID); put(srcPort); put(dstPort); put(length); put(type); put(op); put(flags); put(bufAlloc); put(fwdCnt)
        return b
    }
}

/// The socket device (VIRTIO 1.2 §5.10), stream sockets only, with Firecracker's host side: a
/// Unix socket at `udsPath` where a host program connects and writes `CONNECT <port>\n` to reach
/// the guest's port (answered `OK <host port>\n` once the guest accepts), and for each guest
/// connection to host port P a connection to the Unix socket `<udsPath>_P`. Flow control is the
/// spec's credit scheme: the device never sends the guest more than its advertised buffer space,
/// and refuses (RST) a guest that sends more than Swiftlet's.
public final class VsockDevice: VirtioDevice {
    public static let hostCID: UInt64 = 2
    public static let queueSize: UInt16 = 256
    /// The receive space Swiftlet advertises per connection (buf_alloc).
    public static let bufferSpace: UInt32 = 256 << 10
    /// At most this much payload in one packet to the guest.
    static let maxPayload = 64 << 10
    static let maxConnections = 1024
    /// Host ports Swiftlet gives to host-initiated connections start here.
    static let firstLocalPort: UInt32 = 1 << 30
    public enum Feature { public static let stream: UInt64 = 1 << 0 }
    public enum Queue { public static let receive = 0, transmit = 1, event = 2 }

    /// A connection: host port (`local`) and guest port (`peer`).
    struct Key: Hashable { var local: UInt32, peer: UInt32 }

    final class Connection {
        let fd: Int32
        let key: Key
        /// Waiting for the guest's RESPONSE to a host-initiated REQUEST.
        var connecting: Bool
        /// Host to guest: what the guest can take (its buf_alloc and fwd_cnt), what was sent.
        var peerBufAlloc: UInt32 = 0, peerFwdCnt: UInt32 = 0, sent: UInt32 = 0
        /// Guest to host: bytes written to the host socket, and the count last told the guest.
        var forwarded: UInt32 = 0, advertised: UInt32 = 0
        /// Guest data the host socket has not taken yet (within Swiftlet's credit).
        var outbound: [UInt8] = []
        /// Host data read and not yet in a guest buffer.
        var inbound: [UInt8] = []
        /// The host socket may have data (it said so and reading has not yet hit EAGAIN).
        var hostReadable = false
        /// The host closed its side: a SHUTDOWN went to the guest; no more reading.
        var hostEnded = false
        /// The guest will send no more (SHUTDOWN SEND).
        var guestEnded = false
        init(fd: Int32, key: Key, connecting: Bool) { self.fd = fd; self.key = key; self.connecting = connecting }

        var credit: Int { Int(peerBufAlloc) - Int(sent &- peerFwdCnt) }
    }

    struct State {
        var active = false
        var context: DeviceContext?
        var connections: [Key: Connection] = [:]
        /// Packets without payload for the guest, in order.
        var control: [VsockHeader] = []
        /// Accepted host sockets still sending their CONNECT line.
        var greeting: [Int32: [UInt8]] = [:]
        var nextLocalPort = firstLocalPort
    }

    public let guestCID: UInt64
    public let udsPath: String
    let listener: Int32
    let state = Mutex(State())
    let logger: Logger

    /// Listens at `udsPath` (which must not exist yet).
    public init(guestCID: UInt64, udsPath: String, logger: Logger = Logger(label: "swiftlet.vsock")) throws(VsockError) {
        guard guestCID >= 3, guestCID <= UInt64(UInt32.max) - 1 else {
            throw VsockError(path: udsPath, problem: "guest_cid \(guestCID) is reserved; use 3 or more")
        }
        guard udsPath.utf8.count < 100 else { throw VsockError(path: udsPath, problem: "the path is longer than a Unix socket address allows (107 bytes)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw VsockError(path: udsPath, problem: "socket: \(String(cString: strerror(errno)))") }
        guard Self.withAddress(udsPath, { bind(fd, $0, $1) }) == 0, listen(fd, 64) == 0 else {
            let code = errno
            close(fd)
            let hint = code == EADDRINUSE ? " (remove the old socket file first)" : ""
            throw VsockError(path: udsPath, problem: "cannot listen there: \(String(cString: strerror(code)))\(hint)")
        }
        self.guestCID = guestCID
        self.udsPath = udsPath
        self.listener = fd
        self.logger = logger
    }

    deinit {
        close(listener)
        unlink(udsPath)   // the socket file this device made
        state.withLock { s in
            for connection in s.connections.values { close(connection.fd) }
            for fd in s.greeting.keys { close(fd) }
        }
    }

    static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    public var deviceID: UInt32 { 19 }
    public var deviceFeatures: UInt64 { Feature.stream }
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize, Self.queueSize] }
    /// `struct virtio_vsock_config` (§5.10.4): guest_cid.
    public func readConfig(offset: Int, size: Int) -> UInt32 {
        Self.configValue((0..<8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * UInt64($0))) }, offset: offset, size: size)
    }

    public func attach(_ context: DeviceContext) {
        state.withLock { $0.context = context }
        try? context.loop.watch(listener, for: .readable) { [weak self] _ in self?.acceptHost() }
    }

    public func activate(features: UInt64) { state.withLock { $0.active = true } }

    /// Every connection ends: a reset guest knows none of them.
    public func reset() {
        state.withLock { s in
            for connection in s.connections.values { drop(connection, &s) }
            s.control = []
            s.active = false
        }
    }

    private func drop(_ connection: Connection, _ s: inout State) {
        s.context?.loop.unwatch(connection.fd)
        close(connection.fd)
        s.connections[connection.key] = nil
    }

    private func header(_ op: UInt16, _ key: Key, _ s: State, flags: UInt32 = 0, length: UInt32 = 0) -> VsockHeader {
        VsockHeader(srcCID: Self.hostCID, dstCID: guestCID, srcPort: key.local, dstPort: key.peer, length: length, op: op,
                    flags: flags, bufAlloc: Self.bufferSpace, fwdCnt: s.connections[key]?.forwarded ?? 0)
    }

    // MARK: The host side (on the worker)

    private func acceptHost() {
        while true {
            let fd = cswiftlet_accept(listener)
            guard fd >= 0 else { return }
            let context = state.withLock { s -> DeviceContext? in
                guard s.greeting.count + s.connections.count < Self.maxConnections else { return nil }
                s.greeting[fd] = []
                return s.context
            }
            guard let context else { close(fd); continue }
            try? context.loop.watch(fd, for: .readable) { [weak self] _ in self?.readGreeting(fd) }
        }
    }

    /// Reads `CONNECT <port>\n`; then asks the guest (REQUEST) and waits for its answer.
    private func readGreeting(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
        let process = state.withLock { s -> DeviceContext? in
            guard var line = s.greeting[fd] else { return nil }
            func refuse() -> DeviceContext? {
                s.greeting[fd] = nil
                s.context?.loop.unwatch(fd)
                close(fd)
                return nil
            }
            guard n > 0 else { return refuse() }
            line += buffer[0..<n]
            guard let end = line.firstIndex(of: UInt8(ascii: "\n")) else {
                if line.count > 32 { return refuse() }
                s.greeting[fd] = line
                return nil
            }
            let text = String(decoding: line[..<end], as: UTF8.self)
            let words = text.split(separator: " ")
            guard end == line.count - 1, words.count == 2, words[0] == "CONNECT", let port = UInt32(words[1]) else { return refuse() }
            s.greeting[fd] = nil
            s.context?.loop.change(fd, to: [])   // nothing read until the guest accepts
            var local = s.nextLocalPort
            while s.connections.keys.contains(where: { $0.local == local }) { local &+= 1 }
            s.nextLocalPort = max(local &+ 1, Self.firstLocalPort)
            let key = Key(local: local, peer: port)
            let connection = Connection(fd: fd, key: key, connecting: true)
            s.connections[key] = connection
            s.context?.loop.unwatch(fd)
            try? s.context?.loop.watch(fd, for: []) { [weak self] events in self?.hostEvent(key, events) }
            s.control.append(header(VsockHeader.Op.request, key, s))
            return s.context
        }
        process?.process(Queue.receive)
    }

    /// A host socket is readable (or hung up): its data waits for guest buffers and credit.
    private func hostEvent(_ key: Key, _ events: MainLoop.Events) {
        let context = state.withLock { s -> DeviceContext? in
            guard let connection = s.connections[key] else { return nil }
            if connection.connecting && !events.intersection([.hangUp, .error]).isEmpty {
                s.control.append(header(VsockHeader.Op.reset, key, s))
                drop(connection, &s)
                return s.context
            }
            if events.contains(.writable) { flush(connection, &s) }
            if events.contains(.readable) || events.contains(.hangUp) {
                connection.hostReadable = true
            }
            watch(connection, s)
            return s.context
        }
        context?.process(Queue.receive)
    }

    /// Watches what the connection waits for: readable while the host may send and the guest
    /// has credit and nothing read is waiting; writable while guest data is held.
    private func watch(_ connection: Connection, _ s: State) {
        guard let loop = s.context?.loop else { return }
        if connection.hostEnded && connection.outbound.isEmpty {
            loop.unwatch(connection.fd)   // a hang-up would be reported for ever; the guest's RST ends it
            return
        }
        var events: MainLoop.Events = []
        if !connection.connecting && !connection.hostEnded && !connection.hostReadable && connection.inbound.isEmpty {
            events.insert(.readable)
        }
        if !connection.outbound.isEmpty { events.insert(.writable) }
        loop.change(connection.fd, to: events)
    }

    /// Writes held guest data to the host socket.
    private func flush(_ connection: Connection, _ s: inout State) {
        while !connection.outbound.isEmpty {
            let n = connection.outbound.withUnsafeBytes { send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                connection.outbound.removeFirst(n)
                connection.forwarded &+= UInt32(n)
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { break }
            // The host side is gone: the guest hears RST.
            s.control.append(header(VsockHeader.Op.reset, connection.key, s))
            drop(connection, &s)
            return
        }
        if connection.outbound.isEmpty && connection.guestEnded { shutdown(connection.fd, Int32(SHUT_WR)) }
        // Tell the guest about freed space before it could run out (half the buffer).
        if connection.forwarded &- connection.advertised >= Self.bufferSpace / 2 {
            connection.advertised = connection.forwarded
            s.control.append(header(VsockHeader.Op.creditUpdate, connection.key, s))
        }
    }

    // MARK: The queues

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        switch index {
        case Queue.transmit:
            let used = try transmit(&queue, memory)
            // Answers to what the guest sent go out at once.
            state.withLock { $0.context }?.process(Queue.receive)
            return used
        case Queue.receive: return try receive(&queue, memory)
        default: return false   // the event queue: Swiftlet sends no events (no transport reset without migration)
        }
    }

    /// Guest to host.
    private func transmit(_ queue: inout Virtqueue, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        while let chain = try queue.pop(from: memory) {
            let bytes = DescriptorChain.gather(chain.readable, count: VsockHeader.size + Self.maxPayload, memory: memory)
            if let header = VsockHeader(bytes) {
                let payload = Array(bytes.dropFirst(VsockHeader.size).prefix(Int(header.length)))
                state.withLock { s in
                    if payload.count == Int(header.length) {
                        guest(header, payload, &s)
                    } else if header.srcCID == guestCID && header.op != VsockHeader.Op.reset {
                        // A length the buffers do not hold: the connection cannot go on.
                        let key = Key(local: header.dstPort, peer: header.srcPort)
                        s.control.append(self.header(VsockHeader.Op.reset, key, s))
                        if let connection = s.connections[key] { drop(connection, &s) }
                    }
                }
            }
            try queue.push(head: chain.head, written: 0, to: memory)
            used = true
        }
        return used
    }

    /// One packet from the guest.
    private func guest(_ h: VsockHeader, _ payload: [UInt8], _ s: inout State) {
        let key = Key(local: h.dstPort, peer: h.srcPort)
        // Packets not from this guest, or not to the host: dropped (§5.10.6.4: a device ignores them).
        guard h.srcCID == guestCID, h.dstCID == Self.hostCID else { return }
        guard h.type == VsockHeader.typeStream else {
            if h.op != VsockHeader.Op.reset { s.control.append(header(VsockHeader.Op.reset, key, s)) }
            return
        }
        let connection = s.connections[key]
        if let connection {   // the guest's credit comes with every packet
            connection.peerBufAlloc = h.bufAlloc
            connection.peerFwdCnt = h.fwdCnt
        }
        switch h.op {
        case VsockHeader.Op.request:
            guard connection == nil else {
                s.control.append(header(VsockHeader.Op.reset, key, s))
                return
            }
            connectToHost(key, h, &s)
        case VsockHeader.Op.response:
            guard let connection, connection.connecting else {
                if connection == nil { s.control.append(header(VsockHeader.Op.reset, key, s)) }
                return
            }
            connection.connecting = false
            let reply = Array("OK \(key.local)\n".utf8)
            connection.outbound = reply
            connection.forwarded &-= UInt32(reply.count)   // not guest data: not counted as forwarded
            flush(connection, &s)
            if s.connections[key] != nil { watch(connection, s) }
        case VsockHeader.Op.rw:
            guard let connection, !connection.connecting else {
                s.control.append(header(VsockHeader.Op.reset, key, s))
                return
            }
            guard connection.outbound.count + payload.count <= Int(Self.bufferSpace), !connection.guestEnded else {
                // More than the credit Swiftlet gave, or data after its own SHUTDOWN: refused.
                s.control.append(header(VsockHeader.Op.reset, key, s))
                drop(connection, &s)
                return
            }
            connection.outbound += payload
            flush(connection, &s)
            if s.connections[key] != nil { watch(connection, s) }
        case VsockHeader.Op.shutdown:
            guard let connection else { return }
            if h.flags & VsockHeader.shutdownSend != 0 { connection.guestEnded = true }
            if h.flags & (VsockHeader.shutdownSend | VsockHeader.shutdownReceive) == VsockHeader.shutdownSend | VsockHeader.shutdownReceive {
                // Both directions closed: the connection ends; the guest waits for our RST.
                flush(connection, &s)
                if s.connections[key] != nil {
                    s.control.append(header(VsockHeader.Op.reset, key, s))
                    drop(connection, &s)
                }
            } else if connection.outbound.isEmpty && connection.guestEnded {
                shutdown(connection.fd, Int32(SHUT_WR))
            }
        case VsockHeader.Op.reset:
            if let connection { drop(connection, &s) }
        case VsockHeader.Op.creditRequest:
            if connection != nil {
                connection!.advertised = connection!.forwarded
                s.control.append(header(VsockHeader.Op.creditUpdate, key, s))
            } else {
                s.control.append(header(VsockHeader.Op.reset, key, s))
            }
        case VsockHeader.Op.creditUpdate:
            break   // the credit was taken above; the receive pass sends what it now allows
        default:
            s.control.append(header(VsockHeader.Op.reset, key, s))
        }
    }

    /// The guest connects to host port P: Swiftlet connects to `<udsPath>_P`.
    private func connectToHost(_ key: Key, _ h: VsockHeader, _ s: inout State) {
        guard s.connections.count + s.greeting.count < Self.maxConnections else {
            s.control.append(header(VsockHeader.Op.reset, key, s))
            return
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, Self.withAddress("\(udsPath)_\(key.local)", { connect(fd, $0, $1) }) == 0,
              fcntl(fd, F_SETFL, O_NONBLOCK) == 0 else {
            if fd >= 0 { close(fd) }
            s.control.append(header(VsockHeader.Op.reset, key, s))
            return
        }
        let connection = Connection(fd: fd, key: key, connecting: false)
        connection.peerBufAlloc = h.bufAlloc
        connection.peerFwdCnt = h.fwdCnt
        s.connections[key] = connection
        do {
            try s.context?.loop.watch(fd, for: .readable) { [weak self] events in self?.hostEvent(key, events) }
        } catch {
            drop(connection, &s)
            s.control.append(header(VsockHeader.Op.reset, key, s))
            return
        }
        s.control.append(header(VsockHeader.Op.response, key, s))
    }

    /// Host to guest: control packets first, then data as the guest's credit allows.
    private func receive(_ queue: inout Virtqueue, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        let s = state.withLock { s -> State in s }   // the connections are shared objects; control is copied
        guard s.active else { return false }
        var sentControl = 0
        defer {
            state.withLock { t in
                t.control.removeFirst(min(sentControl, t.control.count))
                for connection in t.connections.values { watch(connection, t) }
            }
        }
        func deliver(_ header: VsockHeader, _ payload: ArraySlice<UInt8>) throws(VirtqueueError) -> Bool {
            guard let chain = try queue.pop(from: memory) else { return false }
            let written = chain.scatter(header.bytes + payload, memory: memory)
            try queue.push(head: chain.head, written: UInt32(written), to: memory)
            used = true
            return true
        }
        for header in s.control {
            guard try deliver(header, []) else { return used }
            sentControl += 1
        }
        // Data, connection by connection (a fresh look at the state for each).
        let keys = Array(s.connections.keys)
        for key in keys {
            while true {
                var packet: (VsockHeader, ArraySlice<UInt8>)?
                state.withLock { t in
                    guard let c = t.connections[key], !c.connecting else { return }
                    if c.inbound.isEmpty && c.hostReadable && !c.hostEnded && c.credit > 0 {
                        var buffer = [UInt8](repeating: 0, count: min(Self.maxPayload, c.credit))
                        let n = recv(c.fd, &buffer, buffer.count, 0)
                        if n > 0 {
                            c.inbound = Array(buffer[0..<n])
                        } else if n == 0 || !(errno == EAGAIN || errno == EINTR) {
                            c.hostEnded = true   // the host closed: the guest hears it will get no more
                            packet = (header(VsockHeader.Op.shutdown, key, t,
                                             flags: VsockHeader.shutdownSend | VsockHeader.shutdownReceive), [])
                            return
                        } else {
                            c.hostReadable = false
                        }
                    }
                    guard !c.inbound.isEmpty, c.credit > 0 else { return }
                    let size = min(c.inbound.count, c.credit)
                    packet = (header(VsockHeader.Op.rw, key, t, length: UInt32(size)), c.inbound[0..<size])
                }
                guard let (h, payload) = packet else { break }
                guard try deliver(h, payload) else {
                    if h.op == VsockHeader.Op.shutdown { state.withLock { $0.connections[key]?.hostEnded = false } }
                    return used
                }
                state.withLock { t in
                    guard let c = t.connections[key], h.op == VsockHeader.Op.rw else { return }
                    c.inbound.removeFirst(payload.count)
                    c.sent &+= UInt32(payload.count)
                    c.advertised = c.forwarded
                }
                if h.op == VsockHeader.Op.shutdown { break }
            }
        }
        return used
    }
}

import CSwiftletSystem
import EventLoop
import GuestMemory
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Virtio

/// A guest's vsock driver, by hand: receive buffers on queue 0, packets out on queue 1, and the
/// device's worker loop on a thread of its own.
final class VsockGuest: @unchecked Sendable {   // used from one test at a time
    static let cid: UInt64 = 3
    let device: VsockDevice
    let driver: TestDriver
    var rx: TestRing
    var tx: TestRing
    let loop: MainLoop
    let worker: Thread
    let directory: String
    var rxSeen = 0
    var txNext: UInt16 = 0

    init() throws {
        directory = "/tmp/swiftlet-vsock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(directory, 0o700)
        device = try VsockDevice(guestCID: Self.cid, udsPath: "\(directory)/v.sock")
        driver = try TestDriver(device: device)
        loop = try MainLoop()
        let transport = driver.transport
        device.attach(DeviceContext(loop: loop, transport: transport))
        let loop = loop
        worker = Thread { loop.run() }
        rx = TestRing(memory: driver.memory, base: 0x20000)
        tx = TestRing(memory: driver.memory, base: 0x21000)
        let event = TestRing(memory: driver.memory, base: 0x22000)
        driver.negotiate(features: VirtioFeature.version1 | VsockDevice.Feature.stream)
        driver.setUpQueue(0, desc: rx.desc, avail: rx.avail, used: rx.used)
        driver.setUpQueue(1, desc: tx.desc, avail: tx.avail, used: tx.used)
        driver.setUpQueue(2, desc: event.desc, avail: event.avail, used: event.used)
        driver.set(MMIOTransport.Register.status, 1 | 2 | 8 | 4)
        // Eight receive buffers of 4 KiB + header, as Linux gives.
        for i in 0..<8 { try giveReceiveBuffer(UInt16(i)) }
        driver.set(MMIOTransport.Register.queueNotify, 0)
    }

    func giveReceiveBuffer(_ index: UInt16) throws {
        try rx.descriptor(index, address: 0x40000 + 0x2000 * UInt64(index), length: 0x2000, flags: TestDriver.write)
        try rx.offer(index)
    }

    func stop() {
        loop.stop()
        worker.join()
        unlink(device.udsPath)
        rmdir(directory)
    }

    /// A packet from the guest (credit: 64 KiB, nothing consumed).
    func send(_ op: UInt16, port: UInt32, to hostPort: UInt32, payload: [UInt8] = [], flags: UInt32 = 0,
              type: UInt16 = VsockHeader.typeStream, fwdCnt: UInt32 = 0) throws {
        let header = VsockHeader(srcCID: Self.cid, dstCID: 2, srcPort: port, dstPort: hostPort, length: UInt32(payload.count),
                                 type: type, op: op, flags: flags, bufAlloc: 64 << 10, fwdCnt: fwdCnt)
        let index = txNext % 8
        let address = 0x30000 + 0x1000 * UInt64(index)
        try driver.memory.write(header.bytes + payload, at: GuestAddress(address))
        try tx.descriptor(index, address: address, length: UInt32(44 + payload.count), flags: 0)
        try tx.offer(index)
        txNext &+= 1
        driver.set(MMIOTransport.Register.queueNotify, 1)
    }

    /// The next packet the device put in a receive buffer (waiting up to a second); the buffer
    /// goes back to the device.
    func next() throws -> (VsockHeader, [UInt8])? {
        for _ in 0..<200 {
            if Int(try rx.usedIndex()) > rxSeen {
                let (id, length) = try rx.usedEntry(rxSeen % 8)
                rxSeen += 1
                let bytes = try driver.memory.read(at: GuestAddress(0x40000 + 0x2000 * UInt64(id)), count: Int(length))
                try giveReceiveBuffer(UInt16(id))
                driver.set(MMIOTransport.Register.queueNotify, 0)
                guard let header = VsockHeader(bytes) else { return nil }
                return (header, Array(bytes.dropFirst(44)))
            }
            usleep(5000)
        }
        return nil
    }
}

/// Host-side Unix socket helpers.
enum UnixSocket {
    static func listen(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        _ = VsockDevice.withAddress(path) { bind(fd, $0, $1) }
        Glibc.listen(fd, 4)
        return fd
    }
    static func connect(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard VsockDevice.withAddress(path, { Glibc.connect(fd, $0, $1) }) == 0 else { close(fd); return -1 }
        return fd
    }
    static func write(_ fd: Int32, _ text: String) { _ = text.utf8CString.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count - 1) } }
    /// Reads until `count` bytes or a second passes.
    static func read(_ fd: Int32, count: Int) -> String {
        var bytes: [UInt8] = []
        for _ in 0..<100 where bytes.count < count {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: count - bytes.count)
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

@Suite("virtio-vsock with Firecracker's host side", .serialized)
struct VsockTests {
    typealias Op = VsockHeader.Op

    @Test func headerRoundTrip() {
        let h = VsockHeader(srcCID: 3, dstCID: 2, srcPort: 7, dstPort: 9, length: 5, op: Op.rw, flags: 1, bufAlloc: 4096, fwdCnt: 12)
        #expect(h.bytes.count == 44)
        #expect(VsockHeader(h.bytes) == h)
        #expect(VsockHeader([UInt8](repeating: 0, count: 43)) == nil)
    }

    @Test func configurationSpaceHasTheGuestCID() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        #expect(g.driver.transport.read(offset: 0x100, size: 4) == 3)
        #expect(g.driver.transport.read(offset: 0x104, size: 4) == 0)
        #expect(throws: VsockError.self) { try VsockDevice(guestCID: 2, udsPath: "/tmp/x") }
        #expect(throws: VsockError.self) { try VsockDevice(guestCID: 4, udsPath: g.device.udsPath) }   // in use
    }

    @Test func theGuestConnectsToAHostPort() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        let listener = UnixSocket.listen("\(g.device.udsPath)_5000")
        defer { close(listener) }
        try g.send(Op.request, port: 1234, to: 5000)
        let response = try #require(try g.next())
        #expect(response.0.op == Op.response)
        #expect(response.0.srcPort == 5000 && response.0.dstPort == 1234 && response.0.dstCID == 3 && response.0.srcCID == 2)
        #expect(response.0.bufAlloc == VsockDevice.bufferSpace)
        let host = accept(listener, nil, nil)
        defer { close(host) }
        try g.send(Op.rw, port: 1234, to: 5000, payload: Array("ping".utf8))
        #expect(UnixSocket.read(host, count: 4) == "ping")
        UnixSocket.write(host, "pong")
        let data = try #require(try g.next())
        #expect(data.0.op == Op.rw && data.1 == Array("pong".utf8) && data.0.length == 4)
        // The guest closes both ways: RST, and the host sees the end.
        try g.send(Op.shutdown, port: 1234, to: 5000, flags: 3, fwdCnt: 4)
        let reset = try #require(try g.next())
        #expect(reset.0.op == Op.reset)
        #expect(UnixSocket.read(host, count: 1) == "")
    }

    @Test func noListenerMeansReset() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        try g.send(Op.request, port: 1, to: 6000)
        #expect(try g.next()?.0.op == Op.reset)
        try g.send(Op.rw, port: 1, to: 6000, payload: [1, 2, 3])   // no such connection
        #expect(try g.next()?.0.op == Op.reset)
    }

    @Test func theHostConnectsToAGuestPort() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        let host = UnixSocket.connect(g.device.udsPath)
        #expect(host >= 0)
        defer { close(host) }
        UnixSocket.write(host, "CONNECT 52\n")
        let request = try #require(try g.next())
        #expect(request.0.op == Op.request && request.0.dstPort == 52 && request.0.dstCID == 3)
        let local = request.0.srcPort
        #expect(local >= 1 << 30)
        try g.send(Op.response, port: 52, to: local)
        #expect(UnixSocket.read(host, count: "OK \(local)\n".utf8.count) == "OK \(local)\n")
        UnixSocket.write(host, "from host")
        let data = try #require(try g.next())
        #expect(data.0.op == Op.rw && String(decoding: data.1, as: UTF8.self) == "from host")
        try g.send(Op.rw, port: 52, to: local, payload: Array("from guest".utf8), fwdCnt: 9)
        #expect(UnixSocket.read(host, count: 10) == "from guest")
        // The host hangs up: the guest hears SHUTDOWN with both flags.
        shutdown(host, Int32(SHUT_RDWR))
        let end = try #require(try g.next())
        #expect(end.0.op == Op.shutdown && end.0.flags == 3)
    }

    @Test func aLengthTheBuffersDoNotHoldResetsTheConnection() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        let listener = UnixSocket.listen("\(g.device.udsPath)_5001")
        defer { close(listener) }
        try g.send(Op.request, port: 8, to: 5001)
        #expect(try g.next()?.0.op == Op.response)
        let lying = VsockHeader(srcCID: 3, dstCID: 2, srcPort: 8, dstPort: 5001, length: 4000, op: Op.rw, bufAlloc: 4096)
        try g.driver.memory.write(lying.bytes + [1, 2, 3], at: GuestAddress(0x37000))
        try g.tx.descriptor(7, address: 0x37000, length: 47, flags: 0)
        try g.tx.offer(7)
        g.driver.set(MMIOTransport.Register.queueNotify, 1)
        #expect(try g.next()?.0.op == Op.reset)
        #expect(!g.driver.needsReset, "the connection's error, not the device's")
    }

    @Test func aBadGreetingIsRefused() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        let host = UnixSocket.connect(g.device.udsPath)
        defer { close(host) }
        UnixSocket.write(host, "HELLO 52\n")
        #expect(UnixSocket.read(host, count: 1) == "", "closed")
    }

    @Test func theGuestsCreditIsRespected() throws {
        let g = try VsockGuest()
        defer { g.stop() }
        let listener = UnixSocket.listen("\(g.device.udsPath)_7000")
        defer { close(listener) }
        // A guest with 8 bytes of buffer.
        let header = VsockHeader(srcCID: 3, dstCID: 2, srcPort: 9, dstPort: 7000, op: Op.request, bufAlloc: 8)
        try g.driver.memory.write(header.bytes, at: GuestAddress(0x30000))
        try g.tx.descriptor(0, address: 0x30000, length: 44, flags: 0)
        try g.tx.offer(0)
        g.txNext = 1
        g.driver.set(MMIOTransport.Register.queueNotify, 1)
        #expect(try g.next()?.0.op == Op.response)
        let host = accept(listener, nil, nil)
        defer { close(host) }
        UnixSocket.write(host, "0123456789abcdef")
        let first = try #require(try g.next())
        #expect(first.1 == Array("01234567".utf8), "no more than the guest's 8 bytes")
        // The guest consumed them: a credit update with its full buffer brings the rest.
        let update = VsockHeader(srcCID: 3, dstCID: 2, srcPort: 9, dstPort: 7000, op: Op.creditUpdate, bufAlloc: 64, fwdCnt: 8)
        try g.driver.memory.write(update.bytes, at: GuestAddress(0x31000))
        try g.tx.descriptor(1, address: 0x31000, length: 44, flags: 0)
        try g.tx.offer(1)
        g.driver.set(MMIOTransport.Register.queueNotify, 1)
        let second = try #require(try g.next())
        #expect(second.1 == Array("89abcdef".utf8))
    }
}

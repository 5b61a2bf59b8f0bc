import CSwiftletSystem
import EventLoop
import GuestMemory
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Virtio

/// A TAP device in a network namespace of its own, made on a thread that leaves the test
/// process's namespace alone, with a packet socket on the host side of it.
struct TapNamespace: @unchecked Sendable {   // the device is used from the test and the worker, through its locks
    let device: NetDevice
    /// AF_PACKET socket bound to the TAP interface: what the host's network stack sees.
    let packet: Int32

    static let name = "swtap0"

    /// nil with the reason when this machine does not allow it (no CAP_NET_ADMIN, no /dev/net/tun).
    static func make(mac: [UInt8]? = [0x02, 0x53, 0x57, 0x00, 0x00, 0x01]) -> Result<TapNamespace, SkipReason> {
        let result = Mutex<Result<TapNamespace, SkipReason>?>(nil)
        let thread = Thread {
            guard unshare(CLONE_NEWNET) == 0 else {
                result.withLock { $0 = .failure(SkipReason("unshare(CLONE_NEWNET): \(String(cString: strerror(errno)))")) }
                return
            }
            let device: NetDevice
            do { device = try NetDevice(tap: name, mac: mac, id: "eth0") } catch {
                result.withLock { $0 = .failure(SkipReason("\(error)")) }
                return
            }
            // Quiet: no IPv6 router solicitations or DAD frames of the kernel's own.
            if let f = fopen("/proc/sys/net/ipv6/conf/\(name)/disable_ipv6", "w") { fputs("1", f); fclose(f) }
            let up = cswiftlet_link_up(name)
            let packet = cswiftlet_packet_socket(name)
            guard up == 0, packet >= 0 else {
                result.withLock { $0 = .failure(SkipReason("could not bring \(name) up and bind a packet socket")) }
                return
            }
            result.withLock { $0 = .success(TapNamespace(device: device, packet: packet)) }
        }
        thread.join()
        return result.withLock { $0! }
    }

    /// Frames the host side saw leave or arrive with `etherType`, waiting up to a second.
    func capture(etherType: UInt16) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<100 {
            var poller = pollfd(fd: packet, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(packet, $0.baseAddress, $0.count, 0) }
            if n >= 14 && UInt16(buffer[12]) << 8 | UInt16(buffer[13]) == etherType { return Array(buffer[0..<n]) }
        }
        return nil
    }

    func send(_ frame: [UInt8]) -> Bool {
        frame.withUnsafeBytes { Glibc.send(packet, $0.baseAddress, $0.count, 0) } == frame.count
    }
}

struct SkipReason: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A split ring the tests drive by hand, at `base` (descriptors, then avail, then used).
struct TestRing {
    let memory: GuestMemory
    let base: UInt64
    let size: UInt16 = 8
    var availIndex: UInt16 = 0
    var desc: UInt64 { base }
    var avail: UInt64 { base + 0x100 }
    var used: UInt64 { base + 0x200 }

    mutating func offer(_ head: UInt16) throws {
        try memory.store(head, at: GuestAddress(avail + 4 + 2 * UInt64(availIndex % size)))
        availIndex &+= 1
        try memory.store(availIndex, at: GuestAddress(avail + 2))
    }

    func descriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let at = desc + 16 * UInt64(index)
        try memory.store(address, at: GuestAddress(at))
        try memory.store(length, at: GuestAddress(at + 8))
        try memory.store(flags, at: GuestAddress(at + 12))
        try memory.store(next, at: GuestAddress(at + 14))
    }

    func usedIndex() throws -> UInt16 { try memory.load(at: GuestAddress(used + 2)) }
    func usedEntry(_ slot: Int) throws -> (id: UInt32, length: UInt32) {
        (try memory.load(at: GuestAddress(used + 4 + 8 * UInt64(slot))), try memory.load(at: GuestAddress(used + 8 + 8 * UInt64(slot))))
    }
}

@Suite("virtio-net over a TAP device")
struct NetTests {
    static let etherType: UInt16 = 0x88B5   // IEEE 802 local experimental: nothing else sends it

    static func frame(from source: [UInt8], payload: String) -> [UInt8] {
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + source + [UInt8(etherType >> 8), UInt8(etherType & 0xFF)] + Array(payload.utf8)
    }

    /// A running device: the driver has both queues (receive at 0x20000, transmit at 0x21000) and
    /// the device's worker loop runs on a thread of its own.
    struct Running {
        let tap: TapNamespace
        let driver: TestDriver
        var rx: TestRing
        var tx: TestRing
        let loop: MainLoop
        let worker: Thread
    }

    static func start() throws -> Running? {
        let tap: TapNamespace
        switch TapNamespace.make() {
        case let .success(made): tap = made
        case let .failure(reason):
            print("skipped: a TAP device in a network namespace is not available here: \(reason)")
            return nil
        }
        let driver = try TestDriver(device: tap.device)
        let loop = try MainLoop()
        let transport = driver.transport
        tap.device.attach(DeviceContext(loop: loop, transport: transport))
        let worker = Thread { loop.run() }
        let rx = TestRing(memory: driver.memory, base: 0x20000), tx = TestRing(memory: driver.memory, base: 0x21000)
        driver.negotiate(features: VirtioFeature.version1 | NetDevice.Feature.mac)
        driver.setUpQueue(0, desc: rx.desc, avail: rx.avail, used: rx.used)
        driver.setUpQueue(1, desc: tx.desc, avail: tx.avail, used: tx.used)
        driver.set(MMIOTransport.Register.status, 1 | 2 | 8 | 4)
        return Running(tap: tap, driver: driver, rx: rx, tx: tx, loop: loop, worker: worker)
    }

    static func stop(_ running: Running) {
        running.loop.stop()
        running.worker.join()
        close(running.tap.packet)
    }

    @Test func configurationSpaceHasTheMACAndTheLinkUp() throws {
        guard let r = try Self.start() else { return }
        defer { Self.stop(r) }
        let d = r.driver
        #expect(d.transport.offeredFeatures & NetDevice.Feature.mac != 0)
        #expect(d.transport.read(offset: 0x100, size: 4) == 0x0057_5302)
        #expect(d.transport.read(offset: 0x104, size: 2) == 0x0100)   // bytes 4 and 5: 00 01
        #expect(d.transport.read(offset: 0x106, size: 2) == 1, "VIRTIO_NET_S_LINK_UP")
        #expect(NetDevice.parseMAC("02:53:57:00:00:01") == [2, 0x53, 0x57, 0, 0, 1])
        #expect(NetDevice.parseMAC("02:53:57:00:00") == nil && NetDevice.parseMAC("02:53:57:00:00:zz") == nil)
    }

    @Test func framesGoBothWays() throws {
        guard var r = try Self.start() else { return }
        defer { Self.stop(r) }
        let memory = r.driver.memory
        // Guest to host: header (12 bytes, any content: the device sends its own) + frame.
        let out = Self.frame(from: [2, 0x53, 0x57, 0, 0, 1], payload: "hello from the guest")
        try memory.write([UInt8](repeating: 0xEE, count: 12) + out, at: GuestAddress(0x30000))
        try r.tx.descriptor(0, address: 0x30000, length: UInt32(12 + out.count), flags: 0)
        try r.tx.offer(0)
        r.driver.set(MMIOTransport.Register.queueNotify, 1)
        #expect(try r.tx.usedIndex() == 1)
        #expect(r.tap.capture(etherType: Self.etherType) == out)
        #expect(r.tap.device.statistics.transmitted == 1)

        // Host to guest, before the driver has receive buffers: the frame waits in the TAP.
        let into = Self.frame(from: [2, 0, 0, 0, 0, 9], payload: "hello from the host")
        #expect(r.tap.send(into))
        usleep(50_000)
        #expect(try r.rx.usedIndex() == 0)
        // A buffer and a notification: the waiting frame arrives, with num_buffers 1.
        try r.rx.descriptor(0, address: 0x40000, length: 2048, flags: TestDriver.write)
        try r.rx.offer(0)
        r.driver.set(MMIOTransport.Register.queueNotify, 0)
        var waited = 0
        while try r.rx.usedIndex() == 0 && waited < 100 { usleep(10_000); waited += 1 }
        #expect(try r.rx.usedIndex() == 1)
        let (id, length) = try r.rx.usedEntry(0)
        #expect(id == 0 && Int(length) == 12 + into.count)
        let header = try memory.read(at: GuestAddress(0x40000), count: 12)
        #expect(header == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        #expect(try memory.read(at: GuestAddress(0x40000 + 12), count: into.count) == into)
        #expect(r.driver.reg(MMIOTransport.Register.interruptStatus) & 1 == 1)

        // With a buffer waiting, the next frame arrives by itself (the worker watches the TAP).
        try r.rx.descriptor(1, address: 0x41000, length: 2048, flags: TestDriver.write)
        try r.rx.offer(1)
        r.driver.set(MMIOTransport.Register.queueNotify, 0)
        #expect(r.tap.send(into))
        waited = 0
        while try r.rx.usedIndex() < 2 && waited < 100 { usleep(10_000); waited += 1 }
        #expect(try r.rx.usedIndex() == 2)
        #expect(r.tap.device.statistics.received == 2)
    }

    @Test func aBufferTooSmallDropsTheFrameNotTheDevice() throws {
        guard var r = try Self.start() else { return }
        defer { Self.stop(r) }
        try r.rx.descriptor(0, address: 0x40000, length: 20, flags: TestDriver.write)
        try r.rx.offer(0)
        r.driver.set(MMIOTransport.Register.queueNotify, 0)
        #expect(r.tap.send(Self.frame(from: [2, 0, 0, 0, 0, 9], payload: String(repeating: "x", count: 100))))
        var waited = 0
        while try r.rx.usedIndex() == 0 && waited < 100 { usleep(10_000); waited += 1 }
        #expect(try r.rx.usedEntry(0).length == 0)
        #expect(r.tap.device.statistics.receiveDropped == 1)
        #expect(!r.driver.needsReset)
    }

    @Test func aMissingTapDeviceIsNamed() {
        // Outside a namespace where it may be created, and with a name no TAP device can have.
        #expect(throws: TapError.self) { try NetDevice(tap: String(repeating: "t", count: 20), id: "x") }
    }
}

import GuestMemory
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Virtio

/// A driver written to VIRTIO 1.2 for the tests: rings at fixed places in 1 MiB of guest memory,
/// set up through the transport's registers as §3.1.1 and §4.2.3 say.
struct TestDriver {
    static let desc: UInt64 = 0x1000, avail: UInt64 = 0x3000, used: UInt64 = 0x4000, buffers: UInt64 = 0x10000
    let memory: GuestMemory
    let transport: MMIOTransport
    let line = Line()
    let transportNotify: (@Sendable (Int) -> Void)?
    var size: UInt16 = 8
    var availIndex: UInt16 = 0

    init(device: any VirtioDevice = EntropyDevice(fill: { bytes in
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 1) }
        return true
    }), notify: (@Sendable (Int) -> Void)? = nil) throws {
        memory = try GuestMemory(regions: [(0, 1 << 20)])
        let line = line
        transportNotify = notify
        transport = MMIOTransport(device: device, memory: memory, notify: notify) { line.raise() }
    }

    func reg(_ offset: Int) -> UInt32 { transport.read(offset: offset, size: 4) }
    func set(_ offset: Int, _ value: UInt32) { transport.write(offset: offset, size: 4, value: value) }

    /// §3.1.1 steps 1–8 with `features`; returns the status read back after FEATURES_OK.
    @discardableResult
    func negotiate(features: UInt64) -> UInt32 {
        set(MMIOTransport.Register.status, 0)
        set(MMIOTransport.Register.status, MMIOTransport.Status.acknowledge)
        set(MMIOTransport.Register.status, MMIOTransport.Status.acknowledge | MMIOTransport.Status.driver)
        for sel: UInt32 in [0, 1] {
            set(MMIOTransport.Register.driverFeaturesSel, sel)
            set(MMIOTransport.Register.driverFeatures, UInt32(truncatingIfNeeded: features >> (32 * UInt64(sel))))
        }
        set(MMIOTransport.Register.status, 1 | 2 | MMIOTransport.Status.featuresOK)
        return reg(MMIOTransport.Register.status)
    }

    func setUpQueue(_ index: UInt32 = 0, size: UInt16 = 8, desc: UInt64 = desc, avail: UInt64 = avail, used: UInt64 = used) {
        set(MMIOTransport.Register.queueSel, index)
        set(MMIOTransport.Register.queueNum, UInt32(size))
        set(MMIOTransport.Register.queueDescLow, UInt32(truncatingIfNeeded: desc))
        set(MMIOTransport.Register.queueDescHigh, UInt32(desc >> 32))
        set(MMIOTransport.Register.queueDriverLow, UInt32(truncatingIfNeeded: avail))
        set(MMIOTransport.Register.queueDriverHigh, UInt32(avail >> 32))
        set(MMIOTransport.Register.queueDeviceLow, UInt32(truncatingIfNeeded: used))
        set(MMIOTransport.Register.queueDeviceHigh, UInt32(used >> 32))
        set(MMIOTransport.Register.queueReady, 1)
    }

    func start(features: UInt64 = VirtioFeature.version1 | VirtioFeature.indirectDescriptors) {
        negotiate(features: features)
        setUpQueue()
        set(MMIOTransport.Register.status, 1 | 2 | 8 | MMIOTransport.Status.driverOK)
    }

    func descriptor(_ index: UInt16, table: UInt64 = desc, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = GuestAddress(table + 16 * UInt64(index))
        try memory.store(address, at: base)
        try memory.store(length, at: GuestAddress(base.rawValue + 8))
        try memory.store(flags, at: GuestAddress(base.rawValue + 12))
        try memory.store(next, at: GuestAddress(base.rawValue + 14))
    }

    /// Makes `head` available and notifies queue 0.
    mutating func offer(_ head: UInt16, notify: Bool = true) throws {
        try memory.store(head, at: GuestAddress(Self.avail + 4 + 2 * UInt64(availIndex % size)))
        availIndex &+= 1
        try memory.store(availIndex, at: GuestAddress(Self.avail + 2))
        if notify { set(MMIOTransport.Register.queueNotify, 0) }
    }

    func usedIndex() throws -> UInt16 { try memory.load(at: GuestAddress(Self.used + 2)) }
    func usedEntry(_ slot: Int) throws -> (id: UInt32, length: UInt32) {
        (try memory.load(at: GuestAddress(Self.used + 4 + 8 * UInt64(slot))),
         try memory.load(at: GuestAddress(Self.used + 8 + 8 * UInt64(slot))))
    }

    var needsReset: Bool { reg(MMIOTransport.Register.status) & MMIOTransport.Status.needsReset != 0 }

    static let write: UInt16 = 2, next: UInt16 = 1, indirect: UInt16 = 4
}

/// The device's interrupt pin as the transport drives it: the edges it was given.
final class Line: Sendable {
    private let count = Mutex(0)
    func raise() { count.withLock { $0 += 1 } }
    var edges: Int { count.withLock { $0 } }
}

/// One descriptor of a bad chain: index, address, length, flags, next.
struct Desc: Sendable {
    let index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16
    init(_ index: UInt16, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) {
        self.index = index; self.address = address; self.length = length; self.flags = flags; self.next = next
    }
}

struct BadChain: Sendable, CustomStringConvertible {
    let description: String
    let descriptors: [Desc]
}

@Suite("virtio-mmio transport")
struct MMIOTransportTests {
    @Test func identityRegisters() throws {
        let d = try TestDriver()
        #expect(d.reg(0x000) == 0x7472_6976)
        #expect(d.reg(0x004) == 2)
        #expect(d.reg(0x008) == 4)
        #expect(d.reg(0x034) == 256)   // QueueNumMax of queue 0
        d.set(0x030, 1)
        #expect(d.reg(0x034) == 0)     // no queue 1
        #expect(d.reg(0x0B0) == 0xFFFF_FFFF && d.reg(0x0B4) == 0xFFFF_FFFF)   // no shared memory
        // Registers take 32-bit accesses only.
        #expect(d.transport.read(offset: 0x000, size: 2) == 0)
    }

    @Test func offeredFeaturesIncludeVersion1AndTheRingFeatures() throws {
        let d = try TestDriver()
        d.set(MMIOTransport.Register.deviceFeaturesSel, 1)
        #expect(d.reg(MMIOTransport.Register.deviceFeatures) & 1 == 1)   // VERSION_1 is bit 32
        d.set(MMIOTransport.Register.deviceFeaturesSel, 0)
        let low = d.reg(MMIOTransport.Register.deviceFeatures)
        #expect(low & (1 << 28) != 0 && low & (1 << 29) != 0)
        d.set(MMIOTransport.Register.deviceFeaturesSel, 2)
        #expect(d.reg(MMIOTransport.Register.deviceFeatures) == 0)
    }

    @Test func featuresOKOnlyForASubsetWithVersion1() throws {
        let d = try TestDriver()
        #expect(d.negotiate(features: VirtioFeature.version1) & MMIOTransport.Status.featuresOK != 0)
        #expect(d.negotiate(features: 0) & MMIOTransport.Status.featuresOK == 0, "legacy drivers are refused")
        #expect(d.negotiate(features: VirtioFeature.version1 | 1 << 5) & MMIOTransport.Status.featuresOK == 0,
                "a feature that was not offered")
    }

    @Test func driverOKWithoutFeaturesOKAsksForAReset() throws {
        let d = try TestDriver()
        d.set(MMIOTransport.Register.status, 1)
        d.set(MMIOTransport.Register.status, 1 | 2)
        d.set(MMIOTransport.Register.status, 1 | 2 | 4)
        #expect(d.needsReset)
        #expect(d.reg(MMIOTransport.Register.status) & MMIOTransport.Status.driverOK == 0)
        d.set(MMIOTransport.Register.status, 0)
        #expect(d.reg(MMIOTransport.Register.status) == 0)
    }

    @Test func entropyFillsTheBuffersAndInterrupts() throws {
        var d = try TestDriver()
        d.start()
        try d.descriptor(0, address: TestDriver.buffers, length: 16, flags: TestDriver.write | TestDriver.next, next: 1)
        try d.descriptor(1, address: TestDriver.buffers + 0x100, length: 8, flags: TestDriver.write)
        try d.offer(0)
        #expect(try d.usedIndex() == 1)
        #expect(try d.usedEntry(0) == (0, 24))
        #expect(try d.memory.read(at: GuestAddress(TestDriver.buffers), count: 3) == [1, 8, 15])
        #expect(try d.memory.read(at: GuestAddress(TestDriver.buffers + 0x100), count: 2) == [1, 8])
        #expect(d.reg(MMIOTransport.Register.interruptStatus) == 1)
        #expect(d.line.edges == 1)
        d.set(MMIOTransport.Register.interruptACK, 1)
        #expect(d.reg(MMIOTransport.Register.interruptStatus) == 0)
        #expect(d.line.edges == 1)
    }

    /// With EVENT_IDX the driver notifies only when the device's avail_event says so (§2.7.10):
    /// every emptied ring must ask for the next buffer, or the second request would never come.
    @Test func eventIndexAsksForEveryNextNotification() throws {
        var d = try TestDriver()
        d.start(features: VirtioFeature.version1 | VirtioFeature.eventIndex)
        let availEvent = GuestAddress(TestDriver.used + 4 + 8 * 8)
        for round in 1...3 {
            try d.descriptor(UInt16(round), address: TestDriver.buffers, length: 4, flags: TestDriver.write)
            try d.offer(UInt16(round))
            #expect(try d.usedIndex() == UInt16(round))
            #expect(try d.memory.load(at: availEvent, as: UInt16.self) == UInt16(round), "avail_event after round \(round)")
        }
    }

    /// With a worker, a notification is handed to it; the registers answer while it works.
    @Test func notificationsGoToTheWorkerAndTheRegistersStayFree() throws {
        let gate = Gate()
        let notified = Mutex<[Int]>([])
        var d = try TestDriver(device: SlowDevice(gate: gate), notify: { queue in notified.withLock { $0.append(queue) } })
        d.start()
        try d.descriptor(0, address: TestDriver.buffers, length: 4, flags: TestDriver.write)
        try d.offer(0)
        #expect(notified.withLock { $0 } == [0])
        #expect(try d.usedIndex() == 0, "nothing served on the notifying thread")
        let transport = d.transport
        let worker = Thread { transport.process(queue: 0) }
        gate.waitUntilEntered()
        // The device is inside process(), blocked: register reads and writes still answer.
        #expect(d.reg(MMIOTransport.Register.status) & MMIOTransport.Status.driverOK != 0)
        d.set(MMIOTransport.Register.interruptACK, 0)
        gate.open()
        worker.join()
        #expect(try d.usedIndex() == 1)
        #expect(d.reg(MMIOTransport.Register.interruptStatus) == 1)
    }

    /// A reset waits for work in progress (§2.1: after it, the device touches no ring); what that
    /// work reported is then cleared with everything else.
    @Test func aResetDuringWorkWaitsForIt() throws {
        let gate = Gate()
        var d = try TestDriver(device: SlowDevice(gate: gate), notify: { _ in })
        d.start()
        try d.descriptor(0, address: TestDriver.buffers, length: 4, flags: TestDriver.write)
        try d.offer(0)
        let transport = d.transport
        let worker = Thread { transport.process(queue: 0) }
        gate.waitUntilEntered()
        let resetter = Thread { transport.write(offset: MMIOTransport.Register.status, size: 4, value: 0) }
        usleep(20_000)
        #expect(!resetter.finished, "the reset waits for the device")
        gate.open()
        worker.join()
        resetter.join()
        #expect(try d.usedIndex() == 1, "the request in progress finished before the reset")
        #expect(d.reg(MMIOTransport.Register.status) == 0)
        #expect(d.reg(MMIOTransport.Register.interruptStatus) == 0)
    }

    @Test func indirectTables() throws {
        var d = try TestDriver()
        d.start()
        let table: UInt64 = 0x8000
        try d.descriptor(0, table: table, address: TestDriver.buffers, length: 4, flags: TestDriver.write | TestDriver.next, next: 1)
        try d.descriptor(1, table: table, address: TestDriver.buffers + 0x40, length: 4, flags: TestDriver.write)
        try d.descriptor(3, address: table, length: 32, flags: TestDriver.indirect)
        try d.offer(3)
        #expect(try d.usedEntry(0) == (3, 8))
        #expect(!d.needsReset)
    }

    static let badChains: [BadChain] = [
        BadChain(description: "a loop", descriptors: [Desc(0, 0x10000, 4, 3, 1), Desc(1, 0x10000, 4, 3, 0)]),
        BadChain(description: "a buffer outside RAM", descriptors: [Desc(0, 0xFFFF_0000, 4, 2, 0)]),
        BadChain(description: "a buffer that wraps", descriptors: [Desc(0, UInt64.max - 1, 4, 2, 0)]),
        BadChain(description: "an index beyond the table", descriptors: [Desc(0, 0x10000, 4, 3, 9)]),
        BadChain(description: "readable after writable", descriptors: [Desc(0, 0x10000, 4, 3, 1), Desc(1, 0x10100, 4, 0, 0)]),
        BadChain(description: "indirect with NEXT", descriptors: [Desc(0, 0x8000, 16, 5, 1)]),
        BadChain(description: "indirect of a bad length", descriptors: [Desc(0, 0x8000, 20, 4, 0)]),
    ]

    @Test(arguments: badChains)
    func badChainsAskForAResetAndTheDeviceRecovers(_ bad: BadChain) throws {
        let what = bad.description
        var d = try TestDriver()
        d.start()
        for desc in bad.descriptors {
            try d.descriptor(desc.index, address: desc.address, length: desc.length, flags: desc.flags, next: desc.next)
        }
        try d.offer(0)
        #expect(d.needsReset, "\(what)")
        #expect(d.reg(MMIOTransport.Register.interruptStatus) & MMIOTransport.Interrupt.configChange != 0, "\(what)")
        #expect(try d.usedIndex() == 0)
        // A reset (status 0) of the same transport, fresh rings, and the device works again.
        d.set(MMIOTransport.Register.status, 0)
        #expect(d.reg(MMIOTransport.Register.status) == 0 && d.reg(MMIOTransport.Register.interruptStatus) == 0)
        try d.memory.fill(0, at: GuestAddress(0), count: 1 << 20)
        d.availIndex = 0
        d.start()
        try d.descriptor(0, address: TestDriver.buffers, length: 4, flags: TestDriver.write)
        try d.offer(0)
        #expect(try d.usedEntry(0) == (0, 4))
        #expect(!d.needsReset)
    }

    @Test func indirectNotNegotiatedIsRefused() throws {
        var d = try TestDriver()
        d.start(features: VirtioFeature.version1)
        try d.descriptor(0, address: 0x8000, length: 16, flags: TestDriver.indirect)
        try d.offer(0)
        #expect(d.needsReset)
    }

    @Test func availableIndexRunningAheadIsRefused() throws {
        let d = try TestDriver()
        d.start()
        try d.memory.store(UInt16(9), at: GuestAddress(TestDriver.avail + 2))   // 9 > size 8
        d.set(MMIOTransport.Register.queueNotify, 0)
        #expect(d.needsReset)
    }

    @Test func queueRulesOfTheTransport() throws {
        let d = try TestDriver()
        d.negotiate(features: VirtioFeature.version1)
        // Rings outside RAM: refused when the queue is made ready.
        d.setUpQueue(desc: 0x20_0000)
        #expect(d.needsReset)
        d.set(MMIOTransport.Register.status, 0)
        d.negotiate(features: VirtioFeature.version1)
        d.setUpQueue()
        #expect(d.reg(MMIOTransport.Register.queueReady) == 1)
        // Changing a ready queue's addresses.
        d.set(MMIOTransport.Register.queueDescLow, 0x2000)
        #expect(d.needsReset)
        // A size that is not a power of two is ignored.
        d.set(MMIOTransport.Register.status, 0)
        #expect(d.reg(MMIOTransport.Register.queueReady) == 0, "reset clears QueueReady")
        d.set(MMIOTransport.Register.queueNum, 6)
        #expect(!d.needsReset)
    }

    @Test func notificationsBeforeDriverOKOrOnUnreadyQueuesDoNothing() throws {
        let d = try TestDriver()
        d.negotiate(features: VirtioFeature.version1)
        d.setUpQueue()
        try d.descriptor(0, address: TestDriver.buffers, length: 4, flags: TestDriver.write)
        try d.memory.store(UInt16(1), at: GuestAddress(TestDriver.avail + 2))
        d.set(MMIOTransport.Register.queueNotify, 0)   // not DRIVER_OK yet
        d.set(MMIOTransport.Register.queueNotify, 5)   // no such queue
        #expect(try d.usedIndex() == 0)
        #expect(!d.needsReset)
    }
}

/// A device that blocks inside `process` until the test opens the gate.
final class SlowDevice: VirtioDevice {
    let gate: Gate
    init(gate: Gate) { self.gate = gate }
    var deviceID: UInt32 { 4 }
    var deviceFeatures: UInt64 { 0 }
    var queueMaxSizes: [UInt16] { [8] }
    func readConfig(offset: Int, size: Int) -> UInt32 { 0 }
    func activate(features: UInt64) {}
    func reset() {}
    func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        gate.enterAndWait()
        guard let chain = try queue.pop(from: memory) else { return false }
        try queue.push(head: chain.head, written: 0, to: memory)
        return true
    }
}

final class Gate: Sendable {
    private let state = Mutex((entered: false, open: false))
    func enterAndWait() {
        state.withLock { $0.entered = true }
        while !state.withLock({ $0.open }) { usleep(1000) }
    }
    func waitUntilEntered() { while !state.withLock({ $0.entered }) { usleep(1000) } }
    func open() { state.withLock { $0.open = true } }
}

/// A plain thread for the concurrency tests.
final class Thread: Sendable {
    final class Flag: Sendable { let value = Mutex(false) }
    private let done = Flag()
    private let handle: pthread_t
    init(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let done = done
        let box = Unmanaged.passRetained(Box { body(); done.value.withLock { $0 = true } }).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
        handle = thread
    }
    var finished: Bool { done.value.withLock { $0 } }
    func join() { pthread_join(handle, nil) }
}

@Suite("split virtqueue")
struct VirtqueueTests {
    @Test func eventIndexSuppressesInterruptsUntilUsedEventIsPassed() throws {
        let memory = try GuestMemory(regions: [(0, 1 << 20)])
        var queue = Virtqueue(size: 8)
        queue.descriptorTable = 0x1000; queue.availableRing = 0x3000; queue.usedRing = 0x4000
        queue.eventIndex = true
        // used_event (after the avail ring's 8 entries) = 2: interrupt once used idx passes 2.
        try memory.store(UInt16(2), at: GuestAddress(0x3000 + 4 + 16))
        var wanted = queue.needsInterrupt(memory)
        #expect(wanted, "the first one always")
        try queue.push(head: 0, written: 0, to: memory)           // used 1
        wanted = queue.needsInterrupt(memory)
        #expect(!wanted)
        try queue.push(head: 0, written: 0, to: memory)           // used 2
        wanted = queue.needsInterrupt(memory)
        #expect(!wanted)
        try queue.push(head: 0, written: 0, to: memory)           // used 3: passed 2
        wanted = queue.needsInterrupt(memory)
        #expect(wanted)
        // avail_event tells the driver where to notify next.
        queue.requestNotification(memory)
        #expect(try memory.load(at: GuestAddress(0x4000 + 4 + 64), as: UInt16.self) == queue.nextAvailable)
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let memory = try GuestMemory(regions: [(0, 1 << 20)])
        var queue = Virtqueue(size: 8)
        queue.availableRing = 0x3000; queue.usedRing = 0x4000
        try memory.store(UInt16(1), at: GuestAddress(0x3000))   // VIRTQ_AVAIL_F_NO_INTERRUPT
        try queue.push(head: 1, written: 4, to: memory)
        var wanted = queue.needsInterrupt(memory)
        #expect(!wanted)
        try memory.store(UInt16(0), at: GuestAddress(0x3000))
        wanted = queue.needsInterrupt(memory)
        #expect(wanted)
    }

    @Test(arguments: [(UInt32(0), false), (1, true), (2, true), (6, false), (256, true), (32768, true), (65536, false)])
    func sizesArePowersOfTwoUpTo32768(size: UInt32, valid: Bool) {
        #expect(Virtqueue.isValidSize(size) == valid)
    }

    @Test func scatterGatherFileIOGoesStraightToGuestMemory() throws {
        let memory = try GuestMemory(regions: [(0, 1 << 20)])
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let path = "/tmp/swiftlet-virtio-sg-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd); unlink(path) }
        try memory.write(Array("hello, ".utf8), at: GuestAddress(0x100))
        try memory.write(Array("world".utf8), at: GuestAddress(0x900))
        #expect(try memory.write(to: fd, offset: 3, from: [(GuestAddress(0x100), 7), (GuestAddress(0x900), 5)]) == 12)
        #expect(try memory.read(from: fd, offset: 3, into: [(GuestAddress(0x2000), 12)]) == 12)
        #expect(try memory.read(at: GuestAddress(0x2000), count: 12) == Array("hello, world".utf8))
        #expect(throws: GuestMemoryError.self) { _ = try memory.read(from: fd, offset: 0, into: [(GuestAddress(0xFFFFF), 16)]) }
    }
}

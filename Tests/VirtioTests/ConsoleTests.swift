import EventLoop
import GuestMemory
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import Virtio

@Suite("virtio-console")
struct ConsoleTests {
    final class Output: Sendable {
        let bytes = Mutex<[UInt8]>([])
        var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    }

    static func running(_ output: Output) throws -> (ConsoleDevice, TestDriver, TestRing, TestRing, MainLoop, Thread) {
        let device = ConsoleDevice(output: { bytes in output.bytes.withLock { $0 += bytes } })
        let driver = try TestDriver(device: device)
        let loop = try MainLoop()
        device.attach(DeviceContext(loop: loop, transport: driver.transport))
        let worker = Thread { loop.run() }
        let rx = TestRing(memory: driver.memory, base: 0x20000), tx = TestRing(memory: driver.memory, base: 0x21000)
        driver.negotiate(features: VirtioFeature.version1)
        driver.setUpQueue(0, desc: rx.desc, avail: rx.avail, used: rx.used)
        driver.setUpQueue(1, desc: tx.desc, avail: tx.avail, used: tx.used)
        driver.set(MMIOTransport.Register.status, 1 | 2 | 8 | 4)
        return (device, driver, rx, tx, loop, worker)
    }

    @Test func textBothWaysAndEmergencyWrites() throws {
        let output = Output()
        var (device, driver, rx, tx, loop, worker) = try Self.running(output)
        defer { loop.stop(); worker.join() }
        #expect(driver.transport.offeredFeatures & ConsoleDevice.Feature.emergencyWrite != 0)
        // Transmit: two chained buffers, in order.
        try driver.memory.write(Array("hello, ".utf8), at: GuestAddress(0x30000))
        try driver.memory.write(Array("hvc0\n".utf8), at: GuestAddress(0x31000))
        try tx.descriptor(0, address: 0x30000, length: 7, flags: TestDriver.next, next: 1)
        try tx.descriptor(1, address: 0x31000, length: 5, flags: 0)
        try tx.offer(0)
        driver.set(MMIOTransport.Register.queueNotify, 1)
        #expect(output.text == "hello, hvc0\n")
        // emerg_wr (offset 8 of the configuration space).
        driver.transport.write(offset: 0x108, size: 4, value: UInt32(UInt8(ascii: "!")))
        #expect(output.text == "hello, hvc0\n!")
        // Receive: input before any buffer waits; two small buffers take it in order.
        #expect(device.receive(Array("typed".utf8)) == 5)
        usleep(20_000)
        #expect(try rx.usedIndex() == 0)
        try rx.descriptor(0, address: 0x40000, length: 3, flags: TestDriver.write)
        try rx.descriptor(1, address: 0x41000, length: 16, flags: TestDriver.write)
        try rx.offer(0)
        try rx.offer(1)
        driver.set(MMIOTransport.Register.queueNotify, 0)
        #expect(try rx.usedIndex() == 2)
        #expect(try rx.usedEntry(0).length == 3 && rx.usedEntry(1).length == 2)
        #expect(try driver.memory.read(at: GuestAddress(0x40000), count: 3) + driver.memory.read(at: GuestAddress(0x41000), count: 2) == Array("typed".utf8))
        // More input with buffers waiting arrives by itself, through the worker.
        try rx.descriptor(2, address: 0x42000, length: 16, flags: TestDriver.write)
        try rx.offer(2)
        driver.set(MMIOTransport.Register.queueNotify, 0)
        #expect(device.receive(Array("x".utf8)) == 1)
        var waited = 0
        while try rx.usedIndex() < 3 && waited < 100 { usleep(5000); waited += 1 }
        #expect(try rx.usedIndex() == 3)
    }

    @Test func inputBeyondTheCapacityIsLeftToTheCaller() {
        let device = ConsoleDevice(output: { _ in })
        #expect(device.receive([UInt8](repeating: 1, count: ConsoleDevice.inputCapacity + 10)) == ConsoleDevice.inputCapacity)
        #expect(device.receive([1]) == 0)
    }
}

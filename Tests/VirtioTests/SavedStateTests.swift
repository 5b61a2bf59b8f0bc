import GuestMemory
import Testing
@testable import Virtio

@Suite("virtio state for snapshots")
struct VirtioSavedStateTests {
    /// A running device saved mid-run and restored into a fresh transport goes on where it was:
    /// the next request is served from the next available entry, and the used index keeps counting.
    @Test func aRestoredTransportGoesOnWhereItWas() throws {
        var d = try TestDriver()
        d.start()
        for head: UInt16 in 0..<3 {
            try d.descriptor(head, address: TestDriver.buffers + 0x100 * UInt64(head), length: 8, flags: TestDriver.write)
            try d.offer(head)
        }
        #expect(try d.usedIndex() == 3)
        let saved = d.transport.savedState
        #expect(saved.activated && saved.queues[0].position.nextAvailable == 3)

        // A new transport over the same memory (a restore in a new process maps the same pages).
        let restored = MMIOTransport(device: EntropyDevice(fill: { bytes in bytes = bytes.map { _ in 0x5A }; return true }),
                                     memory: d.memory, interrupt: {})
        try restored.restore(saved)
        #expect(restored.savedState == saved)
        #expect(restored.read(offset: MMIOTransport.Register.status, size: 4) == saved.status)
        try d.descriptor(3, address: TestDriver.buffers + 0x300, length: 8, flags: TestDriver.write)
        try d.memory.store(UInt16(3), at: GuestAddress(TestDriver.avail + 4 + 2 * 3))
        try d.memory.store(UInt16(4), at: GuestAddress(TestDriver.avail + 2))
        restored.write(offset: MMIOTransport.Register.queueNotify, size: 4, value: 0)
        #expect(try d.usedIndex() == 4)
        #expect(try d.usedEntry(3) == (3, 8))
        #expect(try d.memory.read(at: GuestAddress(TestDriver.buffers + 0x300), count: 1) == [0x5A])
    }

    @Test func aSavedStateThatDoesNotFitIsRefused() throws {
        let d = try TestDriver()
        d.start()
        var saved = d.transport.savedState
        saved.queues.append(Virtqueue(size: 8))
        #expect(throws: VirtqueueError.self) { try d.transport.restore(saved) }
        saved = d.transport.savedState
        saved.queues[0].size = 1024   // over the entropy device's 256
        #expect(throws: VirtqueueError.self) { try d.transport.restore(saved) }
        saved = d.transport.savedState
        saved.queues[0].usedRing = 0xFFFF_0000   // not in the 1 MiB of RAM
        #expect(throws: VirtqueueError.self) { try d.transport.restore(saved) }
    }
}

@Suite("virtio while the VM is paused")
struct QuiesceTests {
    @Test func aQuiescedDeviceTouchesNothingAndCatchesUpOnResume() throws {
        var d = try TestDriver()
        d.start()
        d.transport.quiesce()
        try d.descriptor(0, address: TestDriver.buffers, length: 8, flags: TestDriver.write)
        try d.offer(0)
        #expect(try d.usedIndex() == 0, "nothing served while paused")
        d.transport.resumeProcessing()
        #expect(try d.usedIndex() == 1, "served on resume, without a new notification")
    }
}

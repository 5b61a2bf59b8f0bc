import GuestMemory
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// Virtqueue processing over guest memory the input fills: the descriptor table, the available
/// and used rings and the buffers are whatever the fuzzer wrote, in 64 KiB of RAM.
///
/// Layout: byte 0 picks the queue size (a power of two up to 256), the ring features (bit 4
/// indirect, bit 5 event index) and who serves the queue (bits 6-7: the ring walk below, the
/// console's transmit queue, the vsock device's transmit then receive queues, the entropy
/// device); bytes 1... are copied to guest address 0. The descriptor table is
/// at 0x0000, the available ring at 0x1000, the used ring at 0x2000. The entropy device then
/// serves the queue through the transport's path (`Virtqueue.pop`/`push`), and every chain it
/// took must lie inside RAM, a ring error must be one of `VirtqueueError`, and the used index must
/// be the number of chains used.
public enum VirtqueueHarness {
    /// One guest memory for every input, cleared and refilled each time (mapping 64 KiB per input
    /// would cost more than the processing under test).
    static let sharedMemory = try? GuestMemory(regions: [(0, 0x10000)])
    static let console = ConsoleDevice(output: { _ in })
    static let entropy = EntropyDevice(fill: { bytes in
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i) }
        return true
    })
    /// Its socket file is made once per process; nothing listens at `<path>_<port>`, so a guest's
    /// connection request is answered with RST.
    static let vsock: VsockDevice? = {
        let path = "/tmp/swiftlet-fuzz-vsock-\(getpid())"
        let device = try? VsockDevice(guestCID: 3, udsPath: path)
        unlink(path)   // the listening socket stays; no file is left behind
        return device
    }()

    /// A device serves the queue: whatever the ring holds, the device only fails the request or
    /// throws a `VirtqueueError`, and everything it wrote went through the checked chain.
    static func serve(_ device: any VirtioDevice, queues: [Int], _ queue: inout Virtqueue, memory: GuestMemory) {
        device.activate(features: 0)
        for index in queues {
            do throws(VirtqueueError) { _ = try device.process(queue: index, &queue, memory: memory) } catch {
                _ = error.description
                break
            }
        }
        device.reset()
    }

    public static func run(_ input: [UInt8]) {
        guard let control = input.first, let memory = sharedMemory else { return }
        let count = min(input.count - 1, 0x10000)
        try? memory.fill(0, at: GuestAddress(0), count: 0x10000)
        try? memory.write(input, range: 1..<(1 + count), at: GuestAddress(0))
        var queue = Virtqueue(size: UInt16(1) << UInt16(control % 9))
        queue.descriptorTable = 0
        queue.availableRing = 0x1000
        queue.usedRing = 0x2000
        queue.indirect = control & 0x10 != 0
        queue.eventIndex = control & 0x20 != 0
        queue.ready = true
        guard (try? queue.validate(in: memory)) != nil else { return }
        switch control >> 6 {
        case 1: serve(console, queues: [ConsoleDevice.Queue.transmit], &queue, memory: memory); return
        case 2:
            if let vsock { serve(vsock, queues: [VsockDevice.Queue.transmit, VsockDevice.Queue.receive], &queue, memory: memory) }
            return
        case 3: serve(entropy, queues: [0], &queue, memory: memory); return
        default: break
        }
        var chains = 0
        do throws(VirtqueueError) {
            // At most one round of the ring: a driver cannot make more available than its size.
            while chains <= Int(queue.size), let chain = try queue.pop(from: memory) {
                for (address, length) in chain.readable + chain.writable where length > 0 {
                    precondition(memory.contains(address, length: UInt64(length)), "a chain buffer outside RAM")
                }
                precondition(chain.readable.count + chain.writable.count <= Int(queue.size) + 0x10000 / 16,
                             "a chain longer than its tables")
                try queue.push(head: chain.head, written: UInt32(min(chain.writableLength, Int(UInt32.max))), to: memory)
                chains += 1
            }
        } catch {
            _ = error.description   // a driver error: the transport would ask for a reset
        }
        _ = queue.needsInterrupt(memory)
        queue.requestNotification(memory)
        // Only pushes write the used ring (at its own place, apart from the table and the
        // available ring): its index is the number of chains used.
        let usedAfter: UInt16 = (try? memory.load(at: GuestAddress(0x2002))) ?? 0
        precondition(chains == 0 || usedAfter == UInt16(truncatingIfNeeded: chains), "the used index did not move by the chains used")
    }
}

import GuestMemory
import Synchronization

/// The console device (VIRTIO 1.2 §5.3) with one port (no `VIRTIO_CONSOLE_F_MULTIPORT`): what the
/// driver puts on the transmit queue goes to the host's output; the host's input fills the
/// buffers of the receive queue. `VIRTIO_CONSOLE_F_EMERG_WRITE` is offered: a byte written to
/// `emerg_wr` is output at once, before any queue is set up. Linux calls it hvc0.
public final class ConsoleDevice: VirtioDevice {
    public static let queueSize: UInt16 = 256
    /// Input held for the driver while it has no receive buffers; beyond this the host's input
    /// waits where it is (the caller retries).
    public static let inputCapacity = 1 << 16

    public enum Feature {
        public static let emergencyWrite: UInt64 = 1 << 2
    }
    public enum Queue {
        public static let receive = 0, transmit = 1
    }
    /// `struct virtio_console_config` (§5.3.4): cols, rows, max_nr_ports, emerg_wr.
    static let emergencyWriteOffset = 8

    struct Input {
        var pending: [UInt8] = []
        var context: DeviceContext?
    }

    let output: @Sendable ([UInt8]) -> Void
    let input = Mutex(Input())
    let features = Atomic<UInt64>(0)

    public init(output: @escaping @Sendable ([UInt8]) -> Void) {
        self.output = output
    }

    public var deviceID: UInt32 { 3 }
    public var deviceFeatures: UInt64 { Feature.emergencyWrite }
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize] }

    public func readConfig(offset: Int, size: Int) -> UInt32 {
        Self.configValue([UInt8](repeating: 0, count: 12), offset: offset, size: size)   // no size, one port
    }

    public func writeConfig(offset: Int, size: Int, value: UInt32) {
        // §5.3.4: the driver may write emerg_wr whenever the feature was offered.
        if offset == Self.emergencyWriteOffset { output([UInt8(truncatingIfNeeded: value)]) }
    }

    public func attach(_ context: DeviceContext) { input.withLock { $0.context = context } }
    public func activate(features: UInt64) { self.features.store(features, ordering: .relaxed) }
    /// A reset keeps input not yet delivered: it is the host's, and the next driver gets it.
    public func reset() {}

    /// Host input (standard input): takes what fits and returns how much; the worker delivers it.
    public func receive(_ bytes: [UInt8]) -> Int {
        let (taken, context) = input.withLock { i -> (Int, DeviceContext?) in
            let n = min(bytes.count, Self.inputCapacity - i.pending.count)
            i.pending += bytes.prefix(n)
            return (n, i.context)
        }
        if taken > 0 { context?.process(Queue.receive) }
        return taken
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        if index == Queue.transmit {
            while let chain = try queue.pop(from: memory) {
                let bytes = DescriptorChain.gather(chain.readable, count: chain.readableLength, memory: memory)
                if !bytes.isEmpty { output(bytes) }
                try queue.push(head: chain.head, written: 0, to: memory)
                used = true
            }
            return used
        }
        // Receive: as much pending input as the driver's buffers hold.
        var pending = input.withLock { i -> [UInt8] in defer { i.pending = [] }; return i.pending }
        defer { if !pending.isEmpty { input.withLock { $0.pending = pending + $0.pending } } }
        while !pending.isEmpty, let chain = try queue.pop(from: memory) {
            let written = chain.scatter(pending, memory: memory)
            pending.removeFirst(written)
            try queue.push(head: chain.head, written: UInt32(written), to: memory)
            used = true
        }
        return used
    }
}

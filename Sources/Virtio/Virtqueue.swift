import GuestMemory

/// Feature bits of VIRTIO 1.2 §6 that the transport and the rings implement.
public enum VirtioFeature {
    /// §5.x devices' own bits are below 24; these are the reserved ring and transport bits.
    public static let indirectDescriptors: UInt64 = 1 << 28   // VIRTIO_RING_F_INDIRECT_DESC
    public static let eventIndex: UInt64 = 1 << 29            // VIRTIO_RING_F_EVENT_IDX
    public static let version1: UInt64 = 1 << 32              // VIRTIO_F_VERSION_1
}

/// A driver error in a virtqueue (§2.7): the device stops using the queue and asks for a reset
/// (`DEVICE_NEEDS_RESET`). Each names what was wrong and where.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A ring or table the queue's addresses point at is not wholly inside guest RAM.
    case ringOutsideMemory(what: String, address: UInt64, length: UInt64)
    /// More buffers made available than the queue holds.
    case availableOverrun(avail: UInt16, seen: UInt16, size: UInt16)
    /// A head or `next` index beyond the (indirect) table.
    case indexOutOfRange(index: UInt16, limit: Int)
    /// A chain longer than the queue (or its indirect table): a loop, or a lie.
    case chainTooLong(head: UInt16, limit: Int)
    /// A buffer that is not wholly inside guest RAM, or that wraps around the address space.
    case bufferOutsideMemory(address: UInt64, length: UInt32)
    /// A device-readable buffer after a device-writable one (§2.7.4.2).
    case readableAfterWritable(head: UInt16)
    /// An indirect descriptor where none may be: not negotiated, with NEXT set, inside an
    /// indirect table, or of a length that is not a non-zero multiple of 16 (§2.7.5.3).
    case invalidIndirect(head: UInt16, why: String)
    /// A saved queue that does not fit the device it is restored into.
    case savedStateMismatch(why: String)

    public var description: String {
        switch self {
        case let .ringOutsideMemory(what, address, length):
            "the \(what) at 0x\(String(address, radix: 16)) (\(length) bytes) is not in guest RAM"
        case let .availableOverrun(avail, seen, size):
            "the available index moved from \(seen) to \(avail), more than the queue's \(size) entries"
        case let .indexOutOfRange(index, limit): "descriptor index \(index) is beyond the table's \(limit) entries"
        case let .chainTooLong(head, limit): "the chain from descriptor \(head) is longer than \(limit) descriptors (a loop?)"
        case let .bufferOutsideMemory(address, length):
            "a buffer at 0x\(String(address, radix: 16)) (\(length) bytes) is not in guest RAM"
        case let .readableAfterWritable(head): "the chain from descriptor \(head) has a device-readable buffer after a device-writable one"
        case let .invalidIndirect(head, why): "the chain from descriptor \(head) has an invalid indirect descriptor: \(why)"
        case let .savedStateMismatch(why): why
        }
    }
}

/// One chain the driver made available: its head (returned in the used ring) and its buffers,
/// device-readable first, then device-writable, each checked to lie inside guest RAM.
public struct DescriptorChain: Equatable, Sendable {
    public var head: UInt16
    public var readable: [(address: GuestAddress, length: UInt32)]
    public var writable: [(address: GuestAddress, length: UInt32)]

    public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }

    /// The first `count` bytes of the segments (fewer if they hold fewer), for a device to read.
    static func gather(_ segments: [(address: GuestAddress, length: UInt32)], count: Int, memory: GuestMemory) -> [UInt8] {
        var bytes: [UInt8] = []
        for (address, length) in segments where bytes.count < count {
            let n = min(Int(length), count - bytes.count)
            guard let part = try? memory.read(at: address, count: n) else { break }
            bytes += part
        }
        return bytes
    }

    /// Writes `bytes` across the device-writable buffers in order, as far as they hold; returns
    /// the bytes written (for the used ring).
    func scatter(_ bytes: [UInt8], memory: GuestMemory) -> Int {
        var written = 0
        for (address, length) in writable where written < bytes.count {
            let n = min(Int(length), bytes.count - written)
            do { try memory.write(bytes, range: written..<(written + n), at: address) } catch { break }   // checked by pop
            written += n
        }
        return written
    }
    public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }

    public static func == (a: DescriptorChain, b: DescriptorChain) -> Bool {
        a.head == b.head && a.readable.map { [$0.address.rawValue, UInt64($0.length)] } == b.readable.map { [$0.address.rawValue, UInt64($0.length)] }
            && a.writable.map { [$0.address.rawValue, UInt64($0.length)] } == b.writable.map { [$0.address.rawValue, UInt64($0.length)] }
    }
}

/// The device side of a split virtqueue (VIRTIO 1.2 §2.7): the driver's configuration (size,
/// the three areas' addresses), the next available entry to take, and the used index. Takes
/// chains from the available ring, returns them through the used ring, and decides whether the
/// driver wants an interrupt (§2.7.7, with `VIRTIO_RING_F_EVENT_IDX` §2.7.10).
public struct Virtqueue: Equatable, Sendable {
    public static let maxSize: UInt16 = 32768
    static let descriptorSize: UInt64 = 16
    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4
    static let availNoInterrupt: UInt16 = 1

    /// What the driver set through the transport.
    public var size: UInt16
    public var descriptorTable: UInt64 = 0
    public var availableRing: UInt64 = 0    // the driver area
    public var usedRing: UInt64 = 0         // the device area
    public var ready = false

    /// The negotiated ring features.
    public var indirect = false
    public var eventIndex = false

    /// The next available-ring entry the device will take, and the used index it publishes.
    public private(set) var nextAvailable: UInt16 = 0
    public private(set) var nextUsed: UInt16 = 0
    /// The used index when the driver was last notified (for EVENT_IDX).
    private var signalledUsed: UInt16? = nil

    public init(size: UInt16) { self.size = size }

    /// Where the device was in the rings (a snapshot's), with the driver's configuration.
    public var position: (nextAvailable: UInt16, nextUsed: UInt16, signalledUsed: UInt16?) {
        (nextAvailable, nextUsed, signalledUsed)
    }

    /// Back to a saved place in the rings (a restore).
    public mutating func resume(nextAvailable: UInt16, nextUsed: UInt16, signalledUsed: UInt16?) {
        self.nextAvailable = nextAvailable
        self.nextUsed = nextUsed
        self.signalledUsed = signalledUsed
    }

    /// The queue as after a reset: not ready, indices at zero, addresses cleared.
    public mutating func reset(maxSize: UInt16) {
        self = Virtqueue(size: maxSize)
    }

    /// True for a size the split ring allows: a power of two from 1 to 32768 (§2.7).
    public static func isValidSize(_ size: UInt32) -> Bool {
        size >= 1 && size <= UInt32(maxSize) && size & (size - 1) == 0
    }

    /// Checks that the three areas lie in guest RAM and are aligned (§2.7: 16, 2 and 4 bytes).
    public func validate(in memory: GuestMemory) throws(VirtqueueError) {
        let n = UInt64(size)
        let areas: [(String, UInt64, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, 16 * n, 16),
            ("available ring", availableRing, 6 + 2 * n, 2),
            ("used ring", usedRing, 6 + 8 * n, 4),
        ]
        for (what, address, length, alignment) in areas {
            guard address % alignment == 0, memory.contains(GuestAddress(address), length: length) else {
                throw .ringOutsideMemory(what: what, address: address, length: length)
            }
        }
    }

    /// Takes the next available chain, or nil if the driver has made none available.
    /// With EVENT_IDX, an empty ring first asks the driver to notify for the next buffer
    /// (`avail_event`, §2.7.10) and looks once more, so a buffer made available meanwhile is not
    /// left waiting for a notification the driver will not send.
    public mutating func pop(from memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        var availIndex: UInt16 = try loadRing(memory, availableRing + 2, "available ring")
        if availIndex == nextAvailable {
            guard eventIndex else { return nil }
            requestNotification(memory)
            availIndex = try loadRing(memory, availableRing + 2, "available ring")
            if availIndex == nextAvailable { return nil }
        }
        guard availIndex &- nextAvailable <= size else {
            throw .availableOverrun(avail: availIndex, seen: nextAvailable, size: size)
        }
        let slot = UInt64(nextAvailable % size)
        let head: UInt16 = try loadRing(memory, availableRing + 4 + 2 * slot, "available ring")
        nextAvailable &+= 1
        return try chain(from: head, in: memory)
    }

    /// Walks the chain from `head`, following NEXT and at most one indirect table.
    func chain(from head: UInt16, in memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
        var result = DescriptorChain(head: head, readable: [], writable: [])
        var table = descriptorTable
        var limit = Int(size)
        var index = head
        var inIndirect = false
        var count = 0
        while true {
            guard Int(index) < limit else { throw .indexOutOfRange(index: index, limit: limit) }
            count += 1
            guard count <= limit else { throw .chainTooLong(head: head, limit: limit) }
            let base = table + Self.descriptorSize * UInt64(index)
            let address: UInt64 = try loadRing(memory, base, "descriptor table")
            let length: UInt32 = try loadRing(memory, base + 8, "descriptor table")
            let flags: UInt16 = try loadRing(memory, base + 12, "descriptor table")
            let next: UInt16 = try loadRing(memory, base + 14, "descriptor table")
            if flags & Self.flagIndirect != 0 {
                guard indirect else { throw .invalidIndirect(head: head, why: "VIRTIO_RING_F_INDIRECT_DESC was not negotiated") }
                guard !inIndirect else { throw .invalidIndirect(head: head, why: "an indirect table may not hold one") }
                guard flags & Self.flagNext == 0 else { throw .invalidIndirect(head: head, why: "NEXT is set too") }
                guard length > 0, length % 16 == 0 else { throw .invalidIndirect(head: head, why: "length \(length) is not a non-zero multiple of 16") }
                guard address &+ UInt64(length) >= address, memory.contains(GuestAddress(address), length: UInt64(length)) else {
                    throw .bufferOutsideMemory(address: address, length: length)
                }
                table = address
                limit = Int(length / 16)
                index = 0
                count = 0
                inIndirect = true
                continue
            }
            if length > 0 {
                guard address &+ UInt64(length) >= address, memory.contains(GuestAddress(address), length: UInt64(length)) else {
                    throw .bufferOutsideMemory(address: address, length: length)
                }
            }
            if flags & Self.flagWrite != 0 {
                result.writable.append((GuestAddress(address), length))
            } else {
                guard result.writable.isEmpty else { throw .readableAfterWritable(head: head) }
                result.readable.append((GuestAddress(address), length))
            }
            guard flags & Self.flagNext != 0 else { return result }
            index = next
        }
    }

    /// Returns a chain to the driver with the number of bytes the device wrote into it.
    public mutating func push(head: UInt16, written: UInt32, to memory: GuestMemory) throws(VirtqueueError) {
        let slot = UInt64(nextUsed % size)
        let entry = usedRing + 4 + 8 * slot
        do {
            try memory.store(UInt32(head), at: GuestAddress(entry))
            try memory.store(written, at: GuestAddress(entry + 4))
            nextUsed &+= 1
            try memory.storeRelease(nextUsed, at: GuestAddress(usedRing + 2))
        } catch {
            throw .ringOutsideMemory(what: "used ring", address: usedRing, length: 6 + 8 * UInt64(size))
        }
    }

    /// After `push`es: true if the driver wants an interrupt for what was used since the last one
    /// (§2.7.7.2: without EVENT_IDX, unless VIRTQ_AVAIL_F_NO_INTERRUPT; with it, when the used
    /// index has passed the driver's `used_event`).
    public mutating func needsInterrupt(_ memory: GuestMemory) -> Bool {
        memory.fence()
        defer { signalledUsed = nextUsed }
        if !eventIndex {
            let flags: UInt16 = (try? memory.load(at: GuestAddress(availableRing))) ?? 0
            return flags & Self.availNoInterrupt == 0
        }
        guard let old = signalledUsed else { return true }
        let usedEvent: UInt16 = (try? memory.load(at: GuestAddress(availableRing + 4 + 2 * UInt64(size)))) ?? 0
        // vring_need_event: the driver asked to be told once the used index passes used_event.
        return nextUsed &- usedEvent &- 1 < nextUsed &- old
    }

    /// True if the driver has made a buffer available that `pop` has not taken.
    public func hasAvailable(_ memory: GuestMemory) -> Bool {
        let availIndex: UInt16? = try? memory.loadAcquire(at: GuestAddress(availableRing + 2))
        return availIndex.map { $0 != nextAvailable } ?? false
    }

    /// With EVENT_IDX: tells the driver to notify again once it makes `nextAvailable` available
    /// (the device's `avail_event`, §2.7.10), before the device looks at the ring a last time.
    public func requestNotification(_ memory: GuestMemory) {
        guard eventIndex else { return }
        try? memory.storeRelease(nextAvailable, at: GuestAddress(usedRing + 4 + 8 * UInt64(size)))
        memory.fence()
    }

    private func loadRing<T: FixedWidthInteger>(_ memory: GuestMemory, _ address: UInt64, _ what: String) throws(VirtqueueError) -> T {
        do { return try memory.loadAcquire(at: GuestAddress(address)) } catch {
            throw .ringOutsideMemory(what: what, address: address, length: UInt64(MemoryLayout<T>.size))
        }
    }
}

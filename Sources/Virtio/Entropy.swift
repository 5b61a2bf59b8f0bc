import GuestMemory

/// The entropy device (VIRTIO 1.2 §5.4): one request queue; every device-writable buffer the
/// driver makes available is filled from `getrandom` and returned. No feature bits, no
/// configuration space.
public final class EntropyDevice: VirtioDevice {
    public static let queueSize: UInt16 = 256
    /// At most this much randomness per request (Linux asks for 64 bytes at a time).
    static let maxRequest = 1 << 16
    /// The randomness source (tests substitute a fixed one).
    let fill: @Sendable (inout [UInt8]) -> Bool

    public init(fill: @escaping @Sendable (inout [UInt8]) -> Bool = EntropyDevice.getrandomFill) {
        self.fill = fill
    }

    public var deviceID: UInt32 { 4 }
    public var deviceFeatures: UInt64 { 0 }
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }
    public func readConfig(offset: Int, size: Int) -> UInt32 { 0 }
    public func activate(features: UInt64) {}
    public func reset() {}

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        while let chain = try queue.pop(from: memory) {
            var written: UInt32 = 0
            var budget = Self.maxRequest
            for (address, length) in chain.writable where budget > 0 {
                var bytes = [UInt8](repeating: 0, count: min(Int(length), budget))
                guard fill(&bytes) else { break }
                do { try memory.write(bytes, at: address) } catch { break }   // checked by pop; cannot fail
                written += UInt32(bytes.count)
                budget -= bytes.count
            }
            try queue.push(head: chain.head, written: written, to: memory)
            used = true
        }
        return used
    }

    /// Fills the buffer from the kernel's CSPRNG: the standard library's system generator,
    /// which is `getrandom(2)` on Linux.
    public static let getrandomFill: @Sendable (inout [UInt8]) -> Bool = { bytes in
        var generator = SystemRandomNumberGenerator()
        var index = 0
        while index < bytes.count {
            var word = generator.next()
            for _ in 0..<8 where index < bytes.count {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        return true
    }
}

/// A zero-filled byte image of a guest structure, written field by field at fixed offsets
/// (little-endian). Building structures as bytes keeps their layout explicit and testable.
public struct ByteImage: Equatable, Sendable {
    public private(set) var bytes: [UInt8]

    public init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    public mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { source in
            for (i, byte) in source.enumerated() { bytes[offset + i] = byte }
        }
    }

    public mutating func put(_ data: some Collection<UInt8>, at offset: Int) {
        for (i, byte) in data.enumerated() { bytes[offset + i] = byte }
    }

    public func get<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        return value
    }
}

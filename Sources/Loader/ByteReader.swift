/// Bounds-checked little-endian reads from a file image.
///
/// Every offset is a `UInt64` taken straight from an untrusted header; every read returns nil
/// rather than trapping when `[offset, offset + width)` is not wholly inside the bytes, and no
/// arithmetic here can overflow. Parsers turn a nil into a `LoaderError` that names the field.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Number of bytes in the image.
    public var count: UInt64 { UInt64(bytes.count) }

    /// The `Int` range `[offset, offset + length)` if it lies inside the bytes, else nil.
    public func range(offset: UInt64, length: UInt64) -> Range<Int>? {
        guard offset <= count, length <= count - offset else { return nil }
        // Both fit in Int: they are bounded by bytes.count.
        return Int(offset)..<Int(offset + length)
    }

    /// True if `[offset, offset + length)` lies inside the bytes.
    public func contains(offset: UInt64, length: UInt64) -> Bool {
        range(offset: offset, length: length) != nil
    }

    /// The bytes `[offset, offset + length)`, or nil if that runs past the end.
    public func slice(offset: UInt64, length: UInt64) -> ArraySlice<UInt8>? {
        guard let range = range(offset: offset, length: length) else { return nil }
        return bytes[range]
    }

    /// An unsigned little-endian integer of `T`'s width at `offset`, or nil if out of bounds.
    public func read<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at offset: UInt64) -> T? {
        let width = UInt64(MemoryLayout<T>.size)
        guard let range = range(offset: offset, length: width) else { return nil }
        return Self.littleEndian(bytes[range], as: T.self)
    }

    public func u8(at offset: UInt64) -> UInt8? { read(UInt8.self, at: offset) }
    public func u16(at offset: UInt64) -> UInt16? { read(UInt16.self, at: offset) }
    public func u32(at offset: UInt64) -> UInt32? { read(UInt32.self, at: offset) }
    public func u64(at offset: UInt64) -> UInt64? { read(UInt64.self, at: offset) }

    /// Assembles up to `T`'s width of little-endian bytes; extra bytes beyond the width are ignored.
    static func littleEndian<T: FixedWidthInteger & UnsignedInteger>(_ bytes: ArraySlice<UInt8>, as: T.Type) -> T {
        var value: T = 0
        var shift = 0
        for byte in bytes.prefix(MemoryLayout<T>.size) {
            value |= T(byte) << shift
            shift += 8
        }
        return value
    }
}

/// `0x` followed by lower-case hex digits: the one number format of every loader message.
@inline(__always)
func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

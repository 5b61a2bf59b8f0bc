import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A snapshot file that cannot be read or used: the file and what is wrong, in one line.
public struct SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public init(path: String, problem: String) { self.path = path; self.problem = problem }
    public var description: String { "\(path): \(problem)" }
}

/// Raw bytes in the state (a kernel structure, a device's FIFO), written as base64.
public struct Bytes: Codable, Equatable, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let data = Data(base64Encoded: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not base64"))
        }
        bytes = [UInt8](data)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Data(bytes).base64EncodedString())
    }
}

/// The snapshot file (README, Snapshots): a fixed header, the state as JSON, a checksum.
///
///     offset  size  field
///     0       8     magic "SWLTSNAP"
///     8       4     format version, little-endian (1)
///     12      4     reserved, 0
///     16      8     length of the state, little-endian
///     24      N     the state: UTF-8 JSON (`MachineState`)
///     24+N    4     CRC-32 (IEEE 802.3) of bytes [0, 24+N), little-endian
///
/// The state says which Swiftlet wrote it, the host CPU's vendor and the CPUID every vCPU was
/// given, the machine's configuration, every vCPU's and the VM's KVM state, and every device's.
/// Guest memory is in a separate file (`memory`).
public enum SnapshotFile {
    public static let magic: [UInt8] = Array("SWLTSNAP".utf8)
    public static let formatVersion: UInt32 = 1
    static let headerSize = 24
    /// A state larger than this is refused unread (a snapshot of 254 vCPUs is far below it).
    public static let maxStateSize = 256 << 20

    public static func encode(_ state: MachineState) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = [UInt8](try encoder.encode(state))
        var bytes = magic
        append(&bytes, formatVersion)
        append(&bytes, UInt32(0))
        append(&bytes, UInt64(body.count))
        bytes += body
        append(&bytes, CRC32.checksum(bytes))
        return bytes
    }

    /// Reads and decodes the snapshot file at `path`.
    public static func read(path: String) throws(SnapshotError) -> MachineState {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SnapshotError(path: path, problem: "cannot read the snapshot: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SnapshotError(path: path, problem: "cannot read the snapshot: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count >= magic.count && !bytes.starts(with: magic) { break }   // not a snapshot: no need to read on
            guard bytes.count <= maxStateSize + headerSize + 4 else {
                throw SnapshotError(path: path, problem: "larger than any snapshot (is it the memory file?)")
            }
        }
        return try decode(bytes, path: path)
    }

    /// Reads a snapshot's bytes; `path` names the file in errors.
    public static func decode(_ bytes: [UInt8], path: String) throws(SnapshotError) -> MachineState {
        func refuse(_ problem: String) -> SnapshotError { SnapshotError(path: path, problem: problem) }
        guard !bytes.isEmpty else { throw refuse("the file is empty, not a snapshot") }
        guard bytes.count >= headerSize + 4 else {
            throw refuse(bytes.starts(with: magic) || magic.starts(with: bytes)
                         ? "truncated: \(bytes.count) bytes, shorter than a snapshot's header"
                         : "not a Swiftlet snapshot (no \"SWLTSNAP\" at the start)")
        }
        guard bytes.starts(with: magic) else { throw refuse("not a Swiftlet snapshot (no \"SWLTSNAP\" at the start)") }
        let version = le32(bytes, 8)
        guard version == formatVersion else {
            throw refuse("snapshot format version \(version); this Swiftlet reads version \(formatVersion)")
        }
        let length = le64(bytes, 16)
        guard length <= UInt64(maxStateSize) else { throw refuse("a state of \(length) bytes is larger than any snapshot's") }
        let expected = headerSize + Int(length) + 4
        guard bytes.count == expected else {
            throw refuse(bytes.count < expected ? "truncated: \(bytes.count) bytes of \(expected)"
                                                : "\(bytes.count - expected) bytes after the end of the snapshot")
        }
        let stored = le32(bytes, expected - 4)
        guard CRC32.checksum(bytes[0..<(expected - 4)]) == stored else {
            throw refuse("the checksum does not match: the file is corrupted")
        }
        let body = Data(bytes[headerSize..<(expected - 4)])
        do {
            return try JSONDecoder().decode(MachineState.self, from: body)
        } catch let error as DecodingError {
            throw refuse("the state does not decode: \(describe(error))")
        } catch {
            throw refuse("the state does not decode: \(error)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
        }
        switch error {
        case let .keyNotFound(key, context): return "missing field `\(path(context).isEmpty ? "" : path(context) + ".")\(key.stringValue)`"
        case let .valueNotFound(_, context), let .typeMismatch(_, context), let .dataCorrupted(context):
            return "field `\(path(context))`: \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    static func append<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        for i in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }
    static func le32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
    static func le64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

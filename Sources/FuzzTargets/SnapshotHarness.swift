import Snapshot

/// The snapshot decoder on hostile files. The input is a whole file; when its header is Swiftlet's
/// (magic and a length that fits), the harness writes the right CRC-32 over it first, so that
/// mutations reach the state's JSON instead of stopping at the checksum every time. Every input must
/// decode or be refused with a `SnapshotError` naming the file, and a state that decodes must encode
/// and decode to itself.
public enum SnapshotHarness {
    public static func run(_ input: [UInt8]) {
        var bytes = input
        if bytes.count >= 28, bytes.starts(with: SnapshotFile.magic) {
            let crc = CRC32.checksum(bytes[0..<(bytes.count - 4)])
            for i in 0..<4 { bytes[bytes.count - 4 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        }
        do {
            let state = try SnapshotFile.decode(bytes, path: "fuzz.snap")
            let again = try? SnapshotFile.decode((try? SnapshotFile.encode(state)) ?? [], path: "again")
            invariant(again == state, "a decoded state did not survive encoding")
        } catch {
            invariant(error.path == "fuzz.snap" && !error.problem.isEmpty, "a refusal without a file or a problem")
        }
    }
}

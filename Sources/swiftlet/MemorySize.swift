/// A memory size as users type it: `512M`, `4G`, `65536K`, `1T`, with optional `iB`/`B`
/// (`512MiB`); binary units. A bare number means MiB, as in QEMU's `-m`.
struct MemorySize: Equatable {
    let bytes: UInt64

    static let shifts: [String: UInt64] = [
        "": 20, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20,
        "g": 30, "gb": 30, "gib": 30, "t": 40, "tb": 40, "tib": 40,
    ]

    enum ParseError: Error, Equatable { case notASize, zero, overflow }

    static func parse(_ text: String) throws(ParseError) -> MemorySize {
        let trimmed = text.trimmingCharacters()
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = UInt64(digits) else { throw .notASize }
        let unit = trimmed.dropFirst(digits.count).lowercased()
        guard let shift = Self.shifts[unit] else { throw .notASize }
        guard number > 0 else { throw .zero }
        guard number <= UInt64.max >> shift else { throw .overflow }
        return MemorySize(bytes: number << shift)
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

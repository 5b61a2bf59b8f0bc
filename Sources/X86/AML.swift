/// The few ACPI Machine Language encodings Swiftlet's DSDT needs (ACPI 6.5, chapter 20, "ACPI
/// Machine Language Specification", and 6.4, "Resource Data Types for ACPI"). Each function
/// returns the bytes of one term; callers concatenate them into a table body.
public enum AML {
    /// A 4-character name segment (`_HID`, `COM1`), padded with `_` as ASL does.
    static func nameSegment(_ name: String) -> [UInt8] {
        precondition(name.utf8.count <= 4 && !name.isEmpty, "AML name segments have 1 to 4 characters")
        return Array(name.utf8) + Array(repeating: UInt8(ascii: "_"), count: 4 - name.utf8.count)
    }

    /// A name string: `\_SB_` (rooted) or a single segment.
    static func nameString(_ name: String) -> [UInt8] {
        name.hasPrefix("\\") ? [UInt8(ascii: "\\")] + nameSegment(String(name.dropFirst())) : nameSegment(name)
    }

    /// PkgLength (20.2.4) for `length` bytes that follow it: the encoding counts its own bytes.
    static func packageLength(_ length: Int) -> [UInt8] {
        if length + 1 < 0x40 { return [UInt8(length + 1)] }
        for extra in 1...3 {
            let total = length + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var bytes = [UInt8(extra << 6 | (total & 0xF))]
                for index in 0..<extra { bytes.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
                return bytes
            }
        }
        preconditionFailure("AML package longer than 2^28 bytes")
    }

    /// The smallest integer encoding: Zero, One, ByteConst, WordConst or DWordConst.
    public static func integer(_ value: UInt32) -> [UInt8] {
        switch value {
        case 0: [0x00]
        case 1: [0x01]
        case ...0xFF: [0x0A, UInt8(value)]
        case ...0xFFFF: [0x0B] + ByteImage.le(UInt16(value))
        default: [0x0C] + ByteImage.le(value)
        }
    }

    /// `Name (NAME, object)`.
    public static func name(_ name: String, _ object: [UInt8]) -> [UInt8] { [0x08] + nameString(name) + object }

    /// `Package (n) { elements }`, each element already encoded.
    public static func package(_ elements: [[UInt8]]) -> [UInt8] {
        let body = [UInt8(elements.count)] + elements.flatMap { $0 }
        return [0x12] + packageLength(body.count) + body
    }

    /// `Scope (NAME) { terms }`.
    public static func scope(_ name: String, _ terms: [[UInt8]]) -> [UInt8] {
        let body = nameString(name) + terms.flatMap { $0 }
        return [0x10] + packageLength(body.count) + body
    }

    /// `Device (NAME) { terms }`.
    public static func device(_ name: String, _ terms: [[UInt8]]) -> [UInt8] {
        let body = nameString(name) + terms.flatMap { $0 }
        return [0x5B, 0x82] + packageLength(body.count) + body
    }

    /// `Buffer () { bytes }`.
    static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        let body = integer(UInt32(bytes.count)) + bytes
        return [0x11] + packageLength(body.count) + body
    }

    /// `EisaId ("PNP0501")`: three letters of 5 bits each and four hex digits, stored big-endian
    /// in a DWordConst.
    public static func eisaID(_ id: String) -> [UInt8] {
        let chars = Array(id.utf8)
        precondition(chars.count == 7, "an EISA ID is three letters and four hex digits")
        let letters = UInt32(chars[0] - 0x40) << 10 | UInt32(chars[1] - 0x40) << 5 | UInt32(chars[2] - 0x40)
        let product = UInt32(String(decoding: chars[3...], as: UTF8.self), radix: 16) ?? 0
        let value = letters << 16 | product
        return [0x0C, UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    /// A resource template (`ResourceTemplate () { ... }`) as a buffer, with its end tag.
    public static func resourceTemplate(_ descriptors: [[UInt8]]) -> [UInt8] {
        buffer(descriptors.flatMap { $0 } + [0x79, 0x00])   // end tag; checksum 0: "treat as valid"
    }

    /// `IO (Decode16, base, base, 1, length)`: a fixed range of I/O ports (6.4.2.5).
    public static func ioPorts(_ base: UInt16, length: UInt8) -> [UInt8] {
        [0x47, 0x01] + ByteImage.le(base) + ByteImage.le(base) + [0x01, length]
    }

    /// `IRQNoFlags () { irq }`: an edge-triggered, active-high ISA interrupt (6.4.2.1).
    public static func isaInterrupt(_ irq: Int) -> [UInt8] {
        [0x22] + ByteImage.le(UInt16(1) << UInt16(irq))
    }

    /// `"text"`: a string constant (ACPI 6.5, 20.2.3), e.g. an ACPI `_HID` like "LNRO0005".
    public static func string(_ text: String) -> [UInt8] {
        [0x0D] + Array(text.utf8) + [0x00]
    }

    /// `Memory32Fixed (ReadWrite, base, length)`: a fixed range of memory (6.4.3.4).
    public static func memory32Fixed(_ base: UInt32, length: UInt32) -> [UInt8] {
        [0x86] + ByteImage.le(UInt16(9)) + [0x01] + ByteImage.le(base) + ByteImage.le(length)
    }

    /// `Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }`: one GSI (6.4.3.6).
    public static func extendedInterrupt(_ irq: UInt32) -> [UInt8] {
        [0x89] + ByteImage.le(UInt16(6)) + [0x03, 0x01] + ByteImage.le(irq)
    }
}

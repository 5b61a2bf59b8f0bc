/// A Linux bzImage: the setup header at file offset 0x1F1 (Documentation/arch/x86/boot.rst;
/// boot-and-abi.md 3.2, 3.4). Only the fields a 64-bit-entry loader needs are decoded.
public struct BzImage: Sendable {
    /// The path the image was read from, for error messages.
    public let path: String
    /// The whole file: the protected-mode kernel is copied from here at load time.
    public let bytes: [UInt8]
    /// Real-mode setup sectors, with the header's 0 already turned into 4.
    public let setupSectors: Int
    /// Boot protocol version, (major << 8) | minor, e.g. 0x020F.
    public let version: UInt16
    public let loadFlags: UInt8
    /// 0 before protocol 2.12.
    public let xloadflags: UInt16
    public let code32Start: UInt32
    /// 0 before protocol 2.05.
    public let kernelAlignment: UInt32
    /// Always false before protocol 2.05.
    public let relocatable: Bool
    /// 0x37FFFFFF before protocol 2.03 (boot.rst's default).
    public let initrdAddressMax: UInt32
    /// 255 before protocol 2.06 (boot.rst's default).
    public let cmdlineSize: UInt32
    /// 0 before protocol 2.10.
    public let prefAddress: UInt64
    /// 0 before protocol 2.10.
    public let initSize: UInt32
    /// File offset of the protected-mode kernel: (setup_sects + 1) * 512.
    public let protectedModeOffset: Int
    /// The setup header as the image carries it, file offsets 0x1F1 up to 0x202 + the jump byte
    /// at 0x201, cut at 0x290 (where `boot_params.edd_mbr_sig_buffer` starts) so that copying it
    /// into a zero page can never reach the e820 table.
    public let setupHeader: [UInt8]

    public static let headerOffset = 0x1F1
    static let magic: UInt32 = 0x5372_6448  // "HdrS" at 0x202
    static let loadedHigh: UInt8 = 1 << 0   // LOADED_HIGH
    static let kernel64: UInt16 = 1 << 0    // XLF_KERNEL_64
    /// Where `boot_params.hdr` may end at the latest.
    static let setupHeaderLimit = 0x290

    /// The 64-bit entry (load address + 0x200) exists: protocol 2.12+ with `XLF_KERNEL_64`.
    public var supports64BitEntry: Bool { version >= 0x020C && xloadflags & Self.kernel64 != 0 }

    /// True if the file carries "HdrS" at 0x202.
    static func hasHeader(_ bytes: [UInt8]) -> Bool { ByteReader(bytes).u32(at: 0x202) == magic }

    public static func parse(_ bytes: [UInt8], path: String) throws(LoaderError) -> BzImage {
        let reader = ByteReader(bytes)
        func unsupported(_ field: String, _ value: some BinaryInteger, _ expected: String) -> LoaderError {
            .unsupported(path: path, format: "bzImage", field: field, value: UInt64(truncatingIfNeeded: value), expected: expected)
        }
        guard let header = reader.u32(at: 0x202), let jump = reader.u8(at: 0x201),
              let setupSectorsField = reader.u8(at: 0x1F1), let version = reader.u16(at: 0x206) else {
            throw .truncated(path: path, format: "bzImage", what: "setup header", offset: 0x1F1, fileSize: reader.count)
        }
        guard header == magic else { throw unsupported("header at 0x202", header, "0x53726448 (\"HdrS\")") }
        guard version >= 0x0200 else { throw unsupported("version", version, "at least 0x200 (boot protocol 2.00)") }
        let headerEnd = 0x202 + Int(jump)
        guard reader.contains(offset: 0, length: UInt64(headerEnd)) else {
            throw .truncated(path: path, format: "bzImage", what: "setup header (end \(hex(headerEnd)))",
                             offset: 0x1F1, fileSize: reader.count)
        }
        let bootFlag = reader.u16(at: 0x1FE) ?? 0
        guard bootFlag == 0xAA55 else { throw unsupported("boot_flag", bootFlag, "0xaa55") }

        /// A field present since protocol `since` and inside the header the jump byte delimits;
        /// otherwise `fallback`.
        func field<T: FixedWidthInteger & UnsignedInteger>(_ offset: Int, _ type: T.Type, since: UInt16, fallback: T = 0) -> T {
            guard version >= since, offset + MemoryLayout<T>.size <= headerEnd else { return fallback }
            return reader.read(T.self, at: UInt64(offset)) ?? fallback
        }
        let loadFlags: UInt8 = field(0x211, UInt8.self, since: 0x0200)
        guard loadFlags & loadedHigh != 0 else {
            throw unsupported("loadflags", loadFlags, "LOADED_HIGH (bit 0) set: a zImage cannot be loaded high")
        }
        let setupSectors = setupSectorsField == 0 ? 4 : Int(setupSectorsField)
        let protectedModeOffset = (setupSectors + 1) * 512
        guard protectedModeOffset < bytes.count else {
            throw .truncated(path: path, format: "bzImage",
                             what: "protected-mode kernel (after \(setupSectors) setup sectors)",
                             offset: UInt64(protectedModeOffset), fileSize: reader.count)
        }
        let headerBytes = Array(bytes[headerOffset..<min(headerEnd, setupHeaderLimit)])

        return BzImage(
            path: path, bytes: bytes, setupSectors: setupSectors, version: version, loadFlags: loadFlags,
            xloadflags: field(0x236, UInt16.self, since: 0x020C),
            code32Start: field(0x214, UInt32.self, since: 0x0200),
            kernelAlignment: field(0x230, UInt32.self, since: 0x0205),
            relocatable: field(0x234, UInt8.self, since: 0x0205) != 0,
            initrdAddressMax: field(0x22C, UInt32.self, since: 0x0203, fallback: 0x37FF_FFFF),
            cmdlineSize: field(0x238, UInt32.self, since: 0x0206, fallback: 255),
            prefAddress: field(0x258, UInt64.self, since: 0x020A),
            initSize: field(0x260, UInt32.self, since: 0x020A),
            protectedModeOffset: protectedModeOffset, setupHeader: headerBytes)
    }

    /// Where `load` puts the protected-mode kernel: `pref_address` when the kernel is relocatable
    /// and names one (the address it was linked for, so its decompressor need not move itself),
    /// else `code32_start`. No other placement is tried.
    public var loadAddress: UInt64 {
        relocatable && prefAddress != 0 ? prefAddress : UInt64(code32Start)
    }

    /// Bytes of the protected-mode kernel in the file.
    public var payloadSize: UInt64 { UInt64(bytes.count - protectedModeOffset) }

    /// Guest bytes the kernel occupies from `loadAddress`: the payload or `init_size`, whichever is larger.
    public var memorySize: UInt64 { max(payloadSize, UInt64(initSize)) }
}

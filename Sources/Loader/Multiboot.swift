/// Multiboot 1 (Multiboot Specification 0.6.96, section 3.1): the header a kernel carries in its
/// first 8 KiB, and loading by it.
///
/// The header is found at a 4-byte-aligned offset where magic, flags and checksum sum to zero
/// (mod 2^32). Flags 0 (page-align modules), 1 (memory information) and 2 (video mode: only a
/// preference, and Swiftlet offers none) are understood; bit 16 says the address fields are valid
/// and then decide the load (the "a.out kludge"), whatever the file format. Any other bit in
/// 0-15 is a requirement Swiftlet cannot meet, so such a kernel is refused, as the spec asks.
public struct MultibootHeader: Sendable, Equatable {
    public static let magic: UInt32 = 0x1BAD_B002
    /// What the kernel finds in EAX on entry.
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    /// The header must lie wholly within this many bytes from the start of the file.
    public static let searchLimit = 8192

    public static let pageAlignModules: UInt32 = 1 << 0
    public static let memoryInfo: UInt32 = 1 << 1
    public static let videoMode: UInt32 = 1 << 2
    public static let addressFields: UInt32 = 1 << 16
    /// Requirement bits (0-15) this loader honours.
    public static let understoodRequirements: UInt32 = pageAlignModules | memoryInfo | videoMode

    /// Where the header starts in the file.
    public let fileOffset: UInt64
    public let flags: UInt32
    public let checksum: UInt32
    /// The a.out-kludge fields (offsets 12-28), present when flag 16 is set.
    public let addresses: Addresses?
    /// Video fields (offsets 32-44), read when flag 2 is set: mode type, width, height, depth.
    public let video: (modeType: UInt32, width: UInt32, height: UInt32, depth: UInt32)?

    public struct Addresses: Sendable, Equatable {
        public let header: UInt32, load: UInt32, loadEnd: UInt32, bssEnd: UInt32, entry: UInt32
    }

    public static func == (a: MultibootHeader, b: MultibootHeader) -> Bool {
        a.fileOffset == b.fileOffset && a.flags == b.flags && a.checksum == b.checksum && a.addresses == b.addresses
            && a.video?.modeType == b.video?.modeType && a.video?.width == b.video?.width
            && a.video?.height == b.video?.height && a.video?.depth == b.video?.depth
    }

    /// The first valid header in the first 8 KiB, or nil if there is none. A header whose
    /// checksum does not match is skipped (it is just data that happens to hold the magic). A
    /// valid one with a requirement bit Swiftlet does not understand, or whose fields run past
    /// the end of the file, throws.
    public static func find(in bytes: [UInt8], path: String) throws(LoaderError) -> MultibootHeader? {
        let reader = ByteReader(bytes)
        let limit = UInt64(min(bytes.count, searchLimit))
        var offset: UInt64 = 0
        while offset + 12 <= limit {
            defer { offset += 4 }
            guard reader.u32(at: offset) == magic, let flags = reader.u32(at: offset + 4),
                  let checksum = reader.u32(at: offset + 8), magic &+ flags &+ checksum == 0 else { continue }
            let unknown = flags & 0xFFFF & ~understoodRequirements
            guard unknown == 0 else {
                throw .unsupported(path: path, format: "Multiboot", field: "header flags at offset \(hex(offset))",
                                   value: UInt64(flags),
                                   expected: "no requirement bits beyond 0-2 (bit \(unknown.trailingZeroBitCount) is set)")
            }
            var addresses: Addresses?
            if flags & addressFields != 0 {
                guard offset + 32 <= limit, let h = reader.u32(at: offset + 12), let l = reader.u32(at: offset + 16),
                      let le = reader.u32(at: offset + 20), let be = reader.u32(at: offset + 24),
                      let e = reader.u32(at: offset + 28) else {
                    throw .truncated(path: path, format: "Multiboot", what: "header address fields (flag 16)",
                                     offset: offset + 12, fileSize: reader.count)
                }
                addresses = Addresses(header: h, load: l, loadEnd: le, bssEnd: be, entry: e)
            }
            var video: (UInt32, UInt32, UInt32, UInt32)?
            if flags & videoMode != 0, offset + 48 <= UInt64(bytes.count),
               let t = reader.u32(at: offset + 32), let w = reader.u32(at: offset + 36),
               let h = reader.u32(at: offset + 40), let d = reader.u32(at: offset + 44) {
                video = (t, w, h, d)
            }
            return MultibootHeader(fileOffset: offset, flags: flags, checksum: checksum, addresses: addresses, video: video)
        }
        return nil
    }

    /// Where the a.out-kludge fields put the image: file range, load address, bss end and entry.
    /// Throws naming the field when they contradict each other or the file.
    func addressLayout(fileSize: UInt64, path: String) throws(LoaderError) -> (fileStart: UInt64, load: UInt64, loadSize: UInt64, bssEnd: UInt64, entry: UInt64)? {
        guard let a = addresses else { return nil }
        func bad(_ field: String, _ value: UInt32, _ expected: String) -> LoaderError {
            .unsupported(path: path, format: "Multiboot", field: field, value: UInt64(value), expected: expected)
        }
        guard a.load <= a.header else { throw bad("load_addr", a.load, "at most header_addr \(hex(a.header))") }
        let lead = UInt64(a.header - a.load)          // bytes loaded before the header
        guard lead <= fileOffset else {
            throw bad("load_addr", a.load, "at least header_addr - header offset \(hex(UInt64(a.header) - fileOffset))")
        }
        let fileStart = fileOffset - lead
        let loadSize: UInt64
        if a.loadEnd == 0 {
            loadSize = fileSize - fileStart                   // 0: the rest of the file
        } else {
            guard a.loadEnd >= a.load else { throw bad("load_end_addr", a.loadEnd, "at least load_addr \(hex(a.load))") }
            loadSize = UInt64(a.loadEnd - a.load)
            guard loadSize <= fileSize - fileStart else {
                throw .truncated(path: path, format: "Multiboot",
                                 what: "text and data (load_end_addr - load_addr = \(hex(loadSize)) bytes)",
                                 offset: fileStart, fileSize: fileSize)
            }
        }
        let loadEnd = UInt64(a.load) + loadSize
        let bssEnd: UInt64
        if a.bssEnd == 0 {
            bssEnd = loadEnd
        } else {
            guard UInt64(a.bssEnd) >= loadEnd else { throw bad("bss_end_addr", a.bssEnd, "at least the load end \(hex(loadEnd))") }
            bssEnd = UInt64(a.bssEnd)
        }
        guard bssEnd > UInt64(a.load) else {
            throw bad("load_end_addr", a.loadEnd, "above load_addr \(hex(a.load)), or a bss_end_addr: nothing would be loaded")
        }
        return (fileStart, UInt64(a.load), loadSize, bssEnd, UInt64(a.entry))
    }

    /// A one-line description of the flags for `inspect` and logs.
    public var flagNames: [String] {
        var names: [String] = []
        if flags & Self.pageAlignModules != 0 { names.append("page-align-modules") }
        if flags & Self.memoryInfo != 0 { names.append("memory-info") }
        if flags & Self.videoMode != 0 { names.append("video-mode") }
        if flags & Self.addressFields != 0 { names.append("address-fields") }
        return names
    }
}

/// A file that is neither ELF nor bzImage but carries a Multiboot header with flag 16: a flat
/// binary placed by the header's address fields.
public struct MultibootImage: Sendable {
    public let path: String
    public let bytes: [UInt8]
    public let header: MultibootHeader
}

extension MultibootHeader {
    /// Loads by the address fields (flag 16): the file from `header offset - (header_addr -
    /// load_addr)` for `load_end_addr - load_addr` bytes (the rest of the file when 0) at
    /// load_addr, zeroes up to bss_end_addr, and enters at entry_addr.
    func loadByAddresses(_ bytes: [UInt8], into memory: GuestMemory, floor: UInt64, path: String) throws(LoaderError) -> LoadedKernel {
        guard let layout = try addressLayout(fileSize: UInt64(bytes.count), path: path) else {
            throw .noUsableEntry(path: path, why: "Multiboot header has no address fields (flag 16)")
        }
        let size = layout.bssEnd - layout.load
        try checkPlacement(start: layout.load, size: size, index: nil, memory: memory, floor: floor, path: path)
        do {
            let start = Int(layout.fileStart)
            try memory.write(bytes, range: start..<(start + Int(layout.loadSize)), at: GuestAddress(layout.load))
            if layout.bssEnd > layout.load + layout.loadSize {
                try memory.fill(0, at: GuestAddress(layout.load + layout.loadSize), count: layout.bssEnd - layout.load - layout.loadSize)
            }
        } catch {
            throw .memory(path: path, error)
        }
        return LoadedKernel(entry: layout.entry, physicalStart: layout.load, physicalEnd: layout.bssEnd)
    }
}

import GuestMemory

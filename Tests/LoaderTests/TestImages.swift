import GuestMemory
@testable import Loader

// Small kernel images built in code: ELF32/ELF64 with program headers, PT_NOTE segments and
// optional SHT_NOTE sections, and bzImages with a setup header.

extension Array where Element == UInt8 {
    /// Little-endian bytes of `value`.
    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    /// Writes `value` little-endian at `offset`, growing the array with zeros if needed.
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        put(.le(value), at: offset)
    }

    mutating func put(_ bytes: [UInt8], at offset: Int) {
        if count < offset + bytes.count { append(contentsOf: [UInt8](repeating: 0, count: offset + bytes.count - count)) }
        replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    /// Zero-pads to a multiple of `alignment`.
    mutating func pad(to alignment: Int) {
        while count % alignment != 0 { append(0) }
    }
}

/// One ELF note record.
enum Note {
    /// A well-formed note: namesz = name + NUL, name and desc padded to 4 with zeros.
    static func make(name: String = "Xen", type: UInt32, desc: [UInt8]) -> [UInt8] {
        let nameBytes = Array(name.utf8) + [0]
        return raw(namesz: UInt32(nameBytes.count), descsz: UInt32(desc.count), type: type, name: nameBytes, desc: desc)
    }

    static func xen(_ type: XenNoteType, _ desc: [UInt8]) -> [UInt8] { make(type: type.rawValue, desc: desc) }

    /// A note with any header values; `name` and `desc` are each padded to 4 with `padding`.
    static func raw(namesz: UInt32, descsz: UInt32, type: UInt32, name: [UInt8], desc: [UInt8],
                    padding: UInt8 = 0) -> [UInt8] {
        var bytes: [UInt8] = .le(namesz) + .le(descsz) + .le(type)
        bytes += name
        while bytes.count % 4 != 0 { bytes.append(padding) }
        bytes += desc
        while bytes.count % 4 != 0 { bytes.append(padding) }
        return bytes
    }
}

/// Builds an ELF executable: header, program header table, segment data, then optional SHT_NOTE
/// sections and a section header table.
struct ELFBuilder {
    struct Segment {
        var type: UInt32 = ELFProgramHeader.load
        var flags: UInt32 = 5
        var virtualAddress: UInt64 = 0
        var physicalAddress: UInt64 = 0
        var data: [UInt8] = []
        /// nil: same as the data size.
        var memorySize: UInt64? = nil
        var alignment: UInt64 = 0x10

        static func load(at physical: UInt64, virtual: UInt64? = nil, data: [UInt8], memorySize: UInt64? = nil) -> Segment {
            Segment(type: ELFProgramHeader.load, flags: 7, virtualAddress: virtual ?? physical, physicalAddress: physical,
                    data: data, memorySize: memorySize)
        }

        static func notes(_ notes: [[UInt8]]) -> Segment {
            Segment(type: ELFProgramHeader.note, flags: 4, data: notes.flatMap { $0 }, alignment: 4)
        }
    }

    struct Built {
        var bytes: [UInt8]
        var programHeaderOffset: Int
        var segmentOffsets: [Int]
        var sectionOffsets: [Int]
        var sectionHeaderOffset: Int
    }

    var elfClass: ELFImage.Class = .elf64
    var machine: UInt16? = nil
    var type: UInt16 = 2
    var entry: UInt64 = 0x100_0000
    var segments: [Segment] = []
    /// Contents of SHT_NOTE sections, not covered by any segment.
    var noteSections: [[UInt8]] = []

    var is64: Bool { elfClass == .elf64 }
    var headerSize: Int { is64 ? 64 : 52 }
    var phentsize: Int { is64 ? 56 : 32 }
    var shentsize: Int { is64 ? 64 : 40 }

    func build() -> Built {
        var bytes: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, is64 ? 2 : 1, 1, 1, 0]
        bytes.put([UInt8](repeating: 0, count: headerSize - bytes.count), at: bytes.count)
        let phoff = headerSize
        bytes.put([UInt8](repeating: 0, count: phentsize * segments.count), at: phoff)
        bytes.pad(to: 16)

        var segmentOffsets: [Int] = []
        for segment in segments {
            segmentOffsets.append(bytes.count)
            bytes += segment.data
            bytes.pad(to: 16)
        }
        var sectionOffsets: [Int] = []
        for section in noteSections {
            sectionOffsets.append(bytes.count)
            bytes += section
            bytes.pad(to: 16)
        }
        let shoff = bytes.count
        if !noteSections.isEmpty {
            // Section 0 is SHT_NULL; then a PROGBITS section the note walk must ignore; then the notes.
            bytes += [UInt8](repeating: 0, count: shentsize)
            bytes += sectionHeader(type: 1, offset: UInt64(segmentOffsets.first ?? 0), size: 0)
            for (offset, section) in zip(sectionOffsets, noteSections) {
                bytes += sectionHeader(type: 7, offset: UInt64(offset), size: UInt64(section.count))
            }
        }

        // File header.
        bytes.put(type, at: 16)
        bytes.put(machine ?? (is64 ? 62 : 3), at: 18)
        bytes.put(UInt32(1), at: 20)
        let sectionCount = noteSections.isEmpty ? 0 : noteSections.count + 2
        if is64 {
            bytes.put(entry, at: 24)
            bytes.put(UInt64(phoff), at: 32)
            bytes.put(UInt64(noteSections.isEmpty ? 0 : shoff), at: 40)
            bytes.put(UInt16(64), at: 52)
            bytes.put(UInt16(phentsize), at: 54)
            bytes.put(UInt16(segments.count), at: 56)
            bytes.put(UInt16(shentsize), at: 58)
            bytes.put(UInt16(sectionCount), at: 60)
        } else {
            bytes.put(UInt32(truncatingIfNeeded: entry), at: 24)
            bytes.put(UInt32(phoff), at: 28)
            bytes.put(UInt32(noteSections.isEmpty ? 0 : shoff), at: 32)
            bytes.put(UInt16(52), at: 40)
            bytes.put(UInt16(phentsize), at: 42)
            bytes.put(UInt16(segments.count), at: 44)
            bytes.put(UInt16(shentsize), at: 46)
            bytes.put(UInt16(sectionCount), at: 48)
        }

        // Program headers.
        for (index, (segment, offset)) in zip(segments, segmentOffsets).enumerated() {
            let at = phoff + index * phentsize
            let memsz = segment.memorySize ?? UInt64(segment.data.count)
            if is64 {
                bytes.put(segment.type, at: at)
                bytes.put(segment.flags, at: at + 4)
                bytes.put(UInt64(offset), at: at + 8)
                bytes.put(segment.virtualAddress, at: at + 16)
                bytes.put(segment.physicalAddress, at: at + 24)
                bytes.put(UInt64(segment.data.count), at: at + 32)
                bytes.put(memsz, at: at + 40)
                bytes.put(segment.alignment, at: at + 48)
            } else {
                bytes.put(segment.type, at: at)
                bytes.put(UInt32(offset), at: at + 4)
                bytes.put(UInt32(truncatingIfNeeded: segment.virtualAddress), at: at + 8)
                bytes.put(UInt32(truncatingIfNeeded: segment.physicalAddress), at: at + 12)
                bytes.put(UInt32(segment.data.count), at: at + 16)
                bytes.put(UInt32(truncatingIfNeeded: memsz), at: at + 20)
                bytes.put(segment.flags, at: at + 24)
                bytes.put(UInt32(truncatingIfNeeded: segment.alignment), at: at + 28)
            }
        }
        return Built(bytes: bytes, programHeaderOffset: phoff, segmentOffsets: segmentOffsets,
                     sectionOffsets: sectionOffsets, sectionHeaderOffset: shoff)
    }

    private func sectionHeader(type: UInt32, offset: UInt64, size: UInt64) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: shentsize)
        header.put(type, at: 4)
        if is64 {
            header.put(offset, at: 24)
            header.put(size, at: 32)
            header.put(UInt64(4), at: 48)
        } else {
            header.put(UInt32(offset), at: 16)
            header.put(UInt32(size), at: 20)
            header.put(UInt32(4), at: 32)
        }
        return header
    }

    /// An ELF64 kernel with one 0x40-byte load segment at 16 MiB and the given Xen notes in a PT_NOTE.
    static func kernel(notes: [[UInt8]], elfClass: ELFImage.Class = .elf64) -> ELFBuilder {
        var builder = ELFBuilder(elfClass: elfClass)
        builder.segments = [.load(at: 0x100_0000, data: pattern(0x40))]
        if !notes.isEmpty { builder.segments.append(.notes(notes)) }
        return builder
    }

    func image(path: String = "/k/test") throws -> ELFImage {
        try ELFImage.parse(build().bytes, path: path)
    }
}

/// Builds a bzImage: boot sector with the setup header, `setupSectors` sectors of setup, payload.
struct BzImageBuilder {
    var setupSectors: UInt8 = 4
    var version: UInt16 = 0x020F
    var loadFlags: UInt8 = 0x01
    var xloadflags: UInt16 = 0x0003
    var code32Start: UInt32 = 0x10_0000
    var kernelAlignment: UInt32 = 0x20_0000
    var relocatable: Bool = true
    var initrdAddressMax: UInt32 = 0x7FFF_FFFF
    var cmdlineSize: UInt32 = 2047
    var prefAddress: UInt64 = 0x100_0000
    var initSize: UInt32 = 0x8000
    var jump: UInt8 = 0x6A   // header ends at 0x26C, as in current kernels
    var payload: [UInt8] = pattern(0x1000, seed: 3)

    func build() -> [UInt8] {
        let sectors = setupSectors == 0 ? 4 : Int(setupSectors)
        var bytes = [UInt8](repeating: 0, count: (sectors + 1) * 512)
        bytes.put(setupSectors, at: 0x1F1)
        bytes.put(UInt16(0xFFFF), at: 0x1FA)
        bytes.put(UInt16(0xAA55), at: 0x1FE)
        bytes.put([0xEB, jump], at: 0x200)
        bytes.put(UInt32(0x5372_6448), at: 0x202)
        bytes.put(version, at: 0x206)
        bytes.put(loadFlags, at: 0x211)
        bytes.put(code32Start, at: 0x214)
        bytes.put(initrdAddressMax, at: 0x22C)
        bytes.put(kernelAlignment, at: 0x230)
        bytes.put(UInt8(relocatable ? 1 : 0), at: 0x234)
        bytes.put(xloadflags, at: 0x236)
        bytes.put(cmdlineSize, at: 0x238)
        bytes.put(prefAddress, at: 0x258)
        bytes.put(initSize, at: 0x260)
        bytes.put(UInt8(0xFF), at: 0x26C)   // beyond the header: must not be copied
        return bytes + payload
    }
}

/// Distinct non-zero, non-0xAA bytes, so a copy is told apart from fill and zeroing.
func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) | 0x01 }
}

/// 32 MiB of guest RAM at 0 (or the given regions), every byte set to 0xAA.
func filledMemory(_ regions: [(start: UInt64, size: UInt64)] = [(0, 32 << 20)]) throws -> GuestMemory {
    let memory = try GuestMemory(regions: regions)
    for region in memory.regions { try memory.fill(0xAA, at: region.start, count: region.size) }
    return memory
}

/// Catches a `LoaderError` from a typed-throws call.
func loaderError<T>(_ body: () throws(LoaderError) -> T) -> LoaderError? {
    do { _ = try body(); return nil } catch { return error }
}

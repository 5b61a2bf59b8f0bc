/// ELF32/ELF64 executables for x86: the file header, program headers and, only when the program
/// headers hold no Xen note, the `SHT_NOTE` sections (System V gABI; boot-and-abi.md 1.1, 3.2).

/// One program header, widened to 64 bits whatever the class.
public struct ELFProgramHeader: Sendable, Equatable {
    public let type: UInt32
    public let flags: UInt32
    public let offset: UInt64
    public let virtualAddress: UInt64
    public let physicalAddress: UInt64
    public let fileSize: UInt64
    public let memorySize: UInt64
    public let alignment: UInt64

    public init(type: UInt32, flags: UInt32, offset: UInt64, virtualAddress: UInt64, physicalAddress: UInt64,
                fileSize: UInt64, memorySize: UInt64, alignment: UInt64) {
        self.type = type; self.flags = flags; self.offset = offset
        self.virtualAddress = virtualAddress; self.physicalAddress = physicalAddress
        self.fileSize = fileSize; self.memorySize = memorySize; self.alignment = alignment
    }

    public static let load: UInt32 = 1   // PT_LOAD
    public static let note: UInt32 = 4   // PT_NOTE
}

/// A parsed x86 ELF executable. Parsing checks every structure it reads against the file size;
/// loading (`KernelImage.load`) checks the segments against guest memory.
public struct ELFImage: Sendable {
    public enum Class: Sendable { case elf32, elf64 }

    /// The path the image was read from, for error messages.
    public let path: String
    /// The whole file: segments are copied from here at load time.
    public let bytes: [UInt8]
    public let elfClass: Class
    /// `EM_X86_64` (62) for ELF64; `EM_386` (3), or `EM_X86_64` in an elf32-x86-64 container, for ELF32.
    public let machine: UInt16
    /// `ET_EXEC` (2) or `ET_DYN` (3).
    public let type: UInt16
    public let entry: UInt64
    public let programHeaders: [ELFProgramHeader]
    public let notes: XenNotes

    /// `PT_LOAD` headers with a non-zero memory size, in file order.
    public var loadSegments: [ELFProgramHeader] {
        programHeaders.filter { $0.type == ELFProgramHeader.load && $0.memorySize > 0 }
    }

    /// `(program header index, header)` for each load segment: errors name the readelf index.
    var indexedLoadSegments: [(index: Int, header: ELFProgramHeader)] {
        programHeaders.enumerated()
            .filter { $0.element.type == ELFProgramHeader.load && $0.element.memorySize > 0 }
            .map { (index: $0.offset, header: $0.element) }
    }

    static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]  // "\x7fELF"
    static let machineX86_64: UInt16 = 62
    static let machine386: UInt16 = 3
    static let sectionTypeNote: UInt32 = 7  // SHT_NOTE

    /// Field offsets and sizes that differ between the classes.
    private struct Layout {
        let headerSize: UInt64
        let phentsize: UInt64
        let shentsize: UInt64
        // File header.
        let entry: UInt64, phoff: UInt64, shoff: UInt64, phentsizeField: UInt64
        let phnum: UInt64, shentsizeField: UInt64, shnum: UInt64

        static let elf64 = Layout(headerSize: 64, phentsize: 56, shentsize: 64, entry: 24, phoff: 32, shoff: 40,
                                  phentsizeField: 54, phnum: 56, shentsizeField: 58, shnum: 60)
        static let elf32 = Layout(headerSize: 52, phentsize: 32, shentsize: 40, entry: 24, phoff: 28, shoff: 32,
                                  phentsizeField: 42, phnum: 44, shentsizeField: 46, shnum: 48)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws(LoaderError) -> ELFImage {
        let reader = ByteReader(bytes)
        func truncated(_ what: String, _ offset: UInt64) -> LoaderError {
            .truncated(path: path, format: "ELF", what: what, offset: offset, fileSize: reader.count)
        }
        func unsupported(_ field: String, _ value: some BinaryInteger, _ expected: String) -> LoaderError {
            .unsupported(path: path, format: "ELF", field: field, value: UInt64(truncatingIfNeeded: value), expected: expected)
        }

        guard reader.slice(offset: 0, length: 4)?.elementsEqual(magic) == true else {
            throw unsupported("magic", reader.u32(at: 0) ?? 0, "7f 45 4c 46")
        }
        guard let identClass = reader.u8(at: 4), let data = reader.u8(at: 5), let identVersion = reader.u8(at: 6) else {
            throw truncated("e_ident", 0)
        }
        let elfClass: Class
        switch identClass {
        case 1: elfClass = .elf32
        case 2: elfClass = .elf64
        default: throw unsupported("e_ident[EI_CLASS]", identClass, "1 (ELF32) or 2 (ELF64)")
        }
        guard data == 1 else { throw unsupported("e_ident[EI_DATA]", data, "1 (little-endian)") }
        guard identVersion == 1 else { throw unsupported("e_ident[EI_VERSION]", identVersion, "1 (EV_CURRENT)") }

        let layout = elfClass == .elf64 ? Layout.elf64 : Layout.elf32
        guard reader.contains(offset: 0, length: layout.headerSize) else { throw truncated("ELF header", 0) }
        // The header is inside the file, so the reads below cannot fail; `?? 0` only satisfies the type.
        let type = reader.u16(at: 16) ?? 0
        let machine = reader.u16(at: 18) ?? 0
        let version = reader.u32(at: 20) ?? 0
        let word = { (offset: UInt64) -> UInt64 in
            elfClass == .elf64 ? reader.u64(at: offset) ?? 0 : UInt64(reader.u32(at: offset) ?? 0)
        }
        let entry = word(layout.entry)
        let phoff = word(layout.phoff)
        let shoff = word(layout.shoff)
        let phentsize = UInt64(reader.u16(at: layout.phentsizeField) ?? 0)
        let phnum = UInt64(reader.u16(at: layout.phnum) ?? 0)
        let shentsize = UInt64(reader.u16(at: layout.shentsizeField) ?? 0)
        let shnum = UInt64(reader.u16(at: layout.shnum) ?? 0)

        guard type == 2 || type == 3 else { throw unsupported("e_type", type, "2 (ET_EXEC) or 3 (ET_DYN)") }
        // An ELF64 image is x86-64 code. An ELF32 container holds i386 code, or x86-64 code that
        // objcopy put in one (`-O elf32-x86-64`, as XTF ships its 64-bit tests); Xen's loader takes
        // both, and so does Swiftlet: the entry protocols (PVH, Multiboot) start in 32-bit mode anyway.
        let machineFits = elfClass == .elf64 ? machine == machineX86_64 : (machine == machine386 || machine == machineX86_64)
        guard machineFits else {
            throw unsupported("e_machine", machine,
                              elfClass == .elf64 ? "62 (EM_X86_64) for ELF64" : "3 (EM_386) or 62 (EM_X86_64) for ELF32")
        }
        guard version == 1 else { throw unsupported("e_version", version, "1 (EV_CURRENT)") }
        guard phnum == 0 || phentsize == layout.phentsize else {
            throw unsupported("e_phentsize", phentsize, "\(layout.phentsize) for \(elfClass == .elf64 ? "ELF64" : "ELF32")")
        }

        var headers: [ELFProgramHeader] = []
        for index in 0..<phnum {
            // index < 2^16 and phentsize < 2^16: the product cannot overflow; the sum can.
            let (offset, overflow) = phoff.addingReportingOverflow(index * layout.phentsize)
            guard !overflow, reader.contains(offset: offset, length: layout.phentsize) else {
                throw truncated("program header \(index)", overflow ? phoff : offset)
            }
            let header = readProgramHeader(reader, at: offset, elfClass: elfClass)
            if header.type == ELFProgramHeader.load {
                guard header.fileSize <= header.memorySize else {
                    throw .invalidSegment(path: path, index: Int(index),
                                          why: "p_filesz \(hex(header.fileSize)) is larger than p_memsz \(hex(header.memorySize))")
                }
            }
            if header.type == ELFProgramHeader.load || header.type == ELFProgramHeader.note {
                guard reader.contains(offset: header.offset, length: header.fileSize) else {
                    let kind = header.type == ELFProgramHeader.load ? "segment" : "PT_NOTE segment"
                    throw truncated("\(kind) \(index) (p_filesz \(hex(header.fileSize)))", header.offset)
                }
            }
            headers.append(header)
        }

        // Notes: every PT_NOTE first; sections only if those hold no Xen note.
        var notes: [XenNote] = []
        for header in headers where header.type == ELFProgramHeader.note {
            notes += try XenNotes.walk(reader, start: header.offset, size: header.fileSize, path: path)
        }
        var source = XenNotes.Source.programHeaders
        if notes.isEmpty {
            notes = try sectionNotes(reader, elfClass: elfClass, layout: layout, shoff: shoff, shentsize: shentsize,
                                     shnum: shnum, path: path)
            source = .sections
        }
        if notes.isEmpty { source = .none }

        return ELFImage(path: path, bytes: bytes, elfClass: elfClass, machine: machine, type: type, entry: entry,
                        programHeaders: headers, notes: XenNotes(all: notes, source: source))
    }

    private static func readProgramHeader(_ reader: ByteReader, at offset: UInt64, elfClass: Class) -> ELFProgramHeader {
        // The caller checked the whole entry is inside the file.
        let u32 = { (field: UInt64) -> UInt32 in reader.u32(at: offset + field) ?? 0 }
        let u64 = { (field: UInt64) -> UInt64 in reader.u64(at: offset + field) ?? 0 }
        switch elfClass {
        case .elf64:
            return ELFProgramHeader(type: u32(0), flags: u32(4), offset: u64(8), virtualAddress: u64(16),
                                    physicalAddress: u64(24), fileSize: u64(32), memorySize: u64(40), alignment: u64(48))
        case .elf32:
            return ELFProgramHeader(type: u32(0), flags: u32(24), offset: UInt64(u32(4)), virtualAddress: UInt64(u32(8)),
                                    physicalAddress: UInt64(u32(12)), fileSize: UInt64(u32(16)),
                                    memorySize: UInt64(u32(20)), alignment: UInt64(u32(28)))
        }
    }

    /// The Xen notes of every `SHT_NOTE` section. An image without a section table has none.
    private static func sectionNotes(_ reader: ByteReader, elfClass: Class, layout: Layout, shoff: UInt64,
                                     shentsize: UInt64, shnum: UInt64, path: String) throws(LoaderError) -> [XenNote] {
        guard shoff != 0, shnum != 0 else { return [] }
        guard shentsize == layout.shentsize else {
            throw .unsupported(path: path, format: "ELF", field: "e_shentsize", value: shentsize,
                               expected: "\(layout.shentsize) for \(elfClass == .elf64 ? "ELF64" : "ELF32")")
        }
        var notes: [XenNote] = []
        for index in 0..<shnum {
            let (offset, overflow) = shoff.addingReportingOverflow(index * layout.shentsize)
            guard !overflow, reader.contains(offset: offset, length: layout.shentsize) else {
                throw .truncated(path: path, format: "ELF", what: "section header \(index)",
                                 offset: overflow ? shoff : offset, fileSize: reader.count)
            }
            guard reader.u32(at: offset + 4) == sectionTypeNote else { continue }
            let start: UInt64, size: UInt64
            switch elfClass {
            case .elf64:
                start = reader.u64(at: offset + 24) ?? 0
                size = reader.u64(at: offset + 32) ?? 0
            case .elf32:
                start = UInt64(reader.u32(at: offset + 16) ?? 0)
                size = UInt64(reader.u32(at: offset + 20) ?? 0)
            }
            guard reader.contains(offset: start, length: size) else {
                throw .truncated(path: path, format: "ELF", what: "SHT_NOTE section \(index) (sh_size \(hex(size)))",
                                 offset: start, fileSize: reader.count)
            }
            notes += try XenNotes.walk(reader, start: start, size: size, path: path)
        }
        return notes
    }
}

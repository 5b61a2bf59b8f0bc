import Foundation
import Testing
@testable import Loader

@Suite("ELF parsing")
struct ELFParseTests {
    @Test("a well-formed ELF64 kernel")
    func elf64() throws {
        var builder = ELFBuilder.kernel(notes: [Note.xen(.phys32Entry, .le(UInt32(0x100_0100)))])
        builder.entry = 0x100_0000
        builder.segments.insert(.load(at: 0x200_0000, virtual: 0xFFFF_FFFF_8200_0000, data: pattern(0x20), memorySize: 0x100), at: 1)
        builder.segments.append(ELFBuilder.Segment(type: 0x6474_E551, data: []))   // PT_GNU_STACK
        builder.segments.append(.load(at: 0x300_0000, data: [], memorySize: 0))         // empty: not a load segment
        let built = builder.build()
        let image = try ELFImage.parse(built.bytes, path: "/k/x")
        #expect(image.elfClass == .elf64)
        #expect(image.machine == 62)
        #expect(image.type == 2)
        #expect(image.entry == 0x100_0000)
        #expect(image.path == "/k/x")
        #expect(image.programHeaders.count == 5)
        #expect(image.loadSegments.count == 2)
        #expect(image.loadSegments[1] == ELFProgramHeader(
            type: 1, flags: 7, offset: UInt64(built.segmentOffsets[1]), virtualAddress: 0xFFFF_FFFF_8200_0000,
            physicalAddress: 0x200_0000, fileSize: 0x20, memorySize: 0x100, alignment: 0x10))
        #expect(image.notes.phys32Entry == 0x100_0100)
    }

    /// XTF's 64-bit tests come as `objcopy -O elf32-x86-64` containers: ELFCLASS32, EM_X86_64,
    /// with the PVH note. Xen's loader boots them, and so does Swiftlet, by PVH.
    @Test("an elf32-x86-64 container is an ELF32 image that boots by PVH")
    func elf32WithX86_64Code() throws {
        var builder = ELFBuilder(elfClass: .elf32)
        builder.machine = 62
        builder.entry = 0x10_0040
        builder.segments = [
            .load(at: 0x10_0000, data: pattern(0x40)),
            .notes([Note.xen(.phys32Entry, .le(UInt32(0x10_0040)))]),
        ]
        let image = try ELFImage.parse(builder.build().bytes, path: "/k/xtf64")
        #expect(image.elfClass == .elf32 && image.machine == 62)
        #expect(try image.selectProtocol(nil).0 == .pvh)
        #expect(throws: LoaderError.self) { try image.selectProtocol(.xen64) }
    }

    @Test("an ELF32 image is parsed with its own field widths")
    func elf32() throws {
        var builder = ELFBuilder(elfClass: .elf32)
        builder.entry = 0x10_0040
        builder.segments = [
            .load(at: 0x10_0000, virtual: 0xC010_0000, data: pattern(0x40), memorySize: 0x80),
            .notes([Note.xen(.phys32Entry, .le(UInt32(0x10_0040))), Note.xen(.guestOS, Array("linux\0".utf8))]),
        ]
        let built = builder.build()
        let image = try ELFImage.parse(built.bytes, path: "/k/x32")
        #expect(image.elfClass == .elf32)
        #expect(image.machine == 3)
        #expect(image.entry == 0x10_0040)
        #expect(image.loadSegments == [ELFProgramHeader(
            type: 1, flags: 7, offset: UInt64(built.segmentOffsets[0]), virtualAddress: 0xC010_0000,
            physicalAddress: 0x10_0000, fileSize: 0x40, memorySize: 0x80, alignment: 0x10)])
        #expect(image.programHeaders[1].type == ELFProgramHeader.note)
        #expect(image.programHeaders[1].flags == 4)
        #expect(image.notes.phys32Entry == 0x10_0040)
        #expect(image.notes.guestOS == "linux")
    }

    @Test("ET_DYN is accepted")
    func dynamic() throws {
        var builder = ELFBuilder.kernel(notes: [])
        builder.type = 3
        #expect(try builder.image().type == 3)
    }

    /// A header corruption and the error it must produce.
    struct HeaderCase: Sendable, CustomTestStringConvertible {
        let name: String
        let elfClass: ELFImage.Class
        let patches: [(offset: Int, bytes: [UInt8])]
        let field: String
        let value: UInt64
        var testDescription: String { name }
    }

    @Test("bad identification and header fields", arguments: [
        HeaderCase(name: "class 0", elfClass: .elf64, patches: [(4, [0])], field: "e_ident[EI_CLASS]", value: 0),
        HeaderCase(name: "class 3", elfClass: .elf64, patches: [(4, [3])], field: "e_ident[EI_CLASS]", value: 3),
        HeaderCase(name: "big-endian", elfClass: .elf64, patches: [(5, [2])], field: "e_ident[EI_DATA]", value: 2),
        HeaderCase(name: "ident version 0", elfClass: .elf64, patches: [(6, [0])], field: "e_ident[EI_VERSION]", value: 0),
        HeaderCase(name: "e_version 2", elfClass: .elf64, patches: [(20, [2, 0, 0, 0])], field: "e_version", value: 2),
        HeaderCase(name: "ET_REL", elfClass: .elf64, patches: [(16, [1, 0])], field: "e_type", value: 1),
        HeaderCase(name: "ET_CORE", elfClass: .elf64, patches: [(16, [4, 0])], field: "e_type", value: 4),
        HeaderCase(name: "ARM64 machine", elfClass: .elf64, patches: [(18, [183, 0])], field: "e_machine", value: 183),
        HeaderCase(name: "EM_386 in ELF64", elfClass: .elf64, patches: [(18, [3, 0])], field: "e_machine", value: 3),
        HeaderCase(name: "ARM in ELF32", elfClass: .elf32, patches: [(18, [40, 0])], field: "e_machine", value: 40),
        HeaderCase(name: "ELF64 phentsize 32", elfClass: .elf64, patches: [(54, [32, 0])], field: "e_phentsize", value: 32),
        HeaderCase(name: "ELF32 phentsize 56", elfClass: .elf32, patches: [(42, [56, 0])], field: "e_phentsize", value: 56),
        HeaderCase(name: "ELF32 file claiming class 2", elfClass: .elf32, patches: [(4, [2])], field: "e_machine", value: 3),
    ])
    func badHeader(_ headerCase: HeaderCase) throws {
        var bytes = ELFBuilder.kernel(notes: [], elfClass: headerCase.elfClass).build().bytes
        for patch in headerCase.patches { bytes.put(patch.bytes, at: patch.offset) }
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/bad") }
        guard case let .unsupported(path, format, field, value, _) = error else {
            Issue.record("expected unsupported, got \(String(describing: error))"); return
        }
        #expect(path == "/k/bad")
        #expect(format == "ELF")
        #expect(field == headerCase.field)
        #expect(value == headerCase.value)
        #expect(error?.description.hasPrefix("/k/bad: unsupported ELF: \(field) is 0x") == true)
    }

    @Test("the wrong-machine message says what was expected")
    func machineMessage() throws {
        var bytes = ELFBuilder.kernel(notes: []).build().bytes
        bytes.put(UInt16(40), at: 18)
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/arm") }
        #expect(error?.description == "/k/arm: unsupported ELF: e_machine is 0x28 (expected 62 (EM_X86_64) for ELF64)")
    }

    @Test("a file shorter than its ELF header", arguments: [5, 16, 40, 63])
    func truncatedHeader(_ length: Int) throws {
        let bytes = Array(ELFBuilder.kernel(notes: []).build().bytes.prefix(length))
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .truncated(path: "/k/x", format: "ELF", what: length < 7 ? "e_ident" : "ELF header",
                                    offset: 0, fileSize: UInt64(length)))
    }

    @Test("a program header table past the end of the file names the first header cut off")
    func truncatedProgramHeaders() throws {
        var bytes = ELFBuilder.kernel(notes: [Note.xen(.guestOS, [0x6C, 0])]).build().bytes
        #expect(bytes.count == 0x110)
        // Claim 5 headers. Header 2 (0xb0) overlays segment data: make it PT_NULL. Header 3
        // (0xe8..0x120) is the first one cut off by the end of the file.
        bytes.put(UInt16(5), at: 56)
        bytes.put(UInt32(0), at: 64 + 2 * 56)
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .truncated(path: "/k/x", format: "ELF", what: "program header 3", offset: 0xE8, fileSize: 0x110))
        #expect(error?.description == "/k/x: truncated ELF: program header 3 at offset 0xe8 runs past the end of the file (size 0x110)")
    }

    @Test("a program header offset that wraps 2^64 is reported, not trapped on", arguments: [
        UInt64.max, UInt64.max - 55, 1 << 63, 0x1_0000_0000,
    ])
    func wrappingProgramHeaderOffset(_ phoff: UInt64) throws {
        var bytes = ELFBuilder.kernel(notes: []).build().bytes
        bytes.put(phoff, at: 32)
        bytes.put(UInt16(0xFFFF), at: 56)
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        guard case let .truncated(_, _, what, _, _) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(what == "program header 0" || what.hasPrefix("program header "))
    }

    @Test("a load segment whose file bytes run past the end of the file", arguments: [
        (UInt64(0x40), UInt64(0x10_0000)), (UInt64.max, UInt64.max), (UInt64.max - 0x10, UInt64(0x20)),
    ])
    func truncatedSegment(_ offset: UInt64, _ filesz: UInt64) throws {
        var bytes = ELFBuilder.kernel(notes: []).build().bytes
        bytes.put(offset, at: 64 + 8)
        bytes.put(filesz, at: 64 + 32)
        bytes.put(UInt64.max, at: 64 + 40)   // memsz >= filesz
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .truncated(path: "/k/x", format: "ELF", what: "segment 0 (p_filesz 0x\(String(filesz, radix: 16)))",
                                    offset: offset, fileSize: UInt64(bytes.count)))
    }

    @Test("a PT_NOTE segment past the end of the file")
    func truncatedNoteSegment() throws {
        var bytes = ELFBuilder.kernel(notes: [Note.xen(.guestOS, [0x6C, 0])]).build().bytes
        bytes.put(UInt64(0x1000), at: 64 + 56 + 32)   // p_filesz of header 1
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        guard case let .truncated(_, _, what, _, _) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(what == "PT_NOTE segment 1 (p_filesz 0x1000)")
    }

    @Test("p_filesz larger than p_memsz")
    func fileSizeAboveMemorySize() throws {
        var bytes = ELFBuilder.kernel(notes: []).build().bytes
        bytes.put(UInt64(0x3F), at: 64 + 40)
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .invalidSegment(path: "/k/x", index: 0, why: "p_filesz 0x40 is larger than p_memsz 0x3f"))
    }

    @Test("section headers past the end of the file, only read when notes are needed")
    func truncatedSectionHeaders() throws {
        var builder = ELFBuilder.kernel(notes: [])
        builder.noteSections = [Note.xen(.guestOS, [0x6C, 0])]
        let built = builder.build()
        let cut = Array(built.bytes.prefix(built.sectionHeaderOffset + 64 + 10))   // inside section header 1
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(cut, path: "/k/x") }
        #expect(error == .truncated(path: "/k/x", format: "ELF", what: "section header 1",
                                    offset: UInt64(built.sectionHeaderOffset + 64), fileSize: UInt64(cut.count)))

        // With a Xen note in a PT_NOTE, the broken section table is never looked at.
        var withNotes = ELFBuilder.kernel(notes: [Note.xen(.phys32Entry, .le(UInt32(0x100_0000)))])
        withNotes.noteSections = builder.noteSections
        let good = withNotes.build()
        let image = try ELFImage.parse(Array(good.bytes.prefix(good.sectionHeaderOffset + 10)), path: "/k/x")
        #expect(image.notes.phys32Entry == 0x100_0000)
    }

    @Test("an SHT_NOTE section whose data runs past the end of the file")
    func truncatedNoteSection() throws {
        var builder = ELFBuilder.kernel(notes: [])
        builder.noteSections = [Note.xen(.guestOS, [0x6C, 0])]
        let built = builder.build()
        var bytes = built.bytes
        let header = built.sectionHeaderOffset + 2 * 64
        bytes.put(UInt64.max - 4, at: header + 24)   // sh_offset
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .truncated(path: "/k/x", format: "ELF", what: "SHT_NOTE section 2 (sh_size 0x14)",
                                    offset: UInt64.max - 4, fileSize: UInt64(bytes.count)))
    }

    @Test("a wrong e_shentsize is refused when the sections are needed")
    func wrongSectionEntrySize() throws {
        var builder = ELFBuilder.kernel(notes: [])
        builder.noteSections = [Note.xen(.guestOS, [0x6C, 0])]
        var bytes = builder.build().bytes
        bytes.put(UInt16(40), at: 58)
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(bytes, path: "/k/x") }
        #expect(error == .unsupported(path: "/k/x", format: "ELF", field: "e_shentsize", value: 40, expected: "64 for ELF64"))
    }

    @Test("KernelImage.parse tells ELF, bzImage and neither apart")
    func detect() throws {
        let elf = try KernelImage.parse(KernelFile(path: "/k/e", bytes: ELFBuilder.kernel(notes: []).build().bytes))
        guard case .elf = elf else { Issue.record("not ELF"); return }
        let bz = try KernelImage.parse(KernelFile(path: "/k/b", bytes: BzImageBuilder().build()))
        guard case .bzImage = bz else { Issue.record("not bzImage"); return }
        #expect(bz.path == "/k/b")

        let junk = [UInt8](repeating: 0x90, count: 0x1000)
        let error = loaderError { () throws(LoaderError) in try KernelImage.parse(KernelFile(path: "/k/vmlinux", bytes: junk)) }
        #expect(error == .notAKernel(path: "/k/vmlinux"))
        #expect(error?.description == "/k/vmlinux: not an ELF or bzImage kernel (no ELF magic, no HdrS header at 0x202)")
        #expect(loaderError { () throws(LoaderError) in try KernelImage.parse(KernelFile(path: "/k/e", bytes: [])) } == .empty(path: "/k/e"))
        #expect(loaderError { () throws(LoaderError) in try KernelImage.parse(KernelFile(path: "/k/e", bytes: [0x7F, 0x45])) }
                == .notAKernel(path: "/k/e"))
    }

    @Test("KernelFile.read: contents, missing file, directory, empty file")
    func readFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("loader-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let content = pattern(3 << 20 | 123)   // more than one read chunk
        let file = directory.appendingPathComponent("vmlinux")
        try Data(content).write(to: file)
        let read = try KernelFile.read(path: file.path)
        #expect(read.path == file.path)
        #expect(read.bytes == content)

        let missing = directory.appendingPathComponent("missing").path
        let missingError = loaderError { () throws(LoaderError) in try KernelFile.read(path: missing) }
        #expect(missingError == .unreadable(path: missing, errno: ENOENT))
        #expect(missingError?.description == "\(missing): cannot read kernel image: No such file or directory")

        let dirError = loaderError { () throws(LoaderError) in try KernelFile.read(path: directory.path) }
        #expect(dirError == .notARegularFile(path: directory.path))
        #expect(dirError?.description.contains("not a regular file") == true)
        // A device would be read until memory ran out: refused before the first read.
        #expect(loaderError { () throws(LoaderError) in try KernelFile.read(path: "/dev/zero") } == .notARegularFile(path: "/dev/zero"))

        let empty = directory.appendingPathComponent("empty")
        try Data().write(to: empty)
        #expect(loaderError { () throws(LoaderError) in try KernelFile.read(path: empty.path) } == .empty(path: empty.path))
    }

    @Test("every error description is one line that starts with the path")
    func oneLineDescriptions() {
        let errors: [LoaderError] = [
            .unreadable(path: "/p", errno: EACCES), .empty(path: "/p"), .notAKernel(path: "/p"),
            .truncated(path: "/p", format: "ELF", what: "program header 3", offset: 0x1C0, fileSize: 0x1D0),
            .unsupported(path: "/p", format: "ELF", field: "e_machine", value: 40, expected: "62"),
            .impossibleNoteSize(path: "/p", offset: 0x1234, field: "descsz", size: 0xFFFF_FF00, available: 8, xen: true),
            .truncatedNoteHeader(path: "/p", offset: 1, available: 2),
            .invalidSegment(path: "/p", index: 1, why: "x"), .noUsableEntry(path: "/p", why: "x"),
            .protocolUnavailable(path: "/p", requested: .pvh, why: "x"), .noLoadableSegments(path: "/p"),
            .paddrUnderflow(path: "/p", index: 0, physicalAddress: 1, paddrOffset: 2),
            .belowFloor(path: "/p", index: 0, start: 0, size: 1, floor: 0x10_0000),
            .outsideMemory(path: "/p", index: 1, start: 0x3F_F000, size: 0x2000, memorySize: 64 << 20),
            .outsideMemory(path: "/p", index: nil, start: UInt64.max, size: 2, memorySize: 0x1234),
            .segmentsOverlap(path: "/p", first: 0, firstStart: 0, firstSize: 2, second: 1, secondStart: 1, secondSize: 2),
            .memory(path: "/p", .outOfBounds(address: 0, length: 1)),
        ]
        for error in errors {
            #expect(error.description.hasPrefix("/p: "))
            #expect(!error.description.contains("\n"))
            #expect(error.path == "/p")
        }
        #expect(errors[3].description == "/p: truncated ELF: program header 3 at offset 0x1c0 runs past the end of the file (size 0x1d0)")
        #expect(errors[13].description == "/p: segment 1 [0x3ff000, 0x401000) is outside guest memory (64 MiB)")
        #expect(errors[14].description == "/p: protected-mode kernel [0xffffffffffffffff, 2^64+0x1) is outside guest memory (0x1234 bytes)")
    }

    /// Mutates a valid image at random, many times over: parsing must throw or succeed, never trap.
    @Test("random corruption never traps")
    func corruptionNeverTraps() throws {
        var builder = ELFBuilder.kernel(notes: [
            Note.xen(.phys32Entry, .le(UInt64(0x100_0000))), Note.xen(.features, Array("!a|b".utf8)),
            Note.make(name: "GNU", type: 3, desc: [1, 2, 3, 4]), Note.xen(.l1MfnValid, .le(UInt64(1)) + .le(UInt64(1))),
        ])
        builder.noteSections = [Note.xen(.guestOS, [0x6C, 0])]
        let base = builder.build().bytes
        var bz = BzImageBuilder()
        bz.payload = pattern(0x400)
        let bzBase = bz.build()
        var generator = SplitMix64(seed: 0x5EED)
        let memory = try filledMemory()
        // LOADER_FUZZ_ROUNDS raises the count for a longer local run.
        let rounds = ProcessInfo.processInfo.environment["LOADER_FUZZ_ROUNDS"].flatMap(Int.init) ?? 4000
        for round in 0..<rounds {
            var bytes = round % 4 == 3 ? bzBase : base
            let edits = 1 + Int(generator.next() % 8)
            for _ in 0..<edits {
                let position = Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 4 {
                case 0: bytes[position] = UInt8(truncatingIfNeeded: generator.next())
                case 1: bytes[position] = [0x00, 0xFF, 0x7F, 0x80][Int(generator.next() % 4)]
                case 2: bytes = Array(bytes.prefix(position))
                default:
                    let value = [UInt64.max, 0, 1 << 63, 0xFFFF_FFFF, 0xFFFF_FF00][Int(generator.next() % 5)]
                    for (index, byte) in [UInt8].le(value).enumerated() where position + index < bytes.count {
                        bytes[position + index] = byte
                    }
                }
                if bytes.isEmpty { break }
            }
            guard let image = try? KernelImage.parse(KernelFile(path: "/fuzz", bytes: bytes)) else { continue }
            for requested in [nil] + BootProtocol.allCases.map(Optional.some) {
                guard let (chosen, _) = try? image.selectProtocol(requested) else { continue }
                _ = try? image.load(into: memory, protocol: chosen, floor: 0x10_0000, path: "/fuzz")
            }
        }
    }
}

/// A small deterministic generator, so a failing corruption can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("--xen auto")
struct XenAutoRuleTests {
    static func notes(_ list: [[UInt8]]) throws -> XenNotes {
        var builder = ELFBuilder(elfClass: .elf64)
        builder.segments = [.load(at: 0x10_0000, data: [0x90]), .notes(list)]
        return try ELFImage.parse(builder.build().bytes, path: "/k").notes
    }

    @Test func theRule() throws {
        let entry = Note.xen(.phys32Entry, .le(UInt32(0x10_0000)))
        let features = Note.xen(.features, Array("!writable_page_tables\0".utf8))
        #expect(try Self.notes([entry, features]).declareXenGuest, "features: a Xen guest")
        #expect(try Self.notes([entry, Note.xen(.guestOS, Array("XTF\0".utf8))]).declareXenGuest, "XTF names itself")
        #expect(try !Self.notes([entry]).declareXenGuest, "a PVH entry alone: Linux without Xen")
        #expect(try !Self.notes([entry, Note.xen(.guestOS, Array("linux\0".utf8)), features,
                                 Note.xen(.hypercallPage, .le(UInt64(0xFFFF_FFFF_8100_0000)))]).declareXenGuest, "Linux never")
        #expect(try !Self.notes([entry, Note.xen(.guestOS, Array("swiftlet-ticker\0".utf8))]).declareXenGuest)
    }
}

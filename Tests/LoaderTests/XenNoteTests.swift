import Testing
@testable import Loader

/// One note type, a desc as a kernel would emit it, and the value it must decode to.
struct NoteCase: Sendable, CustomTestStringConvertible {
    let type: XenNoteType
    let desc: [UInt8]
    let expected: XenNoteValue
    var testDescription: String { type.name }
}

private func cString(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

@Suite("Xen notes")
struct XenNoteTests {
    /// Every elfnote.h type 0...19 decodes to its kind of value (boot-and-abi.md 1.2).
    static let everyType: [NoteCase] = [
        NoteCase(type: .info, desc: Array("FOO=bar".utf8), expected: .bytes(Array("FOO=bar".utf8))),
        NoteCase(type: .entry, desc: .le(UInt64(0xFFFF_FFFF_8100_0000)), expected: .integer(0xFFFF_FFFF_8100_0000)),
        NoteCase(type: .hypercallPage, desc: .le(UInt64(0xFFFF_FFFF_8100_1000)), expected: .integer(0xFFFF_FFFF_8100_1000)),
        NoteCase(type: .virtBase, desc: .le(UInt64(0xFFFF_FFFF_8000_0000)), expected: .integer(0xFFFF_FFFF_8000_0000)),
        NoteCase(type: .paddrOffset, desc: .le(UInt64(0)), expected: .integer(0)),
        NoteCase(type: .xenVersion, desc: cString("xen-3.0"), expected: .string("xen-3.0")),
        NoteCase(type: .guestOS, desc: cString("linux"), expected: .string("linux")),
        NoteCase(type: .guestVersion, desc: cString("2.6"), expected: .string("2.6")),
        NoteCase(type: .loader, desc: cString("generic"), expected: .string("generic")),
        NoteCase(type: .paeMode, desc: cString("yes"), expected: .string("yes")),
        NoteCase(type: .features, desc: cString("!writable_page_tables|pae_pgdir_above_4gb"),
                 expected: .features([XenFeature(name: "writable_page_tables", required: true),
                                      XenFeature(name: "pae_pgdir_above_4gb", required: false)])),
        NoteCase(type: .bsdSymtab, desc: cString("yes"), expected: .string("yes")),
        NoteCase(type: .hvStartLow, desc: .le(UInt64(0xFFFF_8000_0000_0000)), expected: .integer(0xFFFF_8000_0000_0000)),
        NoteCase(type: .l1MfnValid, desc: .le(UInt64(1)) + .le(UInt64(1)), expected: .l1MfnValid([1, 1])),
        NoteCase(type: .suspendCancel, desc: .le(UInt32(1)), expected: .integer(1)),
        NoteCase(type: .initP2M, desc: .le(UInt64(0x80_0000_0000)), expected: .integer(0x80_0000_0000)),
        NoteCase(type: .modStartPFN, desc: .le(UInt32(1)), expected: .integer(1)),
        NoteCase(type: .supportedFeatures, desc: .le(UInt32(0x8801)), expected: .featureBitmap([0x8801])),
        NoteCase(type: .phys32Entry, desc: .le(UInt32(0x100_0850)), expected: .integer(0x100_0850)),
        NoteCase(type: .phys32Reloc, desc: .le(UInt32(0x20_0000)) + .le(UInt32(0x100_0000)) + .le(UInt32(0xFFFF_FFFF)),
                 expected: .phys32Reloc(align: 0x20_0000, minimum: 0x100_0000, maximum: 0xFFFF_FFFF)),
    ]

    @Test("every note type 0...19 decodes to its value kind", arguments: everyType)
    func decodesEveryType(_ noteCase: NoteCase) throws {
        let image = try ELFBuilder.kernel(notes: [Note.xen(noteCase.type, noteCase.desc)]).image()
        let note = try #require(image.notes.all.first)
        #expect(image.notes.all.count == 1)
        #expect(note.type == noteCase.type.rawValue)
        #expect(note.kind == noteCase.type)
        #expect(note.value == noteCase.expected)
        #expect(note.name == noteCase.type.name)
    }

    @Test("the table covers 0...19 once each")
    func tableCoversEveryType() {
        #expect(Self.everyType.map(\.type.rawValue) == Array(0...19))
    }

    @Test("crash, dump-core and unknown types keep their bytes",
          arguments: [UInt32(0x100_0001), 0x100_0002, 0x200_0000, 0x200_0001, 0x200_0002, 0x200_0003, 20, 0x30, 0xFFFF_FFFF])
    func opaqueTypes(_ type: UInt32) throws {
        let desc: [UInt8] = [1, 2, 3, 4, 5]
        let image = try ELFBuilder.kernel(notes: [Note.make(type: type, desc: desc)]).image()
        let note = try #require(image.notes.all.first)
        #expect(note.value == .bytes(desc))
        #expect(note.kind == XenNoteType(rawValue: type))
        if note.kind == nil { #expect(note.name == "UNKNOWN(0x\(String(type, radix: 16)))") }
    }

    @Test("note type names", arguments: [
        (XenNoteType.phys32Entry, "PHYS32_ENTRY"), (.guestOS, "GUEST_OS"), (.hypercallPage, "HYPERCALL_PAGE"),
        (.l1MfnValid, "L1_MFN_VALID"), (.modStartPFN, "MOD_START_PFN"), (.crashRegs, "CRASH_REGS"),
        (.dumpcoreFormatVersion, "DUMPCORE_FORMAT_VERSION"),
    ])
    func names(_ type: XenNoteType, _ name: String) {
        #expect(type.name == name)
    }

    @Test("elfnote.h has 26 types with the documented numbers")
    func allCases() {
        #expect(XenNoteType.allCases.count == 26)
        #expect(XenNoteType.crashInfo.rawValue == 0x100_0001)
        #expect(XenNoteType.crashRegs.rawValue == 0x100_0002)
        #expect(XenNoteType.dumpcoreFormatVersion.rawValue == 0x200_0003)
        #expect(Set(XenNoteType.allCases.map(\.name)).count == 26)
    }

    @Test("integers of 1, 2, 4 and 8 bytes; other sizes stay bytes", arguments: [
        ([UInt8]([0x12]), XenNoteValue.integer(0x12)),
        ([0x34, 0x12], .integer(0x1234)),
        ([0x78, 0x56, 0x34, 0x12], .integer(0x1234_5678)),
        ([0xF0, 0xDE, 0xBC, 0x9A, 0x78, 0x56, 0x34, 0x12], .integer(0x1234_5678_9ABC_DEF0)),
        ([1, 2, 3], .bytes([1, 2, 3])),
        ([], .bytes([])),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], .bytes(Array(1...16))),
    ])
    func integerSizes(_ desc: [UInt8], _ expected: XenNoteValue) throws {
        let image = try ELFBuilder.kernel(notes: [Note.xen(.virtBase, desc)]).image()
        #expect(image.notes.all.first?.value == expected)
        if case let .integer(value) = expected { #expect(image.notes.virtBase == value) } else { #expect(image.notes.virtBase == nil) }
    }

    static let phys32Cases: [([UInt8], UInt64?)] = [
        (.le(UInt64(0x0000_0000_0100_0850)), 0x100_0850),
        (.le(UInt64(0xDEAD_BEEF_0100_0850)), 0x100_0850),
        (.le(UInt32(0x100_0850)), 0x100_0850),
        ([0x50, 0x08, 0x00, 0x01, 0xFF], 0x100_0850),
        ([0x50, 0x08], nil),
    ]

    @Test("PHYS32_ENTRY: 8-byte desc (Linux _ASM_PTR) gives the low 32 bits", arguments: phys32Cases)
    func phys32Entry(_ desc: [UInt8], _ expected: UInt64?) throws {
        let image = try ELFBuilder.kernel(notes: [Note.xen(.phys32Entry, desc)]).image()
        #expect(image.notes.phys32Entry == expected)
        if expected == nil { #expect(image.notes.all.first?.value == .bytes(desc)) }
    }

    @Test("a PHYS32_ENTRY too short to read makes --boot pvh fail, naming the desc size")
    func shortPhys32EntryRefusesPVH() throws {
        let image = try ELFBuilder.kernel(notes: [Note.xen(.phys32Entry, [0x50, 0x08])]).image()
        let error = loaderError { () throws(LoaderError) in try KernelImage.elf(image).selectProtocol(.pvh) }
        guard case let .protocolUnavailable(_, requested, why) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(requested == .pvh)
        #expect(why.contains("2-byte desc"))
        // Auto falls back to the next protocol.
        #expect(try KernelImage.elf(image).selectProtocol(nil).0 == .linux)
    }

    @Test("FEATURES: '!' marks required, unknown names have no bit, empty names are dropped")
    func features() throws {
        let text = "!writable_page_tables|hvm_callback_vector||!made_up_feature|dm_msix_all_writes|!|"
        let image = try ELFBuilder.kernel(notes: [Note.xen(.features, cString(text))]).image()
        let features = image.notes.features
        #expect(features == [
            XenFeature(name: "writable_page_tables", required: true),
            XenFeature(name: "hvm_callback_vector", required: false),
            XenFeature(name: "made_up_feature", required: true),
            XenFeature(name: "dm_msix_all_writes", required: false),
        ])
        #expect(features.map(\.bit) == [0, 8, nil, 20])
    }

    @Test("feature bits follow features.h", arguments: [
        ("writable_page_tables", 0), ("writable_descriptor_tables", 1), ("auto_translated_physmap", 2),
        ("supervisor_mode_kernel", 3), ("pae_pgdir_above_4gb", 4), ("mmu_pt_update_preserve_ad", 5),
        ("highmem_assist", 6), ("gnttab_map_avail_bits", 7), ("hvm_callback_vector", 8), ("hvm_safe_pvclock", 9),
        ("hvm_pirqs", 10), ("dom0", 11), ("memory_op_vnode_supported", 13), ("ARM_SMCCC_supported", 14),
        ("linux_rsdp_unrestricted", 15), ("not_direct_mapped", 16), ("direct_mapped", 17),
        ("runstate_phys_area", 18), ("vcpu_time_phys_area", 19), ("dm_msix_all_writes", 20),
    ])
    func featureBits(_ name: String, _ bit: Int) {
        #expect(XenFeature(name: name, required: false).bit == bit)
    }

    @Test("a 41-byte FEATURES string without NUL is bounded by descsz, not by what follows")
    func unterminatedFeatures() throws {
        let text = Array("!writable_page_tables|pae_pgdir_above_4gb".utf8)
        #expect(text.count == 41)
        // Padding bytes that are not zero, then another note: neither may leak into the string.
        let odd = Note.raw(namesz: 4, descsz: 41, type: XenNoteType.features.rawValue, name: Array("Xen\0".utf8),
                           desc: text, padding: 0x7C)
        let next = Note.xen(.guestOS, cString("linux"))
        let image = try ELFBuilder.kernel(notes: [odd, next]).image()
        #expect(image.notes.features == [XenFeature(name: "writable_page_tables", required: true),
                                         XenFeature(name: "pae_pgdir_above_4gb", required: false)])
        #expect(image.notes.guestOS == "linux")
        #expect(image.notes.all.count == 2)
    }

    @Test("strings stop at the first NUL and show invalid UTF-8 lossily")
    func strings() throws {
        let image = try ELFBuilder.kernel(notes: [
            Note.xen(.guestOS, Array("linux\0junk".utf8)),
            Note.xen(.loader, [0x67, 0xFF, 0x6E]),
            Note.xen(.paeMode, []),
        ]).image()
        #expect(image.notes.all.map(\.value) == [.string("linux"), .string("g\u{FFFD}n"), .string("")])
    }

    @Test("L1_MFN_VALID, SUPPORTED_FEATURES and PHYS32_RELOC with partial descs", arguments: [
        NoteCase(type: .l1MfnValid, desc: .le(UInt64(0xFFF)) + .le(UInt64(1)) + .le(UInt64(2)) + .le(UInt64(3)),
                 expected: .l1MfnValid([0xFFF, 1, 2, 3])),
        NoteCase(type: .l1MfnValid, desc: .le(UInt64(1)), expected: .bytes(.le(UInt64(1)))),
        NoteCase(type: .supportedFeatures, desc: .le(UInt32(1)) + .le(UInt32(2)), expected: .featureBitmap([1, 2])),
        NoteCase(type: .supportedFeatures, desc: [1, 2], expected: .bytes([1, 2])),
        NoteCase(type: .phys32Reloc, desc: [], expected: .phys32Reloc(align: nil, minimum: nil, maximum: nil)),
        NoteCase(type: .phys32Reloc, desc: .le(UInt32(0x1000)), expected: .phys32Reloc(align: 0x1000, minimum: nil, maximum: nil)),
        NoteCase(type: .phys32Reloc, desc: .le(UInt32(0x1000)) + .le(UInt32(0x10_0000)) + [1, 2],
                 expected: .phys32Reloc(align: 0x1000, minimum: 0x10_0000, maximum: nil)),
        NoteCase(type: .phys32Reloc, desc: .le(UInt32(1)) + .le(UInt32(2)) + .le(UInt32(3)) + .le(UInt32(4)),
                 expected: .phys32Reloc(align: 1, minimum: 2, maximum: 3)),
    ])
    func specialDescs(_ noteCase: NoteCase) throws {
        let image = try ELFBuilder.kernel(notes: [Note.xen(noteCase.type, noteCase.desc)]).image()
        #expect(image.notes.all.first?.value == noteCase.expected)
    }

    @Test("notes not named \"Xen\\0\" are skipped")
    func nonXenSkipped() throws {
        let image = try ELFBuilder.kernel(notes: [
            Note.make(name: "GNU", type: 3, desc: Array(repeating: 0xAB, count: 20)),
            Note.make(name: "Linux", type: 6, desc: cString("6.1.0")),
            Note.raw(namesz: 3, descsz: 4, type: 18, name: Array("Xen".utf8), desc: .le(UInt32(0x1000))),   // no NUL
            Note.make(name: "XenX", type: 18, desc: .le(UInt32(0x2000))),
            Note.make(name: "xen", type: 18, desc: .le(UInt32(0x3000))),
            Note.raw(namesz: 0, descsz: 0, type: 0, name: [], desc: []),
            Note.xen(.phys32Entry, .le(UInt32(0x100_0850))),
            Note.make(name: "GNU", type: 5, desc: Array(repeating: 1, count: 16)),
        ]).image()
        #expect(image.notes.all.count == 1)
        #expect(image.notes.phys32Entry == 0x100_0850)
        #expect(image.notes.source == .programHeaders)
    }

    @Test("file offsets of notes and first-occurrence accessors")
    func offsetsAndFirstOccurrence() throws {
        let first = Note.xen(.entry, .le(UInt64(0x1111)))
        let builder = ELFBuilder.kernel(notes: [first, Note.xen(.entry, .le(UInt64(0x2222))), Note.xen(.guestOS, cString("linux"))])
        let built = builder.build()
        let image = try ELFImage.parse(built.bytes, path: "/k/x")
        let noteStart = UInt64(built.segmentOffsets[1])
        #expect(image.notes.all.map(\.fileOffset) == [noteStart, noteStart + UInt64(first.count), noteStart + 2 * UInt64(first.count)])
        #expect(image.notes.entry == 0x1111)
        #expect(image.notes.hypercallPage == nil)
        #expect(image.notes.guestOS == "linux")
    }

    @Test("every PT_NOTE segment is walked")
    func everyNoteSegment() throws {
        var builder = ELFBuilder.kernel(notes: [Note.xen(.entry, .le(UInt64(0x1111)))])
        builder.segments.append(.notes([Note.make(name: "GNU", type: 3, desc: [1, 2, 3, 4])]))
        builder.segments.append(.notes([Note.xen(.phys32Entry, .le(UInt32(0x100_0000)))]))
        let image = try builder.image()
        #expect(image.notes.all.map(\.kind) == [.entry, .phys32Entry])
    }

    @Test("PT_NOTE is preferred over SHT_NOTE")
    func programHeadersPreferred() throws {
        var builder = ELFBuilder.kernel(notes: [Note.xen(.entry, .le(UInt64(0x1111)))])
        builder.noteSections = [[UInt8](Note.xen(.phys32Entry, .le(UInt32(0x200_0000))))]
        let image = try builder.image()
        #expect(image.notes.source == .programHeaders)
        #expect(image.notes.all.map(\.kind) == [.entry])
        #expect(image.notes.phys32Entry == nil)
    }

    @Test("SHT_NOTE sections are the fallback when no PT_NOTE holds a Xen note", arguments: [false, true])
    func sectionFallback(_ withGNUSegment: Bool) throws {
        var builder = ELFBuilder.kernel(notes: withGNUSegment ? [Note.make(name: "GNU", type: 3, desc: [1, 2, 3, 4])] : [])
        builder.noteSections = [
            Note.make(name: "GNU", type: 1, desc: [9, 9, 9, 9]),
            Note.xen(.phys32Entry, .le(UInt32(0x200_0000))) + Note.xen(.guestOS, cString("linux")),
        ]
        let built = builder.build()
        let image = try ELFImage.parse(built.bytes, path: "/k/x")
        #expect(image.notes.source == .sections)
        #expect(image.notes.phys32Entry == 0x200_0000)
        #expect(image.notes.guestOS == "linux")
        #expect(image.notes.all.first?.fileOffset == UInt64(built.sectionOffsets[1]))
    }

    @Test("SHT_NOTE fallback in an ELF32 image")
    func sectionFallbackELF32() throws {
        var builder = ELFBuilder.kernel(notes: [], elfClass: .elf32)
        builder.noteSections = [Note.xen(.phys32Entry, .le(UInt32(0x10_0000)))]
        let image = try builder.image()
        #expect(image.notes.source == .sections)
        #expect(image.notes.phys32Entry == 0x10_0000)
    }

    @Test("no Xen notes anywhere: source none")
    func noNotes() throws {
        let image = try ELFBuilder.kernel(notes: [Note.make(name: "GNU", type: 3, desc: [1, 2, 3, 4])]).image()
        #expect(image.notes == XenNotes(all: [], source: .none))
        #expect(image.notes.features == [])
    }

    struct SizeCase: Sendable, CustomTestStringConvertible {
        let name: String
        let note: [UInt8]
        let field: String
        let size: UInt64
        let xen: Bool
        var testDescription: String { name }
    }

    @Test("namesz or descsz past the end of the segment is an impossible size", arguments: [
        SizeCase(name: "huge descsz", note: Note.raw(namesz: 4, descsz: 0xFFFF_FF00, type: 18, name: Array("Xen\0".utf8), desc: []),
                 field: "descsz", size: 0xFFFF_FF00, xen: true),
        SizeCase(name: "descsz one too many", note: Note.raw(namesz: 4, descsz: 5, type: 1, name: Array("Xen\0".utf8), desc: [1, 2, 3, 4]),
                 field: "descsz", size: 5, xen: true),
        SizeCase(name: "huge namesz", note: Note.raw(namesz: 0xFFFF_FFFF, descsz: 0, type: 1, name: Array("Xen\0".utf8), desc: []),
                 field: "namesz", size: 0xFFFF_FFFF, xen: false),
        SizeCase(name: "GNU note with huge descsz", note: Note.raw(namesz: 4, descsz: 0x8000_0000, type: 3, name: Array("GNU\0".utf8), desc: []),
                 field: "descsz", size: 0x8000_0000, xen: false),
    ])
    func impossibleSizes(_ sizeCase: SizeCase) throws {
        let valid = Note.xen(.guestOS, cString("linux"))
        let built = ELFBuilder.kernel(notes: [valid, sizeCase.note]).build()
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(built.bytes, path: "/k/x") }
        let offset = UInt64(built.segmentOffsets[1] + valid.count)
        guard case let .impossibleNoteSize(path, at, field, size, _, xen) = error else {
            Issue.record("expected impossibleNoteSize, got \(String(describing: error))"); return
        }
        #expect(path == "/k/x")
        #expect(at == offset)
        #expect(field == sizeCase.field)
        #expect(size == sizeCase.size)
        #expect(xen == sizeCase.xen)
        let text = error?.description ?? ""
        #expect(text.hasPrefix("/k/x: \(xen ? "Xen note" : "note") at offset 0x\(String(offset, radix: 16)) has an impossible size (\(field) 0x\(String(size, radix: 16))"))
        #expect(!text.contains("\n"))
    }

    @Test("an impossible size in an SHT_NOTE section is an error too")
    func impossibleSizeInSection() throws {
        var builder = ELFBuilder.kernel(notes: [])
        builder.noteSections = [Note.raw(namesz: 4, descsz: 0x100, type: 18, name: Array("Xen\0".utf8), desc: [0, 0, 0, 0])]
        let built = builder.build()
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(built.bytes, path: "/k/x") }
        #expect(error == .impossibleNoteSize(path: "/k/x", offset: UInt64(built.sectionOffsets[0]), field: "descsz",
                                             size: 0x100, available: 4, xen: true))
    }

    @Test("fewer than 12 bytes left for a note header is an error")
    func truncatedHeader() throws {
        let valid = Note.xen(.guestOS, cString("linux"))
        let built = ELFBuilder.kernel(notes: [valid + [0, 0, 0, 0, 0, 0, 0, 0]]).build()
        let error = loaderError { () throws(LoaderError) in try ELFImage.parse(built.bytes, path: "/k/x") }
        #expect(error == .truncatedNoteHeader(path: "/k/x", offset: UInt64(built.segmentOffsets[1] + valid.count), available: 8))
    }

    @Test("the last note's padding may run past the end of the segment")
    func unpaddedLastNote() throws {
        // descsz 5, segment ends right after the desc: the 3 padding bytes are outside.
        let note = Note.xen(.guestOS, cString("linu"))
        var builder = ELFBuilder.kernel(notes: [])
        builder.segments.append(.notes([Array(note.prefix(12 + 4 + 5))]))
        let image = try builder.image()
        #expect(image.notes.guestOS == "linu")
    }
}

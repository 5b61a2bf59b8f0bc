import Testing
@testable import Loader

/// The kinds of image protocol selection tells apart.
enum ImageKind: String, CaseIterable, Sendable {
    case elf64PVHAndEntry, elf64PVH, elf64Entry, elf64Plain, elf32PVH, elf32Plain, bzImage64, bzImageOld

    func image() throws -> KernelImage {
        let phys32 = Note.xen(.phys32Entry, .le(UInt64(0x100_0040)))
        let entry = Note.xen(.entry, .le(UInt64(0xFFFF_FFFF_8100_0080)))
        let bytes: [UInt8]
        switch self {
        case .elf64PVHAndEntry: bytes = ELFBuilder.kernel(notes: [phys32, entry]).build().bytes
        case .elf64PVH: bytes = ELFBuilder.kernel(notes: [phys32]).build().bytes
        case .elf64Entry: bytes = ELFBuilder.kernel(notes: [entry]).build().bytes
        case .elf64Plain: bytes = ELFBuilder.kernel(notes: []).build().bytes
        case .elf32PVH: bytes = ELFBuilder.kernel(notes: [phys32], elfClass: .elf32).build().bytes
        case .elf32Plain: bytes = ELFBuilder.kernel(notes: [Note.xen(.entry, .le(UInt32(0x100_0000)))], elfClass: .elf32).build().bytes
        case .bzImage64: bytes = BzImageBuilder().build()
        case .bzImageOld:
            var builder = BzImageBuilder()
            builder.version = 0x020B
            bytes = builder.build()
        }
        return try KernelImage.parse(KernelFile(path: "/k/\(rawValue)", bytes: bytes))
    }
}

/// What selecting a protocol must give: a protocol whose reason mentions something, or an error.
enum Outcome: Sendable {
    case selects(BootProtocol, mentioning: String)
    case unavailable(mentioning: String)   // .protocolUnavailable for an explicit request
    case noEntry(mentioning: String)       // .noUsableEntry for auto
}

@Suite("Protocol selection")
struct ProtocolSelectionTests {
    /// Rows: image kinds. Columns: auto, pvh, xen64, linux.
    static let table: [ImageKind: [Outcome]] = [
        .elf64PVHAndEntry: [.selects(.pvh, mentioning: "has XEN_ELFNOTE_PHYS32_ENTRY"), .selects(.pvh, mentioning: "0x1000040"),
                            .selects(.xen64, mentioning: "XEN_ELFNOTE_ENTRY 0xffffffff81000080"), .selects(.linux, mentioning: "e_entry 0x1000000")],
        .elf64PVH: [.selects(.pvh, mentioning: "has XEN_ELFNOTE_PHYS32_ENTRY"), .selects(.pvh, mentioning: "PVH"),
                    .selects(.xen64, mentioning: "e_entry 0x1000000 was used"), .selects(.linux, mentioning: "e_entry")],
        .elf64Entry: [.selects(.xen64, mentioning: "XEN_ELFNOTE_ENTRY"), .unavailable(mentioning: "no XEN_ELFNOTE_PHYS32_ENTRY"),
                      .selects(.xen64, mentioning: "XEN_ELFNOTE_ENTRY"), .selects(.linux, mentioning: "e_entry")],
        .elf64Plain: [.selects(.linux, mentioning: "e_entry 0x1000000"), .unavailable(mentioning: "no XEN_ELFNOTE_PHYS32_ENTRY"),
                      .selects(.xen64, mentioning: "e_entry 0x1000000 was used"), .selects(.linux, mentioning: "ELF64")],
        .elf32PVH: [.selects(.pvh, mentioning: "has XEN_ELFNOTE_PHYS32_ENTRY"), .selects(.pvh, mentioning: "PHYS32_ENTRY"),
                    .unavailable(mentioning: "64-bit ELF"), .unavailable(mentioning: "64-bit ELF")],
        .elf32Plain: [.noEntry(mentioning: "Multiboot its header in the first 8 KiB, and xen64 and linux need a 64-bit ELF"),
                      .unavailable(mentioning: "no XEN_ELFNOTE_PHYS32_ENTRY"),
                      .unavailable(mentioning: "this is ELF32"), .unavailable(mentioning: "this is ELF32")],
        .bzImage64: [.selects(.linux, mentioning: "XLF_KERNEL_64"), .unavailable(mentioning: "no Xen ELF notes"),
                     .unavailable(mentioning: "no Xen ELF notes"), .selects(.linux, mentioning: "2.15")],
        .bzImageOld: [.noEntry(mentioning: "version 0x20b"), .unavailable(mentioning: "no Xen ELF notes"),
                      .unavailable(mentioning: "no Xen ELF notes"), .unavailable(mentioning: "needs version >= 2.12 and XLF_KERNEL_64")],
    ]

    static let requests: [BootProtocol?] = [nil, .pvh, .xen64, .linux]

    @Test("auto, pvh, xen64 and linux for every kind of image", arguments: ImageKind.allCases, requests)
    func select(_ kind: ImageKind, _ requested: BootProtocol?) throws {
        let outcome = try #require(Self.table[kind])[Self.requests.firstIndex(of: requested)!]
        let image = try kind.image()
        var chosen: (BootProtocol, reason: String)?
        let error = loaderError { () throws(LoaderError) in chosen = try image.selectProtocol(requested) }
        switch outcome {
        case let .selects(expected, mentioning):
            #expect(error == nil)
            #expect(chosen?.0 == expected)
            #expect(chosen?.reason.contains(mentioning) == true, "reason: \(chosen?.reason ?? "-")")
            #expect(chosen?.reason.contains("\n") == false)
        case let .unavailable(mentioning):
            guard case let .protocolUnavailable(path, protocolAsked, why) = error else {
                Issue.record("expected protocolUnavailable, got \(String(describing: error)) / \(String(describing: chosen))"); return
            }
            #expect(path == image.path)
            #expect(protocolAsked == requested)
            #expect(why.contains(mentioning), "why: \(why)")
        case let .noEntry(mentioning):
            guard case let .noUsableEntry(path, why) = error else {
                Issue.record("expected noUsableEntry, got \(String(describing: error)) / \(String(describing: chosen))"); return
            }
            #expect(path == image.path)
            #expect(why.contains(mentioning), "why: \(why)")
            #expect(error?.description.hasPrefix("\(image.path): no usable entry point: ") == true)
        }
    }

    @Test("the table has a row for every image kind")
    func tableComplete() {
        #expect(Set(Self.table.keys) == Set(ImageKind.allCases))
        #expect(Self.table.values.allSatisfy { $0.count == Self.requests.count })
    }
}

import Testing
import GuestMemory
@testable import Loader

/// Multiboot 1 headers: finding them, refusing what cannot be honoured, loading by program
/// headers and by the address fields, and where `auto` puts Multiboot among the protocols.
@Suite("Multiboot loader")
struct MultibootLoaderTests {
    static func header(flags: UInt32, checksum: UInt32? = nil, addresses: [UInt32] = []) -> [UInt8] {
        let sum = checksum ?? (0 &- (MultibootHeader.magic &+ flags))
        return [MultibootHeader.magic, flags, sum].flatMap { [UInt8].le($0) } + addresses.flatMap { [UInt8].le($0) }
    }

    /// A flat binary: `lead` bytes of code before the header, then the header with address fields.
    static func flat(lead: Int = 0x20, load: UInt32 = 0x20_0000, headerAddress: UInt32? = nil, loadEnd: UInt32 = 0,
                     bssEnd: UInt32 = 0, entry: UInt32 = 0x20_0040, tail: Int = 0x100) -> [UInt8] {
        let header = header(flags: 0x1_0003, addresses: [headerAddress ?? load + UInt32(lead), load, loadEnd, bssEnd, entry])
        return pattern(lead, seed: 3) + header + pattern(tail, seed: 4)
    }

    func memory() throws -> GuestMemory {
        let memory = try GuestMemory(regions: [(0, 64 << 20)])
        try memory.fill(0xAA, at: GuestAddress(0), count: 64 << 20)
        return memory
    }

    @Test func findsTheFirstValidAlignedHeader() throws {
        // Magic with a bad checksum, then one at an unaligned offset, then the real one.
        var bytes = pattern(8) + Self.header(flags: 3, checksum: 1) + [0, 0] + Self.header(flags: 3)
        bytes.insert(contentsOf: [0, 0], at: bytes.count - 12)   // realign: the real header lands at offset 24 + 4
        let found = try #require(try MultibootHeader.find(in: bytes, path: "k"))
        #expect(found.fileOffset % 4 == 0 && found.flags == 3)
        #expect(try MultibootHeader.find(in: pattern(8192) + Self.header(flags: 3), path: "k") == nil)   // beyond 8 KiB
        #expect(try MultibootHeader.find(in: [UInt8](repeating: 0, count: 8188) + Self.header(flags: 3), path: "k") == nil)
        #expect(try MultibootHeader.find(in: [UInt8](repeating: 0, count: 8180) + Self.header(flags: 3), path: "k") != nil)
    }

    @Test func refusesUnknownRequirementBits() {
        #expect(throws: LoaderError.unsupported(path: "k", format: "Multiboot", field: "header flags at offset 0x0",
                                                value: 0x8, expected: "no requirement bits beyond 0-2 (bit 3 is set)")) {
            try MultibootHeader.find(in: Self.header(flags: 0x8), path: "k")
        }
        // Bits 17-31 are optional features: ignored.
        #expect((try? MultibootHeader.find(in: Self.header(flags: 0x8000_0003), path: "k"))??.flags == 0x8000_0003)
    }

    @Test func flatBinaryLoadsByAddressFields() throws {
        let bytes = Self.flat(loadEnd: 0x20_0000 + 0x20 + 32 + 0x80, bssEnd: 0x20_1000)
        let image = try KernelImage.parse(KernelFile(path: "/k/flat", bytes: bytes))
        #expect(try image.selectProtocol(nil).0 == .multiboot)
        let memory = try memory()
        let loaded = try image.load(into: memory, protocol: .multiboot, floor: 0x10_0000, path: "/k/flat")
        #expect(loaded == LoadedKernel(entry: 0x20_0040, physicalStart: 0x20_0000, physicalEnd: 0x20_1000))
        let loadedBytes = 0x20 + 32 + 0x80
        #expect(try memory.read(at: GuestAddress(0x20_0000), count: loadedBytes) == Array(bytes.prefix(loadedBytes)))
        #expect(try memory.read(at: GuestAddress(0x20_0000 + UInt64(loadedBytes)), count: 0x1000 - loadedBytes).allSatisfy { $0 == 0 })
        #expect(try memory.read(at: GuestAddress(0x20_1000), count: 16).allSatisfy { $0 == 0xAA })
        #expect(throws: LoaderError.self) { try image.selectProtocol(.pvh) }
    }

    @Test func badAddressFieldsNameTheField() {
        func parse(_ bytes: [UInt8]) -> String {
            do { _ = try KernelImage.parse(KernelFile(path: "/k/f", bytes: bytes)); return "parsed" } catch { return error.description }
        }
        #expect(parse(Self.flat(lead: 0x20, headerAddress: 0x20_0100)).contains("load_addr"))         // would load before the file
        #expect(parse(Self.flat(lead: 0x20, headerAddress: 0x1F_0000)).contains("load_addr"))         // header before the load
        #expect(parse(Self.flat(loadEnd: 0x1F_0000)).contains("load_end_addr"))
        #expect(parse(Self.flat(loadEnd: 0x30_0000)).contains("runs past the end of the file"))
        #expect(parse(Self.flat(bssEnd: 0x20_0010)).contains("bss_end_addr"))
        #expect(parse(Self.header(flags: 3) + pattern(64)).contains("without address fields"))
        #expect(parse(Array(Self.header(flags: 0x1_0003).prefix(12)) + [1, 2, 3, 4]).contains("truncated Multiboot"))
    }

    @Test func elfWithHeaderLoadsByProgramHeaders() throws {
        var builder = ELFBuilder(elfClass: .elf32)
        builder.entry = 0xC010_0010                       // virtual: translated through the segment
        builder.segments = [.load(at: 0x10_0000, virtual: 0xC010_0000, data: Self.header(flags: 3) + pattern(0x40), memorySize: 0x2000)]
        let bytes = builder.build().bytes
        let image = try KernelImage.parse(KernelFile(path: "/k/mb32", bytes: bytes))
        let (proto, reason) = try image.selectProtocol(nil)
        #expect(proto == .multiboot && reason.contains("Multiboot header at offset"))
        let memory = try memory()
        let loaded = try image.load(into: memory, protocol: .multiboot, floor: 0x10_0000, path: "/k/mb32")
        #expect(loaded.entry == 0x10_0010 && loaded.physicalStart == 0x10_0000 && loaded.physicalEnd == 0x10_2000)
        #expect(throws: LoaderError.self) { try image.selectProtocol(.linux) }
    }

    @Test func autoPrefersPVHThenMultibootThenXen64() throws {
        var builder = ELFBuilder.kernel(notes: [Note.xen(.phys32Entry, .le(UInt32(0x100_0000)))])
        builder.segments[0].data = Self.header(flags: 3) + pattern(0x40)
        #expect(try KernelImage.parse(KernelFile(path: "k", bytes: builder.build().bytes)).selectProtocol(nil).0 == .pvh)
        builder = ELFBuilder.kernel(notes: [Note.xen(.entry, .le(UInt64(0x100_0000)))])
        builder.segments[0].data = Self.header(flags: 3) + pattern(0x40)
        let both = try KernelImage.parse(KernelFile(path: "k", bytes: builder.build().bytes))
        #expect(try both.selectProtocol(nil).0 == .multiboot)
        #expect(try both.selectProtocol(.xen64).0 == .xen64)
        let plain = try KernelImage.parse(KernelFile(path: "k", bytes: ELFBuilder.kernel(notes: []).build().bytes))
        #expect(throws: LoaderError.protocolUnavailable(path: "k", requested: .multiboot,
                                                        why: "no Multiboot header (magic 0x1badb002 with a valid checksum) in the first 8 KiB")) {
            try plain.selectProtocol(.multiboot)
        }
    }
}

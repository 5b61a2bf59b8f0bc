import GuestMemory
import Testing
@testable import Loader

@Suite("Loading ELF segments")
struct LoadTests {
    static let floor: UInt64 = 0x10_0000

    /// Two segments with bss, plus a Xen PT_NOTE.
    static func twoSegmentKernel(notes: [[UInt8]] = [Note.xen(.phys32Entry, .le(UInt64(0x100_0040)))]) -> ELFBuilder {
        var builder = ELFBuilder()
        builder.entry = 0x100_0000
        builder.segments = [
            .load(at: 0x100_0000, virtual: 0xFFFF_FFFF_8100_0000, data: pattern(0x1234, seed: 5), memorySize: 0x3000),
            .notes(notes),
            .load(at: 0x120_0000, virtual: 0xFFFF_FFFF_8120_0000, data: pattern(0x100, seed: 9), memorySize: 0x100),
        ]
        return builder
    }

    @Test("file bytes are copied, bss is zeroed, nothing else is touched", arguments: [BootProtocol.pvh, .xen64, .linux])
    func copiesAndZeroes(_ proto: BootProtocol) throws {
        let builder = Self.twoSegmentKernel(notes: [
            Note.xen(.phys32Entry, .le(UInt64(0x100_0040))), Note.xen(.entry, .le(UInt64(0xFFFF_FFFF_8100_0080))),
            Note.xen(.virtBase, .le(UInt64(0xFFFF_FFFF_8000_0000))),
        ])
        let built = builder.build()
        let file = KernelFile(path: "/k/two", bytes: built.bytes)
        let image = try KernelImage.parse(file)
        let memory = try filledMemory()
        let loaded = try image.load(into: memory, protocol: proto, floor: Self.floor, path: file.path)

        let first = try memory.read(at: GuestAddress(0x100_0000), count: 0x1234)
        #expect(first == Array(built.bytes[built.segmentOffsets[0]..<(built.segmentOffsets[0] + 0x1234)]))
        let bss = try memory.read(at: GuestAddress(0x100_1234), count: 0x3000 - 0x1234)
        #expect(bss.allSatisfy { $0 == 0 })
        #expect(try memory.read(at: GuestAddress(0x120_0000), count: 0x100) == pattern(0x100, seed: 9))
        // Around the segments: still the 0xAA fill.
        #expect(try memory.read(at: GuestAddress(0x100_0000 - 16), count: 16).allSatisfy { $0 == 0xAA })
        #expect(try memory.read(at: GuestAddress(0x100_3000), count: 16).allSatisfy { $0 == 0xAA })
        #expect(try memory.read(at: GuestAddress(0x120_0100), count: 16).allSatisfy { $0 == 0xAA })

        let expectedEntry: UInt64 = switch proto {
        case .pvh: 0x100_0040
        case .xen64: 0xFFFF_FFFF_8100_0080
        case .linux, .multiboot: 0x100_0000
        }
        #expect(loaded == LoadedKernel(entry: expectedEntry, physicalStart: 0x100_0000, physicalEnd: 0x120_0100,
                                       virtualBase: proto == .xen64 ? 0xFFFF_FFFF_8000_0000 : 0, setupHeader: nil))
    }

    @Test("ELF32 PVH kernel loads at p_paddr and enters at PHYS32_ENTRY")
    func elf32() throws {
        var builder = ELFBuilder(elfClass: .elf32)
        builder.segments = [.load(at: 0x10_0000, virtual: 0xC010_0000, data: pattern(0x80), memorySize: 0x200),
                            .notes([Note.xen(.phys32Entry, .le(UInt32(0x10_0010)))])]
        let image = try KernelImage.parse(KernelFile(path: "/k/32", bytes: builder.build().bytes))
        let memory = try filledMemory()
        let (proto, _) = try image.selectProtocol(nil)
        #expect(proto == .pvh)
        let loaded = try image.load(into: memory, protocol: proto, floor: Self.floor, path: "/k/32")
        #expect(loaded == LoadedKernel(entry: 0x10_0010, physicalStart: 0x10_0000, physicalEnd: 0x10_0200))
        #expect(try memory.read(at: GuestAddress(0x10_0000), count: 0x80) == pattern(0x80))
        #expect(try memory.read(at: GuestAddress(0x10_0080), count: 0x180).allSatisfy { $0 == 0 })
    }

    @Test("a segment below the floor", arguments: [UInt64(0), 0xF_F000, 0xF_FFFF])
    func belowFloor(_ address: UInt64) throws {
        var builder = Self.twoSegmentKernel()
        builder.segments[2].physicalAddress = address
        let error = try loadError(builder, .pvh)
        #expect(error == .belowFloor(path: "/k/x", index: 2, start: address, size: 0x100, floor: Self.floor))
        #expect(error?.description == "/k/x: segment 2 [0x\(String(address, radix: 16)), 0x\(String(address + 0x100, radix: 16))) starts below the lowest loadable address 0x100000")
    }

    @Test("a segment outside guest RAM", arguments: [
        (UInt64(0x1FF_FF01), UInt64(0x100)),          // last byte just past 32 MiB
        (0x200_0000, 0x100),                          // starts at the end of RAM
        (0xFFFF_FFFF_FFFF_FF80, 0x100),               // wraps 2^64
        (0x100_0000, 0x1000_0000),                    // memsz far beyond RAM
    ])
    func outsideMemory(_ address: UInt64, _ memsz: UInt64) throws {
        var builder = Self.twoSegmentKernel()
        builder.segments[2].physicalAddress = address
        builder.segments[2].memorySize = memsz
        let error = try loadError(builder, .pvh)
        #expect(error == .outsideMemory(path: "/k/x", index: 2, start: address, size: memsz, memorySize: 32 << 20))
        #expect(error?.description.hasSuffix("is outside guest memory (32 MiB)") == true)
    }

    @Test("a segment straddling two RAM regions is outside guest memory")
    func straddlesRegions() throws {
        var builder = ELFBuilder()
        builder.segments = [.load(at: 0x1F_F000, data: pattern(0x2000))]
        let image = try KernelImage.parse(KernelFile(path: "/k/x", bytes: builder.build().bytes))
        let memory = try filledMemory([(0, 0x20_0000), (0x20_0000 + 0x1000, 0x10_0000)])
        let error = loaderError { () throws(LoaderError) in try image.load(into: memory, protocol: .linux, floor: Self.floor, path: "/k/x") }
        #expect(error == .outsideMemory(path: "/k/x", index: 0, start: 0x1F_F000, size: 0x2000, memorySize: 0x30_0000))
    }

    @Test("overlapping segments are refused and nothing is written", arguments: [
        (UInt64(0x100_2FFF), UInt64(1)),     // last bss byte of segment 0
        (0x0FF_FF00, 0x101),                 // reaches segment 0's first byte
        (0x100_1000, 0x10),                  // inside
        (0x0F0_0000, 0x100_0000),            // covers it
    ])
    func overlap(_ address: UInt64, _ memsz: UInt64) throws {
        var builder = Self.twoSegmentKernel()
        builder.segments[2].physicalAddress = address
        builder.segments[2].data = pattern(Int(min(memsz, 0x100)))
        builder.segments[2].memorySize = memsz
        let memory = try filledMemory()
        let error = try loadError(builder, .pvh, memory: memory)
        #expect(error == .segmentsOverlap(path: "/k/x", first: 0, firstStart: 0x100_0000, firstSize: 0x3000,
                                          second: 2, secondStart: address, secondSize: memsz))
        #expect(try memory.read(at: GuestAddress(0x100_0000), count: 0x3000).allSatisfy { $0 == 0xAA })
    }

    @Test("adjacent segments do not overlap")
    func adjacent() throws {
        var builder = Self.twoSegmentKernel()
        builder.segments[2].physicalAddress = 0x100_3000
        let memory = try filledMemory()
        let image = try KernelImage.parse(KernelFile(path: "/k/x", bytes: builder.build().bytes))
        let loaded = try image.load(into: memory, protocol: .pvh, floor: Self.floor, path: "/k/x")
        #expect(loaded.physicalEnd == 0x100_3100)
    }

    @Test("xen64 subtracts XEN_ELFNOTE_PADDR_OFFSET from p_paddr; pvh and linux do not")
    func paddrOffset() throws {
        var builder = ELFBuilder()
        builder.entry = 0xFFFF_FFFF_8100_0000
        builder.segments = [
            .load(at: 0xFFFF_FFFF_8100_0000, data: pattern(0x100), memorySize: 0x200),
            .notes([Note.xen(.paddrOffset, .le(UInt64(0xFFFF_FFFF_8000_0000))), Note.xen(.entry, .le(UInt64(0xFFFF_FFFF_8100_0010))),
                    Note.xen(.virtBase, .le(UInt64(0xFFFF_FFFF_8000_0000)))]),
        ]
        let image = try KernelImage.parse(KernelFile(path: "/k/pv", bytes: builder.build().bytes))
        let memory = try filledMemory()
        let loaded = try image.load(into: memory, protocol: .xen64, floor: Self.floor, path: "/k/pv")
        #expect(loaded == LoadedKernel(entry: 0xFFFF_FFFF_8100_0010, physicalStart: 0x100_0000, physicalEnd: 0x100_0200,
                                       virtualBase: 0xFFFF_FFFF_8000_0000))
        #expect(try memory.read(at: GuestAddress(0x100_0000), count: 0x100) == pattern(0x100))
        #expect(try memory.read(at: GuestAddress(0x100_0100), count: 0x100).allSatisfy { $0 == 0 })

        // linux uses p_paddr as is, which is far outside RAM.
        let error = loaderError { () throws(LoaderError) in try image.load(into: memory, protocol: .linux, floor: Self.floor, path: "/k/pv") }
        #expect(error == .outsideMemory(path: "/k/pv", index: 0, start: 0xFFFF_FFFF_8100_0000, size: 0x200, memorySize: 32 << 20))
    }

    @Test("xen64: p_paddr below PADDR_OFFSET is an error, not a wrap")
    func paddrUnderflow() throws {
        var builder = ELFBuilder()
        builder.segments = [.load(at: 0x100_0000, data: pattern(0x10)),
                            .notes([Note.xen(.paddrOffset, .le(UInt64(0x200_0000)))])]
        let error = try loadError(builder, .xen64)
        #expect(error == .paddrUnderflow(path: "/k/x", index: 0, physicalAddress: 0x100_0000, paddrOffset: 0x200_0000))
    }

    @Test("an image without load segments cannot be loaded")
    func noLoadSegments() throws {
        var builder = ELFBuilder()
        builder.segments = [.notes([Note.xen(.phys32Entry, .le(UInt32(0x100_0000)))]), .load(at: 0x100_0000, data: [], memorySize: 0)]
        let error = try loadError(builder, .pvh)
        #expect(error == .noLoadableSegments(path: "/k/x"))
    }

    @Test("load refuses a protocol the image cannot use")
    func loadChecksProtocol() throws {
        let builder = Self.twoSegmentKernel(notes: [Note.xen(.guestOS, [0x6C, 0])])
        let error = try loadError(builder, .pvh)
        #expect(error == .protocolUnavailable(path: "/k/x", requested: .pvh, why: "no XEN_ELFNOTE_PHYS32_ENTRY note"))
    }

    @Test("the path given to load is the one errors name")
    func pathInErrors() throws {
        var builder = Self.twoSegmentKernel()
        builder.segments[0].physicalAddress = 0
        let image = try KernelImage.parse(KernelFile(path: "/parsed/as", bytes: builder.build().bytes))
        let memory = try filledMemory()
        let error = loaderError { () throws(LoaderError) in try image.load(into: memory, protocol: .pvh, floor: Self.floor, path: "/shown/as") }
        #expect(error?.path == "/shown/as")
    }

    private func loadError(_ builder: ELFBuilder, _ proto: BootProtocol, memory: GuestMemory? = nil) throws -> LoaderError? {
        let image = try KernelImage.parse(KernelFile(path: "/k/x", bytes: builder.build().bytes))
        let memory = try memory ?? filledMemory()
        return loaderError { () throws(LoaderError) in try image.load(into: memory, protocol: proto, floor: Self.floor, path: "/k/x") }
    }
}

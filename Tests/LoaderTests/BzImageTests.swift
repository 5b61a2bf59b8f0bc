import GuestMemory
import Testing
@testable import Loader

@Suite("bzImage")
struct BzImageTests {
    @Test("setup header fields")
    func parse() throws {
        let builder = BzImageBuilder()
        let bytes = builder.build()
        let image = try BzImage.parse(bytes, path: "/k/bz")
        #expect(image.setupSectors == 4)
        #expect(image.protectedModeOffset == 5 * 512)
        #expect(image.version == 0x020F)
        #expect(image.loadFlags == 0x01)
        #expect(image.xloadflags == 0x0003)
        #expect(image.code32Start == 0x10_0000)
        #expect(image.kernelAlignment == 0x20_0000)
        #expect(image.relocatable)
        #expect(image.initrdAddressMax == 0x7FFF_FFFF)
        #expect(image.cmdlineSize == 2047)
        #expect(image.prefAddress == 0x100_0000)
        #expect(image.initSize == 0x8000)
        #expect(image.supports64BitEntry)
        #expect(image.payloadSize == 0x1000)
        #expect(image.memorySize == 0x8000)
        // 0x1F1 up to 0x202 + 0x6A = 0x26C: the byte at 0x26C is not part of it.
        #expect(image.setupHeader == Array(bytes[0x1F1..<0x26C]))
    }

    @Test("setup_sects 0 means 4", arguments: [(UInt8(0), 4), (1, 1), (4, 4), (30, 30)])
    func setupSectors(_ field: UInt8, _ sectors: Int) throws {
        var builder = BzImageBuilder()
        builder.setupSectors = field
        let image = try BzImage.parse(builder.build(), path: "/k/bz")
        #expect(image.setupSectors == sectors)
        #expect(image.protectedModeOffset == (sectors + 1) * 512)
        #expect(image.payloadSize == 0x1000)
    }

    @Test("the 64-bit entry needs protocol 2.12 and XLF_KERNEL_64", arguments: [
        (UInt16(0x020F), UInt16(0x0001), true),
        (0x020C, 0x0001, true),
        (0x020B, 0x0001, false),    // xloadflags did not exist yet: read as 0
        (0x020F, 0x0002, false),
        (0x020F, 0x0000, false),
        (0x0206, 0x0001, false),
    ])
    func sixtyFourBitEntry(_ version: UInt16, _ xloadflags: UInt16, _ supported: Bool) throws {
        var builder = BzImageBuilder()
        builder.version = version
        builder.xloadflags = xloadflags
        let image = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: builder.build()))
        guard case let .bzImage(bz) = image else { Issue.record("not a bzImage"); return }
        #expect(bz.supports64BitEntry == supported)
        if supported {
            #expect(try image.selectProtocol(nil).0 == .linux)
        } else {
            let auto = loaderError { () throws(LoaderError) in try image.selectProtocol(nil) }
            guard case let .noUsableEntry(path, why) = auto else { Issue.record("got \(String(describing: auto))"); return }
            #expect(path == "/k/bz")
            #expect(why.contains("version 0x\(String(version, radix: 16))"))
            #expect(why.contains("xloadflags 0x\(String(bz.xloadflags, radix: 16))"))
            let linux = loaderError { () throws(LoaderError) in try image.selectProtocol(.linux) }
            guard case .protocolUnavailable(_, .linux, _) = linux else { Issue.record("got \(String(describing: linux))"); return }
            let memory = try filledMemory()
            let load = loaderError { () throws(LoaderError) in try image.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz") }
            #expect(load == linux)
        }
    }

    @Test("old protocols: later fields take boot.rst's defaults")
    func oldProtocol() throws {
        var builder = BzImageBuilder()
        builder.version = 0x0202
        let image = try BzImage.parse(builder.build(), path: "/k/old")
        #expect(image.relocatable == false)
        #expect(image.kernelAlignment == 0)
        #expect(image.initrdAddressMax == 0x37FF_FFFF)
        #expect(image.cmdlineSize == 255)
        #expect(image.prefAddress == 0)
        #expect(image.initSize == 0)
        #expect(image.xloadflags == 0)
        #expect(image.loadAddress == 0x10_0000)
    }

    @Test("fields past the header the jump byte delimits are not read")
    func shortHeader() throws {
        var builder = BzImageBuilder()
        builder.jump = 0x34   // header ends at 0x236: no xloadflags, cmdline_size, pref_address, init_size
        let image = try BzImage.parse(builder.build(), path: "/k/bz")
        #expect(image.xloadflags == 0)
        #expect(image.prefAddress == 0)
        #expect(image.setupHeader.count == 0x236 - 0x1F1)
        #expect(!image.supports64BitEntry)
    }

    @Test("a huge jump byte cannot make the setup header reach the e820 table")
    func headerCappedAt0x290() throws {
        var builder = BzImageBuilder()
        builder.jump = 0xFF
        let image = try BzImage.parse(builder.build(), path: "/k/bz")
        #expect(image.setupHeader.count == 0x290 - 0x1F1)
    }

    /// A header corruption and the field the error must name.
    @Test("invalid headers", arguments: [
        ("boot_flag", 0x1FE, [UInt8]([0x55, 0xAB])),
        ("version", 0x206, [0xFF, 0x01]),
        ("loadflags", 0x211, [0x00]),
    ])
    func invalid(_ field: String, _ offset: Int, _ bytes: [UInt8]) throws {
        var image = BzImageBuilder().build()
        image.put(bytes, at: offset)
        let error = loaderError { () throws(LoaderError) in try BzImage.parse(image, path: "/k/bz") }
        guard case let .unsupported(path, format, name, _, _) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(path == "/k/bz")
        #expect(format == "bzImage")
        #expect(name == field)
    }

    @Test("a bzImage with no protected-mode kernel after its setup sectors is truncated")
    func truncatedPayload() throws {
        var builder = BzImageBuilder()
        builder.payload = []
        let error = loaderError { () throws(LoaderError) in try KernelImage.parse(KernelFile(path: "/k/bz", bytes: builder.build())) }
        guard case let .truncated(_, format, _, offset, fileSize) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(format == "bzImage")
        #expect(offset == 5 * 512)
        #expect(fileSize == 5 * 512)
    }

    @Test("the file ends inside the setup header")
    func truncatedHeader() throws {
        let bytes = Array(BzImageBuilder().build().prefix(0x220))
        let error = loaderError { () throws(LoaderError) in try KernelImage.parse(KernelFile(path: "/k/bz", bytes: bytes)) }
        guard case let .truncated(_, format, what, _, _) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(format == "bzImage")
        #expect(what.hasPrefix("setup header"))
    }

    @Test("load: relocatable kernels go to pref_address, others to code32_start", arguments: [
        (true, UInt64(0x100_0000), UInt64(0x100_0000)),
        (true, 0, 0x10_0000),
        (false, 0x100_0000, 0x10_0000),
    ])
    func load(_ relocatable: Bool, _ prefAddress: UInt64, _ loadAddress: UInt64) throws {
        var builder = BzImageBuilder()
        builder.relocatable = relocatable
        builder.prefAddress = prefAddress
        let bytes = builder.build()
        let image = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: bytes))
        let memory = try filledMemory()
        let loaded = try image.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz")
        #expect(loaded == LoadedKernel(entry: loadAddress + 0x200, physicalStart: loadAddress, physicalEnd: loadAddress + 0x8000,
                                       virtualBase: 0, setupHeader: Array(bytes[0x1F1..<0x26C])))
        #expect(try memory.read(at: GuestAddress(loadAddress), count: 0x1000) == builder.payload)
        #expect(try memory.read(at: GuestAddress(loadAddress - 16), count: 16).allSatisfy { $0 == 0xAA })
    }

    @Test("load: memsz is max(payload, init_size) and must fit", arguments: [
        (UInt32(0x100), UInt64(0x1000)), (0x1000, 0x1000), (0x2000, 0x2000),
    ])
    func memorySize(_ initSize: UInt32, _ expected: UInt64) throws {
        var builder = BzImageBuilder()
        builder.initSize = initSize
        let image = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: builder.build()))
        let memory = try filledMemory()
        let loaded = try image.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz")
        #expect(loaded.physicalEnd - loaded.physicalStart == expected)
    }

    @Test("load: outside RAM, below the floor, a payload too short for the entry")
    func loadErrors() throws {
        let memory = try filledMemory()
        var big = BzImageBuilder()
        big.initSize = 0x200_0000   // 32 MiB from 16 MiB: past the end of RAM
        let bigImage = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: big.build()))
        let outside = loaderError { () throws(LoaderError) in try bigImage.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz") }
        #expect(outside == .outsideMemory(path: "/k/bz", index: nil, start: 0x100_0000, size: 0x200_0000, memorySize: 32 << 20))
        #expect(outside?.description == "/k/bz: protected-mode kernel [0x1000000, 0x3000000) is outside guest memory (32 MiB)")

        var low = BzImageBuilder()
        low.relocatable = false
        low.code32Start = 0x8_0000
        let lowImage = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: low.build()))
        let below = loaderError { () throws(LoaderError) in try lowImage.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz") }
        #expect(below == .belowFloor(path: "/k/bz", index: nil, start: 0x8_0000, size: 0x8000, floor: 0x10_0000))

        var tiny = BzImageBuilder()
        tiny.payload = pattern(0x200)
        let tinyImage = try KernelImage.parse(KernelFile(path: "/k/bz", bytes: tiny.build()))
        let short = loaderError { () throws(LoaderError) in try tinyImage.load(into: memory, protocol: .linux, floor: 0x10_0000, path: "/k/bz") }
        guard case .truncated(_, "bzImage", _, _, _) = short else { Issue.record("got \(String(describing: short))"); return }
    }
}

import GuestMemory
import KVM
import Loader
import Testing
@testable import X86

/// The Multiboot information structure, modules and memory map as BootSetup writes them, and
/// the entry state (Multiboot Specification 0.6.96, 3.2 and 3.3).
@Suite("Multiboot boot set-up")
struct MultibootInfoTests {
    func prepare(memorySize: UInt64 = 64 << 20, modules: [BootModule], cmdline: String = "/k/mb.elf a=1")
        throws -> (GuestMemory, BootState) {
        let memory = try GuestMemory(regions: Layout.ramRegions(size: memorySize))
        var config = BootConfiguration(protocol: .multiboot,
                                       kernel: LoadedKernel(entry: 0x10_000C, physicalStart: 0x10_0000, physicalEnd: 0x12_3456),
                                       memorySize: memorySize, commandLine: Array(cmdline.utf8))
        config.modules = modules
        return (memory, try BootSetup.prepare(config, in: memory))
    }

    @Test func infoModulesMapAndRegisters() throws {
        let modules = [BootModule(bytes: Array(repeating: 7, count: 5000), string: "/tmp/initrd"),
                       BootModule(bytes: [], string: "empty"), BootModule(bytes: [1, 2, 3], string: "third one")]
        let (memory, state) = try prepare(modules: modules)
        func u32(_ a: UInt64) throws -> UInt32 { try memory.load(at: GuestAddress(a)) }
        func u64(_ a: UInt64) throws -> UInt64 { try memory.load(at: GuestAddress(a)) }
        func string(_ a: UInt32) throws -> String { String(decoding: try memory.readCString(at: GuestAddress(UInt64(a)), limit: 256), as: UTF8.self) }
        let mbi = Layout.bootInfo
        #expect(state.registers.rax == 0x2BAD_B002 && state.registers.rbx == mbi && state.registers.rip == 0x10_000C)
        #expect(state.cr0 == ControlBits.pe | ControlBits.et && state.cr4 == 0 && state.efer == 0)
        #expect(state.cs.long == false && state.cs.base == 0 && state.cs.limit == 0xFFFF_FFFF)
        #expect(try u32(mbi) == 1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9)
        #expect(try u32(mbi + 4) == 639)                                   // 0x9FC00 bytes below the EBDA
        #expect(try u32(mbi + 8) == (64 << 10) - 1024)                    // KiB from 1 MiB to the end of RAM
        #expect(try string(u32(mbi + 16)) == "/k/mb.elf a=1")
        #expect(try u32(mbi + 20) == 3)
        let list = UInt64(try u32(mbi + 24))
        var previousEnd: UInt32 = 0x12_3456
        for (i, module) in modules.enumerated() {
            let start = try u32(list + UInt64(16 * i)), end = try u32(list + UInt64(16 * i) + 4)
            #expect(start % 4096 == 0 && start >= previousEnd, "module \(i) at \(start)")
            #expect(end - start == UInt32(module.bytes.count))
            #expect(try memory.read(at: GuestAddress(UInt64(start)), count: module.bytes.count) == module.bytes)
            #expect(try string(u32(list + UInt64(16 * i) + 8)) == module.string)
            #expect(try u32(list + UInt64(16 * i) + 12) == 0)
            previousEnd = end
        }
        #expect(try string(u32(mbi + 64)) == "Swiftlet")
        let mapLength = try u32(mbi + 44), map = UInt64(try u32(mbi + 48))
        #expect(mapLength == 3 * 24)
        let expected = MemoryMapEntry.standard(memorySize: 64 << 20)
        for (i, entry) in expected.enumerated() {
            let e = map + UInt64(24 * i)
            #expect(try u32(e) == 20 && u64(e + 4) == entry.address && u64(e + 12) == entry.size && u32(e + 20) == entry.kind.rawValue)
        }
    }

    @Test func upperMemoryStopsAtTheHole() throws {
        let (memory, _) = try prepare(memorySize: 5 << 30, modules: [])
        let upper: UInt32 = try memory.load(at: GuestAddress(Layout.bootInfo + 8))
        #expect(upper == UInt32((Layout.mmioHoleStart - (1 << 20)) >> 10))
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 20)) as UInt32 == 0)
    }

    @Test func moduleThatDoesNotFitIsNamed() throws {
        let big = BootModule(bytes: [UInt8](repeating: 0, count: 3 << 20), string: "big.img")
        #expect(throws: BootError.moduleDoesNotFit(index: 1, name: "big.img", size: 3 << 20,
                                                   available: (4 << 20) - 0x124000 - 4096, below: 4 << 20)) {
            _ = try prepare(memorySize: 4 << 20, modules: [BootModule(bytes: [1], string: "a"), big])
        }
    }
}

import GuestMemory
import KVM
import Loader
import Testing
@testable import X86

@Suite("Boot set-up")
struct BootSetupTests {
    static let memorySize: UInt64 = 64 << 20
    let memory: GuestMemory

    init() throws { memory = try GuestMemory(regions: Layout.ramRegions(size: Self.memorySize)) }

    func config(_ proto: BootProtocol, initrd: [UInt8]? = nil, cmdline: String = "console=ttyS0",
                virtualBase: UInt64 = 0, entry: UInt64 = 0x10_0000) -> BootConfiguration {
        BootConfiguration(protocol: proto,
                          kernel: LoadedKernel(entry: entry, physicalStart: 0x10_0000, physicalEnd: 0x12_3456,
                                               virtualBase: virtualBase),
                          memorySize: Self.memorySize, commandLine: Array(cmdline.utf8), initrd: initrd)
    }

    func u32(_ a: UInt64) throws -> UInt32 { try memory.load(at: GuestAddress(a)) }
    func u64(_ a: UInt64) throws -> UInt64 { try memory.load(at: GuestAddress(a)) }

    @Test func pvhStartInfoAndRegisters() throws {
        let initrd: [UInt8] = Array(repeating: 0x5A, count: 10_000)
        let state = try BootSetup.prepare(config(.pvh, initrd: initrd), in: memory)
        let info = Layout.bootInfo
        #expect(try u32(info) == 0x336E_C578)                  // magic
        #expect(try u32(info + 4) == 1)                        // version
        #expect(try u32(info + 8) == 0)                        // flags
        #expect(try u32(info + 12) == 1)                       // nr_modules
        #expect(try u64(info + 16) == Layout.pvhModuleList)
        #expect(try u64(info + 24) == Layout.commandLine)
        #expect(try u64(info + 32) == 0)                       // rsdp_paddr until ACPI exists
        #expect(try u64(info + 40) == Layout.pvhMemoryMap)
        #expect(try u32(info + 48) == 3)
        #expect(try u32(info + 52) == 0)
        let initrdAddress = try u64(Layout.pvhModuleList)
        #expect(try u64(Layout.pvhModuleList + 8) == 10_000)
        #expect(initrdAddress % 4096 == 0 && initrdAddress + 10_000 <= Self.memorySize)
        #expect(try memory.read(at: GuestAddress(initrdAddress), count: 10_000) == initrd)
        #expect(try memory.readCString(at: GuestAddress(Layout.commandLine), limit: 100) == Array("console=ttyS0".utf8))
        // Memory map entry 2: RAM from 1 MiB to the end.
        #expect(try u64(Layout.pvhMemoryMap + 48) == 0x10_0000)
        #expect(try u64(Layout.pvhMemoryMap + 56) == Self.memorySize - 0x10_0000)
        #expect(try u32(Layout.pvhMemoryMap + 64) == 1)

        // pvh.pandoc: 32-bit protected mode, paging off, flat segments, ebx = start info.
        #expect(state.registers.rbx == Layout.bootInfo)
        #expect(state.registers.rip == 0x10_0000)
        #expect(state.registers.rflags == 0x2)
        #expect(state.cr0 == 0x11 && state.cr4 == 0 && state.efer == 0 && state.cr3 == 0)
        #expect(state.cs.defaultBig && !state.cs.long && state.cs.limit == 0xFFFF_FFFF && state.cs.base == 0)
        #expect(state.data.limit == 0xFFFF_FFFF && state.data.type == 0x3)
        #expect(state.tr.type == 0xB && state.tr.limit == 0x67)
    }

    @Test func pvhWithoutInitrdHasNoModules() throws {
        _ = try BootSetup.prepare(config(.pvh), in: memory)
        #expect(try u32(Layout.bootInfo + 12) == 0)
        #expect(try u64(Layout.bootInfo + 16) == 0)
    }

    @Test func xen64StartInfoPagingAndStack() throws {
        let base: UInt64 = 0xFFFF_FFFF_8000_0000
        let initrd: [UInt8] = Array(0..<200).map { UInt8($0) }
        let state = try BootSetup.prepare(config(.xen64, initrd: initrd, virtualBase: base, entry: base + 0x10_0000), in: memory)
        let info = Layout.bootInfo
        #expect(try memory.readCString(at: GuestAddress(info), limit: 32) == Array("xen-3.0-x86_64".utf8))
        #expect(try u64(info + 32) == Self.memorySize / 4096)  // nr_pages
        #expect(try u64(info + 40) == 0)                       // shared_info
        #expect(try u32(info + 48) == 0)                       // flags
        #expect(try u64(info + 88) == base + Layout.pageTablePool)   // pt_base, virtual
        #expect(try u64(info + 96) == 8)                       // nr_pt_frames
        #expect(try u64(info + 104) == 0)                      // mfn_list
        let moduleStart = try u64(info + 112)
        let expectedModule: UInt64 = base + 0x12_4000          // right after the kernel, page aligned
        #expect(moduleStart == expectedModule)
        #expect(try u64(info + 120) == 200)
        #expect(try memory.read(at: GuestAddress(0x12_4000), count: 200) == initrd)
        #expect(try memory.readCString(at: GuestAddress(info + 128), limit: 1024) == Array("console=ttyS0".utf8))

        // CR0 = PE|ET|PG, CR4 = PAE, EFER = LME|LMA, CPL 0, rsi/rsp virtual.
        #expect(state.cr0 == 0x8000_0011 && state.cr4 == 0x20 && state.efer == 0x500)
        #expect(state.cr3 == Layout.pageTablePool)
        #expect(state.cs.long && state.cs.dpl == 0 && state.cs.selector & 3 == 0)
        #expect(state.registers.rsi == base + Layout.bootInfo)
        #expect(state.registers.rsp == base + Layout.bootStackTop && state.registers.rsp % 16 == 0)
        #expect(state.registers.rip == base + 0x10_0000)
        let tables = try #require(try? rebuild(base))
        #expect(tables.translate(state.registers.rsi) == Layout.bootInfo)
        #expect(tables.translate(Layout.bootInfo) == Layout.bootInfo)   // identity low memory
    }

    func rebuild(_ base: UInt64) throws -> PageTableBuilder {
        try BootSetup.buildTables(memory: GuestMemory(regions: Layout.ramRegions(size: Self.memorySize)), virtualBase: base)
    }

    @Test func linuxZeroPage() throws {
        let initrd: [UInt8] = [1, 2, 3]
        let state = try BootSetup.prepare(config(.linux, initrd: initrd), in: memory)
        let zero = Layout.bootInfo
        #expect(try memory.load(at: GuestAddress(zero + 0x1FE)) as UInt16 == 0xAA55)
        #expect(try u32(zero + 0x202) == 0x5372_6448)
        #expect(try memory.load(at: GuestAddress(zero + 0x206)) as UInt16 == 0x020C)
        #expect(try memory.load(at: GuestAddress(zero + 0x210)) as UInt8 == 0xFF)
        #expect(try memory.load(at: GuestAddress(zero + 0x1EF)) as UInt8 == 0)
        #expect(try u32(zero + 0x228) == UInt32(Layout.commandLine))
        let ramdisk = try u32(zero + 0x218)
        #expect(ramdisk != 0)
        #expect(try u32(zero + 0x21C) == 3)
        #expect(try memory.read(at: GuestAddress(UInt64(ramdisk)), count: 3) == initrd)
        #expect(try memory.load(at: GuestAddress(zero + 0x1E8)) as UInt8 == 3)
        #expect(try u64(zero + 0x2D0 + 40) == 0x10_0000)      // e820[2].addr
        #expect(try u32(zero + 0x2D0 + 56) == 1)               // e820[2].type

        #expect(state.registers.rsi == Layout.bootInfo)
        #expect(state.cs.selector == 0x10 && state.data.selector == 0x18 && state.cs.long)
        #expect(state.cr0 & 0x8000_0001 == 0x8000_0001 && state.cr4 & 0x20 != 0 && state.efer == 0x500)
        #expect(state.registers.rflags & 0x200 == 0)
    }

    @Test func bzImageHeaderIsCopied() throws {
        var header = [UInt8](repeating: 0, count: 0x268 - 0x1F1)
        header[0x206 - 0x1F1] = 0x0F; header[0x207 - 0x1F1] = 0x02       // version 2.15
        header[0x211 - 0x1F1] = 0x01                                      // loadflags
        var cfg = config(.linux)
        cfg.kernel.setupHeader = header
        _ = try BootSetup.prepare(cfg, in: memory)
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 0x206)) as UInt16 == 0x020F)
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 0x211)) as UInt8 == 1)
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 0x210)) as UInt8 == 0xFF)  // ours, over the image's
    }

    @Test(arguments: [(BootProtocol.pvh, 65535), (.xen64, 1023), (.linux, 2047)])
    func commandLineLimits(proto: BootProtocol, limit: Int) throws {
        let fits = String(repeating: "a", count: limit)
        #expect(throws: Never.self) { try BootSetup.prepare(config(proto, cmdline: fits, virtualBase: 0), in: memory) }
        #expect(throws: BootError.commandLineTooLong(length: limit + 1, limit: limit, protocol: proto)) {
            try BootSetup.prepare(config(proto, cmdline: fits + "a"), in: memory)
        }
    }

    @Test func initrdTooLargeIsRefused() throws {
        let huge = [UInt8](repeating: 0, count: Int(Self.memorySize))
        #expect(throws: BootError.self) { try BootSetup.prepare(config(.pvh, initrd: huge), in: memory) }
        #expect(throws: BootError.self) { try BootSetup.prepare(config(.xen64, initrd: huge), in: memory) }
    }

    @Test(arguments: [UInt64(0x1000_0000), 0xFFFF_FFFF_8000_1000])
    func unusableVirtualBase(base: UInt64) throws {
        #expect(throws: BootError.unsupportedVirtualBase(base)) {
            try BootSetup.prepare(config(.xen64, virtualBase: base, entry: base), in: memory)
        }
    }

    @Test func unmappedEntryIsRefused() throws {
        let base: UInt64 = 0xFFFF_FFFF_8000_0000
        #expect(throws: BootError.entryNotMapped(0x1_2345_6789_0000)) {
            try BootSetup.prepare(config(.xen64, virtualBase: base, entry: 0x1_2345_6789_0000), in: memory)
        }
    }

    @Test func bootStateAppliesToSpecialRegisters() throws {
        let state = try BootSetup.prepare(config(.linux), in: memory)
        var sregs = SpecialRegisters()
        sregs.apicBase = 0xFEE0_0900
        state.apply(to: &sregs)
        #expect(sregs.cs == state.cs && sregs.ss == state.data && sregs.fs == state.data && sregs.tr == state.tr)
        #expect(sregs.gdt == DescriptorTable(base: Layout.gdt, limit: BootGDT.limit))
        #expect(sregs.apicBase == 0xFEE0_0900)   // untouched
        let gdt = try memory.read(at: GuestAddress(Layout.gdt), count: BootGDT.entries.count * 8)
        #expect(gdt == BootGDT.entries.flatMap { ByteImage.le($0) })
    }
}

@Suite("CPUID")
struct CPUIDTests {
    /// Like this host's KVM: leaf 0xB present with subleaf 0 only, no leaf 0x1F.
    let supported = [
        CPUIDEntry(function: 0, eax: 0x1C),
        CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0xFF00_0800, ecx: 0x1, edx: 0),
        CPUIDEntry(function: 0xB, index: 0, flags: 1, edx: 1),
    ]

    @Test(arguments: [(0, 1), (3, 4), (7, 64), (255, 256)])
    func apicIDAndTopology(apicID: UInt32, count: Int) {
        let entries = CPUIDTemplate.entries(from: supported, apicID: apicID, count: count)
        #expect(entries[0] == supported[0])
        let leaf1 = entries[1]
        #expect(leaf1.ebx >> 24 == apicID & 0xFF)
        #expect(leaf1.ebx & 0xFFFF == 0x0800)
        #expect(leaf1.ecx & CPUIDTemplate.hypervisorBit != 0)
        #expect(leaf1.edx & CPUIDTemplate.httBit != 0)
        #expect((leaf1.ebx >> 16) & 0xFF >= UInt32(min(count, 255)))

        let topology = entries.filter { $0.function == 0xB }
        #expect(topology.map(\.index) == [0, 1, 2])
        #expect(topology.allSatisfy { $0.edx == apicID && $0.flags == CPUIDEntry.significantIndex })
        #expect(topology[0].ebx == 1 && (topology[0].ecx >> 8) & 0xFF == 1)             // SMT: 1 thread
        #expect(topology[1].ebx == UInt32(count) && (topology[1].ecx >> 8) & 0xFF == 2)  // core level
        #expect(1 << topology[1].eax >= count)                                        // shift covers every ID
        #expect((topology[2].ecx >> 8) & 0xFF == 0)                                   // end of levels
        #expect(!entries.contains { $0.function == 0x1F })                            // not offered by this CPU
    }

    @Test func leaf1FIsGeneratedWhenOffered() {
        var withV2 = supported + [CPUIDEntry(function: 0x1F, index: 0, flags: 1)]
        withV2[0].eax = 0x1F                                                          // max basic leaf
        let entries = CPUIDTemplate.entries(from: withV2, apicID: 5, count: 8)
        #expect(entries.filter { $0.function == 0x1F }.map(\.index) == [0, 1, 2])
    }
}

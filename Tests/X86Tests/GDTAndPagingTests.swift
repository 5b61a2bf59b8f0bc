import GuestMemory
import KVM
import Testing
@testable import X86

@Suite("GDT")
struct GDTTests {
    /// Encodings from the SDM's descriptor format, as Firecracker and Xen's toolstack use them.
    @Test(arguments: [
        (BootGDT.code32, UInt64(0x00CF_9B00_0000_FFFF)),
        (BootGDT.code64, UInt64(0x00AF_9B00_0000_FFFF)),
        (BootGDT.data, UInt64(0x00CF_9300_0000_FFFF)),
        (BootGDT.tss, UInt64(0x0000_8B00_0000_0067)),
    ])
    func encoding(descriptor: SegmentDescriptor, expected: UInt64) {
        #expect(descriptor.encoded == expected)
        #expect(SegmentDescriptor(encoded: expected) == descriptor)
    }

    @Test func flatSegmentsHaveByteGranularLimits() {
        let code = BootGDT.code32.segment(selector: 0x08)
        #expect(code.limit == 0xFFFF_FFFF)
        #expect(code.base == 0 && code.selector == 0x08 && code.type == 0xB)
        #expect(code.present && code.codeOrData && code.defaultBig && code.granularity && !code.long)
        let tss = BootGDT.tss.segment(selector: BootGDT.tssSelector)
        #expect(tss.limit == 0x67 && tss.type == 0xB && !tss.codeOrData && tss.present)
        let code64 = BootGDT.code64.segment(selector: 0x10)
        #expect(code64.long && !code64.defaultBig)
    }

    @Test func selectorsIndexTheTable() {
        let entries = BootGDT.entries
        #expect(entries[Int(BootGDT.code32Selector) / 8] == BootGDT.code32.encoded)
        #expect(entries[Int(BootGDT.code64Selector) / 8] == BootGDT.code64.encoded)
        #expect(entries[Int(BootGDT.dataSelector) / 8] == BootGDT.data.encoded)
        #expect(entries[Int(BootGDT.tssSelector) / 8] == BootGDT.tss.encoded)
        #expect(entries[Int(BootGDT.tssSelector) / 8 + 1] == 0)   // upper half of the 16-byte TSS descriptor
        #expect(BootGDT.limit == UInt16(entries.count * 8 - 1))
    }
}

@Suite("Page tables")
struct PageTableTests {
    func memory(_ size: UInt64 = 64 << 20) throws -> GuestMemory {
        try GuestMemory(regions: Layout.ramRegions(size: size))
    }

    @Test func identityAndHighMapping() throws {
        let mem = try memory()
        var tables = try PageTableBuilder(memory: mem)
        try tables.map(virtual: 0, physical: 0, size: 4 << 30)
        try tables.map(virtual: 0xFFFF_FFFF_8000_0000, physical: 0, size: 1 << 30)
        #expect(tables.translate(0x12_3456) == 0x12_3456)
        #expect(tables.translate(0xFFFF_FFFF) == 0xFFFF_FFFF)
        #expect(tables.translate(0x1_0000_0000) == nil)
        #expect(tables.translate(0xFFFF_FFFF_8010_0200) == 0x10_0200)
        #expect(tables.translate(0xFFFF_FFFF_C000_0000) == nil)
        // PML4 + low PDPT + 4 PDs + high PDPT + 1 PD.
        #expect(tables.usedPages == 8)
        let pml4Entry: UInt64 = try mem.load(at: GuestAddress(tables.root))
        #expect(pml4Entry & 0x3 == 0x3)                          // present, writable
        let pml4High: UInt64 = try mem.load(at: GuestAddress(tables.root + 511 * 8))
        #expect(pml4High & 1 == 1)
    }

    @Test func refusesMisalignedAndDoubleMappings() throws {
        let mem = try memory()
        var tables = try PageTableBuilder(memory: mem)
        #expect(throws: PageTableBuilder.Failure.misaligned(virtual: 0x1000, physical: 0)) {
            try tables.map(virtual: 0x1000, physical: 0, size: 2 << 20)
        }
        try tables.map(virtual: 0, physical: 0, size: 2 << 20)
        #expect(throws: PageTableBuilder.Failure.conflict(virtual: 0)) {
            try tables.map(virtual: 0, physical: 2 << 20, size: 2 << 20)
        }
    }

    @Test func poolExhaustionIsAnError() throws {
        let mem = try memory()
        var tables = try PageTableBuilder(memory: mem, poolPages: 2)
        #expect(throws: PageTableBuilder.Failure.poolExhausted(pages: 2)) {
            try tables.map(virtual: 0, physical: 0, size: 2 << 20)
        }
    }
}

@Suite("Memory map")
struct MemoryMapTests {
    @Test func smallGuest() {
        let expected: [MemoryMapEntry] = [
            MemoryMapEntry(address: 0, size: 0x9FC00, kind: .ram),
            MemoryMapEntry(address: 0x9FC00, size: 0x6_0400, kind: .reserved),
            MemoryMapEntry(address: 0x100000, size: 0x3F0_0000, kind: .ram),
        ]
        #expect(MemoryMapEntry.standard(memorySize: 64 << 20) == expected)
    }

    @Test func guestAboveTheHole() {
        let map = MemoryMapEntry.standard(memorySize: 5 << 30)
        #expect(map.count == 4)
        #expect(map[2] == MemoryMapEntry(address: 0x100000, size: 0xBFF0_0000, kind: .ram))
        #expect(map[3] == MemoryMapEntry(address: 0x1_0000_0000, size: 0x8000_0000, kind: .ram))
        let ram: UInt64 = map.filter { $0.kind == .ram }.reduce(0) { $0 + $1.size }
        #expect(ram == 0x1_3FF9_FC00)   // 5 GiB less the legacy hole 0x9FC00..0x100000
        #expect(Layout.ramRegions(size: 5 << 30).map(\.start) == [0, 1 << 32])
    }
}

@Suite("Guest virtual memory")
struct GuestVirtualMemoryTests {
    @Test func walksFourLevelTablesAndRefusesWhatIsNotRAM() throws {
        let memory = try GuestMemory(regions: Layout.ramRegions(size: 64 << 20))
        var tables = try PageTableBuilder(memory: memory)
        try tables.map(virtual: 0, physical: 0, size: 64 << 20)
        try tables.map(virtual: 0xFFFF_FFFF_8000_0000, physical: 0, size: 2 << 20)
        try tables.map(virtual: 0x4000_0000, physical: 0x3000_0000, size: 2 << 20)   // mapped, but not RAM
        let view = GuestVirtualMemory(memory: memory, mode: .fourLevel(root: tables.root))
        try memory.write([1, 2, 3, 4], at: GuestAddress(0x1F_FFFE))
        #expect(view.read(0xFFFF_FFFF_801F_FFFE, count: 2) == [1, 2])
        #expect(view.read(0xFFFF_FFFF_801F_FFFE, count: 4) == nil)                  // crosses into an unmapped page
        #expect(view.read(0x1F_FFFE, count: 4) == [1, 2, 3, 4])                      // identity: crosses into the next 2 MiB page
        #expect(view.read((64 << 20) - 2, count: 2) != nil)                           // the last bytes of RAM
        #expect(view.read((64 << 20) - 2, count: 3) == nil)                           // one past
        #expect(view.read(0x4000_0000, count: 1) == nil)                              // mapped to a hole
        #expect(view.read(0x0000_8000_0000_0000, count: 1) == nil)                    // non-canonical
        #expect(view.read(UInt64.max - 1, count: 4) == nil)                           // wraps
        #expect(view.write([9, 9], at: 0xFFFF_FFFF_8000_0100))
        #expect(try memory.read(at: GuestAddress(0x100), count: 2) == [9, 9])
        #expect(!view.write([7, 7, 7], at: (64 << 20) - 2))
        #expect(try memory.read(at: GuestAddress((64 << 20) - 2), count: 2) == [0, 0])  // nothing written
    }

    @Test func pagingModes() throws {
        let memory = try GuestMemory(regions: Layout.ramRegions(size: 8 << 20))
        #expect(GuestVirtualMemory.mode(cr0: 0x11, cr3: 0, cr4: 0, efer: 0) == .physical)
        #expect(GuestVirtualMemory.mode(cr0: 0x8000_0011, cr3: 0x5000, cr4: 0x20, efer: 0x500) == .fourLevel(root: 0x5000))
        #expect(GuestVirtualMemory.mode(cr0: 0x8000_0011, cr3: 0x5000, cr4: 0x20, efer: 0) == .unsupported)
        let flat = GuestVirtualMemory(memory: memory, mode: .physical)
        #expect(flat.read(0x1000, count: 4) == [0, 0, 0, 0])
        #expect(flat.read((8 << 20) - 1, count: 2) == nil)
        #expect(flat.read(0x1_0000_0000, count: 1) == nil)
        #expect(GuestVirtualMemory(memory: memory, mode: .unsupported).read(0x1000, count: 1) == nil)
    }
}

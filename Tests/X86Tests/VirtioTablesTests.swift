import Testing
@testable import X86

/// Where virtio-mmio devices are described: the DSDT's `LNRO0005` objects and Linux's
/// `virtio_mmio.device=` words.
@Suite("virtio-mmio placement")
struct VirtioTablesTests {
    @Test func windowsAndPinsAreAllocatedInOrderOutsideRAM() {
        let windows = VirtioWindow.allocate(3)
        #expect(windows.map(\.base) == [0xD000_0000, 0xD000_1000, 0xD000_2000])
        #expect(windows.map(\.irq) == [5, 6, 7])
        #expect(!windows.contains { [1, 4, 8, 9].contains($0.irq) })
        #expect(Layout.virtioBase >= Layout.mmioHoleStart && Layout.virtioBase < Layout.ioapic)
        #expect(VirtioWindow.allocate(20).count == Layout.virtioIRQs.count)
    }

    @Test func linuxKernelParameter() {
        #expect(VirtioWindow(base: 0xD000_1000, irq: 6).kernelParameter == "virtio_mmio.device=4K@0xd0001000:6")
    }

    @Test func dsdtDescribesEachDevice() {
        var acpi = ACPI(cpus: 1)
        let without = acpi.dsdt
        acpi.virtioDevices = VirtioWindow.allocate(2)
        let dsdt = acpi.dsdt
        #expect(!Self.contains(without, Array("LNRO0005".utf8)))
        #expect(Self.count(dsdt, Array("LNRO0005".utf8) + [0]) == 2)
        #expect(Self.contains(dsdt, Array("VR00".utf8)) && Self.contains(dsdt, Array("VR01".utf8)))
        // Memory32Fixed (ReadWrite, 0xD0001000, 0x1000) and Interrupt (..., Edge, ActiveHigh) { 6 }.
        #expect(Self.contains(dsdt, [0x86, 9, 0, 1, 0x00, 0x10, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00]))
        #expect(Self.contains(dsdt, [0x89, 6, 0, 0x03, 0x01, 6, 0, 0, 0]))
        // Still a table whose bytes sum to zero.
        #expect(dsdt.reduce(UInt8(0), &+) == 0)
    }

    static func count(_ haystack: [UInt8], _ needle: [UInt8]) -> Int {
        guard haystack.count >= needle.count else { return 0 }
        return (0...(haystack.count - needle.count)).filter { Array(haystack[$0..<($0 + needle.count)]) == needle }.count
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool { count(haystack, needle) > 0 }
}

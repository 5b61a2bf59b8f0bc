import GuestMemory
import Loader
import Testing
@testable import X86

func sum(_ bytes: some Collection<UInt8>) -> UInt8 { bytes.reduce(0, &+) }
func le32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
func le16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
func le64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }

/// The DSDT body, header aside: what ACPICA's `iasl -d` (20200925) disassembles to this ASL, and
/// what iasl compiles from it but for the scope's name, which iasl shortens from `\_SB_` to `_SB_`
/// (both name the root's `_SB`):
///
///     Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
///     Scope (\_SB) {
///         Device (COM1) {
///             Name (_HID, EisaId ("PNP0501"))
///             Name (_UID, One)
///             Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08) IRQNoFlags () {4} })
///         }
///         Device (PS2K) {
///             Name (_HID, EisaId ("PNP0303"))
///             Name (_CRS, ResourceTemplate () {
///                 IO (Decode16, 0x0060, 0x0060, 0x01, 0x01) IO (Decode16, 0x0064, 0x0064, 0x01, 0x01) IRQNoFlags () {1}
///             })
///         }
///     }
let dsdtBody: [UInt8] = hexBytes("""
    085f53355f1208040a050a0500001043065c5f53425f5b822b434f4d31085f4849440c41d00501085f55494401085f435253\
    11100a0d4701f803f803010822100079005b822d5053324b085f4849440c41d00303085f43525311180a154701600060000101\
    47016400640001012202007900
    """)

func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8.filter { $0 != 10 && $0 != 32 })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
}

@Suite("MP table")
struct MPTableTests {

    @Test(arguments: [(1, 0), (4, 2), (64, 63), (254, 0)])
    func structureAndChecksums(cpus: Int, boot: Int) {
        let table = MPTable(cpus: cpus, bootCPU: boot, cpuSignature: 0x6F8, featureFlags: 0x1789_FBFF)
        let pointer = table.floatingPointer.bytes
        #expect(pointer.count == 16 && sum(pointer) == 0)
        #expect(Array(pointer[0..<4]) == Array("_MP_".utf8))
        #expect(le32(pointer, 4) == 0x9FC10 && pointer[8] == 1 && pointer[9] == 4 && pointer[11...].allSatisfy { $0 == 0 })

        let config = table.configuration.bytes
        #expect(config.count == 44 + 20 * cpus + 160 && sum(config) == 0)
        #expect(Array(config[0..<4]) == Array("PCMP".utf8))
        #expect(Int(config[4]) | Int(config[5]) << 8 == config.count)
        #expect(Int(config[34]) | Int(config[35]) << 8 == cpus + 20)
        #expect(le32(config, 36) == 0xFEE0_0000)
        // The boot processor's entry first (BP flag), then the others by APIC ID.
        for (index, cpu) in ([boot] + (0..<cpus).filter { $0 != boot }).enumerated() {
            let e = 44 + 20 * index
            #expect(config[e] == 0 && config[e + 1] == UInt8(cpu) && config[e + 2] == 0x14)
            #expect(config[e + 3] == (index == 0 ? 3 : 1))
            #expect(le32(config, e + 4) == 0x6F8 && le32(config, e + 8) == 0x1789_FBFF)
        }
        var e = 44 + 20 * cpus
        #expect(config[e] == 1 && Array(config[e + 2..<e + 8]) == Array("ISA   ".utf8))
        e += 8
        #expect(config[e] == 2 && config[e + 1] == UInt8(cpus) && config[e + 3] == 1 && le32(config, e + 4) == 0xFEC0_0000)
        e += 8
        for irq in 0..<16 {
            #expect(Array(config[e..<e + 8]) == [3, 0, 0, 0, 0, UInt8(irq), UInt8(cpus), UInt8(irq)])
            e += 8
        }
        #expect(Array(config[e..<e + 16]) == [4, 3, 0, 0, 0, 0, 0xFF, 0, 4, 1, 0, 0, 0, 0, 0xFF, 1])
    }

    /// The largest table still ends inside the reserved area below the ACPI tables.
    @Test func largestTableFits() {
        let table = MPTable(cpus: MPTable.maxCPUs, bootCPU: 0, cpuSignature: 0, featureFlags: 0)
        #expect(MPTable.configurationAddress + UInt64(table.configurationLength) <= Layout.rsdp)
    }
}

@Suite("ACPI")
struct ACPITests {
    /// Follows the tables from the RSDP as a guest would, in guest memory.
    @Test(arguments: [1, 2, 64, 255, 300])
    func tablesChainAndSum(cpus: Int) throws {
        let memory = try GuestMemory(regions: Layout.ramRegions(size: 16 << 20))
        for table in ACPI(cpus: cpus).tables() { try memory.write(table.bytes, at: GuestAddress(table.address)) }
        func read(_ address: UInt64, _ count: Int) throws -> [UInt8] { try memory.read(at: GuestAddress(address), count: count) }

        let rsdp = try read(Layout.rsdp, 36)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(sum(rsdp[0..<20]) == 0 && sum(rsdp) == 0 && rsdp[15] == 2 && le32(rsdp, 20) == 36)
        func table(_ address: UInt64, _ signature: String) throws -> [UInt8] {
            let length = Int(le32(try read(address, 8), 4))
            let bytes = try read(address, length)
            #expect(String(decoding: bytes[0..<4], as: UTF8.self) == signature)
            #expect(sum(bytes) == 0, "\(signature) checksum")
            #expect(Array(bytes[10..<16]) == Array("SWIFTL".utf8) && Array(bytes[16..<24]) == Array("SWIFTLET".utf8))
            return bytes
        }
        let xsdt = try table(le64(rsdp, 24), "XSDT")
        let rsdt = try table(UInt64(le32(rsdp, 16)), "RSDT")
        #expect(xsdt.count == 36 + 16 && rsdt.count == 36 + 8)
        #expect(le64(xsdt, 36) == UInt64(le32(rsdt, 36)) && le64(xsdt, 44) == UInt64(le32(rsdt, 40)))

        let fadt = try table(le64(xsdt, 36), "FACP")
        #expect(fadt.count == 276 && fadt[8] == 6)
        #expect(le32(fadt, 112) & (1 << 20) != 0)                          // HW_REDUCED_ACPI
        #expect(UInt64(le32(fadt, 40)) == le64(fadt, 140))
        #expect(Array(fadt[244..<256]) == [1, 8, 0, 1] + ByteImage.le(UInt64(0x508)))
        #expect(le16(fadt, 109) == 1 << 1 | 1 << 2 | 1 << 5)                // IAPC_BOOT_ARCH: 8042, no VGA, no CMOS RTC
        let dsdt = try table(le64(fadt, 140), "DSDT")
        #expect(Array(dsdt[36...]) == dsdtBody, "DSDT body: \(dsdt[36...].map { String($0, radix: 16) }.joined(separator: " "))")

        let madt = try table(le64(xsdt, 44), "APIC")
        #expect(le32(madt, 36) == 0xFEE0_0000 && le32(madt, 40) == 1)
        var offset = 44, ids: [UInt32] = [], ioapics = 0, overrides = 0, nmis = 0
        while offset < madt.count {
            let type = madt[offset], length = Int(madt[offset + 1])
            #expect(length >= 2)
            switch type {
            case 0: ids.append(UInt32(madt[offset + 3])); #expect(le32(madt, offset + 4) == 1)
            case 9: ids.append(le32(madt, offset + 4)); #expect(le32(madt, offset + 8) == 1)
            case 1: ioapics += 1; #expect(le32(madt, offset + 4) == 0xFEC0_0000)
            case 2: overrides += 1; #expect(madt[offset + 3] == 9 && le32(madt, offset + 4) == 9)
            case 4, 0xA: nmis += 1
            default: Issue.record("unexpected MADT entry type \(type)")
            }
            offset += max(length, 2)
        }
        #expect(offset == madt.count)
        #expect(ids == (0..<UInt32(cpus)).map { $0 })
        #expect(ioapics == 1 && overrides == 1 && nmis == (cpus > 255 ? 2 : 1))
        let last = try #require(ACPI(cpus: cpus).tables().last)
        #expect(last.address + UInt64(last.bytes.count) <= 0x10_0000)
    }

    /// The boot processor's entry first, then the others in APIC ID order (xAPIC entries, and
    /// x2APIC entries from ID 255 on), whichever vCPU boots.
    @Test(arguments: [(1, 0), (4, 0), (4, 2), (4, 3), (300, 1), (300, 256), (300, 299)])
    func madtListsTheBootProcessorFirst(cpus: Int, bootCPU: Int) throws {
        let madt = ACPI(cpus: cpus, bootCPU: bootCPU).madt
        var offset = 44, ids: [Int] = []
        while offset + 2 <= madt.count {
            let type = madt[offset], length = Int(madt[offset + 1])
            if type == 0 { ids.append(Int(madt[offset + 3])); #expect(Int(madt[offset + 2]) == ids.last) }
            if type == 9 { ids.append(Int(le32(madt, offset + 4))); #expect(Int(le32(madt, offset + 12)) == ids.last) }
            offset += max(length, 2)
        }
        #expect(ids == [bootCPU] + (0..<cpus).filter { $0 != bootCPU })
    }

    @Test func bootInfoCarriesTheRSDP() throws {
        let memory = try GuestMemory(regions: Layout.ramRegions(size: 64 << 20))
        var config = BootConfiguration(protocol: .pvh, kernel: LoadedKernel(entry: 0x100000, physicalStart: 0x100000, physicalEnd: 0x101000),
                                       memorySize: 64 << 20, commandLine: [])
        config.acpi = ACPI(cpus: 2)
        _ = try BootSetup.prepare(config, in: memory)
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 32)) as UInt64 == Layout.rsdp)
        config.bootProtocol = .linux
        _ = try BootSetup.prepare(config, in: memory)
        #expect(try memory.load(at: GuestAddress(Layout.bootInfo + 0x70)) as UInt64 == Layout.rsdp)
    }
}

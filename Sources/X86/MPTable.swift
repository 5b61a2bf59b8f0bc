/// The Intel MultiProcessor Specification 1.4 tables: a floating pointer and a configuration
/// table with one processor entry per vCPU, the ISA bus, the I/O APIC, the ISA interrupt
/// assignments and the local interrupt assignments (MP spec chapter 4).
public struct MPTable: Equatable, Sendable {
    /// xAPIC IDs are 8 bits and one is needed for the I/O APIC: 254 vCPUs at most.
    public static let maxCPUs = 254
    public static let floatingPointerAddress: UInt64 = Layout.ebdaStart
    public static let configurationAddress: UInt64 = Layout.ebdaStart + 16
    public static let oemID = "SWIFTLET"
    public static let productID = "MICROVM     "
    public static let localAPICVersion: UInt8 = 0x14
    public static let ioAPICVersion: UInt8 = 0x11
    public static let isaInterrupts = 16

    public var cpus: Int
    public var bootCPU: Int
    /// CPUID.1:EAX & 0xFFF (stepping, model, family) and CPUID.1:EDX, as the vCPUs see them.
    public var cpuSignature: UInt32
    public var featureFlags: UInt32

    public init(cpus: Int, bootCPU: Int, cpuSignature: UInt32, featureFlags: UInt32) {
        self.cpus = cpus; self.bootCPU = bootCPU
        self.cpuSignature = cpuSignature; self.featureFlags = featureFlags
    }

    public var ioAPICID: UInt8 { UInt8(cpus) }

    /// The configuration table's base length.
    public var configurationLength: Int { 44 + 20 * cpus + 8 + 8 + 8 * Self.isaInterrupts + 2 * 8 }

    /// The 16-byte floating pointer structure.
    public var floatingPointer: ByteImage {
        var image = ByteImage(size: 16)
        image.put(Array("_MP_".utf8), at: 0)
        image.put(UInt32(Self.configurationAddress), at: 4)
        image.put(UInt8(1), at: 8)                      // length in paragraphs
        image.put(UInt8(4), at: 9)                      // spec revision 1.4
        image.put(ACPI.checksum(image.bytes), at: 10)
        return image                                    // feature bytes 0: configuration table present, virtual wire
    }

    /// The order firmware lists processors in (MP table and MADT alike): the boot processor
    /// first, then the others by APIC ID.
    public static func processorOrder(cpus: Int, bootCPU: Int) -> [Int] {
        [bootCPU] + (0..<cpus).filter { $0 != bootCPU }
    }

    public var configuration: ByteImage {
        precondition(cpus >= 1 && cpus <= Self.maxCPUs && bootCPU < cpus)
        var image = ByteImage(size: configurationLength)
        image.put(Array("PCMP".utf8), at: 0)
        image.put(UInt16(configurationLength), at: 4)
        image.put(UInt8(4), at: 6)
        image.put(Array(Self.oemID.utf8), at: 8)
        image.put(Array(Self.productID.utf8), at: 16)
        image.put(UInt16(cpus + 1 + 1 + Self.isaInterrupts + 2), at: 34)
        image.put(UInt32(Layout.lapic), at: 36)
        var offset = 44
        // The boot processor's entry first, then the others by APIC ID: Linux (6.9 on) takes the
        // first processor a table enumerates as the real BSP and calls any other order a firmware bug.
        for cpu in MPTable.processorOrder(cpus: cpus, bootCPU: bootCPU) {
            image.put(UInt8(0), at: offset)                                     // processor
            image.put(UInt8(cpu), at: offset + 1)
            image.put(Self.localAPICVersion, at: offset + 2)
            image.put(UInt8(cpu == bootCPU ? 0x3 : 0x1), at: offset + 3)        // EN, BP
            image.put(cpuSignature, at: offset + 4)
            image.put(featureFlags, at: offset + 8)
            offset += 20
        }
        image.put(UInt8(1), at: offset)                                         // bus 0: ISA
        image.put(Array("ISA   ".utf8), at: offset + 2)
        offset += 8
        image.put(UInt8(2), at: offset)                                         // I/O APIC
        image.put(ioAPICID, at: offset + 1)
        image.put(Self.ioAPICVersion, at: offset + 2)
        image.put(UInt8(1), at: offset + 3)
        image.put(UInt32(Layout.ioapic), at: offset + 4)
        offset += 8
        for irq in 0..<Self.isaInterrupts {                                     // ISA IRQ n -> INTIN n
            image.put(UInt8(3), at: offset)
            image.put(UInt8(irq), at: offset + 5)
            image.put(ioAPICID, at: offset + 6)
            image.put(UInt8(irq), at: offset + 7)
            offset += 8
        }
        for (kind, lint) in [(UInt8(3), UInt8(0)), (UInt8(1), UInt8(1))] {      // ExtINT -> LINT0, NMI -> LINT1
            image.put(UInt8(4), at: offset)
            image.put(kind, at: offset + 1)
            image.put(UInt8(0xFF), at: offset + 6)
            image.put(lint, at: offset + 7)
            offset += 8
        }
        image.put(ACPI.checksum(image.bytes), at: 7)
        return image
    }
}

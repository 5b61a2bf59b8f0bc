/// ACPI tables (ACPI 6.5): RSDP → RSDT/XSDT → FADT (hardware-reduced) → DSDT, and the MADT.
/// Laid out from `Layout.rsdp` upwards, inside the reserved BIOS area.
public struct ACPI: Equatable, Sendable {
    public static let oemID = "SWIFTL"
    public static let oemTableID = "SWIFTLET"
    public static let creatorID = "SWFT"
    /// FADT sleep control / status registers: I/O ports that Swiftlet's `SleepControlPort` serves.
    public static let sleepControlPort: UInt64 = 0x508
    public static let sleepStatusPort: UInt64 = 0x509
    public static let sciInterrupt: UInt16 = 9
    /// AML for `Name (_S5, Package (4) { 5, 5, 0, 0 })`: the sleep type a guest writes to power off.
    public static let s5AML: [UInt8] = [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00]
    public static let s5SleepType: UInt8 = 5

    public var cpus: Int
    /// The vCPU that boots (`--boot-cpu`): its processor entry comes first in the MADT, as ACPI
    /// asks of firmware (ACPI 6.5 §5.2.12, MADT: OSPM brings processors up in MADT order, so the boot
    /// processor is listed first; Linux 6.9 and later call any other order a firmware bug).
    public var bootCPU: Int

    public init(cpus: Int, bootCPU: Int = 0) {
        self.cpus = cpus
        self.bootCPU = (0..<max(cpus, 1)).contains(bootCPU) ? bootCPU : 0
    }

    /// Two's complement of the byte sum: the value that makes `bytes` sum to zero.
    public static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    /// A system description table with its 36-byte header; the checksum is filled in.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var image = ByteImage(size: 36)
        image.put(Array(signature.utf8), at: 0)
        image.put(UInt32(36 + body.count), at: 4)
        image.put(revision, at: 8)
        image.put(Array(oemID.utf8), at: 10)
        image.put(Array(oemTableID.utf8), at: 16)
        image.put(UInt32(1), at: 24)
        image.put(Array(creatorID.utf8), at: 28)
        image.put(UInt32(1), at: 32)
        var bytes = image.bytes + body
        bytes[9] = checksum(bytes)
        return bytes
    }

    /// The I/O APIC's ID in the MADT (and MP table): after the last xAPIC ID when there is room.
    public var ioAPICID: UInt8 { cpus < 255 ? UInt8(cpus) : 0 }

    public var madt: [UInt8] {
        var body = ByteImage(size: 8)
        body.put(UInt32(Layout.lapic), at: 0)
        body.put(UInt32(1), at: 4)                                  // PCAT_COMPAT: 8259s present
        var entries: [UInt8] = []
        for cpu in MPTable.processorOrder(cpus: cpus, bootCPU: bootCPU) where cpu < cpus {
            if cpu < 255 {
                entries += [0, 8, UInt8(cpu), UInt8(cpu)] + ByteImage.le(UInt32(1))
            } else {
                entries += [9, 16, 0, 0] + ByteImage.le(UInt32(cpu)) + ByteImage.le(UInt32(1)) + ByteImage.le(UInt32(cpu))
            }
        }
        entries += [1, 12, ioAPICID, 0] + ByteImage.le(UInt32(Layout.ioapic)) + ByteImage.le(UInt32(0))
        entries += [2, 10, 0, UInt8(Self.sciInterrupt)] + ByteImage.le(UInt32(Self.sciInterrupt)) + ByteImage.le(UInt16(0x000D))
        entries += [4, 6, 0xFF] + ByteImage.le(UInt16(0)) + [1]
        if cpus > 255 {
            entries += [0xA, 12] + ByteImage.le(UInt16(0)) + ByteImage.le(UInt32.max) + [1, 0, 0, 0]
        }
        return Self.table("APIC", revision: 5, body: body.bytes + entries)
    }

    /// The virtio-mmio devices to describe in the DSDT: window base and interrupt.
    public var virtioDevices: [VirtioWindow] = []

    /// The DSDT: `\_S5` and, under `\_SB`, the legacy devices that a hardware-reduced platform
    /// must describe for the OS to route their interrupts (with `HW_REDUCED_ACPI` there is no
    /// 8259 and ISA IRQs are not assumed): COM1 (`PNP0501`, ports 0x3F8-0x3FF, IRQ 4) and the
    /// i8042 keyboard controller (`PNP0303`, ports 0x60 and 0x64, IRQ 1; no `PNP0F13` mouse).
    public var dsdt: [UInt8] {
        let devices = AML.scope("\\_SB", [
            AML.device("COM1", [
                AML.name("_HID", AML.eisaID("PNP0501")),
                AML.name("_UID", AML.integer(1)),
                AML.name("_CRS", AML.resourceTemplate([AML.ioPorts(0x3F8, length: 8), AML.isaInterrupt(4)])),
            ]),
            AML.device("PS2K", [
                AML.name("_HID", AML.eisaID("PNP0303")),
                AML.name("_CRS", AML.resourceTemplate([
                    AML.ioPorts(0x60, length: 1), AML.ioPorts(0x64, length: 1), AML.isaInterrupt(1),
                ])),
            ]),
        ] + virtioDevices.enumerated().map { index, device in
            // virtio-mmio (`LNRO0005`, Linux's ACPI match for its virtio_mmio driver): the 4 KiB
            // register window and the device's interrupt.
            AML.device(acpiName("VR", index), [
                AML.name("_HID", AML.string("LNRO0005")),
                AML.name("_UID", AML.integer(UInt32(index))),
                AML.name("_CRS", AML.resourceTemplate([
                    AML.memory32Fixed(UInt32(device.base), length: UInt32(Layout.virtioSlotSize)),
                    AML.extendedInterrupt(UInt32(device.irq)),
                ])),
            ])
        })
        return Self.table("DSDT", revision: 2, body: Self.s5AML + devices)
    }

    /// Generic Address Structure for a byte-wide I/O port.
    static func ioPort(_ port: UInt64) -> [UInt8] { [1, 8, 0, 1] + ByteImage.le(port) }

    public func fadt(dsdtAddress: UInt64) -> [UInt8] {
        var body = ByteImage(size: 276 - 36)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) { body.put(value, at: offset - 36) }
        put(UInt32(truncatingIfNeeded: dsdtAddress), 40)
        put(Self.sciInterrupt, 46)
        // IAPC_BOOT_ARCH (ACPI 6.5 Table 5.11): an 8042 (bit 1); no VGA (bit 2) and no CMOS RTC
        // (bit 5) to probe. Without bit 5 Linux registers rtc_cmos and its probe spins on the
        // update-in-progress bit of a CMOS that reads 0xFF, then says "broken or not accessible".
        put(UInt16(1 << 1 | 1 << 2 | 1 << 5), 109)
        put(UInt32(1 << 20), 112)                                   // flags: HW_REDUCED_ACPI
        put(UInt8(0), 131)                                          // minor version
        put(dsdtAddress, 140)                                       // X_DSDT
        body.put(Self.ioPort(Self.sleepControlPort), at: 244 - 36)
        body.put(Self.ioPort(Self.sleepStatusPort), at: 256 - 36)
        body.put(Array("SWIFTLET".utf8), at: 268 - 36)
        return Self.table("FACP", revision: 6, body: body.bytes)
    }

    /// Every table with its address, RSDP first, for tables starting at `base`.
    public func tables(at base: UInt64 = Layout.rsdp) -> [(address: UInt64, bytes: [UInt8])] {
        func align(_ value: UInt64) -> UInt64 { (value + 15) & ~15 }
        let dsdtAddress = align(base + 36)
        let dsdt = self.dsdt
        let fadtAddress = align(dsdtAddress + UInt64(dsdt.count))
        let fadt = self.fadt(dsdtAddress: dsdtAddress)
        let madtAddress = align(fadtAddress + UInt64(fadt.count))
        let madt = self.madt
        let rsdtAddress = align(madtAddress + UInt64(madt.count))
        let rsdt = Self.table("RSDT", revision: 1, body: [fadtAddress, madtAddress].flatMap { ByteImage.le(UInt32($0)) })
        let xsdtAddress = align(rsdtAddress + UInt64(rsdt.count))
        let xsdt = Self.table("XSDT", revision: 1, body: [fadtAddress, madtAddress].flatMap { ByteImage.le($0) })

        var rsdp = ByteImage(size: 36)
        rsdp.put(Array("RSD PTR ".utf8), at: 0)
        rsdp.put(Array(Self.oemID.utf8), at: 9)
        rsdp.put(UInt8(2), at: 15)
        rsdp.put(UInt32(rsdtAddress), at: 16)
        rsdp.put(UInt32(36), at: 20)
        rsdp.put(xsdtAddress, at: 24)
        rsdp.put(Self.checksum(Array(rsdp.bytes[0..<20])), at: 8)
        rsdp.put(Self.checksum(rsdp.bytes), at: 32)
        return [(base, rsdp.bytes), (dsdtAddress, dsdt), (fadtAddress, fadt), (madtAddress, madt),
                (rsdtAddress, rsdt), (xsdtAddress, xsdt)]
    }
}

/// "VR00", "VR01", ...: a four-character ACPI name from a two-letter prefix and an index.
func acpiName(_ prefix: String, _ index: Int) -> String {
    let digits = String(index, radix: 16, uppercase: true)
    return prefix + String(repeating: "0", count: max(0, 2 - digits.count)) + digits
}

/// Where a virtio-mmio device is: its register window and interrupt.
public struct VirtioWindow: Equatable, Sendable {
    public var base: UInt64
    public var irq: Int
    public init(base: UInt64, irq: Int) { self.base = base; self.irq = irq }

    /// The devices' windows and pins, in order, for `count` devices (at most `Layout.virtioIRQs.count`).
    public static func allocate(_ count: Int) -> [VirtioWindow] {
        (0..<min(count, Layout.virtioIRQs.count)).map {
            VirtioWindow(base: Layout.virtioBase + UInt64($0) * Layout.virtioSlotSize, irq: Layout.virtioIRQs[$0])
        }
    }

    /// Linux's kernel parameter for a device it should find without ACPI or a device tree
    /// (Documentation/admin-guide/kernel-parameters.txt, `virtio_mmio.device=`): size@base:irq.
    public var kernelParameter: String {
        "virtio_mmio.device=4K@0x\(String(base, radix: 16)):\(irq)"
    }
}

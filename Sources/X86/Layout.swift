/// Every fixed guest-physical address Swiftlet uses. The README's "Guest memory layout" section
/// mirrors this table; change both together.
///
/// ```
/// 0x0000_0000  real-mode IVT / BIOS data area (left zero)       RAM
/// 0x0000_0500  boot GDT (6 entries)                             RAM
/// 0x0000_0600  boot IDT (empty, limit 0)                        RAM
/// 0x0000_1000  page-table pool, 12 pages (xen64 and linux)      RAM
/// 0x0000_D000  boot-info page: hvm_start_info + modlist (PVH),
///              Xen start_info (xen64), zero page (linux), or
///              multiboot info, module list at 0xD080 and loader
///              name at 0xDE80 (multiboot)                       RAM
/// 0x0000_E000  PVH or Multiboot memory map                      RAM
/// 0x0001_0000  boot stack, 64 KiB; initial rsp = 0x2_0000        RAM
/// 0x0002_0000  kernel command line, up to 64 KiB with its NUL
///              (Multiboot module strings follow it)             RAM
/// 0x0009_FC00  MP table / EBDA area                              reserved
/// 0x000E_0000  ACPI tables, RSDP at 0xE_0000                     reserved
/// 0x0010_0000  lowest address a kernel segment may use           RAM
/// 0xC000_0000  32-bit MMIO hole (IOAPIC 0xFEC0_0000, LAPIC 0xFEE0_0000) up to 4 GiB
/// 0x1_0000_0000  RAM beyond 3 GiB continues here
/// ```
public enum Layout {
    public static let gdt: UInt64 = 0x500
    public static let idt: UInt64 = 0x600
    public static let pageTablePool: UInt64 = 0x1000
    public static let pageTablePoolPages: UInt64 = 12
    public static let bootInfo: UInt64 = 0xD000
    /// PVH module list, right after the 56-byte `hvm_start_info`.
    public static let pvhModuleList: UInt64 = 0xD040
    /// Multiboot module list (16 bytes per module) and boot-loader name, in the boot-info page
    /// after the 116-byte multiboot info; the memory map goes where PVH's does.
    public static let multibootModuleList: UInt64 = 0xD080
    public static let multibootModuleCapacity = 0xE00 / 16
    public static let multibootLoaderName: UInt64 = 0xDE80
    public static let multibootLoaderNameText = "Swiftlet"
    public static let pvhMemoryMap: UInt64 = 0xE000
    public static let pvhMemoryMapCapacity = 128
    public static let bootStackBottom: UInt64 = 0x1_0000
    public static let bootStackTop: UInt64 = 0x2_0000
    public static let commandLine: UInt64 = 0x2_0000
    /// Bytes available for the command line, its terminating NUL included.
    public static let commandLineCapacity: UInt64 = 0x1_0000
    /// The end of the VMM's boot area; nothing of the kernel may load below `kernelFloor`.
    public static let bootAreaEnd: UInt64 = 0x3_0000
    public static let ebdaStart: UInt64 = 0x9_FC00
    /// The Xen PV console's ring page (`HVM_PARAM_CONSOLE_PFN`): the first page of the legacy
    /// video window, reserved in the memory map and backed by RAM (Swiftlet has no VGA).
    public static let xenConsolePage: UInt64 = 0xA_0000
    public static let biosAreaStart: UInt64 = 0xE_0000
    public static let rsdp: UInt64 = 0xE_0000
    public static let kernelFloor: UInt64 = 0x10_0000
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let highMemoryStart: UInt64 = 0x1_0000_0000
    public static let ioapic: UInt64 = 0xFEC0_0000
    /// virtio-mmio devices: one 4 KiB slot each from here, in the hole below 4 GiB (outside RAM
    /// and the e820 map's usable ranges, so 32-bit guests reach them without paging; Firecracker
    /// uses the same base).
    public static let virtioBase: UInt64 = 0xD000_0000
    public static let virtioSlotSize: UInt64 = 0x1000
    /// One I/O APIC pin per virtio device, none shared with COM1 (4), the i8042 (1), the PIT (0,
    /// 2), the RTC (8) or the SCI (9).
    public static let virtioIRQs: [Int] = [5, 6, 7, 10, 11, 12, 13, 14, 15]
    public static let lapic: UInt64 = 0xFEE0_0000
    /// KVM's three-page TSS area (needed on Intel), just below the default identity-map page.
    public static let kvmTSS: UInt64 = 0xFFFB_D000
    /// Smallest guest RAM Swiftlet accepts.
    public static let minimumMemory: UInt64 = 2 << 20

    /// The RAM regions for `size` bytes of guest memory: below the 32-bit hole, then above 4 GiB.
    public static func ramRegions(size: UInt64) -> [(start: UInt64, size: UInt64)] {
        if size <= mmioHoleStart { return [(0, size)] }
        return [(0, mmioHoleStart), (highMemoryStart, size - mmioHoleStart)]
    }
}

/// A memory-map entry as both the PVH memmap and the Linux e820 table describe it.
public struct MemoryMapEntry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case ram = 1, reserved = 2, acpi = 3, nvs = 4, unusable = 5 }
    public var address: UInt64
    public var size: UInt64
    public var kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address; self.size = size; self.kind = kind
    }

    /// The guest's memory map: usable RAM below the EBDA, the legacy reserved area up to 1 MiB,
    /// RAM from 1 MiB to the hole, and RAM above 4 GiB.
    public static func standard(memorySize: UInt64) -> [MemoryMapEntry] {
        var map = [
            MemoryMapEntry(address: 0, size: Layout.ebdaStart, kind: .ram),
            MemoryMapEntry(address: Layout.ebdaStart, size: Layout.kernelFloor - Layout.ebdaStart, kind: .reserved),
        ]
        for region in Layout.ramRegions(size: memorySize) {
            let start = max(region.start, Layout.kernelFloor)
            let end = region.start + region.size
            if end > start { map.append(MemoryMapEntry(address: start, size: end - start, kind: .ram)) }
        }
        return map
    }
}

/// The boot-information structures each protocol hands the kernel, as byte images. Offsets are
/// from the specs: Xen `start_info.h` / `xen.h`, Linux `bootparam.h`.

/// `struct hvm_start_info` (PVH, version 1, 56 bytes) plus its module list and memory map.
public struct HVMStartInfo: Equatable, Sendable {
    public static let magic: UInt32 = 0x336E_C578
    public static let size = 56
    public static let moduleEntrySize = 32
    public static let memoryMapEntrySize = 24

    public struct Module: Equatable, Sendable {
        public var address: UInt64, size: UInt64, commandLine: UInt64
        public init(address: UInt64, size: UInt64, commandLine: UInt64 = 0) {
            self.address = address; self.size = size; self.commandLine = commandLine
        }
    }

    public var flags: UInt32 = 0
    public var moduleListAddress: UInt64 = 0
    public var modules: [Module] = []
    public var commandLineAddress: UInt64 = 0
    public var rsdpAddress: UInt64 = 0
    public var memoryMapAddress: UInt64 = 0
    public var memoryMap: [MemoryMapEntry] = []

    public init() {}

    public var image: ByteImage {
        var image = ByteImage(size: Self.size)
        image.put(Self.magic, at: 0)
        image.put(UInt32(1), at: 4)                       // version
        image.put(flags, at: 8)
        image.put(UInt32(modules.count), at: 12)
        image.put(modules.isEmpty ? 0 : moduleListAddress, at: 16)
        image.put(commandLineAddress, at: 24)
        image.put(rsdpAddress, at: 32)
        image.put(memoryMapAddress, at: 40)
        image.put(UInt32(memoryMap.count), at: 48)
        return image                                      // reserved @52 stays 0
    }

    public var moduleListImage: ByteImage {
        var image = ByteImage(size: modules.count * Self.moduleEntrySize)
        for (i, module) in modules.enumerated() {
            image.put(module.address, at: i * 32)
            image.put(module.size, at: i * 32 + 8)
            image.put(module.commandLine, at: i * 32 + 16)
        }
        return image
    }

    public var memoryMapImage: ByteImage {
        var image = ByteImage(size: memoryMap.count * Self.memoryMapEntrySize)
        for (i, entry) in memoryMap.enumerated() {
            image.put(entry.address, at: i * 24)
            image.put(entry.size, at: i * 24 + 8)
            image.put(entry.kind.rawValue, at: i * 24 + 16)
        }
        return image
    }
}

/// Xen's x86-64 `struct start_info` (1168 bytes), as a PV domain builder fills it at boot.
public struct XenStartInfo: Equatable, Sendable {
    public static let size = 1168
    public static let magic = "xen-3.0-x86_64"
    /// `MAX_GUEST_CMDLINE`: the inline command line, NUL included.
    public static let commandLineCapacity = 1024

    public var pageCount: UInt64 = 0
    public var flags: UInt32 = 0
    public var pageTableBase: UInt64 = 0
    public var pageTableFrames: UInt64 = 0
    public var moduleStart: UInt64 = 0
    public var moduleLength: UInt64 = 0
    public var commandLine: [UInt8] = []

    public init() {}

    public var image: ByteImage {
        var image = ByteImage(size: Self.size)
        image.put(Array(Self.magic.utf8), at: 0)          // NUL-padded to 32 bytes
        image.put(pageCount, at: 32)
        // shared_info @40, store_mfn @56, store_evtchn @64, console @72: 0 = none.
        image.put(flags, at: 48)
        image.put(pageTableBase, at: 88)
        image.put(pageTableFrames, at: 96)
        // mfn_list @104 = 0: no P2M list (the guest sees its physical memory directly).
        image.put(moduleStart, at: 112)
        image.put(moduleLength, at: 120)
        image.put(commandLine.prefix(Self.commandLineCapacity - 1), at: 128)
        return image                                      // first_p2m_pfn, nr_p2m_frames = 0
    }
}

/// Linux `struct boot_params`, the "zero page" (4096 bytes).
public struct ZeroPage: Equatable, Sendable {
    public static let size = 4096
    public static let e820Capacity = 128
    /// Header version written for an ELF vmlinux, which carries no setup header of its own
    /// (2.12, as Linux's own PVH entry uses).
    public static let elfHeaderVersion: UInt16 = 0x020C

    /// The image's setup header from 0x1F1 (bzImage), or nil for an ELF vmlinux.
    public var setupHeader: [UInt8]?
    public var commandLineAddress: UInt64 = 0
    public var ramdiskAddress: UInt64 = 0
    public var ramdiskSize: UInt64 = 0
    public var rsdpAddress: UInt64 = 0
    public var e820: [MemoryMapEntry] = []

    public init() {}

    public var image: ByteImage {
        var image = ByteImage(size: Self.size)
        if let header = setupHeader {
            image.put(header.prefix(Self.size - 0x1F1), at: 0x1F1)
        } else {
            image.put(UInt16(0xAA55), at: 0x1FE)          // boot_flag
            image.put(UInt32(0x5372_6448), at: 0x202)     // "HdrS"
            image.put(Self.elfHeaderVersion, at: 0x206)
            image.put(UInt32(0x0100_0000), at: 0x230)     // kernel_alignment
        }
        image.put(UInt8(0), at: 0x1EF)                    // sentinel: nothing copied past the header
        image.put(UInt16(0xFFFF), at: 0x1FA)              // vid_mode: "normal"
        image.put(UInt8(0xFF), at: 0x210)                 // type_of_loader: undefined loader
        image.put(rsdpAddress, at: 0x070)
        image.put(UInt32(truncatingIfNeeded: commandLineAddress), at: 0x228)
        image.put(UInt32(truncatingIfNeeded: commandLineAddress >> 32), at: 0x0C8)
        image.put(UInt32(truncatingIfNeeded: ramdiskAddress), at: 0x218)
        image.put(UInt32(truncatingIfNeeded: ramdiskAddress >> 32), at: 0x0C0)
        image.put(UInt32(truncatingIfNeeded: ramdiskSize), at: 0x21C)
        image.put(UInt32(truncatingIfNeeded: ramdiskSize >> 32), at: 0x0C4)
        image.put(UInt32(0), at: 0x23C)                   // hardware_subarch: PC
        let entries = e820.prefix(Self.e820Capacity)
        image.put(UInt8(entries.count), at: 0x1E8)
        for (i, entry) in entries.enumerated() {
            image.put(entry.address, at: 0x2D0 + i * 20)
            image.put(entry.size, at: 0x2D0 + i * 20 + 8)
            image.put(entry.kind.rawValue, at: 0x2D0 + i * 20 + 16)
        }
        return image
    }
}

/// The Multiboot 1 information structure (Multiboot Specification 0.6.96, 3.3) with its module
/// list and memory map. Every address is 32-bit: the kernel reads them with paging off.
public struct MultibootInfo: Equatable, Sendable {
    /// Up to and including the framebuffer fields (offset 88..115), all zero unless flagged.
    public static let size = 116
    public static let moduleEntrySize = 16
    /// Each memory-map entry: `size` (20) then base, length, type.
    public static let memoryMapEntrySize = 24

    public static let flagMemory: UInt32 = 1 << 0
    public static let flagCommandLine: UInt32 = 1 << 2
    public static let flagModules: UInt32 = 1 << 3
    public static let flagMemoryMap: UInt32 = 1 << 6
    public static let flagLoaderName: UInt32 = 1 << 9

    public struct Module: Equatable, Sendable {
        /// `mod_start`, and `mod_end` = start + size (one past the last byte, as GRUB and QEMU give it).
        public var start: UInt32, end: UInt32
        /// Physical address of the module's NUL-terminated string.
        public var string: UInt32
        public init(start: UInt32, end: UInt32, string: UInt32) { self.start = start; self.end = end; self.string = string }
    }

    /// KiB of conventional memory from 0 (at most 640) and of upper memory from 1 MiB up to the first hole.
    public var memoryLower: UInt32 = 0, memoryUpper: UInt32 = 0
    public var commandLineAddress: UInt32 = 0
    public var moduleListAddress: UInt32 = 0
    public var modules: [Module] = []
    public var memoryMapAddress: UInt32 = 0
    public var memoryMap: [MemoryMapEntry] = []
    public var loaderNameAddress: UInt32 = 0

    public init() {}

    /// `mem_lower` and `mem_upper` for a memory map: the RAM that starts at 0 (capped at 640 KiB)
    /// and the RAM that starts at 1 MiB, in KiB.
    public mutating func setMemory(from map: [MemoryMapEntry]) {
        let low = map.first { $0.kind == .ram && $0.address == 0 }?.size ?? 0
        let upper = map.first { $0.kind == .ram && $0.address == Layout.kernelFloor }?.size ?? 0
        memoryLower = UInt32(min(low, 640 << 10) >> 10)
        memoryUpper = UInt32(min(upper >> 10, UInt64(UInt32.max)))
    }

    public var flags: UInt32 {
        Self.flagMemory | Self.flagModules | Self.flagMemoryMap
            | (commandLineAddress != 0 ? Self.flagCommandLine : 0) | (loaderNameAddress != 0 ? Self.flagLoaderName : 0)
    }

    public var image: ByteImage {
        var image = ByteImage(size: Self.size)
        image.put(flags, at: 0)
        image.put(memoryLower, at: 4)
        image.put(memoryUpper, at: 8)
        image.put(commandLineAddress, at: 16)
        image.put(UInt32(modules.count), at: 20)
        image.put(modules.isEmpty ? 0 : moduleListAddress, at: 24)
        image.put(UInt32(memoryMap.count * Self.memoryMapEntrySize), at: 44)
        image.put(memoryMapAddress, at: 48)
        image.put(loaderNameAddress, at: 64)
        return image
    }

    public var moduleListImage: ByteImage {
        var image = ByteImage(size: modules.count * Self.moduleEntrySize)
        for (i, module) in modules.enumerated() {
            image.put(module.start, at: i * 16)
            image.put(module.end, at: i * 16 + 4)
            image.put(module.string, at: i * 16 + 8)
        }
        return image
    }

    public var memoryMapImage: ByteImage {
        var image = ByteImage(size: memoryMap.count * Self.memoryMapEntrySize)
        for (i, entry) in memoryMap.enumerated() {
            image.put(UInt32(20), at: i * 24)
            image.put(entry.address, at: i * 24 + 4)
            image.put(entry.size, at: i * 24 + 12)
            image.put(entry.kind.rawValue, at: i * 24 + 20)
        }
        return image
    }
}

import GuestMemory
import KVM
import Loader

/// Why the boot structures could not be built. One line each, naming the value at fault.
public enum BootError: Error, Equatable, CustomStringConvertible {
    case commandLineTooLong(length: Int, limit: Int, protocol: BootProtocol)
    case initrdDoesNotFit(size: UInt64, available: UInt64, below: UInt64)
    case moduleDoesNotFit(index: Int, name: String, size: UInt64, available: UInt64, below: UInt64)
    case tooManyModules(count: Int, limit: Int)
    case unsupportedVirtualBase(UInt64)
    case entryNotMapped(UInt64)
    case pageTables(PageTableBuilder.Failure)
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .commandLineTooLong(length, limit, proto):
            "command line is \(length) bytes; the \(proto.rawValue) protocol allows at most \(limit)"
        case let .initrdDoesNotFit(size, available, below):
            "initrd of \(size) bytes does not fit: \(available) bytes free below 0x\(String(below, radix: 16)); use more --memory"
        case let .moduleDoesNotFit(index, name, size, available, below):
            "Multiboot module \(index) (\(name)) of \(size) bytes does not fit: \(available) bytes free after the kernel "
                + "and earlier modules, below 0x\(String(below, radix: 16)); use more --memory"
        case let .tooManyModules(count, limit):
            "\(count) Multiboot modules given; at most \(limit) fit in the module list"
        case let .unsupportedVirtualBase(base):
            "XEN_ELFNOTE_VIRT_BASE 0x\(String(base, radix: 16)) is not usable: it must be 0 or a 2 MiB-aligned address at or above 4 GiB"
        case let .entryNotMapped(entry):
            "entry point 0x\(String(entry, radix: 16)) is not inside the initial page-table mapping"
        case let .pageTables(failure): "page tables: \(failure)"
        case let .memory(error): error.description
        }
    }
}

/// What the boot vCPU starts with: registers, the segment/control-register changes to apply on
/// top of KVM's reset state, and MSRs.
public struct BootState: Equatable, Sendable {
    public var registers = Registers()
    public var cs = Segment(), data = Segment(), tr = Segment()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, efer: UInt64 = 0
    /// Where each boot structure went, for logs, reports and tests.
    public var placements: [String: UInt64] = [:]

    public init() {}

    /// Applies the boot segment and control state to `sregs` read from the vCPU.
    public func apply(to sregs: inout SpecialRegisters) {
        sregs.cs = cs
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = tr
        sregs.gdt = gdt
        sregs.idt = idt
        sregs.cr0 = cr0; sregs.cr3 = cr3; sregs.cr4 = cr4; sregs.efer = efer
    }
}

/// Control-register and EFER bits (Intel SDM Vol. 3, 2.5 and 2.2.1).
public enum ControlBits {
    public static let pe: UInt64 = 1 << 0, et: UInt64 = 1 << 4, pg: UInt64 = 1 << 31
    public static let pae: UInt64 = 1 << 5
    public static let lme: UInt64 = 1 << 8, lma: UInt64 = 1 << 10
}

/// Everything `BootSetup.prepare` needs to know.
public struct BootConfiguration: Sendable {
    public var bootProtocol: BootProtocol
    public var kernel: LoadedKernel
    public var memorySize: UInt64
    public var commandLine: [UInt8]
    public var initrd: [UInt8]?
    /// The kernel's own command-line limit (bzImage `cmdline_size`), if it states one.
    public var kernelCommandLineLimit: Int?
    /// Highest address the initrd may end at (bzImage `initrd_addr_max` + 1), if stated.
    public var initrdCeiling: UInt64?
    /// Intel MP table to write, if any.
    public var mpTable: MPTable?
    /// ACPI tables to write, if any; their RSDP address goes to the guest.
    public var acpi: ACPI?
    /// Multiboot only: the modules (the initrd first, if any), each with its string.
    public var modules: [BootModule] = []

    public init(protocol: BootProtocol, kernel: LoadedKernel, memorySize: UInt64, commandLine: [UInt8],
                initrd: [UInt8]? = nil, kernelCommandLineLimit: Int? = nil, initrdCeiling: UInt64? = nil) {
        self.bootProtocol = `protocol`; self.kernel = kernel; self.memorySize = memorySize
        self.commandLine = commandLine; self.initrd = initrd
        self.kernelCommandLineLimit = kernelCommandLineLimit; self.initrdCeiling = initrdCeiling
    }
}

/// A Multiboot module: its bytes and the string the kernel sees with it.
public struct BootModule: Sendable, Equatable {
    public var bytes: [UInt8]
    public var string: String
    public init(bytes: [UInt8], string: String) { self.bytes = bytes; self.string = string }
}

/// Builds every boot structure for one protocol into guest memory, with no ioctls, and returns
/// the boot vCPU's state. The kernel must already be loaded.
public enum BootSetup {
    /// Size of the xen64 kernel mapping at VIRT_BASE (it maps physical 0 up to this).
    public static let xenKernelMappingSize: UInt64 = 1 << 30
    /// Identity mapping for the 64-bit protocols: the first 4 GiB.
    public static let identityMappingSize: UInt64 = 4 << 30
    static let page: UInt64 = 4096

    /// The longest command line (NUL excluded) each protocol can carry.
    public static func commandLineLimit(_ proto: BootProtocol, kernelLimit: Int?) -> Int {
        switch proto {
        case .pvh: Int(Layout.commandLineCapacity) - 1
        case .xen64: XenStartInfo.commandLineCapacity - 1
        case .linux: kernelLimit ?? 2047
        case .multiboot: Int(Layout.commandLineCapacity) - 1
        }
    }

    /// Writes an MP table (floating pointer and configuration table) at its fixed addresses; for a
    /// machine that prepared everything else before it knew the CPUID the table reports.
    public static func write(_ mp: MPTable, in memory: GuestMemory) throws(GuestMemoryError) {
        try memory.write(mp.floatingPointer.bytes, at: GuestAddress(MPTable.floatingPointerAddress))
        try memory.write(mp.configuration.bytes, at: GuestAddress(MPTable.configurationAddress))
    }

    public static func prepare(_ config: BootConfiguration, in memory: GuestMemory) throws(BootError) -> BootState {
        let limit = commandLineLimit(config.bootProtocol, kernelLimit: config.kernelCommandLineLimit)
        guard config.commandLine.count <= limit else {
            throw .commandLineTooLong(length: config.commandLine.count, limit: limit, protocol: config.bootProtocol)
        }
        var rsdpAddress: UInt64 = 0
        do {
            if let mp = config.mpTable { try write(mp, in: memory) }
            if let acpi = config.acpi {
                for table in acpi.tables() { try memory.write(table.bytes, at: GuestAddress(table.address)) }
                rsdpAddress = Layout.rsdp
            }
            try memory.write(BootGDT.entries.flatMap { ByteImage.le($0) }, at: GuestAddress(Layout.gdt))
            try memory.fill(0, at: GuestAddress(Layout.idt), count: 8)
            try memory.write(config.commandLine + [0], at: GuestAddress(Layout.commandLine))
        } catch { throw .memory(error) }

        let initrdAddress = try placeInitrd(config, memory: memory)
        var state = BootState()
        state.gdt = DescriptorTable(base: Layout.gdt, limit: BootGDT.limit)
        state.idt = DescriptorTable(base: Layout.idt, limit: 0)
        state.data = BootGDT.data.segment(selector: BootGDT.dataSelector)
        state.tr = BootGDT.tss.segment(selector: BootGDT.tssSelector)
        state.registers.rip = config.kernel.entry
        state.placements = ["gdt": Layout.gdt, "cmdline": Layout.commandLine]
        if config.mpTable != nil { state.placements["mp_table"] = MPTable.floatingPointerAddress }
        if rsdpAddress != 0 { state.placements["rsdp"] = rsdpAddress }
        if let initrdAddress { state.placements["initrd"] = initrdAddress }
        let map = MemoryMapEntry.standard(memorySize: config.memorySize)

        switch config.bootProtocol {
        case .pvh:
            var info = HVMStartInfo()
            info.commandLineAddress = Layout.commandLine
            info.rsdpAddress = rsdpAddress
            info.memoryMapAddress = Layout.pvhMemoryMap
            info.memoryMap = map
            if let initrdAddress, let initrd = config.initrd {
                info.moduleListAddress = Layout.pvhModuleList
                info.modules = [.init(address: initrdAddress, size: UInt64(initrd.count))]
            }
            do {
                try memory.write(info.image.bytes, at: GuestAddress(Layout.bootInfo))
                try memory.write(info.moduleListImage.bytes, at: GuestAddress(Layout.pvhModuleList))
                try memory.write(info.memoryMapImage.bytes, at: GuestAddress(Layout.pvhMemoryMap))
            } catch { throw .memory(error) }
            state.cs = BootGDT.code32.segment(selector: BootGDT.code32Selector)
            state.cr0 = ControlBits.pe | ControlBits.et
            state.registers.rbx = Layout.bootInfo
            state.placements["hvm_start_info"] = Layout.bootInfo

        case .xen64:
            let base = config.kernel.virtualBase
            guard base == 0 || (base >= identityMappingSize && base % PageTableBuilder.largePageSize == 0) else {
                throw .unsupportedVirtualBase(base)
            }
            let tables = try buildTables(memory: memory, virtualBase: base)
            let translate = { (physical: UInt64) in base == 0 ? physical : base &+ physical }
            guard tables.translate(config.kernel.entry) != nil else { throw .entryNotMapped(config.kernel.entry) }
            var info = XenStartInfo()
            info.pageCount = config.memorySize / page
            info.pageTableBase = translate(tables.root)
            info.pageTableFrames = tables.usedPages
            if let initrdAddress, let initrd = config.initrd {
                info.moduleStart = translate(initrdAddress)
                info.moduleLength = UInt64(initrd.count)
            }
            info.commandLine = config.commandLine
            do { try memory.write(info.image.bytes, at: GuestAddress(Layout.bootInfo)) } catch { throw .memory(error) }
            state.cs = BootGDT.code64.segment(selector: BootGDT.code64Selector)
            enterLongMode(&state, root: tables.root)
            state.registers.rsi = translate(Layout.bootInfo)
            state.registers.rsp = translate(Layout.bootStackTop)
            state.placements["start_info"] = Layout.bootInfo
            state.placements["page_tables"] = tables.root

        case .linux:
            let tables = try buildTables(memory: memory, virtualBase: 0)
            var zero = ZeroPage()
            zero.setupHeader = config.kernel.setupHeader
            zero.commandLineAddress = Layout.commandLine
            zero.rsdpAddress = rsdpAddress
            zero.e820 = map
            if let initrdAddress, let initrd = config.initrd {
                zero.ramdiskAddress = initrdAddress
                zero.ramdiskSize = UInt64(initrd.count)
            }
            do { try memory.write(zero.image.bytes, at: GuestAddress(Layout.bootInfo)) } catch { throw .memory(error) }
            state.cs = BootGDT.code64.segment(selector: BootGDT.code64Selector)
            enterLongMode(&state, root: tables.root)
            state.registers.rsi = Layout.bootInfo
            state.registers.rsp = Layout.bootStackTop
            state.placements["zero_page"] = Layout.bootInfo
            state.placements["page_tables"] = tables.root

        case .multiboot:
            var info = MultibootInfo()
            info.setMemory(from: map)
            info.commandLineAddress = UInt32(Layout.commandLine)
            info.memoryMapAddress = UInt32(Layout.pvhMemoryMap)
            info.memoryMap = map
            info.moduleListAddress = UInt32(Layout.multibootModuleList)
            info.modules = try placeModules(config, memory: memory)
            info.loaderNameAddress = UInt32(Layout.multibootLoaderName)
            do {
                try memory.write(info.image.bytes, at: GuestAddress(Layout.bootInfo))
                try memory.write(info.moduleListImage.bytes, at: GuestAddress(Layout.multibootModuleList))
                try memory.write(info.memoryMapImage.bytes, at: GuestAddress(Layout.pvhMemoryMap))
                try memory.write(Array(Layout.multibootLoaderNameText.utf8) + [0], at: GuestAddress(Layout.multibootLoaderName))
            } catch { throw .memory(error) }
            state.cs = BootGDT.code32.segment(selector: BootGDT.code32Selector)
            state.cr0 = ControlBits.pe | ControlBits.et
            state.registers.rax = UInt64(MultibootHeader.bootloaderMagic)
            state.registers.rbx = Layout.bootInfo
            state.placements["multiboot_info"] = Layout.bootInfo
            if let first = info.modules.first { state.placements["modules"] = UInt64(first.start) }
        }
        return state
    }

    /// The state a Xen-style `VCPUOP_up` starts a vCPU in: long mode at CPL 0 with the boot
    /// vCPU's control registers (CR0 = PE|ET|PG, CR4 = PAE, EFER = LME|LMA), the boot GDT's
    /// selectors, CR3 = `pageTableBase`, and the given RIP, RSP, RDI, RSI; everything else zero.
    public static func longModeVCPU(rip: UInt64, rsp: UInt64, rdi: UInt64, rsi: UInt64, pageTableBase: UInt64) -> BootState {
        var state = BootState()
        state.gdt = DescriptorTable(base: Layout.gdt, limit: BootGDT.limit)
        state.idt = DescriptorTable(base: Layout.idt, limit: 0)
        state.cs = BootGDT.code64.segment(selector: BootGDT.code64Selector)
        state.data = BootGDT.data.segment(selector: BootGDT.dataSelector)
        state.tr = BootGDT.tss.segment(selector: BootGDT.tssSelector)
        enterLongMode(&state, root: pageTableBase)
        state.registers.rip = rip
        state.registers.rsp = rsp
        state.registers.rdi = rdi
        state.registers.rsi = rsi
        return state
    }

    private static func enterLongMode(_ state: inout BootState, root: UInt64) {
        state.cr0 = ControlBits.pe | ControlBits.et | ControlBits.pg
        state.cr3 = root
        state.cr4 = ControlBits.pae
        state.efer = ControlBits.lme | ControlBits.lma
    }

    /// Identity-maps the first 4 GiB and, for xen64, maps `virtualBase` to physical 0.
    static func buildTables(memory: GuestMemory, virtualBase: UInt64) throws(BootError) -> PageTableBuilder {
        do {
            var tables = try PageTableBuilder(memory: memory)
            try tables.map(virtual: 0, physical: 0, size: identityMappingSize)
            if virtualBase != 0 {
                let room = 0 &- virtualBase   // bytes up to the top of the address space
                try tables.map(virtual: virtualBase, physical: 0,
                               size: room == 0 ? xenKernelMappingSize : min(xenKernelMappingSize, room))
            }
            return tables
        } catch {
            throw .pageTables(error)
        }
    }

    /// Where the initrd goes: right after the kernel for xen64 (inside the VIRT_BASE mapping,
    /// as Xen's start-of-day layout has it), otherwise as high in low RAM as the kernel allows.
    static func placeInitrd(_ config: BootConfiguration, memory: GuestMemory) throws(BootError) -> UInt64? {
        guard let initrd = config.initrd else { return nil }
        let size = UInt64(initrd.count)
        let lowEnd = min(config.memorySize, Layout.mmioHoleStart)
        let floor = roundUp(config.kernel.physicalEnd, page)
        let address: UInt64
        if config.bootProtocol == .xen64 {
            let ceiling = config.kernel.virtualBase == 0 ? lowEnd : min(lowEnd, xenKernelMappingSize)
            guard floor <= ceiling, size <= ceiling - floor else {
                throw .initrdDoesNotFit(size: size, available: ceiling > floor ? ceiling - floor : 0, below: ceiling)
            }
            address = floor
        } else {
            let ceiling = min(lowEnd, config.initrdCeiling ?? lowEnd)
            guard size <= ceiling, (ceiling - size) & ~(page - 1) >= floor else {
                throw .initrdDoesNotFit(size: size, available: ceiling > floor ? ceiling - floor : 0, below: ceiling)
            }
            address = (ceiling - size) & ~(page - 1)
        }
        do { try memory.write(initrd, range: 0..<initrd.count, at: GuestAddress(address)) } catch { throw .memory(error) }
        return address
    }

    /// Multiboot modules: page-aligned, one after another from the first page after the kernel,
    /// below the 32-bit hole; their strings follow the command line (NUL-terminated each).
    static func placeModules(_ config: BootConfiguration, memory: GuestMemory) throws(BootError) -> [MultibootInfo.Module] {
        guard config.modules.count <= Layout.multibootModuleCapacity else {
            throw .tooManyModules(count: config.modules.count, limit: Layout.multibootModuleCapacity)
        }
        let ceiling = min(config.memorySize, Layout.mmioHoleStart)
        var next = roundUp(config.kernel.physicalEnd, page)
        var stringAddress = Layout.commandLine + UInt64(config.commandLine.count) + 1
        let stringsEnd = Layout.commandLine + Layout.commandLineCapacity
        var placed: [MultibootInfo.Module] = []
        for (index, module) in config.modules.enumerated() {
            let size = UInt64(module.bytes.count)
            guard next <= ceiling, size <= ceiling - next else {
                throw .moduleDoesNotFit(index: index, name: module.string, size: size,
                                        available: ceiling > next ? ceiling - next : 0, below: ceiling)
            }
            let string = Array(module.string.utf8) + [0]
            guard UInt64(string.count) <= stringsEnd - min(stringsEnd, stringAddress) else {
                throw .commandLineTooLong(length: Int(stringAddress - Layout.commandLine) + string.count,
                                          limit: Int(Layout.commandLineCapacity) - 1, protocol: .multiboot)
            }
            do {
                try memory.write(module.bytes, range: 0..<module.bytes.count, at: GuestAddress(next))
                try memory.write(string, at: GuestAddress(stringAddress))
            } catch { throw .memory(error) }
            placed.append(.init(start: UInt32(next), end: UInt32(next + size), string: UInt32(stringAddress)))
            stringAddress += UInt64(string.count)
            next = roundUp(next + size, page)
        }
        return placed
    }

    static func roundUp(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
        (value + alignment - 1) & ~(alignment - 1)
    }
}

extension ByteImage {
    /// The little-endian bytes of `value`.
    public static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
}

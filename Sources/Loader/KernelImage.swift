import GuestMemory

/// How the guest is entered (boot-and-abi.md 2, 3, 4).
public enum BootProtocol: String, Sendable, CaseIterable {
    /// PVH direct boot: 32-bit protected mode at XEN_ELFNOTE_PHYS32_ENTRY, EBX = hvm_start_info.
    case pvh
    /// Multiboot 1: 32-bit protected mode, paging off, EAX = 0x2BADB002, EBX = multiboot info.
    case multiboot
    /// Xen PV-style 64-bit entry at XEN_ELFNOTE_ENTRY (virtual), RSI = start_info.
    case xen64
    /// Linux 64-bit boot protocol: ELF e_entry or bzImage load address + 0x200, RSI = zero page.
    case linux
}

/// What the boot code needs once the kernel is in guest memory.
public struct LoadedKernel: Sendable, Equatable {
    /// pvh: PHYS32_ENTRY (physical, low 32 bits); xen64: ENTRY note (virtual), or e_entry without
    /// one; linux: ELF e_entry (physical) or, for a bzImage, load address + 0x200.
    public var entry: UInt64
    /// Lowest physical byte loaded.
    public var physicalStart: UInt64
    /// One past the highest physical byte the kernel occupies (memsz, so bss included).
    public var physicalEnd: UInt64
    /// xen64: XEN_ELFNOTE_VIRT_BASE, or 0 without one; 0 for the other protocols.
    public var virtualBase: UInt64
    /// bzImage only: the setup header to copy into the zero page at 0x1F1 (`BzImage.setupHeader`).
    public var setupHeader: [UInt8]?

    public init(entry: UInt64, physicalStart: UInt64, physicalEnd: UInt64, virtualBase: UInt64 = 0,
                setupHeader: [UInt8]? = nil) {
        self.entry = entry; self.physicalStart = physicalStart; self.physicalEnd = physicalEnd
        self.virtualBase = virtualBase; self.setupHeader = setupHeader
    }
}

/// A parsed kernel image of either kind.
public enum KernelImage: Sendable {
    case elf(ELFImage)
    case bzImage(BzImage)
    /// A flat binary with a Multiboot header whose address fields place it.
    case multiboot(MultibootImage)

    /// ELF by its magic at 0, bzImage by "HdrS" at 0x202, then a Multiboot header with address
    /// fields; anything else is `.notAKernel`.
    public static func parse(_ file: KernelFile) throws(LoaderError) -> KernelImage {
        guard !file.bytes.isEmpty else { throw .empty(path: file.path) }
        if file.bytes.starts(with: ELFImage.magic) {
            return .elf(try ELFImage.parse(file.bytes, path: file.path))
        }
        if BzImage.hasHeader(file.bytes) {
            return .bzImage(try BzImage.parse(file.bytes, path: file.path))
        }
        if let header = try MultibootHeader.find(in: file.bytes, path: file.path) {
            guard header.addresses != nil else {
                throw .noUsableEntry(path: file.path, why: "Multiboot header at offset \(hex(header.fileOffset)) without "
                    + "address fields (flag 16) in a file that is not ELF: nothing says where to load it")
            }
            _ = try header.addressLayout(fileSize: UInt64(file.bytes.count), path: file.path)
            return .multiboot(MultibootImage(path: file.path, bytes: file.bytes, header: header))
        }
        throw .notAKernel(path: file.path)
    }

    /// The path the image was read from.
    public var path: String {
        switch self {
        case let .elf(image): image.path
        case let .bzImage(image): image.path
        case let .multiboot(image): image.path
        }
    }

    /// The Multiboot header, if the image has a valid one in its first 8 KiB.
    public func multibootHeader() throws(LoaderError) -> MultibootHeader? {
        switch self {
        case let .elf(image): try MultibootHeader.find(in: image.bytes, path: image.path)
        case .bzImage: nil
        case let .multiboot(image): image.header
        }
    }

    /// Which protocol `run` uses: `requested` nil means auto (PVH > xen64 > linux). Throws when
    /// the requested protocol is impossible for this image, naming why.
    public func selectProtocol(_ requested: BootProtocol?) throws(LoaderError) -> (BootProtocol, reason: String) {
        switch self {
        case let .elf(image): return try image.selectProtocol(requested)
        case let .bzImage(image): return try image.selectProtocol(requested)
        case let .multiboot(image):
            guard requested == nil || requested == .multiboot else {
                throw .protocolUnavailable(path: image.path, requested: requested ?? .multiboot,
                                           why: "a flat Multiboot binary can only boot by Multiboot")
            }
            return (.multiboot, "Multiboot header at offset \(hex(image.header.fileOffset)) with address fields: Multiboot 1")
        }
    }

    /// Loads the kernel into guest memory for `protocol` (which must be one `selectProtocol`
    /// accepts) and returns what the boot code needs. Nothing is written unless every segment
    /// passes its checks: at or above `floor`, inside guest RAM, not overlapping another.
    public func load(into memory: GuestMemory, protocol: BootProtocol, floor: UInt64, path: String) throws(LoaderError) -> LoadedKernel {
        switch self {
        case let .elf(image): return try image.load(into: memory, protocol: `protocol`, floor: floor, path: path)
        case let .bzImage(image): return try image.load(into: memory, protocol: `protocol`, floor: floor, path: path)
        case let .multiboot(image):
            guard `protocol` == .multiboot else {
                throw .protocolUnavailable(path: path, requested: `protocol`, why: "a flat Multiboot binary can only boot by Multiboot")
            }
            return try image.header.loadByAddresses(image.bytes, into: memory, floor: floor, path: path)
        }
    }
}

// MARK: - Protocol selection

extension ELFImage {
    func selectProtocol(_ requested: BootProtocol?) throws(LoaderError) -> (BootProtocol, reason: String) {
        let elf64 = elfClass == .elf64
        let className = elf64 ? "ELF64" : "ELF32"
        switch requested {
        case nil:
            if let entry = notes.phys32Entry {
                return (.pvh, "has XEN_ELFNOTE_PHYS32_ENTRY \(hex(entry)): PVH direct boot")
            }
            if let multiboot = try MultibootHeader.find(in: bytes, path: path) {
                return (.multiboot, "Multiboot header at offset \(hex(multiboot.fileOffset)), no PHYS32_ENTRY: Multiboot 1")
            }
            if elf64, let entry = notes.entry {
                return (.xen64, "ELF64 without PHYS32_ENTRY but with XEN_ELFNOTE_ENTRY \(hex(entry)): Xen-style 64-bit entry")
            }
            if elf64 {
                return (.linux, "ELF64 without Xen entry notes: Linux 64-bit entry at e_entry \(hex(entry))")
            }
            throw .noUsableEntry(path: path, why: "ELF32 without XEN_ELFNOTE_PHYS32_ENTRY or a Multiboot header; PVH needs "
                + "that note, Multiboot its header in the first 8 KiB, and xen64 and linux need a 64-bit ELF")
        case .multiboot:
            guard let multiboot = try MultibootHeader.find(in: bytes, path: path) else {
                throw .protocolUnavailable(path: path, requested: .multiboot,
                                           why: "no Multiboot header (magic 0x1badb002 with a valid checksum) in the first 8 KiB")
            }
            return (.multiboot, "Multiboot header at offset \(hex(multiboot.fileOffset))"
                + (multiboot.addresses != nil ? " with address fields" : ", loaded by program headers"))
        case .pvh:
            if let entry = notes.phys32Entry {
                return (.pvh, "has XEN_ELFNOTE_PHYS32_ENTRY \(hex(entry)): PVH direct boot")
            }
            if let note = notes.all.first(where: { $0.kind == .phys32Entry }), case let .bytes(desc) = note.value {
                throw .protocolUnavailable(path: path, requested: .pvh, why:
                    "XEN_ELFNOTE_PHYS32_ENTRY at offset \(hex(note.fileOffset)) has a \(desc.count)-byte desc (needs at least 4)")
            }
            throw .protocolUnavailable(path: path, requested: .pvh, why: "no XEN_ELFNOTE_PHYS32_ENTRY note")
        case .xen64:
            guard elf64 else {
                throw .protocolUnavailable(path: path, requested: .xen64, why: "xen64 needs a 64-bit ELF, this is \(className)")
            }
            if let entry = notes.entry {
                return (.xen64, "XEN_ELFNOTE_ENTRY \(hex(entry)): Xen-style 64-bit entry")
            }
            return (.xen64, "no XEN_ELFNOTE_ENTRY note, so e_entry \(hex(entry)) was used: Xen-style 64-bit entry")
        case .linux:
            guard elf64 else {
                throw .protocolUnavailable(path: path, requested: .linux, why: "linux needs a 64-bit ELF or bzImage, this is \(className)")
            }
            return (.linux, "ELF64: Linux 64-bit entry at e_entry \(hex(entry))")
        }
    }
}

extension BzImage {
    private var versionText: String { "\(version >> 8).\(String(version & 0xFF, radix: 10))" }

    func selectProtocol(_ requested: BootProtocol?) throws(LoaderError) -> (BootProtocol, reason: String) {
        switch requested {
        case nil, .linux:
            guard supports64BitEntry else {
                let why = "bzImage boot protocol \(versionText) (version \(hex(version))) with xloadflags \(hex(xloadflags)) "
                    + "has no 64-bit entry (needs version >= 2.12 and XLF_KERNEL_64)"
                if let requested { throw .protocolUnavailable(path: path, requested: requested, why: why) }
                throw .noUsableEntry(path: path, why: why)
            }
            return (.linux, "bzImage boot protocol \(versionText) with XLF_KERNEL_64: Linux 64-bit entry at load address + 0x200")
        case let .some(other):
            throw .protocolUnavailable(path: path, requested: other,
                                       why: other == .multiboot ? "a bzImage has no Multiboot header"
                                           : "a bzImage has no Xen ELF notes; \(other.rawValue) needs an ELF vmlinux")
        }
    }
}

// MARK: - Loading

/// One guest range the loader intends to fill.
private struct Placement {
    let index: Int?
    let start: UInt64
    let size: UInt64
    var end: UInt64 { start + size }  // checked not to overflow by `check`
}

/// Checks a range the loader will fill against the floor and guest RAM.
func checkPlacement(start: UInt64, size: UInt64, index: Int?, memory: GuestMemory, floor: UInt64, path: String) throws(LoaderError) {
    try check(Placement(index: index, start: start, size: size), memory: memory, floor: floor, path: path)
}

/// Checks a placement against the floor and guest RAM.
private func check(_ placement: Placement, memory: GuestMemory, floor: UInt64, path: String) throws(LoaderError) {
    guard placement.start >= floor else {
        throw .belowFloor(path: path, index: placement.index, start: placement.start, size: placement.size, floor: floor)
    }
    let (_, overflow) = placement.start.addingReportingOverflow(placement.size)
    guard !overflow, memory.contains(GuestAddress(placement.start), length: placement.size) else {
        throw .outsideMemory(path: path, index: placement.index, start: placement.start, size: placement.size,
                             memorySize: memory.size)
    }
}

extension ELFImage {
    func load(into memory: GuestMemory, protocol: BootProtocol, floor: UInt64, path: String) throws(LoaderError) -> LoadedKernel {
        _ = try selectProtocol(`protocol`)
        if `protocol` == .multiboot, let header = try MultibootHeader.find(in: bytes, path: path), header.addresses != nil {
            return try header.loadByAddresses(bytes, into: memory, floor: floor, path: path)
        }
        let segments = indexedLoadSegments
        guard !segments.isEmpty else { throw .noLoadableSegments(path: path) }
        let paddrOffset = `protocol` == .xen64 ? notes.paddrOffset ?? 0 : 0

        // Check everything before writing anything.
        var placements: [Placement] = []
        for (index, header) in segments {
            guard header.physicalAddress >= paddrOffset else {
                throw .paddrUnderflow(path: path, index: index, physicalAddress: header.physicalAddress, paddrOffset: paddrOffset)
            }
            let placement = Placement(index: index, start: header.physicalAddress - paddrOffset, size: header.memorySize)
            try check(placement, memory: memory, floor: floor, path: path)
            for earlier in placements where earlier.start < placement.end && placement.start < earlier.end {
                throw .segmentsOverlap(path: path, first: earlier.index ?? 0, firstStart: earlier.start, firstSize: earlier.size,
                                       second: index, secondStart: placement.start, secondSize: placement.size)
            }
            placements.append(placement)
        }

        for ((_, header), placement) in zip(segments, placements) {
            // parse() checked [p_offset, p_offset + p_filesz) lies inside the file.
            let fileRange = Int(header.offset)..<Int(header.offset + header.fileSize)
            do {
                try memory.write(bytes, range: fileRange, at: GuestAddress(placement.start))
                if header.memorySize > header.fileSize {
                    try memory.fill(0, at: GuestAddress(placement.start + header.fileSize),
                                    count: header.memorySize - header.fileSize)
                }
            } catch {
                throw .memory(path: path, error)
            }
        }

        let entry: UInt64
        let virtualBase: UInt64
        switch `protocol` {
        case .pvh:
            entry = notes.phys32Entry ?? 0  // selectProtocol checked it is there
            virtualBase = 0
        case .xen64:
            entry = notes.entry ?? self.entry
            virtualBase = notes.virtBase ?? 0
        case .linux:
            entry = self.entry
            virtualBase = 0
        case .multiboot:
            // e_entry, translated to physical when it lies in a segment's virtual range.
            let holder = segments.first { $0.header.virtualAddress <= self.entry && self.entry - $0.header.virtualAddress < $0.header.memorySize }
            entry = holder.map { $0.header.physicalAddress + (self.entry - $0.header.virtualAddress) } ?? self.entry
            guard entry < 1 << 32 else {
                throw .noUsableEntry(path: path, why: "Multiboot entry \(hex(entry)) is above 4 GiB; the kernel starts in 32-bit mode")
            }
            virtualBase = 0
        }
        return LoadedKernel(entry: entry, physicalStart: placements.map(\.start).min() ?? 0,
                            physicalEnd: placements.map(\.end).max() ?? 0, virtualBase: virtualBase)
    }
}

extension BzImage {
    func load(into memory: GuestMemory, protocol: BootProtocol, floor: UInt64, path: String) throws(LoaderError) -> LoadedKernel {
        _ = try selectProtocol(`protocol`)
        guard payloadSize > 0x200 else {
            throw .truncated(path: path, format: "bzImage",
                             what: "protected-mode kernel (\(hex(payloadSize)) bytes, no room for the 64-bit entry at +0x200)",
                             offset: UInt64(protectedModeOffset), fileSize: UInt64(bytes.count))
        }
        let placement = Placement(index: nil, start: loadAddress, size: memorySize)
        try check(placement, memory: memory, floor: floor, path: path)
        do {
            // Only the payload is copied: the decompressor clears its own bss and does not
            // expect the rest of init_size to be zero.
            try memory.write(bytes, range: protectedModeOffset..<bytes.count, at: GuestAddress(loadAddress))
        } catch {
            throw .memory(path: path, error)
        }
        return LoadedKernel(entry: loadAddress + 0x200, physicalStart: loadAddress, physicalEnd: placement.end,
                            virtualBase: 0, setupHeader: setupHeader)
    }
}

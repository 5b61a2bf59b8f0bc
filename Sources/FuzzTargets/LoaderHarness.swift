import GuestMemory
import Loader

/// Drives the loader's public API over one input, and checks what a successful load promises:
/// every byte written lies inside guest RAM and at or above the floor, and the segments hold the
/// file's bytes followed by zeros.
public final class LoaderHarness: Sendable {
    /// Guest RAM with a hole, so that a segment can straddle it: [0, 8 MiB) and [16 MiB, 17 MiB).
    /// 8 MiB holds every test kernel (xenvcpu's bss ends near 5.3 MiB).
    public static let ramLayout: [(start: UInt64, size: UInt64)] = [(0, 8 << 20), (16 << 20, 1 << 20)]
    /// The lowest address a kernel may be loaded at (the test kernels load at 1 MiB).
    public static let floor: UInt64 = 0x10_0000

    /// One harness per fuzzing process: guest memory is mapped once, not per input.
    public static let shared: LoaderHarness = {
        do { return try LoaderHarness() } catch { fatalError("cannot map fuzz guest memory: \(error)") }
    }()

    public let memory: GuestMemory

    public init() throws(GuestMemoryError) {
        memory = try GuestMemory(regions: Self.ramLayout)
    }

    /// A whole kernel file, as `swiftlet run --kernel` reads it (ELF or bzImage by magic).
    public func elf(_ input: [UInt8]) {
        let image: KernelImage
        do {
            image = try KernelImage.parse(KernelFile(path: "fuzz-input", bytes: input))
        } catch {
            describe(error)
            return
        }
        exercise(image)
    }

    /// A bzImage, straight to the setup-header parser.
    public func bzImage(_ input: [UInt8]) {
        let image: BzImage
        do {
            image = try BzImage.parse(input, path: "fuzz-input")
        } catch {
            describe(error)
            return
        }
        invariant(image.protectedModeOffset == (image.setupSectors + 1) * 512 && image.protectedModeOffset < input.count,
                  "protected-mode offset \(image.protectedModeOffset) for \(image.setupSectors) setup sectors, \(input.count) bytes")
        invariant(image.setupHeader.count <= 0x290 - BzImage.headerOffset,
                  "setup header of \(image.setupHeader.count) bytes reaches past 0x290")
        invariant(image.setupHeader.elementsEqual(input[BzImage.headerOffset..<(BzImage.headerOffset + image.setupHeader.count)]),
                  "setup header is not the file's bytes at 0x1f1")
        exercise(.bzImage(image))
    }

    /// Raw note bytes (a `.notes` section as objcopy writes it), walked twice: as the PT_NOTE of
    /// an ELF64 and as the SHT_NOTE section of an ELF32 without PT_NOTE. Both walks must agree.
    public func xenNotes(_ input: [UInt8]) {
        let segment = Self.elf64(notes: input)
        let section = Self.elf32(notes: input)
        let fromSegment: KernelImage, fromSection: KernelImage
        do {
            fromSegment = try KernelImage.parse(KernelFile(path: "fuzz-notes-segment", bytes: segment.bytes))
        } catch {
            describe(error)
            do {
                _ = try KernelImage.parse(KernelFile(path: "fuzz-notes-section", bytes: section.bytes))
                invariant(false, "the PT_NOTE walk failed (\(error)) but the SHT_NOTE walk did not")
            } catch {
                describe(error)
            }
            return
        }
        do {
            fromSection = try KernelImage.parse(KernelFile(path: "fuzz-notes-section", bytes: section.bytes))
        } catch {
            invariant(false, "the SHT_NOTE walk failed (\(error)) but the PT_NOTE walk did not")
            return
        }
        guard case let .elf(a) = fromSegment, case let .elf(b) = fromSection else {
            invariant(false, "a wrapped note area did not parse as ELF")
            return
        }
        invariant(a.notes.all.map(\.type) == b.notes.all.map(\.type) && a.notes.all.map(\.value) == b.notes.all.map(\.value),
                  "the PT_NOTE and SHT_NOTE walks decoded different notes")
        let start = segment.notesOffset
        for note in a.notes.all {
            invariant(note.fileOffset >= start && note.fileOffset - start + 12 <= UInt64(input.count),
                      "note at \(note.fileOffset) outside the note area")
        }
        exercise(fromSegment)
        exercise(fromSection)
    }

    // MARK: - Shared checks

    /// Reads every accessor, asks for every protocol, and loads with each one that is accepted.
    func exercise(_ image: KernelImage) {
        if case let .elf(elf) = image { touch(elf.notes) }
        do {
            if let header = try image.multibootHeader() {
                invariant(header.fileOffset % 4 == 0 && header.fileOffset + 12 <= UInt64(MultibootHeader.searchLimit),
                          "Multiboot header at \(header.fileOffset)")
                _ = header.flagNames
            }
        } catch {
            describe(error)
        }
        var loaded: Set<BootProtocol> = []
        for requested in [nil] + BootProtocol.allCases {
            let chosen: BootProtocol
            do {
                let (selected, reason) = try image.selectProtocol(requested)
                invariant(requested == nil || selected == requested, "asked for \(String(describing: requested)), got \(selected)")
                invariant(!reason.isEmpty, "empty selection reason")
                chosen = selected
            } catch {
                describe(error)
                continue
            }
            if loaded.insert(chosen).inserted { load(image, chosen) }
        }
    }

    private func load(_ image: KernelImage, _ proto: BootProtocol) {
        let kernel: LoadedKernel
        do {
            kernel = try image.load(into: memory, protocol: proto, floor: Self.floor, path: "fuzz-input")
        } catch {
            describe(error)
            return
        }
        // Multiboot address fields may describe an empty image (load_end_addr = load_addr,
        // bss_end_addr 0), which the loader accepts today: only ELF and bzImage must be non-empty.
        invariant(kernel.physicalStart >= Self.floor && kernel.physicalStart <= kernel.physicalEnd,
                  "loaded range [\(kernel.physicalStart), \(kernel.physicalEnd)) below the floor or reversed")
        switch image {
        case .multiboot:
            checkMultibootRange(kernel)
        case let .elf(elf) where proto == .multiboot && (try? MultibootHeader.find(in: elf.bytes, path: elf.path))??.addresses != nil:
            checkMultibootRange(kernel)
        case let .elf(elf):
            invariant(kernel.physicalStart < kernel.physicalEnd, "ELF loaded as an empty range")
            let paddrOffset = proto == .xen64 ? elf.notes.paddrOffset ?? 0 : 0
            for segment in elf.loadSegments {
                let start = segment.physicalAddress - paddrOffset  // load checked it cannot underflow
                checkPlaced(file: elf.bytes, offset: segment.offset, fileSize: segment.fileSize,
                            at: start, memorySize: segment.memorySize)
                invariant(start >= kernel.physicalStart && start + segment.memorySize <= kernel.physicalEnd,
                          "segment at \(start) outside the reported range")
            }
        case let .bzImage(bz):
            invariant(kernel.entry == bz.loadAddress + 0x200, "bzImage entry \(kernel.entry) is not load address + 0x200")
            invariant(kernel.setupHeader == bz.setupHeader, "setup header not passed on")
            checkPlaced(file: bz.bytes, offset: UInt64(bz.protectedModeOffset), fileSize: bz.payloadSize,
                        at: bz.loadAddress, memorySize: bz.payloadSize)
        }
    }

    /// Placed by the Multiboot address fields: one range, file bytes then bss.
    private func checkMultibootRange(_ kernel: LoadedKernel) {
        invariant(memory.contains(GuestAddress(kernel.physicalStart), length: kernel.physicalEnd - kernel.physicalStart),
                  "Multiboot image [\(kernel.physicalStart), \(kernel.physicalEnd)) loaded outside RAM")
    }

    /// `[at, at + memorySize)` is inside RAM and above the floor, starts with the file's bytes and
    /// (past `fileSize`) ends with a zero. Only a few bytes are compared: the loads are big.
    private func checkPlaced(file: [UInt8], offset: UInt64, fileSize: UInt64, at start: UInt64, memorySize: UInt64) {
        invariant(start >= Self.floor && memory.contains(GuestAddress(start), length: memorySize),
                  "segment [\(start), +\(memorySize)) loaded outside RAM or below the floor")
        let head = Int(min(fileSize, 64))
        if head > 0 {
            let written = try? memory.read(at: GuestAddress(start), count: head)
            invariant(written.map { $0.elementsEqual(file[Int(offset)..<Int(offset) + head]) } == true,
                      "segment at \(start) does not hold the file's bytes")
        }
        if memorySize > fileSize {
            let last: UInt8? = try? memory.load(at: GuestAddress(start + memorySize - 1))
            invariant(last == 0, "bss of segment at \(start) not zeroed")
        }
    }

    /// Every message must be formattable; each names the image's path.
    private func describe(_ error: LoaderError) {
        let text = error.description
        invariant(text.hasPrefix(error.path), "error text does not start with the path: \(text)")
    }

    /// Reads every note accessor, as `swiftlet inspect` does.
    private func touch(_ notes: XenNotes) {
        _ = (notes.entry, notes.hypercallPage, notes.virtBase, notes.paddrOffset, notes.phys32Entry, notes.guestOS)
        for feature in notes.features { _ = (feature.bit, feature.name, feature.required) }
        for note in notes.all { _ = (note.name, note.kind?.name) }
        for type in XenNoteType.allCases { _ = notes.first(type) }
    }

    // MARK: - Wrapping raw notes

    struct Wrapped {
        var bytes: [UInt8]
        var notesOffset: UInt64
    }

    /// An ELF64 x86-64 executable: a PT_LOAD (1 page of bss at 2 MiB, virtual 0xffffffff80200000)
    /// and a PT_NOTE over `notes`, which start at 176.
    static func elf64(notes: [UInt8]) -> Wrapped {
        var bytes = header(class64: true, phnum: 2, shoff: 0, shnum: 0)
        bytes += programHeader64(type: 1, offset: 0, virtual: 0xFFFF_FFFF_8020_0000, physical: 0x20_0000, fileSize: 0, memorySize: 0x1000)
        bytes += programHeader64(type: 4, offset: 176, virtual: 0, physical: 0, fileSize: UInt64(notes.count), memorySize: UInt64(notes.count))
        return Wrapped(bytes: bytes + notes, notesOffset: 176)
    }

    /// An ELF32 i386 executable: a PT_LOAD like `elf64`'s, no PT_NOTE, and one SHT_NOTE section
    /// over `notes`, which start at 84; the section header table follows them.
    static func elf32(notes: [UInt8]) -> Wrapped {
        let notesOffset = 52 + 32
        let shoff = notesOffset + notes.count
        var bytes = header(class64: false, phnum: 1, shoff: UInt64(shoff), shnum: 1)
        bytes += le(UInt32(1)) + le(UInt32(0)) + le(UInt32(0x20_0000)) + le(UInt32(0x20_0000))
            + le(UInt32(0)) + le(UInt32(0x1000)) + le(UInt32(6)) + le(UInt32(0x1000))
        bytes += notes
        var section = [UInt8](repeating: 0, count: 40)
        section.replaceSubrange(4..<8, with: le(UInt32(7)))                     // sh_type SHT_NOTE
        section.replaceSubrange(16..<20, with: le(UInt32(notesOffset)))         // sh_offset
        section.replaceSubrange(20..<24, with: le(UInt32(truncatingIfNeeded: notes.count)))  // sh_size
        return Wrapped(bytes: bytes + section, notesOffset: UInt64(notesOffset))
    }

    private static func header(class64: Bool, phnum: UInt16, shoff: UInt64, shnum: UInt16) -> [UInt8] {
        var bytes: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, class64 ? 2 : 1, 1, 1] + [UInt8](repeating: 0, count: 9)
        bytes += le(UInt16(2)) + le(UInt16(class64 ? 62 : 3)) + le(UInt32(1))   // ET_EXEC, machine, EV_CURRENT
        if class64 {
            bytes += le(UInt64(0x20_0000)) + le(UInt64(64)) + le(shoff)         // entry, phoff, shoff
            bytes += le(UInt32(0)) + le(UInt16(64)) + le(UInt16(56)) + le(phnum) + le(UInt16(64)) + le(shnum) + le(UInt16(0))
        } else {
            bytes += le(UInt32(0x20_0000)) + le(UInt32(52)) + le(UInt32(truncatingIfNeeded: shoff))
            bytes += le(UInt32(0)) + le(UInt16(52)) + le(UInt16(32)) + le(phnum) + le(UInt16(40)) + le(shnum) + le(UInt16(0))
        }
        return bytes
    }

    private static func programHeader64(type: UInt32, offset: UInt64, virtual: UInt64, physical: UInt64,
                                        fileSize: UInt64, memorySize: UInt64) -> [UInt8] {
        le(type) + le(UInt32(4)) + le(offset) + le(virtual) + le(physical) + le(fileSize) + le(memorySize) + le(UInt64(4))
    }
}

/// Little-endian bytes of `value`.
func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
}

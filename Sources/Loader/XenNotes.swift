/// Xen ELF notes (`xen/include/public/elfnote.h`): the note types, how each desc is decoded, and
/// the walk over a note segment or section (boot-and-abi.md section 1).

/// Every `XEN_ELFNOTE_*` type elfnote.h defines.
public enum XenNoteType: UInt32, Sendable, CaseIterable {
    case info = 0, entry, hypercallPage, virtBase, paddrOffset, xenVersion, guestOS, guestVersion,
         loader, paeMode, features, bsdSymtab, hvStartLow, l1MfnValid, suspendCancel, initP2M,
         modStartPFN, supportedFeatures, phys32Entry, phys32Reloc
    case crashInfo = 0x100_0001, crashRegs
    case dumpcoreNone = 0x200_0000, dumpcoreHeader, dumpcoreXenVersion, dumpcoreFormatVersion

    /// The elfnote.h name without its `XEN_ELFNOTE_` prefix, e.g. "PHYS32_ENTRY".
    public var name: String {
        switch self {
        case .info: "INFO"
        case .entry: "ENTRY"
        case .hypercallPage: "HYPERCALL_PAGE"
        case .virtBase: "VIRT_BASE"
        case .paddrOffset: "PADDR_OFFSET"
        case .xenVersion: "XEN_VERSION"
        case .guestOS: "GUEST_OS"
        case .guestVersion: "GUEST_VERSION"
        case .loader: "LOADER"
        case .paeMode: "PAE_MODE"
        case .features: "FEATURES"
        case .bsdSymtab: "BSD_SYMTAB"
        case .hvStartLow: "HV_START_LOW"
        case .l1MfnValid: "L1_MFN_VALID"
        case .suspendCancel: "SUSPEND_CANCEL"
        case .initP2M: "INIT_P2M"
        case .modStartPFN: "MOD_START_PFN"
        case .supportedFeatures: "SUPPORTED_FEATURES"
        case .phys32Entry: "PHYS32_ENTRY"
        case .phys32Reloc: "PHYS32_RELOC"
        case .crashInfo: "CRASH_INFO"
        case .crashRegs: "CRASH_REGS"
        case .dumpcoreNone: "DUMPCORE_NONE"
        case .dumpcoreHeader: "DUMPCORE_HEADER"
        case .dumpcoreXenVersion: "DUMPCORE_XEN_VERSION"
        case .dumpcoreFormatVersion: "DUMPCORE_FORMAT_VERSION"
        }
    }

    /// How libelf reads the desc of this type.
    enum Encoding { case integer, string, features, featureBitmap, l1MfnValid, phys32Entry, phys32Reloc, opaque }

    var encoding: Encoding {
        switch self {
        case .entry, .hypercallPage, .virtBase, .paddrOffset, .hvStartLow, .suspendCancel, .initP2M, .modStartPFN:
            .integer
        case .xenVersion, .guestOS, .guestVersion, .loader, .paeMode, .bsdSymtab:
            .string
        case .features: .features
        case .supportedFeatures: .featureBitmap
        case .l1MfnValid: .l1MfnValid
        case .phys32Entry: .phys32Entry
        case .phys32Reloc: .phys32Reloc
        case .info, .crashInfo, .crashRegs, .dumpcoreNone, .dumpcoreHeader, .dumpcoreXenVersion, .dumpcoreFormatVersion:
            .opaque
        }
    }
}

/// One name of a `XEN_ELFNOTE_FEATURES` string.
public struct XenFeature: Sendable, Equatable {
    public let name: String
    /// Written with a leading `!`: the kernel cannot run without it.
    public let required: Bool

    public init(name: String, required: Bool) {
        self.name = name
        self.required = required
    }

    /// The `XENFEAT_*` bit number (features.h, boot-and-abi.md 1.3), nil for a name Xen does not define.
    public var bit: Int? { Self.bits[name] }

    /// features.h, bit by bit. Bit 12 (`grant_map_identity`) is commented out there but kept so
    /// that old kernels naming it are reported with their bit.
    static let bits: [String: Int] = [
        "writable_page_tables": 0, "writable_descriptor_tables": 1, "auto_translated_physmap": 2,
        "supervisor_mode_kernel": 3, "pae_pgdir_above_4gb": 4, "mmu_pt_update_preserve_ad": 5,
        "highmem_assist": 6, "gnttab_map_avail_bits": 7, "hvm_callback_vector": 8,
        "hvm_safe_pvclock": 9, "hvm_pirqs": 10, "dom0": 11, "grant_map_identity": 12,
        "memory_op_vnode_supported": 13, "ARM_SMCCC_supported": 14, "linux_rsdp_unrestricted": 15,
        "not_direct_mapped": 16, "direct_mapped": 17, "runstate_phys_area": 18,
        "vcpu_time_phys_area": 19, "dm_msix_all_writes": 20,
    ]

    /// Splits a FEATURES string on '|'; a leading '!' marks a required feature. Empty names
    /// (from "a||b", a trailing '|' or a lone '!') are dropped.
    static func parse(_ string: String) -> [XenFeature] {
        string.split(separator: "|", omittingEmptySubsequences: true).compactMap { part in
            let required = part.hasPrefix("!")
            let name = required ? part.dropFirst() : part[...]
            return name.isEmpty ? nil : XenFeature(name: String(name), required: required)
        }
    }
}

/// A decoded note desc.
public enum XenNoteValue: Sendable, Equatable {
    /// Desc sizes 1, 2, 4, 8 read little-endian. PHYS32_ENTRY: any size >= 4, low 32 bits.
    case integer(UInt64)
    /// Bounded by descsz, stopping at the first NUL; bytes that are not UTF-8 are shown lossily.
    case string(String)
    /// FEATURES, split on '|'.
    case features([XenFeature])
    /// SUPPORTED_FEATURES: one u32 per XENFEAT submap.
    case featureBitmap([UInt32])
    /// L1_MFN_VALID: mask/value pairs, flattened, 8 bytes each.
    case l1MfnValid([UInt64])
    /// PHYS32_RELOC: whichever of alignment, minimum start and maximum last byte the desc holds.
    case phys32Reloc(align: UInt32?, minimum: UInt32?, maximum: UInt32?)
    /// INFO, crash and dump-core notes, unknown types, and descs whose size fits no other case.
    case bytes([UInt8])

    /// Decodes `desc` the way libelf reads a note of type `type`.
    static func decode(type: XenNoteType?, desc: ArraySlice<UInt8>) -> XenNoteValue {
        let size = desc.count
        switch type?.encoding ?? .opaque {
        case .integer:
            guard [1, 2, 4, 8].contains(size) else { return .bytes(Array(desc)) }
            return .integer(ByteReader.littleEndian(desc, as: UInt64.self))
        case .phys32Entry:
            // Xen documents a .long; Linux x86-64 emits an 8-byte _ASM_PTR. Take the low 32 bits.
            guard size >= 4 else { return .bytes(Array(desc)) }
            return .integer(UInt64(ByteReader.littleEndian(desc.prefix(4), as: UInt32.self)))
        case .string:
            return .string(cString(desc))
        case .features:
            return .features(XenFeature.parse(cString(desc)))
        case .featureBitmap:
            guard size > 0, size % 4 == 0 else { return .bytes(Array(desc)) }
            return .featureBitmap(words(desc, width: 4).map { UInt32(truncatingIfNeeded: $0) })
        case .l1MfnValid:
            guard size > 0, size % 16 == 0 else { return .bytes(Array(desc)) }
            return .l1MfnValid(words(desc, width: 8))
        case .phys32Reloc:
            let values = words(desc.prefix(12), width: 4).map { UInt32(truncatingIfNeeded: $0) }
            return .phys32Reloc(align: values.count > 0 ? values[0] : nil,
                                minimum: values.count > 1 ? values[1] : nil,
                                maximum: values.count > 2 ? values[2] : nil)
        case .opaque:
            return .bytes(Array(desc))
        }
    }

    /// Whole little-endian words of `width` bytes; a partial trailing word is dropped.
    private static func words(_ bytes: ArraySlice<UInt8>, width: Int) -> [UInt64] {
        var result: [UInt64] = []
        var index = bytes.startIndex
        while bytes.endIndex - index >= width {
            result.append(ByteReader.littleEndian(bytes[index..<(index + width)], as: UInt64.self))
            index += width
        }
        return result
    }

    /// The bytes up to the first NUL (or all of them), decoded as UTF-8 with repairs.
    private static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        let end = bytes.firstIndex(of: 0) ?? bytes.endIndex
        return String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self)
    }
}

/// One note named "Xen".
public struct XenNote: Sendable, Equatable {
    /// `n_type` as found, also when elfnote.h does not define it.
    public let type: UInt32
    public let kind: XenNoteType?
    public let value: XenNoteValue
    /// File offset of the note header (`n_namesz`).
    public let fileOffset: UInt64

    public init(type: UInt32, value: XenNoteValue, fileOffset: UInt64) {
        self.type = type
        self.kind = XenNoteType(rawValue: type)
        self.value = value
        self.fileOffset = fileOffset
    }

    /// "PHYS32_ENTRY", ..., or "UNKNOWN(0x..)" for a type elfnote.h does not define.
    public var name: String { kind?.name ?? "UNKNOWN(\(hex(type)))" }
}

/// The Xen notes of an image, in file order, with accessors for the ones a loader uses.
public struct XenNotes: Sendable, Equatable {
    /// Where the notes were found: Xen walks `PT_NOTE` segments first and falls back to
    /// `SHT_NOTE` sections only when the segments hold no Xen note.
    public enum Source: String, Sendable { case programHeaders = "PT_NOTE", sections = "SHT_NOTE", none }

    public let all: [XenNote]
    public let source: Source

    public init(all: [XenNote], source: Source) {
        self.all = all
        self.source = source
    }

    public static let empty = XenNotes(all: [], source: .none)

    /// The value of the first note of `type`, if any.
    public func first(_ type: XenNoteType) -> XenNoteValue? {
        all.first { $0.kind == type }?.value
    }

    private func integer(_ type: XenNoteType) -> UInt64? {
        if case let .integer(value) = first(type) { return value }
        return nil
    }

    public var entry: UInt64? { integer(.entry) }
    public var hypercallPage: UInt64? { integer(.hypercallPage) }
    public var virtBase: UInt64? { integer(.virtBase) }
    public var paddrOffset: UInt64? { integer(.paddrOffset) }
    /// The 32-bit physical PVH entry point; nil when absent or when its desc is under 4 bytes.
    public var phys32Entry: UInt64? { integer(.phys32Entry) }

    /// `--xen auto`'s rule: the image says it is written for Xen, by a hypercall page or Xen
    /// features, or by naming itself XTF (the Xen Test Framework: its HVM tests declare neither
    /// and cannot run without Xen). Never Linux, which declares a hypercall page and features for
    /// the Xen support it only uses when it finds Xen, and runs as a plain KVM guest; nor a PVH
    /// image that names nothing (a Linux built without Xen carries only its PVH entry).
    public var declareXenGuest: Bool {
        let os = guestOS?.lowercased()
        if os == "linux" { return false }
        if os == "xtf" { return true }
        return all.contains { [.hypercallPage, .features, .supportedFeatures].contains($0.kind) }
    }

    public var features: [XenFeature] {
        if case let .features(list) = first(.features) { return list }
        return []
    }

    public var guestOS: String? {
        if case let .string(text) = first(.guestOS) { return text }
        return nil
    }

    /// Walks the notes in `[start, start + size)` of the file (the caller has checked that range
    /// lies inside the file) and returns those named "Xen". Records are
    /// `namesz, descsz, type, name, desc`, name and desc each padded to 4 bytes (Xen libelf).
    /// A name or desc running past the end of the range is an error; so is a partial header.
    static func walk(_ reader: ByteReader, start: UInt64, size: UInt64, path: String) throws(LoaderError) -> [XenNote] {
        guard reader.contains(offset: start, length: size) else {
            throw .truncated(path: path, format: "ELF", what: "note area", offset: start, fileSize: reader.count)
        }
        let end = start + size  // cannot overflow: inside the file
        var cursor = start
        var notes: [XenNote] = []
        while cursor < end {
            let left = end - cursor
            guard left >= 12, let namesz = reader.u32(at: cursor), let descsz = reader.u32(at: cursor + 4),
                  let type = reader.u32(at: cursor + 8) else {
                throw .truncatedNoteHeader(path: path, offset: cursor, available: left)
            }
            let nameStart = cursor + 12
            guard UInt64(namesz) <= end - nameStart else {
                throw .impossibleNoteSize(path: path, offset: cursor, field: "namesz", size: UInt64(namesz),
                                          available: end - nameStart, xen: false)
            }
            let name = reader.slice(offset: nameStart, length: UInt64(namesz)) ?? []
            let isXen = name.elementsEqual([0x58, 0x65, 0x6E, 0x00])  // "Xen\0"
            // Sizes are u32, positions are inside the file: none of these sums can overflow.
            let descStart = nameStart + padded(namesz)
            let available = descStart <= end ? end - descStart : 0
            guard UInt64(descsz) <= available else {
                throw .impossibleNoteSize(path: path, offset: cursor, field: "descsz", size: UInt64(descsz),
                                          available: available, xen: isXen)
            }
            if isXen {
                let desc = reader.slice(offset: descStart, length: UInt64(descsz)) ?? []
                notes.append(XenNote(type: type, value: .decode(type: XenNoteType(rawValue: type), desc: desc),
                                     fileOffset: cursor))
            }
            cursor = descStart + padded(descsz)
        }
        return notes
    }

    private static func padded(_ size: UInt32) -> UInt64 { (UInt64(size) + 3) & ~3 }
}

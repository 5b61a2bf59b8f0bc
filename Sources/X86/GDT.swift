import KVM

/// A segment descriptor, and the hidden segment-register state it loads (Intel SDM Vol. 3, 3.4.5).
public struct SegmentDescriptor: Equatable, Sendable {
    public var base: UInt32
    /// The 20-bit limit field (in 4 KiB units when `granularity` is set).
    public var limitField: UInt32
    /// Type (4 bits), S, DPL, P, AVL, L, D/B and G, in the descriptor's own encoding.
    public var type: UInt8
    public var codeOrData: Bool
    public var dpl: UInt8
    public var present: Bool
    public var long: Bool
    public var defaultBig: Bool
    public var granularity: Bool

    /// The 8-byte descriptor as it sits in the GDT.
    public var encoded: UInt64 {
        let access = UInt64(type & 0xF) | (codeOrData ? 0x10 : 0) | UInt64(dpl & 3) << 5 | (present ? 0x80 : 0)
        let flags = (long ? UInt64(0x2) : 0) | (defaultBig ? 0x4 : 0) | (granularity ? 0x8 : 0)
        return UInt64(limitField & 0xFFFF)
            | UInt64(base & 0xFF_FFFF) << 16
            | access << 40
            | UInt64((limitField >> 16) & 0xF) << 48
            | flags << 52
            | UInt64(base >> 24) << 56
    }

    /// Decodes an 8-byte descriptor.
    public init(encoded value: UInt64) {
        base = UInt32(truncatingIfNeeded: (value >> 16) & 0xFF_FFFF) | UInt32(truncatingIfNeeded: value >> 56) << 24
        limitField = UInt32(truncatingIfNeeded: value & 0xFFFF) | UInt32(truncatingIfNeeded: (value >> 48) & 0xF) << 16
        type = UInt8(truncatingIfNeeded: (value >> 40) & 0xF)
        codeOrData = (value >> 44) & 1 == 1
        dpl = UInt8(truncatingIfNeeded: (value >> 45) & 3)
        present = (value >> 47) & 1 == 1
        long = (value >> 53) & 1 == 1
        defaultBig = (value >> 54) & 1 == 1
        granularity = (value >> 55) & 1 == 1
    }

    public init(base: UInt32, limitField: UInt32, type: UInt8, codeOrData: Bool, dpl: UInt8 = 0,
                present: Bool = true, long: Bool = false, defaultBig: Bool, granularity: Bool) {
        self.base = base; self.limitField = limitField; self.type = type; self.codeOrData = codeOrData
        self.dpl = dpl; self.present = present; self.long = long; self.defaultBig = defaultBig
        self.granularity = granularity
    }

    /// The byte-granular limit KVM wants in `kvm_segment.limit`.
    public var byteLimit: UInt32 {
        granularity ? (limitField << 12) | 0xFFF : limitField
    }

    /// The segment-register state loading this descriptor through `selector` produces.
    public func segment(selector: UInt16) -> Segment {
        Segment(base: UInt64(base), limit: byteLimit, selector: selector, type: type, present: present,
                dpl: dpl, defaultBig: defaultBig, codeOrData: codeOrData, long: long, granularity: granularity)
    }
}

/// The boot GDT Swiftlet writes at `Layout.gdt`, shared by every boot protocol:
///
/// | selector | descriptor | used by |
/// |---|---|---|
/// | 0x00 | null | |
/// | 0x08 | flat 32-bit code, base 0, 4 GiB | PVH CS |
/// | 0x10 | 64-bit code (L=1) | Linux `__BOOT_CS`, xen64 CS |
/// | 0x18 | flat 32-bit data, base 0, 4 GiB | Linux `__BOOT_DS`; DS/ES/SS everywhere |
/// | 0x20 | busy TSS, base 0, limit 0x67 (16-byte system descriptor in long mode) | TR |
public enum BootGDT {
    public static let code32Selector: UInt16 = 0x08
    public static let code64Selector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    public static let code32 = SegmentDescriptor(base: 0, limitField: 0xFFFFF, type: 0xB, codeOrData: true,
                                                 defaultBig: true, granularity: true)
    public static let code64 = SegmentDescriptor(base: 0, limitField: 0xFFFFF, type: 0xB, codeOrData: true,
                                                 long: true, defaultBig: false, granularity: true)
    public static let data = SegmentDescriptor(base: 0, limitField: 0xFFFFF, type: 0x3, codeOrData: true,
                                               defaultBig: true, granularity: true)
    /// Type 0xB: busy TSS (32-bit in protected mode, 64-bit in long mode).
    public static let tss = SegmentDescriptor(base: 0, limitField: 0x67, type: 0xB, codeOrData: false,
                                              defaultBig: false, granularity: false)

    /// The table's qwords; the TSS takes two (the upper half of a long-mode system descriptor is 0).
    public static let entries: [UInt64] = [0, code32.encoded, code64.encoded, data.encoded, tss.encoded, 0]

    public static var limit: UInt16 { UInt16(entries.count * 8 - 1) }
}

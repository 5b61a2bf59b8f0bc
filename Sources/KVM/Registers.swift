import CKVM

/// General-purpose registers (`struct kvm_regs`).
public struct Registers: Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0
    /// Bit 1 is architecturally always set.
    public var rflags: UInt64 = 0x2

    public init() {}

    init(_ r: kvm_regs) {
        rax = r.rax; rbx = r.rbx; rcx = r.rcx; rdx = r.rdx; rsi = r.rsi; rdi = r.rdi
        rsp = r.rsp; rbp = r.rbp; r8 = r.r8; r9 = r.r9; r10 = r.r10; r11 = r.r11
        r12 = r.r12; r13 = r.r13; r14 = r.r14; r15 = r.r15; rip = r.rip; rflags = r.rflags
    }

    var kvm: kvm_regs {
        kvm_regs(rax: rax, rbx: rbx, rcx: rcx, rdx: rdx, rsi: rsi, rdi: rdi, rsp: rsp, rbp: rbp,
                 r8: r8, r9: r9, r10: r10, r11: r11, r12: r12, r13: r13, r14: r14, r15: r15,
                 rip: rip, rflags: rflags)
    }
}

/// A segment register's hidden part (`struct kvm_segment`).
public struct Segment: Equatable, Sendable {
    public var base: UInt64 = 0
    /// Byte-granular limit (0xFFFF_FFFF for a flat 4 GiB segment, whatever G says).
    public var limit: UInt32 = 0
    public var selector: UInt16 = 0
    public var type: UInt8 = 0
    public var present = false
    public var dpl: UInt8 = 0
    /// D/B: 32-bit default operand size.
    public var defaultBig = false
    /// S: code/data (true) or system (false).
    public var codeOrData = false
    /// L: 64-bit code.
    public var long = false
    public var granularity = false
    public var available = false
    public var unusable = false

    public init() {}

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                defaultBig: Bool, codeOrData: Bool, long: Bool, granularity: Bool) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type
        self.present = present; self.dpl = dpl; self.defaultBig = defaultBig
        self.codeOrData = codeOrData; self.long = long; self.granularity = granularity
    }

    init(_ s: kvm_segment) {
        base = s.base; limit = s.limit; selector = s.selector; type = s.type
        present = s.present != 0; dpl = s.dpl; defaultBig = s.db != 0; codeOrData = s.s != 0
        long = s.l != 0; granularity = s.g != 0; available = s.avl != 0; unusable = s.unusable != 0
    }

    var kvm: kvm_segment {
        kvm_segment(base: base, limit: limit, selector: selector, type: type,
                    present: present ? 1 : 0, dpl: dpl, db: defaultBig ? 1 : 0, s: codeOrData ? 1 : 0,
                    l: long ? 1 : 0, g: granularity ? 1 : 0, avl: available ? 1 : 0,
                    unusable: unusable ? 1 : 0, padding: 0)
    }
}

/// A descriptor-table register (`struct kvm_dtable`).
public struct DescriptorTable: Equatable, Sendable {
    public var base: UInt64 = 0
    public var limit: UInt16 = 0
    public init(base: UInt64 = 0, limit: UInt16 = 0) { self.base = base; self.limit = limit }
}

/// Segment, control and system registers (`struct kvm_sregs`).
public struct SpecialRegisters: Equatable, Sendable {
    public var cs = Segment(), ds = Segment(), es = Segment(), fs = Segment(), gs = Segment(), ss = Segment()
    public var tr = Segment(), ldt = Segment()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var apicBase: UInt64 = 0
    /// The pending-interrupt bitmap is kept as read so that a read-modify-write keeps it.
    var interruptBitmap: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    public static func == (a: SpecialRegisters, b: SpecialRegisters) -> Bool {
        a.cs == b.cs && a.ds == b.ds && a.es == b.es && a.fs == b.fs && a.gs == b.gs && a.ss == b.ss
            && a.tr == b.tr && a.ldt == b.ldt && a.gdt == b.gdt && a.idt == b.idt && a.cr0 == b.cr0
            && a.cr2 == b.cr2 && a.cr3 == b.cr3 && a.cr4 == b.cr4 && a.cr8 == b.cr8 && a.efer == b.efer
            && a.apicBase == b.apicBase
    }

    init(_ s: kvm_sregs) {
        cs = Segment(s.cs); ds = Segment(s.ds); es = Segment(s.es); fs = Segment(s.fs)
        gs = Segment(s.gs); ss = Segment(s.ss); tr = Segment(s.tr); ldt = Segment(s.ldt)
        gdt = DescriptorTable(base: s.gdt.base, limit: s.gdt.limit)
        idt = DescriptorTable(base: s.idt.base, limit: s.idt.limit)
        cr0 = s.cr0; cr2 = s.cr2; cr3 = s.cr3; cr4 = s.cr4; cr8 = s.cr8; efer = s.efer
        apicBase = s.apic_base; interruptBitmap = s.interrupt_bitmap
    }

    var kvm: kvm_sregs {
        var s = kvm_sregs()
        s.cs = cs.kvm; s.ds = ds.kvm; s.es = es.kvm; s.fs = fs.kvm; s.gs = gs.kvm; s.ss = ss.kvm
        s.tr = tr.kvm; s.ldt = ldt.kvm
        s.gdt = kvm_dtable(base: gdt.base, limit: gdt.limit, padding: (0, 0, 0))
        s.idt = kvm_dtable(base: idt.base, limit: idt.limit, padding: (0, 0, 0))
        s.cr0 = cr0; s.cr2 = cr2; s.cr3 = cr3; s.cr4 = cr4; s.cr8 = cr8; s.efer = efer
        s.apic_base = apicBase; s.interrupt_bitmap = interruptBitmap
        return s
    }
}

/// One CPUID leaf as KVM exchanges it (`struct kvm_cpuid_entry2`).
public struct CPUIDEntry: Equatable, Sendable {
    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the subleaf (index) matters.
    public static let significantIndex: UInt32 = 1
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }

    init(_ e: kvm_cpuid_entry2) {
        self.init(function: e.function, index: e.index, flags: e.flags, eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
    }

    var kvm: kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function; e.index = index; e.flags = flags
        e.eax = eax; e.ebx = ebx; e.ecx = ecx; e.edx = edx
        return e
    }

    /// Runs `body` on a `struct kvm_cpuid2` with room for `capacity` entries and returns its entries.
    static func withKVMList(capacity: Int, _ body: (UnsafeMutableRawPointer) throws(KVMError) -> Void) throws(KVMError) -> [CPUIDEntry] {
        let header = MemoryLayout<kvm_cpuid2>.size
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + capacity * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header + capacity * stride)
        buffer.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(capacity)
        try body(buffer)
        let count = Int(buffer.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent)
        return (0..<min(count, capacity)).map {
            CPUIDEntry((buffer + header + $0 * stride).load(as: kvm_cpuid_entry2.self))
        }
    }

    /// Runs `body` on a `struct kvm_cpuid2` holding `entries`.
    static func withKVMList<R>(_ entries: [CPUIDEntry], _ body: (UnsafeMutableRawPointer) throws(KVMError) -> R) throws(KVMError) -> R {
        let header = MemoryLayout<kvm_cpuid2>.size
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + entries.count * stride, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: header)
        buffer.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(entries.count)
        for (i, entry) in entries.enumerated() {
            (buffer + header + i * stride).storeBytes(of: entry.kvm, as: kvm_cpuid_entry2.self)
        }
        return try body(buffer)
    }
}

/// A vCPU's multiprocessing state (`KVM_GET/SET_MP_STATE`).
public enum MPState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case runnable = 0, uninitialized = 1, initReceived = 2, halted = 3, sipiReceived = 4

    public var description: String {
        switch self {
        case .runnable: "RUNNABLE"
        case .uninitialized: "UNINITIALIZED"
        case .initReceived: "INIT_RECEIVED"
        case .halted: "HALTED"
        case .sipiReceived: "SIPI_RECEIVED"
        }
    }
}

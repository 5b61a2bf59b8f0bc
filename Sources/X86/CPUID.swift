import KVM

/// Per-vCPU CPUID, derived from KVM's supported list (Intel SDM Vol. 2A, CPUID; the x2APIC
/// topology leaves 0xB and 0x1F).
public enum CPUIDTemplate {
    /// CPUID.1:ECX bit 31, "running under a hypervisor".
    public static let hypervisorBit: UInt32 = 1 << 31
    /// CPUID.1:EDX bit 28, HTT: EBX[23:16] (logical processors per package) is valid. Always set,
    /// since Swiftlet always fills that field (1 for a single vCPU), so the MP table's feature
    /// flags match what every vCPU reads.
    public static let httBit: UInt32 = 1 << 28

    /// The leaves generated whole per vCPU (`entries`); a CPU template's changes to them are lost.
    public static let generatedLeaves: [UInt32] = [0xB, 0x1F]

    /// The table shared by every vCPU, before a CPU template: `supported` (KVM's list, with the
    /// Xen leaves when on) with the hypervisor and HTT bits set.
    public static func base(from supported: [CPUIDEntry]) -> [CPUIDEntry] {
        supported.map { original in
            var entry = original
            if entry.function == 1 {
                entry.ecx |= hypervisorBit
                entry.edx |= httBit
            }
            return entry
        }
    }

    /// The leaves for vCPU `apicID` of `count`, from `base(from:)` or from a CPU template's result
    /// (the bits `base` sets are set again, whatever a template did): APIC ID in leaf 1 and in the
    /// x2APIC topology leaves, logical-processor count.
    ///
    /// Leaves 0xB and 0x1F are generated whole, not patched: KVM's supported list may carry only
    /// their subleaf 0. The topology is one thread per core, `count` cores in one package.
    public static func entries(from supported: [CPUIDEntry], apicID: UInt32, count: Int) -> [CPUIDEntry] {
        let countBits = UInt32(count <= 1 ? 0 : (UInt32(count - 1).bitWidth - UInt32(count - 1).leadingZeroBitCount))
        let maxBasicLeaf = supported.first { $0.function == 0 }?.eax ?? 0
        let topologyLeaves = generatedLeaves.filter { leaf in leaf <= maxBasicLeaf && supported.contains { $0.function == leaf } }
        var entries: [CPUIDEntry] = base(from: supported).compactMap { original in
            var entry = original
            switch entry.function {
            case 1:
                let logical = UInt32(min(max(1, 1 << countBits), 255))
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (logical << 16) | (apicID & 0xFF) << 24
            case 0xB, 0x1F:
                return nil
            default:
                break
            }
            return entry
        }
        for leaf in topologyLeaves {
            entries += topology(leaf: leaf, apicID: apicID, count: count, countBits: countBits)
        }
        return entries
    }

    /// Leaf 0xB or 0x1F (Intel SDM Vol. 2A, CPUID, "V2 Extended Topology Enumeration"):
    /// subleaf 0 the SMT level (1 thread, shift 0), subleaf 1 the core level (`count` cores,
    /// shift wide enough for every APIC ID), subleaf 2 invalid; EDX the x2APIC ID throughout.
    static func topology(leaf: UInt32, apicID: UInt32, count: Int, countBits: UInt32) -> [CPUIDEntry] {
        let smt: UInt32 = 1, core: UInt32 = 2
        return [
            CPUIDEntry(function: leaf, index: 0, flags: CPUIDEntry.significantIndex,
                       eax: 0, ebx: 1, ecx: smt << 8 | 0, edx: apicID),
            CPUIDEntry(function: leaf, index: 1, flags: CPUIDEntry.significantIndex,
                       eax: countBits, ebx: UInt32(count) & 0xFFFF, ecx: core << 8 | 1, edx: apicID),
            CPUIDEntry(function: leaf, index: 2, flags: CPUIDEntry.significantIndex,
                       eax: 0, ebx: 0, ecx: 2, edx: apicID),
        ]
    }
}

/// The MSRs every vCPU starts with: the syscall/sysenter MSRs, the segment bases and the TSC
/// cleared, fast strings on, MTRRs enabled with write-back default.
public enum BootMSRs {
    public static let fsBase: UInt32 = 0xC000_0100
    public static let gsBase: UInt32 = 0xC000_0101
    public static let kernelGSBase: UInt32 = 0xC000_0102

    public static let values: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),                        // SYSENTER_CS/ESP/EIP
        (0xC000_0081, 0), (0xC000_0082, 0), (0xC000_0083, 0),      // STAR, LSTAR, CSTAR
        (0xC000_0084, 0),                                          // SYSCALL_MASK
        (fsBase, 0), (gsBase, 0), (kernelGSBase, 0),
        (0x10, 0),                                                 // TSC
        (0x1A0, 1),                                                // MISC_ENABLE: fast strings
        (0x2FF, (1 << 11) | 6),                                    // MTRRdefType: enabled, WB
    ]
}

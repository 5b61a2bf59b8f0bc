import GuestMemory

/// A vCPU's view of memory through its own paging (Intel SDM Vol. 3, 4.5: 4-level paging with
/// 1 GiB, 2 MiB and 4 KiB pages; no paging when CR0.PG is clear). Used to follow guest pointers
/// in hypercall arguments: every byte must translate to guest RAM, or the access is refused.
public struct GuestVirtualMemory {
    public enum Mode: Equatable, Sendable {
        /// Paging off: linear = physical, 32 bits.
        case physical
        /// 4-level paging (long mode), tables from CR3.
        case fourLevel(root: UInt64)
        /// 32-bit or PAE paging, which Swiftlet does not walk: every access is refused.
        case unsupported
    }

    public let memory: GuestMemory
    public let mode: Mode

    public init(memory: GuestMemory, mode: Mode) {
        self.memory = memory
        self.mode = mode
    }

    /// The paging mode control registers describe.
    public static func mode(cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) -> Mode {
        guard cr0 & ControlBits.pg != 0 else { return .physical }
        guard efer & ControlBits.lma != 0, cr4 & ControlBits.pae != 0 else { return .unsupported }
        return .fourLevel(root: cr3 & PageTableBuilder.addressMask)
    }

    static let present: UInt64 = 1, largePage: UInt64 = 1 << 7

    /// The guest-physical address `virtual` maps to, and how many bytes from there on are in
    /// the same page; nil if not mapped.
    public func translate(_ virtual: UInt64) -> (physical: UInt64, pageRemaining: UInt64)? {
        switch mode {
        case .unsupported:
            return nil
        case .physical:
            guard virtual <= UInt64(UInt32.max) else { return nil }
            return (virtual, 0x1_0000_0000 - virtual)
        case let .fourLevel(root):
            // Canonical: bits 63..47 all equal.
            let top = virtual >> 47
            guard top == 0 || top == 0x1_FFFF else { return nil }
            var table = root
            for (level, shift) in [(4, UInt64(39)), (3, 30), (2, 21), (1, 12)] {
                let slot = GuestAddress(table + ((virtual >> shift) & 0x1FF) * 8)
                guard let entry: UInt64 = try? memory.load(at: slot), entry & Self.present != 0 else { return nil }
                let pageSize: UInt64 = 1 << shift
                if level == 1 || (entry & Self.largePage != 0 && (level == 2 || level == 3)) {
                    let frame = entry & PageTableBuilder.addressMask & ~(pageSize - 1)
                    let offset = virtual & (pageSize - 1)
                    return (frame + offset, pageSize - offset)
                }
                table = entry & PageTableBuilder.addressMask
            }
            return nil
        }
    }

    /// Visits each physically contiguous piece of `[virtual, virtual + count)`; false if any
    /// byte is unmapped, outside RAM, or the range wraps.
    private func forEachPiece(_ virtual: UInt64, _ count: Int,
                              _ body: (GuestAddress, Int, Int) throws(GuestMemoryError) -> Void) -> Bool {
        guard count >= 0 else { return false }
        if count == 0 { return true }
        guard virtual <= UInt64.max - UInt64(count - 1) else { return false }
        var done = 0
        while done < count {
            guard let (physical, room) = translate(virtual + UInt64(done)) else { return false }
            let length = Int(min(UInt64(count - done), room))
            guard memory.contains(GuestAddress(physical), length: UInt64(length)) else { return false }
            do { try body(GuestAddress(physical), done, length) } catch { return false }
            done += length
        }
        return true
    }

    /// `count` bytes from `virtual`, or nil if any of them is not mapped to guest RAM.
    public func read(_ virtual: UInt64, count: Int) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(max(0, count))
        let ok = forEachPiece(virtual, count) { (address, _, length) throws(GuestMemoryError) in
            bytes += try memory.read(at: address, count: length)
        }
        return ok ? bytes : nil
    }

    /// True if every byte of `[virtual, virtual + count)` is mapped to guest RAM.
    public func isMapped(_ virtual: UInt64, count: Int) -> Bool {
        forEachPiece(virtual, count) { _, _, _ in }
    }

    /// Writes `bytes` at `virtual`; false (and nothing written) if any byte is not mapped.
    public func write(_ bytes: [UInt8], at virtual: UInt64) -> Bool {
        guard isMapped(virtual, count: bytes.count) else { return false }
        return forEachPiece(virtual, bytes.count) { (address, offset, length) throws(GuestMemoryError) in
            try memory.write(bytes[offset..<offset + length], at: address)
        }
    }
}

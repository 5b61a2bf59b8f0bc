import GuestMemory

/// Builds x86-64 4-level page tables in guest memory from a fixed pool of pages, mapping with
/// 2 MiB pages (Intel SDM Vol. 3, 4.5). Pure set-up maths: only guest-memory writes.
public struct PageTableBuilder {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case poolExhausted(pages: UInt64)
        case misaligned(virtual: UInt64, physical: UInt64)
        case conflict(virtual: UInt64)
        case memory(GuestMemoryError)

        public var description: String {
            switch self {
            case let .poolExhausted(pages): "page-table pool of \(pages) pages is exhausted"
            case let .misaligned(v, p): "mapping 0x\(String(v, radix: 16)) -> 0x\(String(p, radix: 16)) is not 2 MiB aligned"
            case let .conflict(v): "virtual 0x\(String(v, radix: 16)) is mapped twice"
            case let .memory(error): error.description
            }
        }
    }

    static let present: UInt64 = 1 << 0
    static let writable: UInt64 = 1 << 1
    static let largePage: UInt64 = 1 << 7
    public static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000
    public static let largePageSize: UInt64 = 2 << 20

    let memory: GuestMemory
    let pool: UInt64
    let poolPages: UInt64
    public private(set) var usedPages: UInt64 = 0
    /// Guest-physical address of the PML4: the value for CR3.
    public let root: UInt64

    public init(memory: GuestMemory, pool: UInt64 = Layout.pageTablePool,
                poolPages: UInt64 = Layout.pageTablePoolPages) throws(Failure) {
        self.memory = memory
        self.pool = pool
        self.poolPages = poolPages
        self.root = pool
        do { try memory.fill(0, at: GuestAddress(pool), count: poolPages * 4096) } catch { throw .memory(error) }
        usedPages = 1
    }

    private mutating func allocate() throws(Failure) -> UInt64 {
        guard usedPages < poolPages else { throw .poolExhausted(pages: poolPages) }
        defer { usedPages += 1 }
        return pool + usedPages * 4096
    }

    private func entry(at address: UInt64) throws(Failure) -> UInt64 {
        do { return try memory.load(at: GuestAddress(address)) } catch { throw .memory(error) }
    }

    private func setEntry(_ value: UInt64, at address: UInt64) throws(Failure) {
        do { try memory.store(value, at: GuestAddress(address)) } catch { throw .memory(error) }
    }

    /// The next-level table under slot `index` of `table`, created if absent.
    private mutating func child(of table: UInt64, index: UInt64, virtual: UInt64) throws(Failure) -> UInt64 {
        let slot = table + index * 8
        let existing = try entry(at: slot)
        if existing & Self.present != 0 {
            guard existing & Self.largePage == 0 else { throw .conflict(virtual: virtual) }
            return existing & Self.addressMask
        }
        let page = try allocate()
        try setEntry(page | Self.present | Self.writable, at: slot)
        return page
    }

    /// Maps `[virtual, virtual + size)` to `[physical, ...)` with present, writable 2 MiB pages.
    public mutating func map(virtual: UInt64, physical: UInt64, size: UInt64) throws(Failure) {
        guard virtual % Self.largePageSize == 0, physical % Self.largePageSize == 0 else {
            throw .misaligned(virtual: virtual, physical: physical)
        }
        var offset: UInt64 = 0
        while offset < size {
            let v = virtual &+ offset
            let pdpt = try child(of: root, index: (v >> 39) & 0x1FF, virtual: v)
            let pd = try child(of: pdpt, index: (v >> 30) & 0x1FF, virtual: v)
            let slot = pd + ((v >> 21) & 0x1FF) * 8
            guard try entry(at: slot) & Self.present == 0 else { throw .conflict(virtual: v) }
            try setEntry((physical + offset) | Self.present | Self.writable | Self.largePage, at: slot)
            offset += Self.largePageSize
            if v &+ Self.largePageSize == 0 { break }   // reached the top of the address space
        }
    }

    /// Walks the tables like the MMU: the physical address `virtual` maps to, or nil. For tests.
    public func translate(_ virtual: UInt64) -> UInt64? {
        var table = root
        for shift: UInt64 in [39, 30] {
            guard let entry: UInt64 = try? memory.load(at: GuestAddress(table + ((virtual >> shift) & 0x1FF) * 8)),
                  entry & Self.present != 0 else { return nil }
            table = entry & Self.addressMask
        }
        guard let entry: UInt64 = try? memory.load(at: GuestAddress(table + ((virtual >> 21) & 0x1FF) * 8)),
              entry & Self.present != 0, entry & Self.largePage != 0 else { return nil }
        return (entry & Self.addressMask & ~(Self.largePageSize - 1)) + (virtual & (Self.largePageSize - 1))
    }
}

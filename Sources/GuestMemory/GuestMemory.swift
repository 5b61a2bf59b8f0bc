import CSwiftletSystem
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A guest physical address.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The address `offset` bytes further on, or nil if that wraps past 2^64.
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// What can go wrong with guest memory. Every case names the address range involved.
public enum GuestMemoryError: Error, Equatable, CustomStringConvertible {
    /// `[address, address + length)` is not wholly inside one RAM region.
    case outOfBounds(address: UInt64, length: UInt64)
    /// The host refused to reserve the memory (mmap's errno).
    case mapFailed(size: UInt64, errno: Int32)
    /// The layout asked for is not possible (zero size, overlapping or unaligned regions).
    case invalidLayout(String)

    public var description: String {
        switch self {
        case let .outOfBounds(address, length):
            return "guest range 0x\(String(address, radix: 16))+0x\(String(length, radix: 16)) is outside guest RAM"
        case let .mapFailed(size, errno):
            return "could not reserve \(size) bytes of guest memory: \(String(cString: strerror(errno)))"
        case let .invalidLayout(why):
            return "invalid guest memory layout: \(why)"
        }
    }
}

/// One contiguous piece of guest RAM and the host mapping behind it.
public struct GuestMemoryRegion: Sendable, Equatable {
    public let start: GuestAddress
    public let size: UInt64
    /// Host virtual address of the first byte, as an integer: for `KVM_SET_USER_MEMORY_REGION` only.
    public let hostAddress: UInt64

    public var end: UInt64 { start.rawValue + size }

    func contains(_ address: UInt64, _ length: UInt64) -> Bool {
        guard address >= start.rawValue else { return false }
        let offset = address - start.rawValue
        return offset <= size && length <= size - offset
    }
}

/// Guest RAM: anonymous host mappings, one per region, reserved lazily (`MAP_NORESERVE`), so
/// that set-up never touches pages the guest does not use.
///
/// This type is the only holder of raw pointers into the guest. Every access is bounds-checked
/// against one region; an access that would straddle two regions or leave RAM is refused.
public final class GuestMemory: @unchecked Sendable {
    // Sendable: the region table is immutable after init; the bytes behind it are shared with
    // the guest by design, and callers serialise their own accesses to any one structure.
    public let regions: [GuestMemoryRegion]
    private let bases: [UnsafeMutableRawPointer]

    /// Total bytes of RAM over all regions.
    public var size: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Maps the given regions. Each `(start, size)` must be 4 KiB aligned, non-empty, and the
    /// regions must be sorted and disjoint.
    public convenience init(regions layout: [(start: UInt64, size: UInt64)]) throws(GuestMemoryError) {
        try self.init(regions: layout, file: nil)
    }

    /// Maps the regions from a memory file (a snapshot's), region after region from offset 0,
    /// copy-on-write (`MAP_PRIVATE`): pages are read when first touched, the guest's writes stay
    /// in this process, and several VMs can map one file. The file must hold every region.
    public convenience init(regions layout: [(start: UInt64, size: UInt64)], mappingFile fd: Int32) throws(GuestMemoryError) {
        try self.init(regions: layout, file: fd)
    }

    private init(regions layout: [(start: UInt64, size: UInt64)], file: Int32?) throws(GuestMemoryError) {
        guard !layout.isEmpty else { throw .invalidLayout("no RAM regions") }
        var previousEnd: UInt64 = 0
        for (index, region) in layout.enumerated() {
            guard region.size > 0 else { throw .invalidLayout("region \(index) is empty") }
            guard region.start % 4096 == 0, region.size % 4096 == 0 else {
                throw .invalidLayout("region \(index) is not 4 KiB aligned")
            }
            guard region.start >= previousEnd || index == 0 else {
                throw .invalidLayout("region \(index) overlaps or is out of order")
            }
            let (end, overflow) = region.start.addingReportingOverflow(region.size)
            guard !overflow else { throw .invalidLayout("region \(index) wraps the address space") }
            previousEnd = end
        }
        var mapped: [GuestMemoryRegion] = []
        var bases: [UnsafeMutableRawPointer] = []
        var fileOffset: UInt64 = 0
        for region in layout {
            guard region.size <= UInt64(Int.max) else {
                Self.unmap(bases, mapped)
                throw .mapFailed(size: region.size, errno: ENOMEM)
            }
            // unsafe: a private mapping (anonymous, or of the file) owned by this object until deinit.
            let pointer = file.map { fd in
                mmap(nil, Int(region.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, off_t(fileOffset))
            } ?? mmap(nil, Int(region.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            fileOffset += region.size
            guard let pointer, pointer != MAP_FAILED else {
                let error = errno
                Self.unmap(bases, mapped)
                throw .mapFailed(size: region.size, errno: error)
            }
            bases.append(pointer)
            mapped.append(GuestMemoryRegion(start: GuestAddress(region.start), size: region.size,
                                            hostAddress: UInt64(UInt(bitPattern: pointer))))
        }
        self.regions = mapped
        self.bases = bases
    }

    deinit { Self.unmap(bases, regions) }

    private static func unmap(_ bases: [UnsafeMutableRawPointer], _ regions: [GuestMemoryRegion]) {
        for (base, region) in zip(bases, regions) { munmap(base, Int(region.size)) }
    }

    /// Atomically sets `bits` in the 32-bit word at `address` (4-byte aligned); the old value, or
    /// nil outside RAM or unaligned. For bitmaps the guest changes at the same time.
    public func atomicOr(_ bits: UInt32, at address: GuestAddress) -> UInt32? {
        guard address.rawValue % 4 == 0, let word = try? pointer(address, 4) else { return nil }
        return cswiftlet_atomic_or32(word, bits)   // unsafe: a checked, aligned word of guest RAM
    }

    /// Atomically clears the bits not in `bits`; the old value, or nil.
    public func atomicAnd(_ bits: UInt32, at address: GuestAddress) -> UInt32? {
        guard address.rawValue % 4 == 0, let word = try? pointer(address, 4) else { return nil }
        return cswiftlet_atomic_and32(word, bits)
    }

    /// Writes region `index` whole to `fd` at `offset` (a full snapshot's memory file); the bytes
    /// written, or -errno.
    public func writeRegion(_ index: Int, to fd: Int32, offset: Int64) -> Int {
        guard index < regions.count else { return -Int(EINVAL) }
        var done = 0
        let size = Int(regions[index].size)
        while done < size {
            // unsafe: inside the region's own mapping.
            let n = pwrite(fd, bases[index] + done, min(size - done, 1 << 30), off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; return -Int(errno) }
            if n == 0 { return -Int(EIO) }
            done += n
        }
        return done
    }

    /// Writes the 4 KiB pages of region `index` whose bits are set in `bitmap` (bit n of word w:
    /// page 64w + n) to `fd`, each at `offset` plus its place in the region (a diff snapshot);
    /// the pages written, or -errno.
    public func writePages(of index: Int, bitmap: [UInt64], to fd: Int32, offset: Int64) -> Int {
        guard index < regions.count else { return -Int(EINVAL) }
        let pages = Int(regions[index].size / 4096)
        var written = 0
        for page in 0..<pages where bitmap.count > page / 64 && bitmap[page / 64] >> UInt64(page % 64) & 1 == 1 {
            // unsafe: page < pages, inside the region's mapping.
            let n = pwrite(fd, bases[index] + page * 4096, 4096, off_t(offset) + off_t(page * 4096))
            if n != 4096 { return -Int(n < 0 ? errno : EIO) }
            written += 1
        }
        return written
    }

    /// True if `[address, address + length)` lies inside one RAM region.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        regions.contains { $0.contains(address.rawValue, length) }
    }

    /// The host pointer for a checked range. Private: raw pointers never leave this type.
    private func pointer(_ address: GuestAddress, _ length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        for (index, region) in regions.enumerated() where region.contains(address.rawValue, length) {
            return bases[index] + Int(address.rawValue - region.start.rawValue)
        }
        throw .outOfBounds(address: address.rawValue, length: length)
    }

    /// Bytes of guest RAM the host has actually backed (`mincore`): what the guest and set-up
    /// touched, since the mappings are never pre-faulted.
    public var residentBytes: UInt64 {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        var total: UInt64 = 0
        var vector = [UInt8](repeating: 0, count: 1 << 16)
        for (base, region) in zip(bases, regions) {
            var offset: UInt64 = 0
            while offset < region.size {
                let length = min(region.size - offset, UInt64(vector.count) * page)
                let pages = Int((length + page - 1) / page)
                guard mincore(base + Int(offset), Int(length), &vector) == 0 else { return 0 }
                total += UInt64(vector.prefix(pages).filter { $0 & 1 != 0 }.count) * page
                offset += length
            }
        }
        return total
    }

    // MARK: Bytes

    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try pointer(address, UInt64(bytes.count))
        var offset = 0
        for byte in bytes { target.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self); offset += 1 }
    }

    /// Copies `bytes[range]` of a file image into guest memory: the fast path for kernel loading.
    public func write(_ bytes: [UInt8], range: Range<Int>, at address: GuestAddress) throws(GuestMemoryError) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count, "range outside the source")
        let target = try pointer(address, UInt64(range.count))
        bytes.withUnsafeBytes { source in
            // unsafe: both ranges were bounds-checked just above.
            target.copyMemory(from: source.baseAddress! + range.lowerBound, byteCount: range.count)
        }
    }

    public func fill(_ byte: UInt8, at address: GuestAddress, count: UInt64) throws(GuestMemoryError) {
        let target = try pointer(address, count)
        memset(target, Int32(byte), Int(count))
    }

    public func read(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(address: address.rawValue, length: 0) }
        let source = try pointer(address, UInt64(count))
        return [UInt8](UnsafeRawBufferPointer(start: source, count: count))
    }

    /// Reads a NUL-terminated string of at most `limit` bytes (the NUL not counted).
    public func readCString(at address: GuestAddress, limit: Int) throws(GuestMemoryError) -> [UInt8] {
        var bytes: [UInt8] = []
        var cursor = address
        while bytes.count < limit {
            let byte: UInt8 = try load(at: cursor)
            if byte == 0 { return bytes }
            bytes.append(byte)
            guard let next = cursor.adding(1) else { break }
            cursor = next
        }
        return bytes
    }

    // MARK: Integers (little-endian, unaligned allowed)

    public func load<T: FixedWidthInteger>(at address: GuestAddress, as type: T.Type = T.self) throws(GuestMemoryError) -> T {
        let source = try pointer(address, UInt64(MemoryLayout<T>.size))
        return T(littleEndian: source.loadUnaligned(as: T.self))
    }

    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try pointer(address, UInt64(MemoryLayout<T>.size))
        target.storeBytes(of: value.littleEndian, as: T.self)
    }

    // MARK: Ordered access (virtqueue rings, VIRTIO 1.2 §2.7.13)

    /// Loads a ring index or descriptor field, then orders every later load after it (acquire):
    /// what the driver wrote before publishing this value is seen.
    public func loadAcquire<T: FixedWidthInteger>(at address: GuestAddress, as type: T.Type = T.self) throws(GuestMemoryError) -> T {
        let value: T = try load(at: address)
        atomicMemoryFence(ordering: .acquiring)
        return value
    }

    /// Orders every earlier store before this one (release), then stores: the driver sees what
    /// was written before it sees this value (a used-ring index, say).
    public func storeRelease<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        atomicMemoryFence(ordering: .releasing)
        try store(value, at: address)
    }

    /// A full fence: stores before it are visible before loads after it (a device publishing a
    /// used index and then reading the driver's event index, §2.7.10).
    public func fence() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    // MARK: Scatter-gather file I/O, straight to and from guest memory

    /// Reads from `fd` at `offset` into the guest ranges, in order (preadv). Returns the bytes
    /// read (short at end of file) or -errno. Every range is checked first; nothing is read if one
    /// is outside RAM.
    public func read(from fd: Int32, offset: Int64, into ranges: [(GuestAddress, UInt32)]) throws(GuestMemoryError) -> Int {
        try vectored(ranges) { vectors, done in preadv(fd, vectors.baseAddress, Int32(vectors.count), Int(offset) + done) }
    }

    /// Writes the guest ranges, in order, to `fd` at `offset` (pwritev). Returns the bytes
    /// written or -errno.
    public func write(to fd: Int32, offset: Int64, from ranges: [(GuestAddress, UInt32)]) throws(GuestMemoryError) -> Int {
        try vectored(ranges) { vectors, done in pwritev(fd, vectors.baseAddress, Int32(vectors.count), Int(offset) + done) }
    }

    /// Runs `call` over iovecs for checked ranges (at most IOV_MAX per call, looping over more;
    /// `call` gets the bytes already transferred, to advance its file offset).
    private func vectored(_ ranges: [(GuestAddress, UInt32)],
                          _ call: (UnsafeBufferPointer<iovec>, Int) -> Int) throws(GuestMemoryError) -> Int {
        var vectors: [iovec] = []
        vectors.reserveCapacity(ranges.count)
        for (address, length) in ranges where length > 0 {
            // unsafe: the range was bounds-checked by `pointer`; the iovec only lives for the call.
            vectors.append(iovec(iov_base: try pointer(address, UInt64(length)), iov_len: Int(length)))
        }
        var total = 0
        var start = 0
        while start < vectors.count {
            let end = min(vectors.count, start + 1024)
            let wanted = vectors[start..<end].reduce(0) { $0 + $1.iov_len }
            let done = vectors[start..<end].withUnsafeBufferPointer { call($0, total) }
            if done < 0 { return total > 0 ? total : -Int(errno) }
            total += done
            if done < wanted { break }
            start = end
        }
        return total
    }
}

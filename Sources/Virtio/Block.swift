import CSwiftletSystem
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A disk image that cannot back a block device, naming the file and what to fix.
public struct BlockFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// The block device (VIRTIO 1.2 §5.2) over a raw image file: one request queue; reads, writes,
/// flush (`fdatasync`), GET_ID (the drive's id), discard and write-zeroes. A read-only drive offers
/// `VIRTIO_BLK_F_RO` and fails writes with `VIRTIO_BLK_S_IOERR`; requests past the end and host
/// I/O errors are `VIRTIO_BLK_S_IOERR`, never a VMM failure.
public final class BlockDevice: VirtioDevice {
    public static let sectorSize = 512
    public static let queueSize: UInt16 = 256

    /// Feature bits (§5.2.3).
    public enum Feature {
        public static let segMax: UInt64 = 1 << 2, readOnly: UInt64 = 1 << 5, blockSize: UInt64 = 1 << 6
        public static let flush: UInt64 = 1 << 9, discard: UInt64 = 1 << 13, writeZeroes: UInt64 = 1 << 14
    }

    /// Request types and statuses (§5.2.6).
    public enum Request {
        public static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
        public static let discard: UInt32 = 11, writeZeroes: UInt32 = 13
    }
    public enum Status {
        public static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2
    }

    /// At most this many sectors per discard or write-zeroes segment, one segment per request.
    static let maxZeroSectors: UInt32 = 1 << 16

    /// The backing file, replaceable while the VM runs (`replace(path:)`).
    struct Backing {
        var fd: Int32
        var path: String
        /// Capacity in 512-byte sectors.
        var sectors: UInt64
    }

    public let id: String
    public let readOnly: Bool
    let backing: Mutex<Backing>

    public var path: String { backing.withLock { $0.path } }
    public var sectors: UInt64 { backing.withLock { $0.sectors } }

    /// Opens `path` (read-only if asked). Its size must be a whole number of 512-byte sectors.
    public init(path: String, readOnly: Bool = false, id: String) throws(BlockFileError) {
        let (fd, sectors) = try Self.open(path, readOnly: readOnly)
        self.id = id
        self.readOnly = readOnly
        backing = Mutex(Backing(fd: fd, path: path, sectors: sectors))
    }

    deinit { backing.withLock { close($0.fd) } }

    static func open(_ path: String, readOnly: Bool) throws(BlockFileError) -> (Int32, UInt64) {
        let fd = Glibc.open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else {
            throw BlockFileError(path: path, problem: "cannot open the drive's file: \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw BlockFileError(path: path, problem: "not a regular file (a raw disk image is needed)")
        }
        guard info.st_size % Int(sectorSize) == 0 else {
            close(fd)
            throw BlockFileError(path: path, problem: "its size, \(info.st_size) bytes, is not a multiple of 512; pad it (truncate -s %512 FILE)")
        }
        return (fd, UInt64(info.st_size) / UInt64(sectorSize))
    }

    /// Puts another image behind the drive (Firecracker's `PATCH /drives`): requests after this
    /// go to the new file; the capacity is the new file's. The caller tells the driver the
    /// configuration changed (`MMIOTransport.configurationChanged`).
    public func replace(path: String) throws(BlockFileError) {
        let (fd, sectors) = try Self.open(path, readOnly: readOnly)
        let old = backing.withLock { b -> Int32 in
            defer { b = Backing(fd: fd, path: path, sectors: sectors) }
            return b.fd
        }
        close(old)
    }

    public var deviceID: UInt32 { 2 }
    public var deviceFeatures: UInt64 {
        Feature.segMax | Feature.blockSize | Feature.flush | Feature.discard | Feature.writeZeroes | (readOnly ? Feature.readOnly : 0)
    }
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }
    public func activate(features: UInt64) {}
    public func reset() {}

    /// `struct virtio_blk_config` (§5.2.4) up to the write-zeroes fields.
    public func readConfig(offset: Int, size: Int) -> UInt32 {
        var bytes = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ value: T, _ at: Int) {
            for i in 0..<MemoryLayout<T>.size { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        put(sectors, 0)                                  // capacity
        put(UInt32(Self.queueSize - 2), 12)              // seg_max
        put(UInt32(Self.sectorSize), 20)                 // blk_size
        put(UInt16(1), 34)                               // num_queues
        put(Self.maxZeroSectors, 36)                     // max_discard_sectors
        put(UInt32(1), 40)                               // max_discard_seg
        put(UInt32(1), 44)                               // discard_sector_alignment
        put(Self.maxZeroSectors, 48)                     // max_write_zeroes_sectors
        put(UInt32(1), 52)                               // max_write_zeroes_seg
        bytes[56] = 1                                    // write_zeroes_may_unmap
        return Self.configValue(bytes, offset: offset, size: size)
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        while let chain = try queue.pop(from: memory) {
            let written = serve(chain, memory: memory)
            try queue.push(head: chain.head, written: written, to: memory)
            used = true
        }
        return used
    }

    /// One request: the header from the readable part, the status into the last writable byte.
    /// Returns the bytes written into the chain (for the used ring).
    func serve(_ chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        // The status byte is the last byte of the device-writable part (§5.2.6).
        guard let last = chain.writable.last, last.length > 0 else { return 0 }   // nowhere to answer
        let statusAddress = GuestAddress(last.address.rawValue + UInt64(last.length) - 1)
        var data = chain.writable
        data[data.count - 1].length -= 1
        data.removeAll { $0.length == 0 }
        let header = DescriptorChain.gather(chain.readable, count: 16, memory: memory)
        let (status, dataWritten): (UInt8, Int)
        if header.count < 16 {
            (status, dataWritten) = (Status.ioError, 0)
        } else {
            let type = Self.le32(header, 0)
            let sector = Self.le64(header, 8)
            let payload = Self.drop(16, from: chain.readable)
            (status, dataWritten) = perform(type: type, sector: sector, payload: payload, data: data, memory: memory)
        }
        try? memory.store(status, at: statusAddress)
        return UInt32(dataWritten + 1)
    }

    private func perform(type: UInt32, sector: UInt64, payload: [(address: GuestAddress, length: UInt32)],
                         data: [(address: GuestAddress, length: UInt32)], memory: GuestMemory) -> (UInt8, Int) {
        switch type {
        case Request.read:
            // Data the device should write, offered read-only: the request fails (§5.2.6.1).
            guard payload.isEmpty else { return (Status.ioError, 0) }
            let length = data.reduce(0) { $0 + Int($1.length) }
            guard inRange(sector, bytes: length) else { return (Status.ioError, 0) }
            let done = backing.withLock { b in (try? memory.read(from: b.fd, offset: Int64(sector) * 512, into: data.map { ($0.address, $0.length) })) ?? -1 }
            return done == length ? (Status.ok, length) : (Status.ioError, max(0, done))
        case Request.write:
            guard !readOnly, data.isEmpty else { return (Status.ioError, 0) }   // data must be device-readable
            let length = payload.reduce(0) { $0 + Int($1.length) }
            guard inRange(sector, bytes: length) else { return (Status.ioError, 0) }
            let done = backing.withLock { b in (try? memory.write(to: b.fd, offset: Int64(sector) * 512, from: payload.map { ($0.address, $0.length) })) ?? -1 }
            return (done == length ? Status.ok : Status.ioError, 0)
        case Request.flush:
            guard !readOnly else { return (Status.ok, 0) }
            return (backing.withLock { fdatasync($0.fd) } == 0 ? Status.ok : Status.ioError, 0)
        case Request.getID:
            // VIRTIO_BLK_ID_BYTES: 20, NUL-padded when shorter.
            var bytes = Array(id.utf8.prefix(20))
            bytes += [UInt8](repeating: 0, count: 20 - bytes.count)
            var written = 0
            for (address, length) in data where written < bytes.count {
                let n = min(Int(length), bytes.count - written)
                guard (try? memory.write(bytes[written..<(written + n)], at: address)) != nil else { return (Status.ioError, written) }
                written += n
            }
            return (Status.ok, written)
        case Request.discard, Request.writeZeroes:
            guard !readOnly else { return (Status.ioError, 0) }
            let segment = DescriptorChain.gather(payload, count: 16, memory: memory)
            guard segment.count == 16, payload.reduce(0, { $0 + Int($1.length) }) == 16 else { return (Status.ioError, 0) }
            let start = Self.le64(segment, 0), count = Self.le32(segment, 8), flags = Self.le32(segment, 12)
            if flags & ~1 != 0 { return (Status.unsupported, 0) }                      // reserved bits
            if type == Request.discard && flags != 0 { return (Status.unsupported, 0) }  // unmap is for write-zeroes
            guard count <= Self.maxZeroSectors, inRange(start, bytes: Int(count) * 512) else { return (Status.ioError, 0) }
            return (zero(from: start, sectors: count, punch: type == Request.discard || flags & 1 != 0) ? Status.ok : Status.ioError, 0)
        default:
            return (Status.unsupported, 0)
        }
    }

    private func inRange(_ sector: UInt64, bytes: Int) -> Bool {
        guard bytes % Self.sectorSize == 0 else { return false }
        let (end, overflow) = sector.addingReportingOverflow(UInt64(bytes / Self.sectorSize))
        return !overflow && end <= sectors
    }

    /// Zeroes sectors: a hole punched where the host's file system can (the range reads as
    /// zeros after), otherwise zeros written.
    private func zero(from sector: UInt64, sectors count: UInt32, punch: Bool) -> Bool {
        backing.withLock { b in
            let fd = b.fd
            let offset = Int(sector) * 512, length = Int(count) * 512
            if punch && cswiftlet_punch_hole(fd, Int64(offset), Int64(length)) == 0 { return true }
            let zeros = [UInt8](repeating: 0, count: min(length, 1 << 20))
            var done = 0
            while done < length {
                let n = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, min(zeros.count, length - done), offset + done) }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
    }

    // MARK: Bytes across segments

    /// The segments after their first `count` bytes.
    static func drop(_ count: Int, from segments: [(address: GuestAddress, length: UInt32)]) -> [(address: GuestAddress, length: UInt32)] {
        var left = count
        var rest: [(address: GuestAddress, length: UInt32)] = []
        for (address, length) in segments {
            if left >= Int(length) { left -= Int(length); continue }
            rest.append((GuestAddress(address.rawValue + UInt64(left)), length - UInt32(left)))
            left = 0
        }
        return rest
    }

    static func le32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
    static func le64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
}

import GuestMemory
import Testing
@testable import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// The block device through the transport, driven by the test driver: requests laid out as §5.2.6
/// says (a 16-byte header, data, a status byte), against a temporary image of known content.
@Suite("virtio-blk")
struct BlockTests {
    static let header: UInt64 = 0x10000, data: UInt64 = 0x11000, status: UInt64 = 0x13000

    /// An image of `sectors` sectors, sector n filled with byte n.
    static func image(sectors: Int, extra: Int = 0) throws -> String {
        let path = "/tmp/swiftlet-blk-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        var bytes: [UInt8] = []
        for n in 0..<sectors { bytes += [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: 512) }
        bytes += [UInt8](repeating: 0xEE, count: extra)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return path
    }

    /// Sends one request: header, then `out` bytes (device-readable) or `inLength` bytes of
    /// device-writable data, then the status byte. Returns (status, used length).
    static func request(_ d: inout TestDriver, type: UInt32, sector: UInt64, out: [UInt8] = [], inLength: UInt32 = 0) throws -> (UInt8, UInt32) {
        try d.memory.store(type, at: GuestAddress(header))
        try d.memory.store(UInt32(0), at: GuestAddress(header + 4))
        try d.memory.store(sector, at: GuestAddress(header + 8))
        try d.memory.store(UInt8(0xFF), at: GuestAddress(status))
        var index: UInt16 = 0
        try d.descriptor(index, address: header, length: 16, flags: TestDriver.next, next: index + 1); index += 1
        if !out.isEmpty {
            try d.memory.write(out, at: GuestAddress(data))
            try d.descriptor(index, address: data, length: UInt32(out.count), flags: TestDriver.next, next: index + 1); index += 1
        }
        if inLength > 0 {
            try d.descriptor(index, address: data, length: inLength, flags: TestDriver.write | TestDriver.next, next: index + 1); index += 1
        }
        try d.descriptor(index, address: status, length: 1, flags: TestDriver.write)
        let before = try d.usedIndex()
        try d.offer(0)
        #expect(try d.usedIndex() == before &+ 1)
        let entry = try d.usedEntry(Int(before % d.size))
        return (try d.memory.load(at: GuestAddress(status)), entry.length)
    }

    func driver(_ device: BlockDevice) throws -> TestDriver {
        let d = try TestDriver(device: device)
        d.start(features: VirtioFeature.version1 | device.deviceFeatures)
        #expect(!d.needsReset)
        return d
    }

    @Test func configurationSpace() throws {
        let device = try BlockDevice(path: try Self.image(sectors: 40), id: "rootfs")
        defer { unlink(device.path) }
        let d = try driver(device)
        #expect(d.transport.read(offset: 0x100, size: 4) == 40)          // capacity (low)
        #expect(d.transport.read(offset: 0x104, size: 4) == 0)           // capacity (high)
        #expect(d.transport.read(offset: 0x100 + 20, size: 4) == 512)    // blk_size
        #expect(d.transport.read(offset: 0x100 + 34, size: 2) == 1)      // num_queues
        #expect(d.transport.read(offset: 0x100, size: 1) == 40)          // byte access
        #expect(d.reg(0x008) == 2)
    }

    @Test func readsWritesAndFlush() throws {
        let device = try BlockDevice(path: try Self.image(sectors: 16), id: "data")
        defer { unlink(device.path) }
        var d = try driver(device)
        var (status, used) = try Self.request(&d, type: BlockDevice.Request.read, sector: 3, inLength: 1024)
        #expect(status == BlockDevice.Status.ok && used == 1025)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 1024) == [UInt8](repeating: 3, count: 512) + [UInt8](repeating: 4, count: 512))
        (status, used) = try Self.request(&d, type: BlockDevice.Request.write, sector: 5, out: [UInt8](repeating: 0xAB, count: 512))
        #expect(status == BlockDevice.Status.ok && used == 1)
        (status, _) = try Self.request(&d, type: BlockDevice.Request.flush, sector: 0)
        #expect(status == BlockDevice.Status.ok)
        (status, _) = try Self.request(&d, type: BlockDevice.Request.read, sector: 5, inLength: 512)
        #expect(status == BlockDevice.Status.ok)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 512) == [UInt8](repeating: 0xAB, count: 512))
    }

    @Test func pastTheEndAndPartialSectorsAreIOErrors() throws {
        let device = try BlockDevice(path: try Self.image(sectors: 4), id: "x")
        defer { unlink(device.path) }
        var d = try driver(device)
        #expect(try Self.request(&d, type: BlockDevice.Request.read, sector: 3, inLength: 1024).0 == BlockDevice.Status.ioError)
        #expect(try Self.request(&d, type: BlockDevice.Request.read, sector: UInt64.max, inLength: 512).0 == BlockDevice.Status.ioError)
        #expect(try Self.request(&d, type: BlockDevice.Request.read, sector: 0, inLength: 100).0 == BlockDevice.Status.ioError)
        #expect(try Self.request(&d, type: BlockDevice.Request.write, sector: 4, out: [UInt8](repeating: 1, count: 512)).0 == BlockDevice.Status.ioError)
        #expect(try Self.request(&d, type: 99, sector: 0).0 == BlockDevice.Status.unsupported)
        #expect(!d.needsReset, "request errors are the request's, not the device's")
    }

    @Test func readOnlyDrivesRefuseWrites() throws {
        let path = try Self.image(sectors: 4)
        defer { unlink(path) }
        let device = try BlockDevice(path: path, readOnly: true, id: "ro")
        #expect(device.deviceFeatures & BlockDevice.Feature.readOnly != 0)
        var d = try driver(device)
        #expect(try Self.request(&d, type: BlockDevice.Request.write, sector: 0, out: [UInt8](repeating: 9, count: 512)).0 == BlockDevice.Status.ioError)
        #expect(try Self.request(&d, type: BlockDevice.Request.read, sector: 0, inLength: 512).0 == BlockDevice.Status.ok)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 4) == [0, 0, 0, 0], "the write did not happen")
    }

    @Test func getIDAndZeroing() throws {
        let device = try BlockDevice(path: try Self.image(sectors: 8), id: "swiftlet-disk-1")
        defer { unlink(device.path) }
        var d = try driver(device)
        var (status, used) = try Self.request(&d, type: BlockDevice.Request.getID, sector: 0, inLength: 20)
        #expect(status == BlockDevice.Status.ok && used == 21)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 20) == Array("swiftlet-disk-1".utf8) + [0, 0, 0, 0, 0])
        // write-zeroes of sectors 2 and 3 (with unmap), then read them back.
        var segment = [UInt8](repeating: 0, count: 16)
        segment[0] = 2; segment[8] = 2; segment[12] = 1
        (status, _) = try Self.request(&d, type: BlockDevice.Request.writeZeroes, sector: 0, out: segment)
        #expect(status == BlockDevice.Status.ok)
        (status, _) = try Self.request(&d, type: BlockDevice.Request.read, sector: 1, inLength: 2048)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 2048)
                == [UInt8](repeating: 1, count: 512) + [UInt8](repeating: 0, count: 1024) + [UInt8](repeating: 4, count: 512))
        // discard with the unmap flag is not a thing (§5.2.6.2).
        (status, _) = try Self.request(&d, type: BlockDevice.Request.discard, sector: 0, out: segment)
        #expect(status == BlockDevice.Status.unsupported)
        segment[12] = 0
        (status, _) = try Self.request(&d, type: BlockDevice.Request.discard, sector: 0, out: segment)
        #expect(status == BlockDevice.Status.ok)
    }

    /// A read whose data buffer is device-readable, or a write whose data is device-writable:
    /// the request fails; the device goes on.
    @Test func dataInTheWrongDirectionFailsTheRequest() throws {
        let path = try Self.image(sectors: 8)
        defer { unlink(path) }
        var d = try driver(try BlockDevice(path: path, id: "d"))
        var (status, _) = try Self.request(&d, type: BlockDevice.Request.read, sector: 0, out: [UInt8](repeating: 0, count: 512))
        #expect(status == BlockDevice.Status.ioError)
        (status, _) = try Self.request(&d, type: BlockDevice.Request.write, sector: 0, inLength: 512)
        #expect(status == BlockDevice.Status.ioError)
        (status, _) = try Self.request(&d, type: BlockDevice.Request.read, sector: 0, inLength: 512)
        #expect(status == BlockDevice.Status.ok)
        #expect(!d.needsReset)
    }

    @Test func aNewBackingFileWhileRunning() throws {
        let first = try Self.image(sectors: 8), second = try Self.image(sectors: 32)
        defer { unlink(first); unlink(second) }
        let device = try BlockDevice(path: first, id: "root")
        var d = try driver(device)
        let generation = d.reg(MMIOTransport.Register.configGeneration)
        try device.replace(path: second)
        d.transport.configurationChanged()
        #expect(d.transport.read(offset: 0x100, size: 4) == 32, "the new capacity")
        #expect(d.reg(MMIOTransport.Register.configGeneration) != generation)
        #expect(d.reg(MMIOTransport.Register.interruptStatus) & MMIOTransport.Interrupt.configChange != 0)
        let (status, _) = try Self.request(&d, type: BlockDevice.Request.read, sector: 20, inLength: 512)
        #expect(status == BlockDevice.Status.ok)
        #expect(try d.memory.read(at: GuestAddress(Self.data), count: 1) == [20])
        // A bad file leaves the old one in place.
        #expect(throws: BlockFileError.self) { try device.replace(path: "/nonexistent.img") }
        #expect(device.path == second && device.sectors == 32)
    }

    @Test func imagesMustBeWholeSectors() throws {
        let path = try Self.image(sectors: 2, extra: 100)
        defer { unlink(path) }
        #expect(throws: BlockFileError.self) { _ = try BlockDevice(path: path, id: "x") }
        do { _ = try BlockDevice(path: path, id: "x") } catch {
            #expect(error.description.contains("not a multiple of 512"))
            #expect(error.description.hasPrefix(path))
        }
        #expect(throws: BlockFileError.self) { _ = try BlockDevice(path: "/nonexistent.img", id: "x") }
        #expect(throws: BlockFileError.self) { _ = try BlockDevice(path: "/dev/null", id: "x") }
    }
}

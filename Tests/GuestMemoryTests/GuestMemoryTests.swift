import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import GuestMemory

private let KiB: UInt64 = 1024, MiB: UInt64 = 1024 * KiB, GiB: UInt64 = 1024 * MiB

/// Two regions with a hole between them: [0, 64 KiB) and [128 KiB, 192 KiB).
private func twoRegions() throws -> GuestMemory {
    try GuestMemory(regions: [(start: 0, size: 64 * KiB), (start: 128 * KiB, size: 64 * KiB)])
}

private let lowEnd: UInt64 = 64 * KiB, highStart: UInt64 = 128 * KiB, highEnd: UInt64 = 192 * KiB

@Suite("GuestMemory: layout")
struct GuestMemoryLayoutTests {
    @Test("init maps each region at its start with its size")
    func regionsFromInit() throws {
        let memory = try twoRegions()
        #expect(memory.regions.count == 2)
        #expect(memory.regions.map(\.start) == [GuestAddress(0), GuestAddress(highStart)])
        #expect(memory.regions.map(\.size) == [64 * KiB, 64 * KiB])
        #expect(memory.regions.map(\.end) == [lowEnd, highEnd])
        #expect(memory.size == 128 * KiB)
        #expect(memory.regions.allSatisfy { $0.hostAddress != 0 && $0.hostAddress % 4096 == 0 })
        #expect(memory.regions[0].hostAddress != memory.regions[1].hostAddress)
    }

    @Test("adjacent regions are allowed")
    func adjacentRegions() throws {
        let memory = try GuestMemory(regions: [(start: 0, size: 4096), (start: 4096, size: 4096)])
        #expect(memory.size == 8192)
        #expect(memory.contains(GuestAddress(4095), length: 1))
        #expect(memory.contains(GuestAddress(4096), length: 1))
        #expect(!memory.contains(GuestAddress(4095), length: 2), "an access may not span two regions")
        #expect(throws: GuestMemoryError.outOfBounds(address: 4094, length: 4)) {
            try memory.store(UInt32(0), at: GuestAddress(4094))
        }
    }

    struct Layout: Sendable, CustomTestStringConvertible {
        let name: String
        let regions: [(start: UInt64, size: UInt64)]
        var testDescription: String { name }
    }

    @Test("impossible layouts are refused with .invalidLayout", arguments: [
        Layout(name: "empty", regions: []),
        Layout(name: "zero size", regions: [(0, 0)]),
        Layout(name: "zero size second", regions: [(0, 4096), (8192, 0)]),
        Layout(name: "unaligned start", regions: [(0x800, 4096)]),
        Layout(name: "unaligned size", regions: [(0, 4097)]),
        Layout(name: "unaligned second start", regions: [(0, 4096), (0x2001, 4096)]),
        Layout(name: "overlapping", regions: [(0, 8192), (4096, 4096)]),
        Layout(name: "identical", regions: [(0x10000, 4096), (0x10000, 4096)]),
        Layout(name: "out of order", regions: [(0x10000, 4096), (0, 4096)]),
        Layout(name: "wraps past 2^64", regions: [(0xFFFF_FFFF_FFFF_F000, 0x2000)]),
    ])
    func invalidLayout(layout: Layout) {
        #expect {
            try GuestMemory(regions: layout.regions)
        } throws: { error in
            guard case .invalidLayout = error as? GuestMemoryError else { return false }
            return true
        }
    }

    @Test("a 64 GiB MAP_NORESERVE region is created without committing it")
    func largeSparseRegion() throws {
        let size = 64 * GiB
        let memory = try GuestMemory(regions: [(start: 0, size: size)])
        #expect(memory.size == size)
        try memory.store(UInt8(0xA5), at: GuestAddress(size - 1))
        #expect(try memory.load(at: GuestAddress(size - 1), as: UInt8.self) == 0xA5)
        #expect(try memory.load(at: GuestAddress(size / 2), as: UInt64.self) == 0, "untouched pages read as zero")
        #expect(throws: GuestMemoryError.outOfBounds(address: size, length: 1)) {
            try memory.store(UInt8(0), at: GuestAddress(size))
        }
    }
}

@Suite("GuestMemory: bounds")
struct GuestMemoryBoundsTests {
    @Test("contains() at region boundaries", arguments: [
        (address: UInt64(0), length: UInt64(1), inside: true),
        (0, 64 * KiB, true),                       // the whole low region
        (0, 64 * KiB + 1, false),                  // one byte into the hole
        (lowEnd - 1, 1, true),                     // last byte in
        (lowEnd, 1, false),                        // one past the end
        (lowEnd - 4, 8, false),                    // straddles the end
        (lowEnd, 0, true),                         // zero-length at the end
        (highStart - 1, 1, false),                 // last hole byte
        (highStart - 1, 2, false),                 // straddles into the high region
        (highStart, 1, true),
        (highEnd - 8, 8, true),
        (highEnd - 1, 1, true),
        (highEnd, 1, false),
        (highEnd, 0, true),
        (highEnd + 1, 0, false),                   // zero-length, nowhere near RAM
        (0, highEnd, false),                       // spans the hole
        (UInt64.max, 1, false),
        (UInt64.max, 0, false),
        (UInt64.max - 7, 16, false),               // address + length wraps to 8
        (8, UInt64.max, false),                    // length alone wraps
        (highStart, UInt64.max - highStart + 1, false), // exact 2^64 wrap back to 0
    ])
    func containsBoundaries(address: UInt64, length: UInt64, inside: Bool) throws {
        let memory = try twoRegions()
        #expect(memory.contains(GuestAddress(address), length: length) == inside)
    }

    @Test("a write spanning the hole is refused with .outOfBounds and writes nothing")
    func writeAcrossHoleRefused() throws {
        let memory = try twoRegions()
        let bytes = [UInt8](repeating: 0xCC, count: 16)
        #expect(throws: GuestMemoryError.outOfBounds(address: lowEnd - 8, length: 16)) {
            try memory.write(bytes, at: GuestAddress(lowEnd - 8))
        }
        #expect(try memory.read(at: GuestAddress(lowEnd - 8), count: 8) == [UInt8](repeating: 0, count: 8))
        #expect(throws: GuestMemoryError.outOfBounds(address: 0, length: highEnd)) {
            try memory.fill(0xFF, at: GuestAddress(0), count: highEnd)
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: lowEnd - 4, length: 16)) {
            try memory.write(bytes, range: 0..<16, at: GuestAddress(lowEnd - 4))
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: lowEnd + 16, length: 1)) {
            try memory.write([1], at: GuestAddress(lowEnd + 16))
        }
    }

    @Test("reads past the end of RAM or into the hole are refused", arguments: [
        (address: highEnd - 4, count: 8), (highEnd, 1), (lowEnd - 1, 2), (lowEnd, 1), (UInt64.max, 1),
    ])
    func readPastEndRefused(address: UInt64, count: Int) throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.outOfBounds(address: address, length: UInt64(count))) {
            try memory.read(at: GuestAddress(address), count: count)
        }
    }

    @Test("integer loads and stores past the end are refused")
    func integerPastEndRefused() throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.outOfBounds(address: highEnd - 7, length: 8)) {
            try memory.store(UInt64(1), at: GuestAddress(highEnd - 7))
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: highEnd - 1, length: 2)) {
            try memory.load(at: GuestAddress(highEnd - 1), as: UInt16.self)
        }
        #expect(try memory.load(at: GuestAddress(highEnd - 8), as: UInt64.self) == 0)
    }

    @Test("a negative read count is refused")
    func negativeCount() throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.self) { try memory.read(at: GuestAddress(0), count: -1) }
    }

    @Test("a zero-length read at the end of a region returns no bytes")
    func emptyReadAtEnd() throws {
        let memory = try twoRegions()
        #expect(try memory.read(at: GuestAddress(lowEnd), count: 0) == [])
    }

    @Test("GuestAddress.adding reports wrap-around")
    func addressArithmetic() {
        #expect(GuestAddress(0x1000).adding(0x10) == GuestAddress(0x1010))
        #expect(GuestAddress(UInt64.max - 1).adding(1) == GuestAddress(UInt64.max))
        #expect(GuestAddress(UInt64.max).adding(1) == nil)
        #expect(GuestAddress(0x10).adding(UInt64.max) == nil)
        #expect(GuestAddress(0xFEE0_0000).description == "0xfee00000")
        #expect(GuestAddress(1) < GuestAddress(2))
    }
}

@Suite("GuestMemory: data")
struct GuestMemoryDataTests {
    /// Little-endian round trips at every alignment from 0 to 7, in both regions.
    @Test("integers round-trip little-endian at aligned and unaligned addresses",
          arguments: [UInt64(0x1000), 0x1001, 0x1002, 0x1003, 0x1005, 0x1007, lowEnd - 8, highStart + 3, highEnd - 8])
    func integerRoundTrip(base: UInt64) throws {
        let memory = try twoRegions()
        let address = GuestAddress(base)

        try memory.store(UInt8(0xA7), at: address)
        #expect(try memory.read(at: address, count: 1) == [0xA7])
        #expect(try memory.load(at: address, as: UInt8.self) == 0xA7)

        try memory.store(UInt16(0xBEEF), at: address)
        #expect(try memory.read(at: address, count: 2) == [0xEF, 0xBE])
        #expect(try memory.load(at: address, as: UInt16.self) == 0xBEEF)

        try memory.store(UInt32(0xDEAD_BEEF), at: address)
        #expect(try memory.read(at: address, count: 4) == [0xEF, 0xBE, 0xAD, 0xDE])
        #expect(try memory.load(at: address, as: UInt32.self) == 0xDEAD_BEEF)

        try memory.store(UInt64(0x0123_4567_89AB_CDEF), at: address)
        #expect(try memory.read(at: address, count: 8) == [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01])
        #expect(try memory.load(at: address, as: UInt64.self) == 0x0123_4567_89AB_CDEF)
        #expect(try memory.load(at: address, as: UInt32.self) == 0x89AB_CDEF)
        #expect(try memory.load(at: GuestAddress(base + 4), as: UInt32.self) == 0x0123_4567)
        #expect(try memory.load(at: GuestAddress(base + 1), as: UInt16.self) == 0xABCD)

        try memory.store(Int32(-2), at: address)
        #expect(try memory.read(at: address, count: 4) == [0xFE, 0xFF, 0xFF, 0xFF])
        #expect(try memory.load(at: address, as: Int32.self) == -2)
    }

    @Test("bytes written are read back, and neighbours are untouched")
    func bytesRoundTrip() throws {
        let memory = try twoRegions()
        let bytes: [UInt8] = Array(1...200)
        try memory.write(bytes, at: GuestAddress(highStart + 0x123))
        #expect(try memory.read(at: GuestAddress(highStart + 0x123), count: 200) == bytes)
        #expect(try memory.load(at: GuestAddress(highStart + 0x122), as: UInt8.self) == 0)
        #expect(try memory.load(at: GuestAddress(highStart + 0x123 + 200), as: UInt8.self) == 0)
        #expect(try memory.read(at: GuestAddress(0x123), count: 200) == [UInt8](repeating: 0, count: 200),
                "the same offset in the other region is untouched")
    }

    @Test("write(_:range:at:) copies just the slice")
    func sliceWrite() throws {
        let memory = try twoRegions()
        let image: [UInt8] = Array(0...99)
        try memory.write(image, range: 10..<20, at: GuestAddress(0x2000))
        #expect(try memory.read(at: GuestAddress(0x1FFF), count: 12) == [0] + Array(10..<20) + [0])
        try memory.write(image, range: 5..<5, at: GuestAddress(lowEnd))
    }

    @Test("fill sets exactly count bytes, up to the last byte of a region")
    func fill() throws {
        let memory = try twoRegions()
        try memory.fill(0x5A, at: GuestAddress(0x3000), count: 0x100)
        #expect(try memory.read(at: GuestAddress(0x2FFF), count: 0x102)
                == [0] + [UInt8](repeating: 0x5A, count: 0x100) + [0])
        try memory.fill(0xEE, at: GuestAddress(highEnd - 16), count: 16)
        #expect(try memory.read(at: GuestAddress(highEnd - 17), count: 17) == [0] + [UInt8](repeating: 0xEE, count: 16))
        try memory.fill(0, at: GuestAddress(0x3010), count: 0x10)
        #expect(try memory.read(at: GuestAddress(0x300F), count: 0x12) == [0x5A] + [UInt8](repeating: 0, count: 16) + [0x5A])
    }

    @Test("readCString stops at the NUL and does not include it")
    func cStringWithNul() throws {
        let memory = try twoRegions()
        try memory.write(Array("console=ttyS0\0garbage".utf8), at: GuestAddress(0x2_0000))
        #expect(try memory.readCString(at: GuestAddress(0x2_0000), limit: 100) == Array("console=ttyS0".utf8))
        #expect(try memory.readCString(at: GuestAddress(0x2_0000), limit: 13) == Array("console=ttyS0".utf8))
        try memory.store(UInt8(0), at: GuestAddress(0x4000))
        #expect(try memory.readCString(at: GuestAddress(0x4000), limit: 10) == [])
    }

    @Test("readCString with no NUL within the limit returns exactly limit bytes")
    func cStringWithoutNul() throws {
        let memory = try twoRegions()
        try memory.write(Array("abcdefgh".utf8), at: GuestAddress(0x5000))
        #expect(try memory.readCString(at: GuestAddress(0x5000), limit: 4) == Array("abcd".utf8))
        #expect(try memory.readCString(at: GuestAddress(0x5000), limit: 0) == [])
        #expect(try memory.readCString(at: GuestAddress(0x5000), limit: 8) == Array("abcdefgh".utf8))
    }

    @Test("readCString that runs off the end of a region without a NUL is refused")
    func cStringOffTheEnd() throws {
        let memory = try twoRegions()
        try memory.fill(0x41, at: GuestAddress(lowEnd - 4), count: 4)
        #expect(try memory.readCString(at: GuestAddress(lowEnd - 4), limit: 4) == [0x41, 0x41, 0x41, 0x41])
        #expect(throws: GuestMemoryError.outOfBounds(address: lowEnd, length: 1)) {
            try memory.readCString(at: GuestAddress(lowEnd - 4), limit: 5)
        }
    }

    @Test("errors describe the range involved")
    func errorDescriptions() {
        #expect(GuestMemoryError.outOfBounds(address: 0x1000, length: 0x10).description.contains("0x1000+0x10"))
        #expect(GuestMemoryError.invalidLayout("no RAM regions").description.contains("no RAM regions"))
    }
}

@Suite("guest memory and snapshot files")
struct GuestMemoryFileTests {
    @Test func aMemoryFileRoundTripsPrivately() throws {
        let memory = try GuestMemory(regions: [(0, 0x2000), (0x10000, 0x1000)])
        try memory.write([1, 2, 3], at: GuestAddress(0x1FFD))
        try memory.write([9], at: GuestAddress(0x10000))
        let path = "/tmp/swiftlet-memfile-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd); unlink(path) }
        #expect(memory.writeRegion(0, to: fd, offset: 0) == 0x2000)
        #expect(memory.writeRegion(1, to: fd, offset: 0x2000) == 0x1000)
        let restored = try GuestMemory(regions: [(0, 0x2000), (0x10000, 0x1000)], mappingFile: fd)
        #expect(try restored.read(at: GuestAddress(0x1FFD), count: 3) == [1, 2, 3])
        #expect(try restored.read(at: GuestAddress(0x10000), count: 1) == [9])
        // Copy-on-write: the guest's writes do not reach the file (clones share it).
        try restored.write([7], at: GuestAddress(0x10000))
        let again = try GuestMemory(regions: [(0, 0x2000), (0x10000, 0x1000)], mappingFile: fd)
        #expect(try again.read(at: GuestAddress(0x10000), count: 1) == [9])
    }

    @Test func dirtyPagesOnly() throws {
        let memory = try GuestMemory(regions: [(0, 0x4000)])
        try memory.write([0xAA], at: GuestAddress(0x1000))
        try memory.write([0xBB], at: GuestAddress(0x3000))
        let path = "/tmp/swiftlet-diff-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(fd); unlink(path) }
        #expect(memory.writePages(of: 0, bitmap: [0b0010], to: fd, offset: 0) == 1)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 0x1000) == 1 && byte == 0xAA)
        #expect(pread(fd, &byte, 1, 0x3000) == 0, "page 3 was not dirty")
    }
}

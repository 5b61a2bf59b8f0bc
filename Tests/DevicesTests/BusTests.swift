import Synchronization
import Testing
@testable import Devices

/// A device that records every access it sees and answers reads with a fixed pattern.
final class ProbeDevice: BusDevice {
    struct Access: Equatable, Sendable {
        var isWrite: Bool, offset: UInt64, size: Int, value: UInt64
    }
    private let log = Mutex<[Access]>([])
    let readValue: UInt64
    let stop: GuestRequest?

    init(readValue: UInt64 = 0, stop: GuestRequest? = nil) {
        self.readValue = readValue
        self.stop = stop
    }

    var accesses: [Access] { log.withLock { $0 } }

    func read(offset: UInt64, size: Int) -> UInt64 {
        log.withLock { $0.append(Access(isWrite: false, offset: offset, size: size, value: 0)) }
        return readValue
    }

    func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        log.withLock { $0.append(Access(isWrite: true, offset: offset, size: size, value: value)) }
        return stop
    }
}

@Suite("Bus")
struct BusTests {
    @Test("an unclaimed read returns all-ones of the access size",
          arguments: [(size: 1, value: UInt64(0xFF)), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, 0xFFFF_FFFF_FFFF_FFFF)])
    func unclaimedReadIsAllOnes(size: Int, value: UInt64) throws {
        let probe = ProbeDevice(readValue: 0)
        for kind in [Bus.Kind.port, .mmio] {
            let empty = try Bus(kind, devices: [])
            #expect(empty.read(0x3F8, size: size) == value)
            let bus = try Bus(kind, devices: [(base: 0x100, length: 8, device: probe)])
            #expect(bus.read(0xFF, size: size) == value)
            #expect(bus.read(0x108, size: size) == value)
            #expect(bus.read(0xFFFF_FFFF_FFFF_FFF0, size: size) == value)
        }
        #expect(probe.accesses.isEmpty)
    }

    @Test("allOnes(size) covers the access widths", arguments: [(1, UInt64(0xFF)), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, .max)])
    func allOnes(size: Int, value: UInt64) {
        #expect(Bus.allOnes(size) == value)
    }

    @Test("an unclaimed write is a no-op that returns nil", arguments: [1, 2, 4, 8])
    func unclaimedWrite(size: Int) throws {
        let probe = ProbeDevice(stop: .powerOff(status: 0))
        let bus = try Bus(.port, devices: [(base: 0x500, length: 1, device: probe)])
        #expect(bus.write(0x501, size: size, value: 0) == nil)
        #expect(bus.write(0x4FF, size: 1, value: 0) == nil)
        #expect(probe.accesses.isEmpty)
        #expect(bus.write(0x500, size: 1, value: 0) == .powerOff(status: 0), "the claimed port still answers")
    }

    struct Range: Sendable, CustomTestStringConvertible {
        let first: (UInt64, UInt64), second: (UInt64, UInt64)
        var testDescription: String {
            "0x\(String(first.0, radix: 16))+\(first.1) vs 0x\(String(second.0, radix: 16))+\(second.1)"
        }
    }

    @Test("overlapping registrations are refused, in either order", arguments: [
        Range(first: (0x3F8, 8), second: (0x3FF, 1)),     // last byte shared
        Range(first: (0x3F8, 8), second: (0x3F0, 9)),     // first byte shared
        Range(first: (0x3F8, 8), second: (0x3F8, 8)),     // identical
        Range(first: (0x3F8, 8), second: (0x3FA, 2)),     // contained
        Range(first: (0x1000, 0x1000), second: (0x0, 0x10000)),
    ])
    func overlapThrows(range: Range) {
        let a = ProbeDevice(), b = ProbeDevice()
        for devices in [[(base: range.first.0, length: range.first.1, device: a as any BusDevice),
                         (base: range.second.0, length: range.second.1, device: b as any BusDevice)],
                        [(base: range.second.0, length: range.second.1, device: b as any BusDevice),
                         (base: range.first.0, length: range.first.1, device: a as any BusDevice)]] {
            #expect(throws: Bus.OverlapError.self) { try Bus(.port, devices: devices) }
        }
    }

    @Test("an overlap is found even when a third device sits between in the list")
    func overlapAmongMany() {
        let devices: [(base: UInt64, length: UInt64, device: any BusDevice)] = [
            (0x60, 5, ProbeDevice()), (0x3F8, 8, ProbeDevice()), (0x500, 1, ProbeDevice()), (0x3FC, 1, ProbeDevice()),
        ]
        let error = #expect(throws: Bus.OverlapError.self) { try Bus(.port, devices: devices) }
        #expect(error?.kind == .port)
    }

    @Test("adjacent ranges are allowed and each access reaches the right device")
    func adjacentRanges() throws {
        let low = ProbeDevice(readValue: 0x11), high = ProbeDevice(readValue: 0x22)
        let bus = try Bus(.port, devices: [(base: 0x3F8, length: 8, device: high), (base: 0x3F0, length: 8, device: low)])
        #expect(bus.read(0x3F7, size: 1) == 0x11)
        #expect(bus.read(0x3F8, size: 1) == 0x22)
        #expect(bus.read(0x3FF, size: 1) == 0x22)
        #expect(low.accesses == [.init(isWrite: false, offset: 7, size: 1, value: 0)])
        #expect(high.accesses.map(\.offset) == [0, 7])
    }

    @Test("an access straddling the end of a range is unclaimed",
          arguments: [(address: UInt64(0x3FF), size: 2), (0x3FE, 4), (0x3FD, 4), (0x3F9, 8), (0x3F8, 16)])
    func straddleIsUnclaimed(address: UInt64, size: Int) throws {
        let probe = ProbeDevice(readValue: 0), next = ProbeDevice(readValue: 0)
        let bus = try Bus(.port, devices: [(base: 0x3F8, length: 8, device: probe),
                                           (base: 0x400, length: 8, device: next)])
        #expect(bus.read(address, size: size) == Bus.allOnes(size))
        #expect(bus.write(address, size: size, value: 0) == nil)
        #expect(probe.accesses.isEmpty)
        #expect(next.accesses.isEmpty)
    }

    @Test("an access that ends exactly at the end of a range is claimed",
          arguments: [(address: UInt64(0x3FF), size: 1), (0x3FE, 2), (0x3FC, 4), (0x3F8, 8)])
    func accessEndingAtRangeEnd(address: UInt64, size: Int) throws {
        let probe = ProbeDevice(readValue: 0)
        let bus = try Bus(.mmio, devices: [(base: 0x3F8, length: 8, device: probe)])
        #expect(bus.read(address, size: size) == 0)
        #expect(probe.accesses == [.init(isWrite: false, offset: address - 0x3F8, size: size, value: 0)])
    }

    @Test("devices see offsets relative to their base, and the write value and stop request pass through")
    func relativeOffsets() throws {
        let probe = ProbeDevice(readValue: 0xAB, stop: .reset(source: "probe"))
        let bus = try Bus(.mmio, devices: [(base: 0xFEC0_0000, length: 0x1000, device: probe)])
        #expect(bus.read(0xFEC0_0010, size: 4) == 0xAB)
        #expect(bus.write(0xFEC0_0FF8, size: 8, value: 0x0123_4567_89AB_CDEF) == .reset(source: "probe"))
        #expect(bus.write(0xFEC0_0000, size: 1, value: 0x5A) == .reset(source: "probe"))
        #expect(probe.accesses == [
            .init(isWrite: false, offset: 0x10, size: 4, value: 0),
            .init(isWrite: true, offset: 0xFF8, size: 8, value: 0x0123_4567_89AB_CDEF),
            .init(isWrite: true, offset: 0, size: 1, value: 0x5A),
        ])
    }

    @Test("read results and write values are masked to the access size",
          arguments: [(size: 1, mask: UInt64(0xFF)), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, .max)])
    func masking(size: Int, mask: UInt64) throws {
        let wide: UInt64 = 0xF1E2_D3C4_B5A6_9788
        let probe = ProbeDevice(readValue: wide)
        let bus = try Bus(.port, devices: [(base: 0, length: 8, device: probe)])
        #expect(bus.read(0, size: size) == wide & mask)
        _ = bus.write(0, size: size, value: wide)
        #expect(probe.accesses.last == .init(isWrite: true, offset: 0, size: size, value: wide & mask))
    }

    @Test("the bus keeps its kind, and the overlap error names the range")
    func kindAndError() throws {
        #expect(try Bus(.mmio, devices: []).kind == .mmio)
        let error = #expect(throws: Bus.OverlapError.self) {
            try Bus(.mmio, devices: [(base: 0x1000, length: 0x100, device: ProbeDevice()),
                                     (base: 0x10F0, length: 0x20, device: ProbeDevice())])
        }
        #expect(error?.kind == .mmio)
        #expect(error?.base == 0x10F0)
        #expect(error?.length == 0x20)
        #expect(error?.description.contains("0x10f0") == true)
    }
}

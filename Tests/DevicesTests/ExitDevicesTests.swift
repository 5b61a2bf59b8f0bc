import Testing
@testable import Devices

@Suite("Power-off and debug-exit ports")
struct ExitDevicesTests {
    @Test("PowerOffPort: a write of any width stops with status value & 0xff",
          arguments: [(value: UInt64(0), size: 1, status: UInt8(0)), (1, 1, 1), (0x7F, 1, 0x7F), (0xFF, 1, 0xFF),
                      (0x100, 2, 0), (0x1234, 2, 0x34), (0xDEAD_BE01, 4, 0x01), (0xFFFF_FFFF_FFFF_FF2A, 8, 0x2A)])
    func powerOff(value: UInt64, size: Int, status: UInt8) {
        let port = PowerOffPort()
        #expect(port.write(offset: 0, size: size, value: value) == .powerOff(status: status))
        #expect(port.read(offset: 0, size: size) == 0)
    }

    @Test("PowerOffPort through the bus at its default port")
    func powerOffOnBus() throws {
        let bus = try Bus(.port, devices: [(base: PowerOffPort.defaultPort, length: 1, device: PowerOffPort())])
        #expect(PowerOffPort.defaultPort == 0x500)
        #expect(bus.write(0x500, size: 1, value: 3) == .powerOff(status: 3))
        #expect(bus.read(0x500, size: 1) == 0)
        #expect(bus.write(0x501, size: 1, value: 3) == nil)
    }

    @Test("DebugExitPort.status(for:) is ((v << 1) | 1) & 0xff",
          arguments: [(value: UInt32(0), status: Int32(1)), (1, 3), (0x7F, 0xFF), (0x80, 1), (0x81, 3),
                      (0x10, 0x21), (0xFFFF_FFFF, 0xFF)])
    func debugExitStatus(value: UInt32, status: Int32) {
        #expect(DebugExitPort.status(for: value) == status)
    }

    @Test("DebugExitPort: a write stops with the value (truncated to 32 bits); reads return 0",
          arguments: [(value: UInt64(0), expected: UInt32(0)), (0x31, 0x31), (0xFFFF_FFFF, 0xFFFF_FFFF),
                      (0x1_0000_0002, 2)])
    func debugExitWrite(value: UInt64, expected: UInt32) {
        let port = DebugExitPort()
        #expect(port.write(offset: 0, size: 4, value: value) == .debugExit(value: expected))
        #expect(port.read(offset: 0, size: 4) == 0)
    }

    @Test("DebugExitPort sits at 0xF4, four bytes wide")
    func debugExitLayout() throws {
        #expect(DebugExitPort.defaultPort == 0xF4)
        #expect(DebugExitPort.width == 4)
        let bus = try Bus(.port, devices: [(base: DebugExitPort.defaultPort, length: DebugExitPort.width,
                                            device: DebugExitPort())])
        #expect(bus.write(0xF4, size: 4, value: 0x0000_0010) == .debugExit(value: 0x10))
        #expect(bus.write(0xF4, size: 1, value: 0x1FF) == .debugExit(value: 0xFF), "the bus masks a byte write")
        #expect(bus.write(0xF8, size: 1, value: 1) == nil)
    }
}

/// The fw_cfg subset: selector rewinds, bytes auto-advance, unknown keys and reads past the end are 0.
@Suite("fw_cfg")
struct FirmwareConfigTests {
    let device = FirmwareConfig(items: FirmwareConfig.items(cpus: 3, ramBytes: 5 << 30, commandLine: Array("a=1".utf8)))

    func read(_ key: UInt16, _ count: Int) -> [UInt8] {
        _ = device.write(offset: 0, size: 2, value: UInt64(key))
        return (0..<count).map { _ in UInt8(device.read(offset: 1, size: 1)) }
    }

    @Test func everyKey() {
        #expect(read(0x0000, 6) == Array("QEMU".utf8) + [0, 0])
        #expect(read(0x0001, 4) == [1, 0, 0, 0])
        #expect(read(0x0003, 8) == [0, 0, 0, 0x40, 1, 0, 0, 0])
        #expect(read(0x0005, 2) == [3, 0] && read(0x000F, 2) == [3, 0])
        #expect(read(0x0014, 4) == [4, 0, 0, 0])
        #expect(read(0x0015, 5) == Array("a=1".utf8) + [0, 0])
        #expect(read(0x0019, 4) == [0, 0, 0, 0])
        #expect(read(0x0123, 4) == [0, 0, 0, 0])
    }

    @Test func selectingRewindsAndWiderReadsTakeBytesInTurn() {
        _ = device.write(offset: 0, size: 2, value: 0)
        #expect(device.read(offset: 1, size: 2) == 0x4551)            // "QE"
        #expect(device.read(offset: 1, size: 4) == 0x554D)            // "MU", then past the end
        _ = device.write(offset: 0, size: 1, value: 5)                // not a selector write
        #expect(device.read(offset: 1, size: 1) == 0)
        _ = device.write(offset: 0, size: 2, value: 0x1_0000)         // 16 bits of it count
        #expect(device.read(offset: 1, size: 1) == 0x51)
        #expect(device.read(offset: 0, size: 2) == 0)
    }
}

/// Swiftlet's power-off port (0x500 by default): a write of any width ends the VM with process
/// status `value & 0xff`, so a guest exits 0 for success. Reads return 0.
public final class PowerOffPort: BusDevice {
    public static let defaultPort: UInt64 = 0x500
    /// Accesses of 1, 2 or 4 bytes at the port are all claimed.
    public static let width: UInt64 = 4
    public init() {}
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        .powerOff(status: UInt8(truncatingIfNeeded: value))
    }
}

/// QEMU's isa-debug-exit at port 0xF4 (4 bytes wide): a write of `v` ends the VM with process
/// status `(v << 1) | 1`, so runners written for QEMU read the same result. Reads return 0.
public final class DebugExitPort: BusDevice {
    public static let defaultPort: UInt64 = 0xF4
    public static let width: UInt64 = 4
    public init() {}
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        .debugExit(value: UInt32(truncatingIfNeeded: value))
    }

    /// The process status QEMU gives for a write of `value` (truncated to 8 bits by the OS).
    public static func status(for value: UInt32) -> Int32 {
        Int32(truncatingIfNeeded: ((UInt64(value) << 1) | 1) & 0xFF)
    }
}

/// Swiftlet's checkpoint port (0x504, up to 4 bytes): a write of `label` makes the VMM record
/// every vCPU's MP state under that label (visible in `--report`); the guest then goes on.
public final class CheckpointPort: BusDevice {
    public static let defaultPort: UInt64 = 0x504
    public static let width: UInt64 = 4
    public init() {}
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        .checkpoint(label: UInt32(truncatingIfNeeded: value))
    }
}

/// The ACPI sleep control and status registers of a hardware-reduced FADT (ACPI 6.5, 4.8.3.7),
/// two byte-wide ports: writing SLP_EN (bit 5) with SLP_TYP (bits 4:2) = `poweroffSleepType`
/// to the control register powers the VM off. The status register reads 0 (never woken).
public final class SleepControlPort: BusDevice {
    public static let slpEnable: UInt64 = 1 << 5
    public let poweroffSleepType: UInt64
    public init(poweroffSleepType: UInt8) { self.poweroffSleepType = UInt64(poweroffSleepType) }
    /// Registered over both ports: offset 0 is control, offset 1 status.
    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        guard offset == 0, value & Self.slpEnable != 0, (value >> 2) & 0x7 == poweroffSleepType else { return nil }
        return .acpiPowerOff
    }
}

import Logging

/// What a guest asked the VMM for through a device: all but `checkpoint` end the VM.
public enum GuestRequest: Equatable, Sendable {
    /// Swiftlet's power-off port: the process exits with `status`.
    case powerOff(status: UInt8)
    /// QEMU's isa-debug-exit: the process exits with `(value << 1) | 1`.
    case debugExit(value: UInt32)
    /// A reset request (i8042 pulse, KVM system event).
    case reset(source: String)
    /// ACPI S5 through the FADT sleep control register: a clean power-off (status 0).
    case acpiPowerOff
    /// Swiftlet's checkpoint port: record every vCPU's state under `label`, then go on.
    case checkpoint(label: UInt32)

    /// True for the requests that end the VM.
    public var stopsVM: Bool {
        if case .checkpoint = self { return false }
        return true
    }
}

/// A device on the port or MMIO bus. `offset` is relative to the start of the range the device
/// was registered for; `size` is 1, 2, 4 (or 8 for MMIO). A returned `GuestRequest` goes to the VMM.
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest?
}

/// A port-I/O or MMIO bus: non-overlapping ranges, each owned by one device. An access that no
/// device claims reads as all-ones and is logged at debug level; it is never an error.
public final class Bus: Sendable {
    public enum Kind: String, Sendable { case port, mmio }

    public struct OverlapError: Error, CustomStringConvertible {
        public let kind: Kind, base: UInt64, length: UInt64
        public var description: String {
            "\(kind.rawValue) range 0x\(String(base, radix: 16))+0x\(String(length, radix: 16)) is empty, wraps, or overlaps a registered device"
        }
    }

    struct Entry: Sendable { let base: UInt64; let length: UInt64; let device: any BusDevice }

    public let kind: Kind
    private let entries: [Entry]
    private let logger: Logger

    /// A bus with `devices` registered at their ranges; overlapping ranges are refused.
    public init(_ kind: Kind, devices: [(base: UInt64, length: UInt64, device: any BusDevice)],
                logger: Logger = Logger(label: "swiftlet.bus")) throws(OverlapError) {
        let sorted = devices.sorted { $0.base < $1.base }
        for device in sorted where device.length == 0 || device.base > UInt64.max - (device.length - 1) {
            throw OverlapError(kind: kind, base: device.base, length: device.length)   // empty or wraps
        }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where next.base - previous.base < previous.length {
            throw OverlapError(kind: kind, base: next.base, length: next.length)
        }
        self.kind = kind
        self.entries = sorted.map { Entry(base: $0.base, length: $0.length, device: $0.device) }
        self.logger = logger
    }

    @inline(__always)
    private func find(_ address: UInt64, _ size: Int) -> Entry? {
        for entry in entries where address >= entry.base && address - entry.base < entry.length {
            return UInt64(size) <= entry.length - (address - entry.base) ? entry : nil
        }
        return nil
    }

    /// All-ones of `size` bytes.
    public static func allOnes(_ size: Int) -> UInt64 {
        size >= 8 ? .max : (1 << (8 * UInt64(size))) - 1
    }

    public func read(_ address: UInt64, size: Int) -> UInt64 {
        guard let entry = find(address, size) else {
            logger.debug("unclaimed \(kind.rawValue) read", metadata: ["address": "0x\(String(address, radix: 16))", "size": "\(size)"])
            return Self.allOnes(size)
        }
        return entry.device.read(offset: address - entry.base, size: size) & Self.allOnes(size)
    }

    public func write(_ address: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        guard let entry = find(address, size) else {
            logger.debug("unclaimed \(kind.rawValue) write", metadata: [
                "address": "0x\(String(address, radix: 16))", "size": "\(size)", "value": "0x\(String(value, radix: 16))"])
            return nil
        }
        return entry.device.write(offset: address - entry.base, size: size, value: value & Self.allOnes(size))
    }
}

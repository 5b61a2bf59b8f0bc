import Synchronization

/// A subset of QEMU's firmware configuration device (fw_cfg), legacy I/O interface
/// (QEMU docs/specs/fw_cfg.rst): a 16-bit write to the selector port (0x510) picks an item and
/// rewinds it; each byte read from the data port (0x511) returns the item's next byte, 0 past
/// its end. An unknown key is an empty item, so it reads as zeros. No DMA interface: the ID
/// item says so (bit 0 only), and nothing is writable.
public final class FirmwareConfig: BusDevice {
    public static let selectorPort: UInt64 = 0x510
    /// Selector (2 bytes) and data (1 byte at 0x511); registered as 2 ports from 0x510.
    public static let width: UInt64 = 2

    /// The keys Swiftlet fills (`FW_CFG_*` in QEMU's include/standard-headers/linux/qemu_fw_cfg.h).
    public enum Key: UInt16, Sendable, CaseIterable {
        case signature = 0x0000, id = 0x0001, ramSize = 0x0003, cpuCount = 0x0005, maxCPUs = 0x000F
        case commandLineSize = 0x0014, commandLineData = 0x0015, fileDirectory = 0x0019
    }

    /// The items of a machine with `cpus` vCPUs, `ramBytes` of RAM and this command line:
    /// "QEMU"; ID 1 (traditional interface); RAM size (u64 LE); vCPU count and maximum (u16 LE);
    /// command-line size (u32 LE, the NUL included) and data; an empty file directory (u32 BE 0).
    public static func items(cpus: Int, ramBytes: UInt64, commandLine: [UInt8]) -> [UInt16: [UInt8]] {
        func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
            (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
        }
        let text = commandLine + [0]
        return [
            Key.signature.rawValue: Array("QEMU".utf8),
            Key.id.rawValue: le(UInt32(1)),
            Key.ramSize.rawValue: le(ramBytes),
            Key.cpuCount.rawValue: le(UInt16(truncatingIfNeeded: cpus)),
            Key.maxCPUs.rawValue: le(UInt16(truncatingIfNeeded: cpus)),
            Key.commandLineSize.rawValue: le(UInt32(text.count)),
            Key.commandLineData.rawValue: text,
            Key.fileDirectory.rawValue: [0, 0, 0, 0],
        ]
    }

    private struct Cursor { var key: UInt16 = 0; var offset = 0 }
    private let items: [UInt16: [UInt8]]
    private let cursor = Mutex(Cursor())

    /// The selected key and the offset in it, for a snapshot.
    public var savedState: (selector: UInt16, offset: UInt32) {
        cursor.withLock { (selector: $0.key, offset: UInt32(clamping: $0.offset)) }
    }

    public func restore(selector: UInt16, offset: UInt32) {
        cursor.withLock { $0 = Cursor(key: selector, offset: Int(offset)) }
    }

    public init(items: [UInt16: [UInt8]]) { self.items = items }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 1 else { return 0 }               // the selector reads as 0
        // A wider read at the data port takes that many bytes in turn, lowest first.
        return cursor.withLock { c in
            let item = items[c.key] ?? []
            var value: UInt64 = 0
            for i in 0..<min(max(size, 0), 8) {
                if c.offset < item.count { value |= UInt64(item[c.offset]) << (8 * UInt64(i)) }
                if c.offset < Int.max { c.offset += 1 }
            }
            return value
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        // Only a 16-bit selector write selects, as on QEMU's port; data writes are ignored.
        if offset == 0, size == 2 {
            cursor.withLock { $0 = Cursor(key: UInt16(truncatingIfNeeded: value), offset: 0) }
        }
        return nil
    }
}

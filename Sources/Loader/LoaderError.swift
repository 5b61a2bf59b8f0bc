#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import GuestMemory

/// Everything that can go wrong reading, parsing or loading a kernel image.
///
/// Every case carries the image's path, and `description` is one line that names the path and
/// the field, offset or segment at fault, so that it can be shown to a user as is.
public enum LoaderError: Error, Equatable, CustomStringConvertible {
    /// The file could not be opened or read (`errno` as the system reported it).
    case unreadable(path: String, errno: Int32)
    /// The file exists but holds no bytes.
    case empty(path: String)
    /// A device, pipe or directory: files are read whole, so only regular files are taken (a
    /// path like /dev/zero would otherwise be read until memory runs out).
    case notARegularFile(path: String)
    /// Neither ELF magic at 0 nor "HdrS" at 0x202.
    case notAKernel(path: String)
    /// A structure of the image runs past the end of the file. `format` is "ELF" or "bzImage",
    /// `what` names the structure ("program header 3", "ELF header", "SHT_NOTE section 12", ...).
    case truncated(path: String, format: String, what: String, offset: UInt64, fileSize: UInt64)
    /// A header field holds a value this loader does not accept.
    case unsupported(path: String, format: String, field: String, value: UInt64, expected: String)
    /// A note's `namesz` or `descsz` runs past the end of the segment or section holding it.
    case impossibleNoteSize(path: String, offset: UInt64, field: String, size: UInt64, available: UInt64, xen: Bool)
    /// Fewer than the 12 bytes of a note header are left at the end of a note segment or section.
    case truncatedNoteHeader(path: String, offset: UInt64, available: UInt64)
    /// A program header is self-contradictory (e.g. `p_filesz > p_memsz`).
    case invalidSegment(path: String, index: Int, why: String)
    /// No boot protocol can start this image.
    case noUsableEntry(path: String, why: String)
    /// The boot protocol asked for cannot start this image.
    case protocolUnavailable(path: String, requested: BootProtocol, why: String)
    /// An ELF image without a single `PT_LOAD` segment of non-zero size.
    case noLoadableSegments(path: String)
    /// For xen64: `p_paddr - XEN_ELFNOTE_PADDR_OFFSET` would be negative.
    case paddrUnderflow(path: String, index: Int, physicalAddress: UInt64, paddrOffset: UInt64)
    /// A segment (`index` nil: the bzImage protected-mode kernel) starts below the load floor.
    case belowFloor(path: String, index: Int?, start: UInt64, size: UInt64, floor: UInt64)
    /// A segment (`index` nil: the bzImage protected-mode kernel) is not wholly inside guest RAM.
    case outsideMemory(path: String, index: Int?, start: UInt64, size: UInt64, memorySize: UInt64)
    /// Two load segments would occupy the same guest physical bytes.
    case segmentsOverlap(path: String, first: Int, firstStart: UInt64, firstSize: UInt64,
                         second: Int, secondStart: UInt64, secondSize: UInt64)
    /// Guest memory refused a write that the loader had already checked (should not happen).
    case memory(path: String, GuestMemoryError)

    public var description: String {
        switch self {
        case let .unreadable(path, errno):
            return "\(path): cannot read kernel image: \(String(cString: strerror(errno)))"
        case let .empty(path):
            return "\(path): kernel image is empty (0 bytes)"
        case let .notARegularFile(path):
            return "\(path): not a regular file (kernels, initrds and modules are read whole, so devices, pipes and directories are refused)"
        case let .notAKernel(path):
            return "\(path): not an ELF or bzImage kernel (no ELF magic, no HdrS header at 0x202)"
        case let .truncated(path, format, what, offset, fileSize):
            return "\(path): truncated \(format): \(what) at offset \(hex(offset)) runs past the end of the file (size \(hex(fileSize)))"
        case let .unsupported(path, format, field, value, expected):
            return "\(path): unsupported \(format): \(field) is \(hex(value)) (expected \(expected))"
        case let .impossibleNoteSize(path, offset, field, size, available, xen):
            return "\(path): \(xen ? "Xen note" : "note") at offset \(hex(offset)) has an impossible size (\(field) \(hex(size)), only \(hex(available)) bytes left in its segment or section)"
        case let .truncatedNoteHeader(path, offset, available):
            return "\(path): note header at offset \(hex(offset)) is cut off: only \(available) of its 12 bytes are left in its segment or section"
        case let .invalidSegment(path, index, why):
            return "\(path): invalid ELF program header \(index): \(why)"
        case let .noUsableEntry(path, why):
            return "\(path): no usable entry point: \(why)"
        case let .protocolUnavailable(path, requested, why):
            return "\(path): cannot boot with --boot \(requested.rawValue): \(why)"
        case let .noLoadableSegments(path):
            return "\(path): ELF image has no PT_LOAD segment with a non-zero size"
        case let .paddrUnderflow(path, index, physicalAddress, paddrOffset):
            return "\(path): segment \(index) p_paddr \(hex(physicalAddress)) is below XEN_ELFNOTE_PADDR_OFFSET \(hex(paddrOffset))"
        case let .belowFloor(path, index, start, size, floor):
            return "\(path): \(Self.name(index)) \(Self.range(start, size)) starts below the lowest loadable address \(hex(floor))"
        case let .outsideMemory(path, index, start, size, memorySize):
            return "\(path): \(Self.name(index)) \(Self.range(start, size)) is outside guest memory (\(Self.amount(memorySize)))"
        case let .segmentsOverlap(path, first, firstStart, firstSize, second, secondStart, secondSize):
            return "\(path): segment \(second) \(Self.range(secondStart, secondSize)) overlaps segment \(first) \(Self.range(firstStart, firstSize))"
        case let .memory(path, error):
            return "\(path): \(error)"
        }
    }

    /// The path of the image the error is about.
    public var path: String {
        switch self {
        case let .unreadable(path, _), let .empty(path), let .notARegularFile(path), let .notAKernel(path),
             let .truncated(path, _, _, _, _), let .unsupported(path, _, _, _, _),
             let .impossibleNoteSize(path, _, _, _, _, _), let .truncatedNoteHeader(path, _, _),
             let .invalidSegment(path, _, _), let .noUsableEntry(path, _),
             let .protocolUnavailable(path, _, _), let .noLoadableSegments(path),
             let .paddrUnderflow(path, _, _, _), let .belowFloor(path, _, _, _, _),
             let .outsideMemory(path, _, _, _, _), let .segmentsOverlap(path, _, _, _, _, _, _),
             let .memory(path, _):
            return path
        }
    }

    private static func name(_ index: Int?) -> String {
        index.map { "segment \($0)" } ?? "protected-mode kernel"
    }

    /// `[start, end)`, with an end past 2^64 written out rather than wrapped.
    private static func range(_ start: UInt64, _ size: UInt64) -> String {
        let (end, overflow) = start.addingReportingOverflow(size)
        return "[\(hex(start)), \(overflow ? "2^64+" + hex(end) : hex(end)))"
    }

    /// A RAM size in MiB when it is a whole number of MiB, else in hex bytes.
    private static func amount(_ bytes: UInt64) -> String {
        bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(hex(bytes)) bytes"
    }
}

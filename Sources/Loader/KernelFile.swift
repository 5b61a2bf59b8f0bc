#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The bytes of a kernel image and the path they came from (kept for error messages).
public struct KernelFile: Sendable {
    public let path: String
    public let bytes: [UInt8]

    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }

    /// Reads the whole file. A missing or unreadable file throws `.unreadable` with the errno;
    /// an empty one throws `.empty`.
    public static func read(path: String) throws(LoaderError) -> KernelFile {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch {
            throw .unreadable(path: path, errno: errnoValue(error))
        }
        defer { try? descriptor.close() }
        var info = stat()
        guard fstat(descriptor.rawValue, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw .notARegularFile(path: path)
        }

        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count: Int
            do {
                // read(into:) retries on EINTR itself.
                count = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
            } catch {
                throw .unreadable(path: path, errno: errnoValue(error))
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        guard !bytes.isEmpty else { throw .empty(path: path) }
        return KernelFile(path: path, bytes: bytes)
    }

    private static func errnoValue(_ error: any Error) -> Int32 {
        (error as? Errno)?.rawValue ?? Errno.ioError.rawValue
    }
}

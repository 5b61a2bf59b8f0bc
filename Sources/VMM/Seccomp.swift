import CSwiftletSystem
#if canImport(Glibc)
import Glibc
#endif

/// The syscall filter installed once the VM is built and its threads are running (README,
/// Security): every thread of the process gets it (TSYNC); a call outside the list raises SIGSYS,
/// and the handler names the call and exits with status 1. The list is in seccomp.c.
public enum SyscallFilter {
    public struct InstallError: Error, CustomStringConvertible {
        public let errno: Int32
        public var description: String {
            "could not install the seccomp filter: \(String(cString: strerror(errno))); run with --no-seccomp on a kernel without seccomp"
        }
    }

    /// A sanitizer build: the sanitizer runtimes make calls (their own threads, shadow memory,
    /// reports) that the filter forbids, so `Machine` leaves it off there and says so.
    public static var sanitizedBuild: Bool { cswiftlet_sanitized_build() != 0 }

    /// Installs the filter on every thread of this process; `serveAPI` adds what the API
    /// server's connections need (`apiAllowed`); `unixConnect`, connecting to Unix sockets
    /// (vsock: `socket(AF_UNIX, ...)` and `connect`; other families stay forbidden). Irreversible.
    public static func install(serveAPI: Bool = false, unixConnect: Bool = false) throws(InstallError) {
        let result = cswiftlet_seccomp_install(serveAPI ? 1 : 0, unixConnect ? 1 : 0)
        if result != 0 { throw InstallError(errno: -result) }
    }

    /// The allowed system-call numbers (x86-64).
    public static var allowed: [Int32] {
        (0..<cswiftlet_seccomp_allowed_count()).map { cswiftlet_seccomp_allowed_at($0) }
    }

    /// The calls the API server adds.
    public static var apiAllowed: [Int32] {
        (0..<cswiftlet_seccomp_api_allowed_count()).map { cswiftlet_seccomp_api_allowed_at($0) }
    }

    /// Makes a call the filter forbids (socket(2)): with the filter on, the process ends with
    /// status 1 and a message; without it, the socket is made and closed. For tests and debugging.
    public static func probeForbiddenCall() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }
}

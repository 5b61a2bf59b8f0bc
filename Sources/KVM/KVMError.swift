import CKVM
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A failed KVM call: which ioctl (or syscall) and the errno it returned.
public struct KVMError: Error, Equatable, CustomStringConvertible {
    public let call: String
    public let errno: Errno
    /// Extra context, such as the vCPU index or the register set involved.
    public let context: String?

    public init(_ call: String, _ errno: Errno, context: String? = nil) {
        self.call = call
        self.errno = errno
        self.context = context
    }

    public var description: String {
        let suffix = context.map { " (\($0))" } ?? ""
        return "\(call) failed: \(errno.description) [errno \(errno.rawValue)]\(suffix)"
    }
}

/// Issues an ioctl, retrying on EINTR, and turns -1 into a `KVMError` named after `call`.
@inline(__always)
func checkedIoctl(_ fd: CInt, _ request: UInt, _ call: String, context: String? = nil,
                  _ body: (CInt, UInt) -> CInt) throws(KVMError) -> CInt {
    while true {
        let result = body(fd, request)
        if result >= 0 { return result }
        let error = Errno(rawValue: Glibc.errno)
        if error == .interrupted { continue }
        throw KVMError(call, error, context: context)
    }
}

@inline(__always)
func ioctlValue(_ fd: CInt, _ request: UInt, _ value: UInt, _ call: String, context: String? = nil) throws(KVMError) -> CInt {
    try checkedIoctl(fd, request, call, context: context) { ckvm_ioctl($0, $1, value) }
}

@inline(__always)
func ioctlPointer(_ fd: CInt, _ request: UInt, _ pointer: UnsafeMutableRawPointer, _ call: String, context: String? = nil) throws(KVMError) -> CInt {
    try checkedIoctl(fd, request, call, context: context) { ckvm_ioctl_ptr($0, $1, pointer) }
}

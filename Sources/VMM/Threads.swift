import CSwiftletSystem
#if canImport(Glibc)
import Glibc
#endif

/// A joinable POSIX thread running a Swift closure. vCPUs run on these, never on the
/// cooperative pool, because `KVM_RUN` blocks.
public struct NativeThread: Sendable {
    private final class Box: @unchecked Sendable {   // handed to exactly one new thread
        let body: @Sendable () -> Void
        let name: String
        init(_ name: String, _ body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
    }

    let handle: pthread_t

    /// Starts `body` on a new thread called `name` (at most 15 characters are kept).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SpawnError) {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            _ = csystem_set_thread_name(String(box.name.prefix(15)))
            cswiftlet_unblock_sigsys()
            box.body()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SpawnError(name: name, errno: result)
        }
        handle = thread
    }

    private init(handle: pthread_t) { self.handle = handle }

    /// The calling thread, so that others can signal it.
    public static func current() -> NativeThread { NativeThread(handle: pthread_self()) }

    public func join() { pthread_join(handle, nil) }

    /// Sends `signal` to this thread.
    public func signal(_ number: Int32) { pthread_kill(handle, number) }

    public struct SpawnError: Error, CustomStringConvertible {
        public let name: String, errno: Int32
        public var description: String { "could not start thread \(name): \(String(cString: strerror(errno)))" }
    }
}

/// The signal used to knock a vCPU thread out of `KVM_RUN`. Its handler does nothing: the
/// point is the EINTR. Installed once, without SA_RESTART.
enum KickSignal {
    static let number = SIGUSR2
    private static let install: Void = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(number, &action, nil)
    }()

    static func ensureInstalled() { _ = install }

    /// Unblocks the kick signal on the calling thread. vCPU threads call this first: they inherit
    /// their creator's signal mask, and some creators (libdispatch worker threads, a thread that
    /// blocked signals for `sigwait`) block everything, which would leave a vCPU parked inside
    /// `KVM_RUN` deaf to its kick.
    static func unblockOnCurrentThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, number)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}

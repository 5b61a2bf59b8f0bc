import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Turns SIGINT and SIGTERM into a clean stop, and SIGUSR1 into a status request, by waiting
/// for them on a thread of its own (`sigwait`) instead of in a signal handler.
///
/// Create it on the main thread before any vCPU thread exists: the signals are blocked in the
/// creating thread, and every thread started later inherits that mask.
public final class SignalWatcher: Sendable {
    public static let stopSignals: [Int32] = [SIGINT, SIGTERM]
    public static let statusSignal = SIGUSR1

    private let thread: NativeThread
    private let finished = Flag()

    final class Flag: Sendable {
        private let storage = Atomic<Bool>(false)
        var value: Bool {
            get { storage.load(ordering: .acquiring) }
            set { storage.store(newValue, ordering: .releasing) }
        }
    }

    public init(onStop: @escaping @Sendable (Int32) -> Void,
                onStatus: @escaping @Sendable () -> Void) throws(NativeThread.SpawnError) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in Self.stopSignals + [Self.statusSignal] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let finished = finished
        let waitSet = set
        thread = try NativeThread(name: "signals") {
            var set = waitSet
            while true {
                var signal: Int32 = 0
                guard sigwait(&set, &signal) == 0 else { continue }
                if finished.value { return }
                if signal == Self.statusSignal { onStatus() } else { onStop(signal) }
            }
        }
    }

    /// Ends the watcher thread and joins it. The signals stay blocked: the caller is about to exit.
    public func finish() {
        finished.value = true
        thread.signal(Self.statusSignal)
        thread.join()
    }
}

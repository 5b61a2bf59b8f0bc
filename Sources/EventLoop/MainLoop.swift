import CSwiftletSystem
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The VMM's one event loop (its main loop): an epoll set with an eventfd (wake-ups and tasks from other
/// threads), timerfds (the watchdog, the metrics flush), a signalfd (SIGINT, SIGTERM, SIGUSR1) and
/// the descriptors of the console and the API's socket and connections. Its thread sleeps in
/// `epoll_wait` until one of them is ready: no polling. vCPU threads never wait on it; they hand it
/// work with `execute`, which only writes the eventfd.
///
/// Handlers run on the loop's thread, one at a time. Registration is thread-safe.
public final class MainLoop: Sendable {
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: 0x001)    // EPOLLIN
        public static let writable = Events(rawValue: 0x004)    // EPOLLOUT
        public static let error = Events(rawValue: 0x008)       // EPOLLERR
        public static let hangUp = Events(rawValue: 0x010)      // EPOLLHUP
    }

    public typealias Handler = @Sendable (Events) -> Void

    /// A registered timer; `cancel` it to stop it.
    public struct Timer: Sendable, Hashable {
        let fd: Int32
    }

    public struct Failure: Error, CustomStringConvertible {
        public let call: String, errno: Int32
        public var description: String { "event loop: \(call) failed: \(String(cString: strerror(errno)))" }
    }

    struct State {
        var handlers: [Int32: Handler] = [:]
        /// The timerfds and signalfds the loop made, closed with it.
        var owned: Set<Int32> = []
        var tasks: [@Sendable () -> Void] = []
        var stopped = false
        var running = false
        var thread: pthread_t?
    }

    private let epoll: Int32
    private let wake: Int32
    private let state = Mutex(State())

    public init() throws(Failure) {
        epoll = cswiftlet_epoll_create()
        guard epoll >= 0 else { throw Failure(call: "epoll_create1", errno: errno) }
        wake = cswiftlet_eventfd()
        guard wake >= 0 else { close(epoll); throw Failure(call: "eventfd", errno: errno) }
        let result = cswiftlet_epoll_control(epoll, 0, wake, Events.readable.rawValue, UInt64(wake))
        guard result == 0 else { throw Failure(call: "epoll_ctl", errno: -result) }
    }

    deinit {
        let fds = state.withLock { $0.owned }
        for fd in fds { close(fd) }
        close(wake)
        close(epoll)
    }

    /// True on the loop's own thread.
    public var inLoop: Bool {
        state.withLock { s in s.thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    // MARK: Running

    /// Serves events on the calling thread until `stop()`.
    public func run() {
        state.withLock { $0.thread = pthread_self(); $0.running = true }
        defer { state.withLock { $0.running = false; $0.thread = nil } }
        var datas = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while !state.withLock({ $0.stopped }) {
            let n = cswiftlet_epoll_wait(epoll, &datas, &events, 64, -1)
            if n < 0 { if n == -EINTR { continue } else { break } }
            for i in 0..<Int(n) {
                let fd = Int32(truncatingIfNeeded: datas[i])
                if fd == wake {
                    var counter: UInt64 = 0
                    _ = read(wake, &counter, 8)
                    runTasks()
                    continue
                }
                // Looked up per event: an earlier handler of this round may have removed it.
                if let handler = state.withLock({ $0.handlers[fd] }) { handler(Events(rawValue: events[i])) }
            }
        }
        runTasks()
    }

    /// Ends `run()` after the handler in progress; from any thread.
    public func stop() {
        state.withLock { $0.stopped = true }
        signalWake()
    }

    /// Runs `task` on the loop's thread, soon; from any thread (a vCPU's, say): it never blocks.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        state.withLock { $0.tasks.append(task) }
        signalWake()
    }

    /// Runs `task` on the loop's thread and waits for it; runs it here if this is that thread
    /// or if the loop is not running. For tearing down what the loop's handlers also touch.
    public func perform(_ task: @escaping @Sendable () -> Void) {
        let queued = state.withLock { s -> Bool in
            guard s.running, !(s.thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false) else { return false }
            return true
        }
        guard queued else { task(); return }
        let done = DispatchSemaphore(value: 0)
        execute { task(); done.signal() }
        done.wait()
    }

    private func signalWake() {
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    private func runTasks() {
        while true {
            let tasks = state.withLock { s -> [@Sendable () -> Void] in
                defer { s.tasks = [] }
                return s.tasks
            }
            if tasks.isEmpty { return }
            for task in tasks { task() }
        }
    }

    // MARK: Descriptors

    /// Calls `handler` whenever `fd` is ready for `events` (errors and hang-ups always). The loop
    /// does not own `fd`: `unwatch` it before closing it.
    public func watch(_ fd: Int32, for events: Events, _ handler: @escaping Handler) throws(Failure) {
        state.withLock { $0.handlers[fd] = handler }
        let result = cswiftlet_epoll_control(epoll, 0, fd, events.rawValue, UInt64(UInt32(bitPattern: fd)))
        guard result == 0 else {
            state.withLock { _ = $0.handlers.removeValue(forKey: fd) }
            throw Failure(call: "epoll_ctl(ADD, \(fd))", errno: -result)
        }
    }

    /// Changes the events `fd` is watched for.
    public func change(_ fd: Int32, to events: Events) {
        _ = cswiftlet_epoll_control(epoll, 1, fd, events.rawValue, UInt64(UInt32(bitPattern: fd)))
    }

    public func unwatch(_ fd: Int32) {
        _ = cswiftlet_epoll_control(epoll, 2, fd, 0, 0)
        state.withLock { _ = $0.handlers.removeValue(forKey: fd) }
    }

    // MARK: Timers and signals

    /// Calls `handler` after `nanoseconds`, then every `interval` nanoseconds if given.
    @discardableResult
    public func schedule(after nanoseconds: UInt64, every interval: UInt64? = nil,
                         _ handler: @escaping @Sendable () -> Void) throws(Failure) -> Timer {
        let fd = cswiftlet_timerfd(nanoseconds, interval ?? 0)
        guard fd >= 0 else { throw Failure(call: "timerfd_create", errno: -fd) }
        let once = interval == nil
        state.withLock { _ = $0.owned.insert(fd) }
        try watch(fd, for: .readable) { [self] _ in
            var expirations: UInt64 = 0
            guard read(fd, &expirations, 8) == 8 else { return }
            if once { cancel(Timer(fd: fd)) }
            handler()
        }
        return Timer(fd: fd)
    }

    public func cancel(_ timer: Timer) {
        guard state.withLock({ $0.owned.remove(timer.fd) != nil }) else { return }
        unwatch(timer.fd)
        close(timer.fd)
    }

    /// Delivers `signals` to `handler` through a signalfd. They must be blocked in every thread
    /// (`blockSignals`, before any thread starts), or the kernel acts on them before the loop can.
    public func handleSignals(_ signals: [Int32], _ handler: @escaping @Sendable (Int32) -> Void) throws(Failure) {
        let fd = signals.withUnsafeBufferPointer { cswiftlet_signalfd($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw Failure(call: "signalfd", errno: -fd) }
        state.withLock { _ = $0.owned.insert(fd) }
        try watch(fd, for: .readable) { _ in
            while true {
                let number = cswiftlet_signalfd_read(fd)
                if number <= 0 { return }
                handler(number)
            }
        }
    }

    /// Blocks `signals` in the calling thread and so in every thread it starts afterwards.
    public static func blockSignals(_ signals: [Int32]) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }
}

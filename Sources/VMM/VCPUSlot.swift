import Dispatch
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the VMM can see of one vCPU at a moment.
public struct VCPUStatus: Sendable, Equatable {
    public var id: Int
    public var mpState: MPState?
    public var rip: UInt64?
    /// RFLAGS, for telling a halt that an interrupt can end (IF set) from one nothing can.
    public var rflags: UInt64?
    public var lastExit: String?
    public var exitCounts: [String: Int]
    /// Nanoseconds from the start of `Machine.run()` to this vCPU's first exit from `KVM_RUN`:
    /// an upper bound on the time to its first instruction. nil if it has not run yet.
    public var firstExitNanoseconds: UInt64?
    /// How it came to run, its hypercalls, callbacks and trap table.
    public var xen: XenVCPUState = XenVCPUState()

    public var totalExits: Int { exitCounts.values.reduce(0, +) }

    public init(id: Int, mpState: MPState?, rip: UInt64? = nil, rflags: UInt64? = nil, lastExit: String? = nil,
                exitCounts: [String: Int] = [:], firstExitNanoseconds: UInt64? = nil, xen: XenVCPUState = XenVCPUState()) {
        self.id = id; self.mpState = mpState; self.rip = rip; self.rflags = rflags; self.lastExit = lastExit
        self.exitCounts = exitCounts; self.firstExitNanoseconds = firstExitNanoseconds; self.xen = xen
    }
}

/// Per-vCPU control: counters, and a queue of requests that must run on the vCPU's own thread.
///
/// KVM holds a vCPU's mutex for the whole of `KVM_RUN`, so another thread's `KVM_GET_MP_STATE`
/// would block until the vCPU exits, which for a parked AP may be never. Requests are therefore
/// queued here, the vCPU is kicked out of `KVM_RUN`, and its thread serves them between runs.
/// When no thread runs the vCPU (before `run()`, after teardown) the caller serves them itself.
final class VCPUSlot: Sendable {
    typealias Request = @Sendable (VCPU) -> Void

    struct Control {
        var threadActive = false
        var thread: NativeThread?
        var pending: [Request] = []
    }

    /// Exit counts by `VCPUExit.kind`: the run loop does no hashing or allocation per exit.
    struct Counters {
        var byKind = [Int](repeating: 0, count: VCPUExit.kindNames.count)
        var lastKind: Int?
        var firstExit: UInt64?

        var total: Int { byKind.reduce(0, +) }
        var lastExit: String? { lastKind.map { VCPUExit.kindNames[$0] } }
        var exitCounts: [String: Int] {
            var named: [String: Int] = [:]
            for (kind, count) in byKind.enumerated() where count > 0 { named[VCPUExit.kindNames[kind]] = count }
            return named
        }
    }

    let vcpu: VCPU
    let control = Mutex(Control())
    let counters = Mutex(Counters())
    /// The Xen interface's view of this vCPU.
    let xen = Mutex(XenVCPUState())
    /// Mirrors `xen.down` for the run loop, which checks it before every `KVM_RUN`.
    let parked = Atomic<Bool>(false)
    /// Wakes the thread of a vCPU parked by `VCPUOP_down` (on `up`, a request, or a stop).
    let wakeup = DispatchSemaphore(value: 0)

    init(_ vcpu: VCPU) { self.vcpu = vcpu }

    /// Called by `run()` before the vCPU's thread starts: from here on requests are queued for
    /// that thread, never served on the caller's. (Were a request served here while the new
    /// thread entered `KVM_RUN` on a parked AP, its ioctl would wait on the vCPU mutex forever.)
    func activate() {
        control.withLock { $0.threadActive = true }
    }

    /// Called on the vCPU thread before its first `KVM_RUN`, so that kicks can signal it. A kick
    /// before this still sets `immediate_exit`, which makes that first `KVM_RUN` return at once.
    func attach(_ thread: NativeThread) {
        control.withLock { $0.thread = thread }
    }

    /// Called on the vCPU thread as it ends: later requests run on their caller's thread.
    func detach() {
        let left = control.withLock { c -> [Request] in
            c.threadActive = false
            c.thread = nil
            defer { c.pending = [] }
            return c.pending
        }
        for request in left { request(vcpu) }
    }

    /// Serves queued requests; called by the vCPU thread between runs. Returns true if any ran.
    @discardableResult
    func serve() -> Bool {
        let requests = control.withLock { c -> [Request] in
            defer { c.pending = [] }
            return c.pending
        }
        for request in requests { request(vcpu) }
        return !requests.isEmpty
    }

    /// Knocks the vCPU out of `KVM_RUN`: immediate_exit for a vCPU about to enter, a signal for
    /// one inside.
    func kick() {
        vcpu.setImmediateExit(true)
        control.withLock { $0.thread }?.signal(KickSignal.number)
        wakeup.signal()
    }

    /// Starts `body` on the vCPU's thread (or here, if none runs it) and returns a semaphore
    /// signalled when it has run.
    func submit(_ body: @escaping Request) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        let request: Request = { vcpu in body(vcpu); done.signal() }
        let queued = control.withLock { c -> Bool in
            guard c.threadActive else { return false }
            c.pending.append(request)
            return true
        }
        if queued { kick() } else { request(vcpu) }
        return done
    }

    func record(_ exit: VCPUExit, at now: UInt64) {
        let kind = exit.kind
        counters.withLock {
            $0.byKind[kind] += 1
            $0.lastKind = kind
            if $0.firstExit == nil { $0.firstExit = now }
        }
    }

    /// Sets `xen.down` and its mirror together.
    func setDown(_ down: Bool, at now: UInt64) {
        xen.withLock { $0.transition(toUp: !down, at: now) }
        parked.store(down, ordering: .releasing)
    }
}

/// Monotonic nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// A value behind a lock, as a reference: for results handed between threads (`Mutex` itself
/// cannot live in an array or be captured by copy).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value {
        get { mutex.withLock { $0 } }
        set { mutex.withLock { $0 = newValue } }
    }
}

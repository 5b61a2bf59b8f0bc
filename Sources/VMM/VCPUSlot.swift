import Dispatch
import KVM
import Synchronization
import X86
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
    /// The VMM's hold on it: not started, running, paused, stopped.
    public var runState: VCPURunState = .notStarted

    public var totalExits: Int { exitCounts.values.reduce(0, +) }

    public init(id: Int, mpState: MPState?, rip: UInt64? = nil, rflags: UInt64? = nil, lastExit: String? = nil,
                exitCounts: [String: Int] = [:], firstExitNanoseconds: UInt64? = nil, xen: XenVCPUState = XenVCPUState(),
                runState: VCPURunState = .notStarted) {
        self.id = id; self.mpState = mpState; self.rip = rip; self.rflags = rflags; self.lastExit = lastExit
        self.exitCounts = exitCounts; self.firstExitNanoseconds = firstExitNanoseconds; self.xen = xen
        self.runState = runState
    }
}

/// A one-shot answer handed from a vCPU thread to the thread that asked.
final class Reply<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    init() {}

    func send(_ answer: Value) {
        value.withLock { $0 = answer }
        ready.signal()
    }

    /// Waits for the answer.
    func wait() -> Value {
        ready.wait()
        return value.withLock { $0! }
    }

    /// Waits for the answer, calling `meanwhile` every millisecond (a vCPU thread that asks
    /// another vCPU keeps serving its own events, so two asking each other cannot deadlock).
    func wait(meanwhile: () -> Void) -> Value {
        while ready.wait(timeout: .now() + .milliseconds(1)) == .timedOut { meanwhile() }
        return value.withLock { $0! }
    }
}

/// The registers a status read takes from the vCPU itself.
struct VCPURegisterSnapshot: Sendable {
    var mpState: MPState?
    var rip: UInt64?
    var rflags: UInt64?
}

/// Requests to a vCPU, as values: each is served on the vCPU's own thread between two
/// `KVM_RUN`s (KVM holds a vCPU's mutex for the whole of `KVM_RUN`, so another thread's ioctl on
/// it would block until it exits, which for a parked AP may be never).
enum VCPUEvent: Sendable {
    /// Read MP state, RIP and RFLAGS.
    case readStatus(Reply<VCPURegisterSnapshot>)
    /// `KVM_SET_MP_STATE`, if `MPStateRules` allow the transition.
    case setMPState(MPState, Reply<Result<Void, MPStateError>>)
    /// `VCPUOP_up` of a vCPU that has not run: its registers, then RUNNABLE.
    case start(BootState)
    /// Stop entering the guest, once any access in flight has completed; answered when held.
    case pause(Reply<Result<Void, VCPURunStateError>>)
    /// Enter the guest again.
    case resume(Reply<Result<Void, VCPURunStateError>>)

    /// Events that change whether the vCPU runs are served only by its run loop at top level,
    /// never while the vCPU thread is inside an exit handler waiting for another vCPU.
    var isControl: Bool {
        switch self {
        case .pause, .resume: true
        default: false
        }
    }
}

/// Per-vCPU control: counters, run state, and the queue of events for the vCPU's thread.
/// When no thread runs the vCPU (before `run()`, after teardown) the caller serves events itself.
final class VCPUSlot: Sendable {
    struct Control {
        var threadActive = false
        var thread: NativeThread?
        var pending: [VCPUEvent] = []
        var runState: VCPURunState = .notStarted
        /// A pause accepted but not yet in effect: answered once the vCPU is held.
        var pauseReply: Reply<Result<Void, VCPURunStateError>>?
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
    /// Mirrors `control.runState == .paused` for the same check, so the run loop takes no lock
    /// per exit. Written only through `setRunState`.
    let paused = Atomic<Bool>(false)
    /// Wakes the thread of a held vCPU (paused, or parked by `VCPUOP_down`): on an event, `up`,
    /// or a stop. It waits on nothing else, so a held vCPU costs no CPU.
    let wakeup = DispatchSemaphore(value: 0)

    init(_ vcpu: VCPU) { self.vcpu = vcpu }

    var runState: VCPURunState { control.withLock { $0.runState } }

    /// Called by `run()` before the vCPU's thread starts: from here on events are queued for
    /// that thread, never served on the caller's. (Were one served here while the new thread
    /// entered `KVM_RUN` on a parked AP, its ioctl would wait on the vCPU mutex forever.)
    func activate() {
        control.withLock { $0.threadActive = true; setRunState(&$0, .running) }
    }

    /// As `activate`, but held: the thread waits for a resume before it enters the guest.
    func activatePaused() {
        control.withLock { $0.threadActive = true; setRunState(&$0, .paused) }
    }

    /// Called on the vCPU thread before its first `KVM_RUN`, so that kicks can signal it. A kick
    /// before this still sets `immediate_exit`, which makes that first `KVM_RUN` return at once.
    func attach(_ thread: NativeThread) {
        control.withLock { $0.thread = thread }
    }

    /// Called on the vCPU thread as it ends: later events are served on their caller's thread;
    /// the ones left are served now.
    func detach(serve: (VCPUEvent) -> Void) {
        let left = control.withLock { c -> [VCPUEvent] in
            c.threadActive = false
            c.thread = nil
            setRunState(&c, .stopped)
            c.pauseReply?.send(.failure(VCPURunStateError(vcpu: vcpu.id, action: .pause, state: .stopped)))
            c.pauseReply = nil
            defer { c.pending = [] }
            return c.pending
        }
        for event in left { serve(event) }
    }

    /// Sets the run state and its lock-free mirror together (call under `control`'s lock).
    func setRunState(_ c: inout Control, _ state: VCPURunState) {
        c.runState = state
        paused.store(state == .paused, ordering: .releasing)
    }

    /// Takes the queued events; with `controlToo` false, pause and resume stay queued.
    func takeEvents(controlToo: Bool) -> [VCPUEvent] {
        control.withLock { c in
            if controlToo {
                defer { c.pending = [] }
                return c.pending
            }
            let taken = c.pending.filter { !$0.isControl }
            c.pending.removeAll { !$0.isControl }
            return taken
        }
    }

    /// Knocks the vCPU out of `KVM_RUN`: immediate_exit for a vCPU about to enter, a signal for
    /// one inside, the semaphore for a held one.
    func kick() {
        vcpu.setImmediateExit(true)
        control.withLock { $0.thread }?.signal(KickSignal.number)
        wakeup.signal()
    }

    /// Queues `event` for the vCPU's thread and kicks it. Returns false, queuing nothing, when no
    /// thread runs the vCPU: the caller serves the event itself.
    func post(_ event: VCPUEvent) -> Bool {
        let queued = control.withLock { c -> Bool in
            guard c.threadActive else { return false }
            c.pending.append(event)
            return true
        }
        if queued { kick() }
        return queued
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

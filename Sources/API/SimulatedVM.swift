import KVM
import Synchronization
import VMM

/// A VM without KVM, for the API's tests, its fuzz target and schema checks (`swiftlet
/// --debug-simulated-vm`): Swiftlet's real lifecycle, run-state and MP-state rules over state kept
/// in memory. Its boot vCPU is RUNNABLE and the others UNINITIALIZED, as a real VM's at start.
public final class SimulatedVM: RunningVM {
    struct Inner {
        var lifecycle = VMLifecycle()
        var runStates: [VCPURunState]
        var mpStates: [MPState]
        var ctrlAltDel = 0
        var stopped: VMOutcome?
        var onExit: (@Sendable (VMOutcome) -> Void)?
        var drivePaths: [String: String] = [:]
        var snapshots: [(String, String, SnapshotKind)] = []
    }

    let inner: Mutex<Inner>

    /// How many times Ctrl-Alt-Del was sent.
    public var ctrlAltDelCount: Int { inner.withLock { $0.ctrlAltDel } }

    public init(cpus: Int) {
        inner = Mutex(Inner(runStates: Array(repeating: .notStarted, count: cpus),
                            mpStates: [.runnable] + Array(repeating: .uninitialized, count: cpus - 1)))
    }

    public var state: VMState { inner.withLock { $0.lifecycle.state } }

    public func start() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.start)
            s.runStates = s.runStates.map { _ in .running }
        }
    }

    /// Nothing runs; `onExit` is called by `stop`, on the caller's thread.
    public func launch(on loop: MainLoop, onExit: @escaping @Sendable (VMOutcome) -> Void) {
        let early = inner.withLock { s -> VMOutcome? in
            if s.stopped == nil { s.onExit = onExit }
            return s.stopped
        }
        if let early { onExit(early) }
    }

    public func stop(_ outcome: VMOutcome) {
        let onExit = inner.withLock { s -> (@Sendable (VMOutcome) -> Void)? in
            guard s.stopped == nil else { return nil }
            s.stopped = outcome
            try? s.lifecycle.apply(.stop)
            s.runStates = s.runStates.map { _ in .stopped }
            defer { s.onExit = nil }
            return s.onExit
        }
        onExit?(outcome)
    }

    public func pause() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.pause)
            s.runStates = s.runStates.map { $0 == .running ? .paused : $0 }
        }
    }

    public func resume() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.resume)
            s.runStates = s.runStates.map { $0 == .paused ? .running : $0 }
        }
    }

    public func pause(vcpu: Int) throws(VCPUControlError) { try change(.pause, vcpu) }
    public func resume(vcpu: Int) throws(VCPUControlError) { try change(.resume, vcpu) }

    private func change(_ action: VCPURunAction, _ id: Int) throws(VCPUControlError) {
        try inner.withLock { s throws(VCPUControlError) in
            guard s.runStates.indices.contains(id) else { throw .noSuchVCPU(id, count: s.runStates.count) }
            do throws(VCPURunStateError) {
                s.runStates[id] = try VCPURunRules.next(after: action, from: s.runStates[id], vcpu: id)
            } catch { throw .state(error) }
        }
    }

    public func setMPState(_ state: MPState, vcpu: Int) throws(MPStateError) {
        try inner.withLock { s throws(MPStateError) in
            guard s.mpStates.indices.contains(vcpu) else { throw .noSuchVCPU(vcpu, count: s.mpStates.count) }
            guard MPStateRules.allows(from: s.mpStates[vcpu], to: state) else {
                throw .invalidTransition(vcpu: vcpu, from: s.mpStates[vcpu], to: state)
            }
            s.mpStates[vcpu] = state
        }
    }

    public func status() -> [VCPUStatus] {
        inner.withLock { s in
            s.mpStates.indices.map { id in
                var xen = XenVCPUState()
                xen.bringUp = id == 0 ? .boot : nil
                return VCPUStatus(id: id, mpState: s.mpStates[id], lastExit: id == 0 ? "io" : nil,
                                  exitCounts: id == 0 ? ["io": 3] : [:], xen: xen, runState: s.runStates[id])
            }
        }
    }

    /// Drives whose path was replaced, by id: any id is accepted unless its path is empty.
    public var replacedDrives: [String: String] { inner.withLock { $0.drivePaths } }

    public func replaceDrive(id: String, path: String) throws(MachineError) {
        guard !path.isEmpty else { throw .configuration("\(id): an empty path") }
        inner.withLock { $0.drivePaths[id] = path }
    }

    public func sendCtrlAltDel() { inner.withLock { $0.ctrlAltDel += 1 } }

    /// Snapshots it took (state path, memory path, kind).
    public var snapshots: [(String, String, SnapshotKind)] { inner.withLock { $0.snapshots } }

    public func createSnapshot(statePath: String, memoryPath: String, kind: SnapshotKind, swiftletVersion: String) throws(MachineError) {
        try inner.withLock { s throws(MachineError) in
            guard s.lifecycle.state == .paused else { throw .configuration("a snapshot needs a paused VM") }
            s.snapshots.append((statePath, memoryPath, kind))
        }
    }

    public func startPaused() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.start)
            try s.lifecycle.apply(.pause)
            s.runStates = s.runStates.map { _ in .paused }
        }
    }
}

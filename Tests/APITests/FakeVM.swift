@testable import API
import KVM
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// A VM without KVM for the controller and API tests: the real lifecycle and run-state rules,
/// MP states kept in memory under the real `MPStateRules`.
final class FakeVM: RunningVM {
    struct Inner {
        var lifecycle = VMLifecycle()
        var runStates: [VCPURunState]
        var mpStates: [MPState]
        var ctrlAltDel = 0
        var stopped: VMOutcome?
    }

    let inner: Mutex<Inner>
    let finished = Mutex<Bool>(false)

    init(cpus: Int) {
        inner = Mutex(Inner(runStates: Array(repeating: .notStarted, count: cpus),
                            mpStates: [.runnable] + Array(repeating: .uninitialized, count: cpus - 1)))
    }

    var state: VMState { inner.withLock { $0.lifecycle.state } }

    func start() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.start)
            s.runStates = s.runStates.map { _ in .running }
        }
    }

    func run() -> VMOutcome {
        // Runs until stopped.
        while true {
            if let outcome = inner.withLock({ $0.stopped }) { return outcome }
            usleep(1000)
        }
    }

    func stop(_ outcome: VMOutcome) {
        inner.withLock { s in
            if s.stopped == nil { s.stopped = outcome }
            try? s.lifecycle.apply(.stop)
            s.runStates = s.runStates.map { _ in .stopped }
        }
    }

    func pause() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.pause)
            s.runStates = s.runStates.map { $0 == .running ? .paused : $0 }
        }
    }

    func resume() throws(VMStateError) {
        try inner.withLock { s throws(VMStateError) in
            try s.lifecycle.apply(.resume)
            s.runStates = s.runStates.map { $0 == .paused ? .running : $0 }
        }
    }

    func pause(vcpu: Int) throws(VCPUControlError) { try change(.pause, vcpu) }
    func resume(vcpu: Int) throws(VCPUControlError) { try change(.resume, vcpu) }

    private func change(_ action: VCPURunAction, _ id: Int) throws(VCPUControlError) {
        try inner.withLock { s throws(VCPUControlError) in
            guard s.runStates.indices.contains(id) else { throw .noSuchVCPU(id, count: s.runStates.count) }
            do throws(VCPURunStateError) {
                s.runStates[id] = try VCPURunRules.next(after: action, from: s.runStates[id], vcpu: id)
            } catch { throw .state(error) }
        }
    }

    func setMPState(_ state: MPState, vcpu: Int) throws(MPStateError) {
        try inner.withLock { s throws(MPStateError) in
            guard s.mpStates.indices.contains(vcpu) else { throw .noSuchVCPU(vcpu, count: s.mpStates.count) }
            guard MPStateRules.allows(from: s.mpStates[vcpu], to: state) else {
                throw .invalidTransition(vcpu: vcpu, from: s.mpStates[vcpu], to: state)
            }
            s.mpStates[vcpu] = state
        }
    }

    func status() -> [VCPUStatus] {
        inner.withLock { s in
            s.mpStates.indices.map { id in
                var xen = XenVCPUState()
                xen.bringUp = id == 0 ? .boot : nil
                return VCPUStatus(id: id, mpState: s.mpStates[id], lastExit: id == 0 ? "io" : nil,
                                  exitCounts: id == 0 ? ["io": 3] : [:], xen: xen, runState: s.runStates[id])
            }
        }
    }

    func sendCtrlAltDel() { inner.withLock { $0.ctrlAltDel += 1 } }
}

/// A controller whose builder makes `FakeVM`s, and what it built.
final class FakeHost: Sendable {
    let built = Mutex<FakeVM?>(nil)
    let exits = Mutex<[VMOutcome]>([])
    let serial = Mutex<[UInt8]>([])

    func controller(id: String = "test-vm") -> VMController {
        VMController(id: id, vmmVersion: "9.9.9", build: { [self] configuration throws(MachineError) in
            let vm = FakeVM(cpus: configuration.cpus)
            built.withLock { $0 = vm }
            return vm
        }, serialOutput: { [self] bytes in serial.withLock { $0 += bytes } }, onExit: { [self] outcome in
            exits.withLock { $0.append(outcome) }
        })
    }

    var vm: FakeVM? { built.withLock { $0 } }
}

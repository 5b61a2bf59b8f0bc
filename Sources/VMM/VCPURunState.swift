/// A vCPU's run state as the VMM drives it (not the guest's MP state): not started, running its
/// thread's `KVM_RUN` loop, held by the VMM (paused), or ended with the VM.
public enum VCPURunState: String, Sendable, CaseIterable, CustomStringConvertible {
    case notStarted = "Not started"
    case running = "Running"
    case paused = "Paused"
    case stopped = "Stopped"

    public var description: String { rawValue }
}

/// What the VMM may ask of one vCPU's run state.
public enum VCPURunAction: String, Sendable {
    case start, pause, resume, stop
}

/// A refused vCPU transition, naming the vCPU and its state.
public struct VCPURunStateError: Error, Equatable, Sendable, CustomStringConvertible {
    public let vcpu: Int
    public let action: VCPURunAction
    public let state: VCPURunState

    public var description: String {
        switch (action, state) {
        case (.pause, .paused): "vCPU \(vcpu) is already paused"
        case (.resume, .running): "vCPU \(vcpu) is not paused"
        case (_, .notStarted): "vCPU \(vcpu) has not started; the VM must be started first"
        case (_, .stopped): "vCPU \(vcpu) has stopped with the VM"
        default: "vCPU \(vcpu) cannot \(action.rawValue) while \(state)"
        }
    }
}

/// The checked transitions: Not started → Running ⇄ Paused → Stopped. Stopping is allowed from
/// any state (the VM may end at any moment); everything else not listed is refused.
public enum VCPURunRules {
    public static func next(after action: VCPURunAction, from state: VCPURunState, vcpu: Int) throws(VCPURunStateError) -> VCPURunState {
        switch (action, state) {
        case (.start, .notStarted): return .running
        case (.pause, .running): return .paused
        case (.resume, .paused): return .running
        case (.stop, _): return .stopped
        default: throw VCPURunStateError(vcpu: vcpu, action: action, state: state)
        }
    }
}

/// A vCPU's run state as the VMM drives it (not the guest's MP state): not started, running its
/// thread's `KVM_RUN` loop, held by the VMM (paused), or ended with the VM. The states, actions
/// and transitions are the VM lifecycle's (`VMLifecycle`), applied to one vCPU.
public typealias VCPURunState = VMState

/// What the VMM may ask of one vCPU's run state.
public typealias VCPURunAction = VMAction

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

/// The VM lifecycle's transitions for one vCPU, with the vCPU named in the refusal.
public enum VCPURunRules {
    public static func next(after action: VCPURunAction, from state: VCPURunState, vcpu: Int) throws(VCPURunStateError) -> VCPURunState {
        do { return try VMLifecycle.next(after: action, from: state) } catch {
            throw VCPURunStateError(vcpu: vcpu, action: action, state: state)
        }
    }
}

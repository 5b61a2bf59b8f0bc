import Testing
@testable import VMM

/// A vCPU's run state (the VMM's hold on it): every action from every state.
@Suite("vCPU run state")
struct VCPURunStateTests {
    static let table: [(VCPURunAction, VCPURunState, VCPURunState?)] = [
        (.start, .notStarted, .running), (.start, .running, nil), (.start, .paused, nil), (.start, .stopped, nil),
        (.pause, .notStarted, nil), (.pause, .running, .paused), (.pause, .paused, nil), (.pause, .stopped, nil),
        (.resume, .notStarted, nil), (.resume, .running, nil), (.resume, .paused, .running), (.resume, .stopped, nil),
        (.stop, .notStarted, .stopped), (.stop, .running, .stopped), (.stop, .paused, .stopped), (.stop, .stopped, .stopped),
    ]

    @Test(arguments: table)
    func transition(action: VCPURunAction, from: VCPURunState, to: VCPURunState?) {
        do throws(VCPURunStateError) {
            #expect(try VCPURunRules.next(after: action, from: from, vcpu: 3) == to, "\(action) from \(from)")
        } catch {
            #expect(to == nil, "\(action) from \(from) refused: \(error)")
            #expect(error == VCPURunStateError(vcpu: 3, action: action, state: from))
        }
    }

    @Test(arguments: [
        (VCPURunAction.pause, VCPURunState.paused, "vCPU 3 is already paused"),
        (.resume, .running, "vCPU 3 is not paused"),
        (.pause, .notStarted, "vCPU 3 has not started; the VM must be started first"),
        (.resume, .stopped, "vCPU 3 has stopped with the VM"),
    ])
    func messagesNameTheVCPUAndItsState(action: VCPURunAction, state: VCPURunState, message: String) {
        #expect(VCPURunStateError(vcpu: 3, action: action, state: state).description == message)
    }
}

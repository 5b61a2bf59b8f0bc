import Testing
@testable import VMM

/// The VM lifecycle's checked transitions: every action from every state.
@Suite("VM lifecycle")
struct LifecycleTests {
    /// The whole table: nil means refused.
    static let table: [(VMAction, VMState, VMState?)] = [
        (.start, .notStarted, .running), (.start, .running, nil), (.start, .paused, nil), (.start, .stopped, nil),
        (.pause, .notStarted, nil), (.pause, .running, .paused), (.pause, .paused, nil), (.pause, .stopped, nil),
        (.resume, .notStarted, nil), (.resume, .running, nil), (.resume, .paused, .running), (.resume, .stopped, nil),
        (.stop, .notStarted, .stopped), (.stop, .running, .stopped), (.stop, .paused, .stopped), (.stop, .stopped, .stopped),
    ]

    @Test(arguments: table)
    func transition(action: VMAction, from: VMState, to: VMState?) {
        do throws(VMStateError) {
            let next = try VMLifecycle.next(after: action, from: from)
            #expect(next == to, "\(action) from \(from)")
        } catch {
            #expect(to == nil, "\(action) from \(from) refused: \(error)")
            #expect(error == VMStateError(action: action, state: from))
        }
    }

    @Test func everyPairIsInTheTable() {
        #expect(Self.table.count == VMAction.allCases.count * VMState.allCases.count)
    }

    @Test(arguments: [
        (VMAction.start, VMState.running, "the VM has already started (it is Running)"),
        (.start, .stopped, "the VM has stopped; it cannot start again"),
        (.pause, .paused, "the VM is already paused"),
        (.resume, .running, "the VM is already running"),
        (.pause, .notStarted, "the VM has not started; there is nothing to pause"),
        (.resume, .stopped, "the VM has stopped; it cannot resume"),
    ])
    func refusalsSayWhy(action: VMAction, state: VMState, message: String) {
        #expect(VMStateError(action: action, state: state).description == message)
    }

    @Test func aRunFromStartToStop() throws {
        var lifecycle = VMLifecycle()
        #expect(lifecycle.state == .notStarted)
        for (action, state) in [(VMAction.start, VMState.running), (.pause, .paused), (.resume, .running), (.stop, .stopped)] {
            try lifecycle.apply(action)
            #expect(lifecycle.state == state)
        }
        #expect(throws: VMStateError(action: .start, state: .stopped)) { try lifecycle.apply(.start) }
        #expect(lifecycle.state == .stopped)   // a refused action changes nothing
    }

    /// Firecracker's `InstanceInfo.state` spellings.
    @Test func firecrackerNames() {
        #expect(VMState.allCases.map(\.rawValue) == ["Not started", "Running", "Paused", "Stopped"])
    }
}

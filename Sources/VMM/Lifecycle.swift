/// The VM's lifecycle as Firecracker's API reports it (`InstanceInfo.state`: "Not started",
/// "Running", "Paused"), plus "Stopped" for a VM whose guest or VMM has ended it.
public enum VMState: String, Sendable, CaseIterable, CustomStringConvertible {
    case notStarted = "Not started"
    case running = "Running"
    case paused = "Paused"
    case stopped = "Stopped"

    public var description: String { rawValue }
}

/// What may be asked of a VM's lifecycle.
public enum VMAction: String, Sendable, CaseIterable {
    case start, pause, resume, stop
}

/// A transition the lifecycle does not have, with the state it was asked in.
public struct VMStateError: Error, Equatable, Sendable, CustomStringConvertible {
    public let action: VMAction
    public let state: VMState

    public var description: String {
        switch (action, state) {
        case (.start, .stopped): "the VM has stopped; it cannot start again"
        case (.start, _): "the VM has already started (it is \(state))"
        case (.pause, .notStarted), (.resume, .notStarted): "the VM has not started; there is nothing to \(action.rawValue)"
        case (.pause, .paused): "the VM is already paused"
        case (.resume, .running): "the VM is already running"
        default: "the VM has stopped; it cannot \(action.rawValue)"
        }
    }
}

/// The checked state machine: Not started → Running ⇄ Paused → Stopped. Every other request is
/// refused with a `VMStateError` (never a crash or a hang); stopping is allowed from any state and
/// twice, since a guest and a signal may both end the VM.
public struct VMLifecycle: Equatable, Sendable {
    public private(set) var state: VMState = .notStarted

    public init() {}

    /// The state `action` leads to from `state`, or the refusal.
    public static func next(after action: VMAction, from state: VMState) throws(VMStateError) -> VMState {
        switch (action, state) {
        case (.start, .notStarted): return .running
        case (.pause, .running): return .paused
        case (.resume, .paused): return .running
        case (.stop, _): return .stopped
        default: throw VMStateError(action: action, state: state)
        }
    }

    public mutating func apply(_ action: VMAction) throws(VMStateError) {
        state = try Self.next(after: action, from: state)
    }
}

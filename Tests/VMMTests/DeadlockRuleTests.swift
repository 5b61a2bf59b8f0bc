import KVM
import Testing
@testable import VMM

/// When may the VMM conclude that nothing can run again?
@Suite("Deadlock rule")
struct DeadlockRuleTests {
    static let off: UInt64 = 0x2, on: UInt64 = 0x202

    @Test(arguments: [
        ([(MPState.halted, off)], [false], true),
        ([(.halted, on)], [false], false),                                 // an interrupt can end it
        ([(.halted, off), (.uninitialized, off)], [false, false], true),    // nobody left to send INIT
        ([(.halted, off), (.runnable, off)], [false, false], false),
        ([(.uninitialized, off), (.uninitialized, off)], [false, false], false),   // nothing halted: not our call
        ([(.halted, off), (.runnable, off)], [false, true], true),          // the runnable one was taken down
        ([(.initReceived, off), (.halted, off)], [false, false], false),
    ])
    func rule(states: [(MPState, UInt64)], down: [Bool], expected: Bool) {
        let status = states.enumerated().map { VCPUStatus(id: $0.offset, mpState: $0.element.0, rflags: $0.element.1) }
        #expect(Machine.canNeverRun(status, down: down) == expected)
    }
}

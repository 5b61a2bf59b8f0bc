import DemoGuest
import Foundation
import KVM
import Loader
import Testing
import VMM

/// Names of this process's threads that belong to a VM (vCPUs, serial input, signals).
func vmThreadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
        .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        .filter { $0.hasPrefix("vcpu") || $0 == "serial-in" }
}

final class OutputSink: @unchecked Sendable {
    private var bytes: [UInt8] = []
    private let lock = NSLock()
    func append(_ new: [UInt8]) { lock.lock(); bytes += new; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: bytes, as: UTF8.self) }
}

/// VMs built and run inside the test process, one at a time, so that thread counts are exact.
@Suite("Machine in process", .serialized, .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct MachineTests {
    func demo(cpus: Int, bootCPU: Int = 0, sink: OutputSink) -> MachineConfiguration {
        MachineConfiguration(kernel: KernelFile(path: "demo", bytes: demoGuestImage), memorySize: 64 << 20,
                             cpus: cpus, bootCPU: bootCPU, forwardInput: false, serialOutput: { sink.append($0) })
    }

    /// A guest exit stops every vCPU thread, parked APs included, joins them, and frees the VM.
    @Test(arguments: [1, 2, 8, 64])
    func noThreadOutlivesTheVM(cpus: Int) throws {
        #expect(vmThreadNames().isEmpty)
        weak var weakMachine: Machine?
        let sink = OutputSink()
        try {
            let machine = try Machine(demo(cpus: cpus, sink: sink))
            weakMachine = machine
            let outcome = machine.run()
            #expect(outcome == .guestStop(.powerOff(status: 0), vcpu: 0))
            #expect(vmThreadNames().isEmpty, "threads left after run(): \(vmThreadNames())")
        }()
        #expect(weakMachine == nil, "the machine (and its guest memory) was not freed")
        #expect(sink.text.hasPrefix("Hello from the Swiftlet demo guest!"))
    }

    /// Before any guest code runs, only the boot vCPU is RUNNABLE.
    @Test(arguments: [(4, 0), (4, 3), (16, 7)])
    func onlyTheBootCPUIsRunnable(cpus: Int, boot: Int) throws {
        let machine = try Machine(demo(cpus: cpus, bootCPU: boot, sink: OutputSink()))
        let states = machine.status().map(\.mpState)
        #expect(states == (0..<cpus).map { $0 == boot ? .runnable : .uninitialized })
        #expect(machine.initialMPStates == states)
    }

    @Test func mpStateTransitionsAreChecked() throws {
        let machine = try Machine(demo(cpus: 3, sink: OutputSink()))
        #expect(throws: MPStateError.invalidTransition(vcpu: 1, from: .uninitialized, to: .sipiReceived)) {
            try machine.setMPState(.sipiReceived, vcpu: 1)
        }
        #expect(throws: MPStateError.invalidTransition(vcpu: 2, from: .uninitialized, to: .halted)) {
            try machine.setMPState(.halted, vcpu: 2)
        }
        #expect(throws: MPStateError.noSuchVCPU(3, count: 3)) { try machine.setMPState(.runnable, vcpu: 3) }
        let message = MPStateError.invalidTransition(vcpu: 1, from: .uninitialized, to: .sipiReceived).description
        #expect(message == "vCPU 1 cannot go from UNINITIALIZED to SIPI_RECEIVED: a SIPI is only accepted after INIT (INIT_RECEIVED)")
        try machine.setMPState(.initReceived, vcpu: 1)
        #expect(machine.status()[1].mpState == .initReceived)
        try machine.setMPState(.uninitialized, vcpu: 1)
        #expect(machine.status()[1].mpState == .uninitialized)
    }

    /// Requests to parked APs never lose their kick: many snapshots in a row, each needing every
    /// parked vCPU's thread to leave KVM_RUN and serve it, all complete.
    @Test(.timeLimit(.minutes(1)))
    func snapshotsNeverLoseAKick() throws {
        let probe = try KernelFile.read(path: try Harness.builtGuests().probe.path)
        let sink = OutputSink()
        let machine = try Machine(MachineConfiguration(kernel: probe, commandLine: Array("swiftlet.action=echo".utf8),
                                                       memorySize: 64 << 20, cpus: 8, forwardInput: false,
                                                       serialOutput: { sink.append($0) }))
        let outcome = Locked<VMOutcome?>(nil)
        let runner = Thread { outcome.value = machine.run() }
        runner.start()
        for _ in 0..<300 {
            #expect(machine.status().filter { $0.mpState == .uninitialized }.count == 7)
        }
        machine.stop(.signal(15))
        while outcome.value == nil { Thread.sleep(forTimeInterval: 0.01) }
        #expect(outcome.value == .signal(15))
    }

    /// While the VM runs, status and MP-state changes are served on each vCPU's own thread, the
    /// parked APs (blocked inside KVM_RUN) included, and a stop from outside ends it all.
    @Test func statusAndControlWhileRunning() throws {
        let guests = try Harness.builtGuests()
        let probe = try KernelFile.read(path: guests.probe.path)
        let sink = OutputSink()
        let config = MachineConfiguration(kernel: probe, commandLine: Array("swiftlet.action=echo".utf8),
                                          memorySize: 64 << 20, cpus: 4, bootCPU: 2, forwardInput: false,
                                          serialOutput: { sink.append($0) })
        let machine = try Machine(config)
        let outcome = Locked<VMOutcome?>(nil)
        let runner = Thread { outcome.value = machine.run() }
        runner.start()
        // The probe prints "ready" and then waits for serial input that never comes.
        let deadline = Date().addingTimeInterval(30)
        while !sink.text.contains("ready\n") && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(sink.text.contains("ready\n"))

        let states = machine.status()
        #expect(states.map(\.mpState) == [.uninitialized, .uninitialized, .runnable, .uninitialized])
        #expect(states[2].totalExits > 0 && states[2].firstExitNanoseconds != nil)
        #expect(states[0].totalExits == 0 && states[0].rip == 0xFFF0)        // reset vector, never ran
        try machine.setMPState(.initReceived, vcpu: 3)
        #expect(machine.status()[3].mpState == .initReceived)
        #expect(throws: MPStateError.self) { try machine.setMPState(.halted, vcpu: 0) }

        machine.stop(.signal(15))
        while outcome.value == nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(outcome.value == .signal(15))
        #expect(vmThreadNames().isEmpty)
    }
}

final class Locked<Value>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

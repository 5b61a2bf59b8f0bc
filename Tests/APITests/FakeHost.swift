@testable import API
import Synchronization
import VMM

/// A controller whose builder makes `SimulatedVM`s, and what it built.
final class FakeHost: Sendable {
    let built = Mutex<SimulatedVM?>(nil)
    let exits = Mutex<[VMOutcome]>([])
    let serial = Mutex<[UInt8]>([])
    /// The virtio devices and command line of the last VM built.
    let builtDevices = Mutex<([VirtioDeviceSpec], String)>(([], ""))
    /// The CPU template's source ("PUT /cpu-config", a built-in's name) of the last VM built.
    let builtTemplate = Mutex<String?>(nil)
    /// The simulated VM needs no running loop; the socket tests run this one on a thread.
    let loop: MainLoop

    init() throws { loop = try MainLoop() }

    func controller(id: String = "test-vm") -> VMController {
        VMController(id: id, vmmVersion: "9.9.9", loop: loop, build: { [self] configuration throws(MachineError) in
            let vm = SimulatedVM(cpus: configuration.cpus)
            builtDevices.withLock { $0 = (configuration.virtio, String(decoding: configuration.commandLine, as: UTF8.self)) }
            builtTemplate.withLock { $0 = configuration.cpuTemplate?.source }
            built.withLock { $0 = vm }
            return vm
        }, serialOutput: { [self] bytes in serial.withLock { $0 += bytes } }, restore: { [self] state, memory, _ throws(MachineError) in
            guard state != "/missing.snap" else { throw .configuration("/missing.snap: cannot read the snapshot: No such file or directory") }
            let vm = SimulatedVM(cpus: 2)
            built.withLock { $0 = vm }
            return vm
        }, onExit: { [self] outcome in
            exits.withLock { $0.append(outcome) }
        })
    }

    var vm: SimulatedVM? { built.withLock { $0 } }
}

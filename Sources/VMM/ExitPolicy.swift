import Devices
import Hypercalls
import KVM

/// What a vCPU thread does about one exit: a pure decision, made without touching the vCPU or any
/// device, so every exit kind is unit-tested with fake exits. `Machine` carries the action out
/// (device reads and writes, hypercalls, the register dump a failure report needs).
enum ExitAction: Equatable, Sendable {
    /// Serve `count` port reads of `size` bytes from the port bus into the `kvm_run` data.
    case portIn(port: UInt16, size: Int, count: Int)
    /// Hand `count` port writes of `size` bytes to the port bus.
    case portOut(port: UInt16, size: Int, count: Int)
    case mmioRead(address: UInt64, size: Int)
    case mmioWrite(address: UInt64, size: Int, value: UInt64)
    /// A Xen-style hypercall trapped by its port read.
    case hypercall
    /// The guest wrote the hypercall-page MSR.
    case installHypercallPage(UInt64)
    /// Fail an MSR access KVM left to userspace (the guest sees #GP).
    case refuseMSR
    /// Nothing to do: go back into `KVM_RUN`.
    case resume
    /// End the VM; for a triple fault or KVM failure the caller adds the register dump.
    case stop(Stop)

    enum Stop: Equatable, Sendable {
        case guest(GuestRequest)
        case tripleFault
        case kvmFailure(String)
        case vmmError(String)
    }
}

enum ExitPolicy {
    /// The action for `exit` on a VM whose Xen-style interface is `xen` (on or off).
    static func action(for exit: VCPUExit, xen: Bool) -> ExitAction {
        switch exit {
        case .portIn(XenABI.trapPort, 4, 1) where xen:
            return .hypercall
        case let .msrWrite(XenABI.hypercallPageMSR, value) where xen:
            return .installHypercallPage(value)
        case let .portIn(port, size, count):
            return .portIn(port: port, size: size, count: count)
        case let .portOut(port, size, count):
            return .portOut(port: port, size: size, count: count)
        case let .mmioRead(address, size):
            return .mmioRead(address: address, size: size)
        case let .mmioWrite(address, size, value):
            return .mmioWrite(address: address, size: size, value: value)
        case .interrupted:
            return .resume
        case .shutdown:
            return .stop(.tripleFault)
        case let .systemEvent(event):
            switch event {
            case .shutdown: return .stop(.guest(.powerOff(status: 0)))
            case .reset: return .stop(.guest(.reset(source: "KVM system event")))
            case .crash: return .stop(.kvmFailure("guest crash (KVM_SYSTEM_EVENT_CRASH)"))
            case let .other(type): return .stop(.vmmError("unexpected KVM system event \(type)"))
            }
        case let .internalError(suberror, data):
            return .stop(.kvmFailure(internalErrorText(suberror: suberror, data: data)))
        case let .failEntry(reason):
            return .stop(.kvmFailure("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x\(String(reason, radix: 16))"))
        case .halt:
            return .stop(.vmmError("unexpected KVM_EXIT_HLT with an in-kernel LAPIC"))
        case .msrRead, .msrWrite:
            return .refuseMSR
        case let .unknown(reason):
            return .stop(.vmmError("unexpected KVM exit reason \(reason)"))
        }
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror named (`KVM_INTERNAL_ERROR_*`) and KVM's data
    /// words (for an emulation failure, the instruction bytes when KVM gives them).
    static func internalErrorText(suberror: UInt32, data: [UInt64]) -> String {
        let kind = [1: "emulation failure", 2: "exception while delivering an exception", 3: "event delivery failure",
                    4: "unexpected exit reason"][Int(suberror)] ?? "suberror \(suberror)"
        let detail = data.map { "0x" + String($0, radix: 16) }.joined(separator: " ")
        return "KVM_EXIT_INTERNAL_ERROR: \(kind)\(detail.isEmpty ? "" : " [\(detail)]")"
    }
}

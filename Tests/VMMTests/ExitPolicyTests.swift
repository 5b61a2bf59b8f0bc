import Devices
import Hypercalls
import KVM
import Testing
@testable import VMM

/// Exit handling as a pure decision: every exit kind, with the Xen interface on and off.
@Suite("Exit policy")
struct ExitPolicyTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let exit: VCPUExit
        let xen: Bool
        let action: ExitAction
        var testDescription: String { "\(exit)\(xen ? " (Xen on)" : "")" }
    }

    static let cases: [Case] = [
        Case(exit: .portIn(port: 0x3FD, size: 1, count: 1), xen: false, action: .portIn(port: 0x3FD, size: 1, count: 1)),
        Case(exit: .portIn(port: 0x60, size: 1, count: 3), xen: true, action: .portIn(port: 0x60, size: 1, count: 3)),
        Case(exit: .portOut(port: 0x3F8, size: 1, count: 16), xen: false, action: .portOut(port: 0x3F8, size: 1, count: 16)),
        // The hypercall trap is a 4-byte read of the trap port, and only with Xen on.
        Case(exit: .portIn(port: XenABI.trapPort, size: 4, count: 1), xen: true, action: .hypercall),
        Case(exit: .portIn(port: XenABI.trapPort, size: 4, count: 1), xen: false,
             action: .portIn(port: XenABI.trapPort, size: 4, count: 1)),
        Case(exit: .portIn(port: XenABI.trapPort, size: 2, count: 1), xen: true,
             action: .portIn(port: XenABI.trapPort, size: 2, count: 1)),
        Case(exit: .portIn(port: XenABI.trapPort, size: 4, count: 2), xen: true,
             action: .portIn(port: XenABI.trapPort, size: 4, count: 2)),
        Case(exit: .mmioRead(address: 0xD000_0000, size: 4), xen: false, action: .mmioRead(address: 0xD000_0000, size: 4)),
        Case(exit: .mmioWrite(address: 0xD000_0070, size: 4, value: 0xF), xen: false,
             action: .mmioWrite(address: 0xD000_0070, size: 4, value: 0xF)),
        Case(exit: .msrWrite(index: XenABI.hypercallPageMSR, value: 0x12_3000), xen: true, action: .installHypercallPage(0x12_3000)),
        Case(exit: .msrWrite(index: XenABI.hypercallPageMSR, value: 0x12_3000), xen: false, action: .refuseMSR),
        Case(exit: .msrRead(index: XenABI.hypercallPageMSR), xen: true, action: .refuseMSR),
        Case(exit: .msrWrite(index: 0x1234, value: 1), xen: true, action: .refuseMSR),
        Case(exit: .interrupted, xen: false, action: .resume),
        Case(exit: .shutdown, xen: false, action: .stop(.tripleFault)),
        Case(exit: .systemEvent(.shutdown), xen: false, action: .stop(.guest(.powerOff(status: 0)))),
        Case(exit: .systemEvent(.reset), xen: false, action: .stop(.guest(.reset(source: "KVM system event")))),
        Case(exit: .systemEvent(.crash), xen: false, action: .stop(.kvmFailure("guest crash (KVM_SYSTEM_EVENT_CRASH)"))),
        Case(exit: .systemEvent(.other(9)), xen: false, action: .stop(.vmmError("unexpected KVM system event 9"))),
        Case(exit: .internalError(suberror: 1, data: [0x2, 0x4, 0xc70f48f0]), xen: false,
             action: .stop(.kvmFailure("KVM_EXIT_INTERNAL_ERROR: emulation failure [0x2 0x4 0xc70f48f0]"))),
        Case(exit: .internalError(suberror: 3, data: []), xen: false,
             action: .stop(.kvmFailure("KVM_EXIT_INTERNAL_ERROR: event delivery failure"))),
        Case(exit: .internalError(suberror: 77, data: [1]), xen: false,
             action: .stop(.kvmFailure("KVM_EXIT_INTERNAL_ERROR: suberror 77 [0x1]"))),
        Case(exit: .failEntry(reason: 0x21), xen: false,
             action: .stop(.kvmFailure("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x21"))),
        Case(exit: .halt, xen: false, action: .stop(.vmmError("unexpected KVM_EXIT_HLT with an in-kernel LAPIC"))),
        Case(exit: .unknown(reason: 42), xen: false, action: .stop(.vmmError("unexpected KVM exit reason 42"))),
    ]

    @Test(arguments: cases)
    func decides(_ c: Case) {
        #expect(ExitPolicy.action(for: c.exit, xen: c.xen) == c.action)
    }
}

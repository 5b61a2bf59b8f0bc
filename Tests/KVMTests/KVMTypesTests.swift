import CKVM
import SystemPackage
import Testing
@testable import KVM

/// The KVM layer's value types against <linux/kvm.h>, without /dev/kvm.
@Suite("KVM types")
struct KVMTypesTests {
    /// `KVM_GET_MP_STATE` / `KVM_SET_MP_STATE` take these numbers.
    @Test(arguments: [
        (MPState.runnable, KVM_MP_STATE_RUNNABLE), (.uninitialized, KVM_MP_STATE_UNINITIALIZED),
        (.initReceived, KVM_MP_STATE_INIT_RECEIVED), (.halted, KVM_MP_STATE_HALTED), (.sipiReceived, KVM_MP_STATE_SIPI_RECEIVED),
    ])
    func mpStateNumbers(state: MPState, header: Int32) {
        #expect(state.rawValue == UInt32(header))
    }

    /// Reports count exits by `kind` and name them by `kindNames[kind]`: the two must agree.
    @Test(arguments: [
        VCPUExit.portIn(port: 0x3F8, size: 1, count: 1), .portOut(port: 0x500, size: 4, count: 1),
        .mmioRead(address: 0xFEE0_0000, size: 4), .mmioWrite(address: 0xD000_0000, size: 8, value: 1), .halt, .shutdown,
        .systemEvent(.reset), .internalError(suberror: 1, data: []), .failEntry(reason: 7), .interrupted,
        .msrRead(index: 0x10), .msrWrite(index: 0x10, value: 0), .unknown(reason: 99),
    ])
    func exitKindsNameThemselves(exit: VCPUExit) {
        #expect(VCPUExit.kindNames[exit.kind] == exit.name)
    }

    @Test func everyKindHasOneName() {
        #expect(Set(VCPUExit.kindNames).count == VCPUExit.kindNames.count)
    }

    @Test func errorsNameTheCallAndErrno() {
        let error = KVMError("KVM_SET_CPUID2", Errno(rawValue: 22), context: "vCPU 3")
        #expect(error.description == "KVM_SET_CPUID2 failed: Invalid argument [errno 22] (vCPU 3)")
    }
}

import Testing
@testable import KVM

@Suite("KVM state structures")
struct KVMStateTests {
    /// The sizes of <linux/kvm.h>'s x86 structures (api.rst): a snapshot refuses a saved
    /// structure of another size, so these must be the kernel's.
    @Test func sizesAreTheKernels() {
        let sizes: [KVMState: Int] = [.regs: 144, .sregs: 312, .xsave: 4096, .xcrs: 392, .debugregs: 128,
                                      .lapic: 1024, .events: 64, .irqchip: 520, .pit2: 112, .clock: 48]
        for state in KVMState.allCases { #expect(state.size == sizes[state], "\(state)") }
        #expect(KVMState.perVCPU.last == .events, "pending events go last, after the LAPIC")
    }

    /// A saved XCR structure's count (`nr_xcrs`, little-endian at offset 0): 0 means nothing to
    /// restore (a host without XSAVE saves none, and refuses KVM_SET_XCRS).
    @Test func xcrCountIsTheStructuresFirstWord() {
        var xcrs = [UInt8](repeating: 0, count: KVMState.xcrs.size)
        #expect(KVMState.xcrCount(xcrs) == 0)
        xcrs[0] = 1
        #expect(KVMState.xcrCount(xcrs) == 1)
        xcrs[1] = 1
        #expect(KVMState.xcrCount(xcrs) == 257)
        #expect(KVMState.xcrCount([]) == 0)
    }
}

import Testing
@testable import Hypercalls

/// The Xen HVM basics: hvm_op parameters, add_to_physmap, grant-table queries, event channels,
/// and the shared_info page image, with Xen's argument checks.
@Suite("Xen HVM calls")
struct HVMTests {
    let arg: UInt64 = 0x20000
    let selfID = UInt64(XenABI.domidSelf)

    func hvmEnv() -> FakeEnvironment {
        let env = FakeEnvironment()
        env.isHVM = true
        return env
    }

    func param(_ domid: UInt64, _ index: UInt64, _ value: UInt64 = 0) -> [UInt8] {
        le(domid, 2) + [0, 0] + le(index, 4) + le(value)
    }

    @Test func getParamReadsZeroForStoreAndConsole() {
        let env = hvmEnv()
        for index: UInt64 in [1, 2, 17, 18] {
            env.put(param(selfID, index, 0xDEAD), at: arg)
            #expect(call(env, 34, 1, arg) == .ok())
            #expect(env.read(arg + 8, count: 8) == le(0), "param \(index)")
        }
    }

    @Test func paramChecksInXensOrder() {
        let env = hvmEnv()
        env.put(param(5, 1000), at: arg)
        #expect(call(env, 34, 1, arg) == .error(.inval))          // the index is checked before the domain
        env.put(param(5, 1), at: arg)
        #expect(call(env, 34, 1, arg) == .error(.srch))
        env.put(param(selfID, 39), at: arg)
        #expect(call(env, 34, 1, arg) == .error(.inval))          // HVM_NR_PARAMS
        #expect(call(env, 34, 1, 0x10) == .error(.fault))
        #expect(call(env, 34, 1, FakeEnvironment.base + (1 << 20) - 8) == .error(.fault))   // struct runs off the end
        #expect(call(env, 34, 0x7FFF, arg) == .error(.nosys))
    }

    @Test func onlyCallbackIRQCanBeSet() {
        let env = hvmEnv()
        env.put(param(selfID, 0, 0x0200_0000_0000_00F3), at: arg)
        #expect(call(env, 34, 0, arg) == .ok())
        env.put(param(selfID, 0), at: arg)
        #expect(call(env, 34, 1, arg) == .ok())
        #expect(env.read(arg + 8, count: 8) == le(0x0200_0000_0000_00F3))
        env.put(param(selfID, 1, 0x1234), at: arg)
        #expect(call(env, 34, 0, arg) == .error(.perm))
        #expect(env.params[1] == nil)
    }

    @Test func hvmOpIsNotForPVGuests() {
        let env = FakeEnvironment()
        env.put(param(selfID, 1), at: arg)
        #expect(call(env, 34, 1, arg) == .error(.nosys))
    }

    @Test func addToPhysmapBothABIs() {
        let env = hvmEnv()
        // 64-bit: domid, size, space @4, idx @8, gpfn @16.
        env.put(le(selfID, 2) + [0, 0] + le(0, 4) + le(0) + le(0x123), at: arg)
        #expect(call(env, 12, 7, arg) == .ok())
        #expect(env.sharedInfo?.frame == 0x123 && env.sharedInfo?.abi == .x86_64)
        // 32-bit: idx @8, gpfn @12; the command's extent bits above bit 5 are ignored.
        env.put(le(selfID, 2) + [0, 0] + le(0, 4) + le(0, 4) + le(0x456, 4) + le(0xFFFF_FFFF_FFFF_FFFF), at: arg)
        var request = HypercallRequest(number: 12, 7 | 5 << 6, arg)
        request.is64Bit = false
        #expect(HypercallDispatcher.handle(request, in: env) == .ok())
        #expect(env.sharedInfo?.frame == 0x456 && env.sharedInfo?.abi == .x86_32)
        // Once latched (hypercall page, or CALLBACK_IRQ set from 32-bit mode), the layout stays.
        env.put(param(selfID, 0, 1), at: arg)
        var set = HypercallRequest(number: 34, 0, arg)
        set.is64Bit = false
        #expect(HypercallDispatcher.handle(set, in: env) == .ok())
        #expect(env.sharedInfoABI == .x86_32)
        env.put(le(selfID, 2) + [0, 0] + le(0, 4) + le(0) + le(0x789), at: arg)
        #expect(call(env, 12, 7, arg) == .ok())
        #expect(env.sharedInfo?.frame == 0x789 && env.sharedInfo?.abi == .x86_32)
    }

    @Test func addToPhysmapErrors() {
        let env = hvmEnv()
        func physmap(domid: UInt64 = UInt64(XenABI.domidSelf), space: UInt64, idx: UInt64, gpfn: UInt64) -> HypercallResult {
            env.put(le(domid, 2) + [0, 0] + le(space, 4) + le(idx) + le(gpfn), at: arg)
            return call(env, 12, 7, arg)
        }
        #expect(physmap(space: 0, idx: 1, gpfn: 0x100) == .error(.inval))
        #expect(physmap(domid: 5, space: 0, idx: 0, gpfn: 0x100) == .error(.srch))
        #expect(physmap(space: 0, idx: 0, gpfn: 1 << 30) == .error(.inval))       // not guest RAM
        #expect(physmap(space: 1, idx: 0, gpfn: 0x101) == .ok())
        #expect(env.grantFrames[0] == 0x101)
        #expect(physmap(space: 1, idx: 1, gpfn: 0x102) == .error(.inval))
        #expect(physmap(space: 1, idx: 1 << 31, gpfn: 0x102) == .error(.inval))   // a v2 status frame
        #expect(physmap(space: 2, idx: 0, gpfn: 0x102) == .error(.nosys))
        #expect(physmap(space: 4, idx: 0, gpfn: 0x102) == .error(.inval))
        #expect(call(env, 12, 9, arg) == .error(.nosys))                          // other memory_op commands
        #expect(call(env, 12, 7, 0x10) == .error(.fault))
    }

    @Test func grantTableQueries() {
        let env = hvmEnv()
        env.put(le(selfID, 2) + [0, 0] + le(99, 4) + le(99, 4) + le(0x7777, 4), at: arg)
        #expect(call(env, 20, 6, arg, 1) == .ok())
        #expect(env.read(arg + 4, count: 10) == le(1, 4) + le(1, 4) + le(0, 2))
        env.put(le(5, 2) + [0, 0] + le(0, 4) + le(0, 4) + le(0, 4), at: arg)
        #expect(call(env, 20, 6, arg, 1) == .ok())
        #expect(env.read(arg + 12, count: 2) == [0xFE, 0xFF])                     // GNTST_bad_domain
        #expect(call(env, 20, 6, arg, 2) == .error(.inval))
        for (version, result) in [(UInt64(1), HypercallResult.ok()), (2, .error(.nosys)), (3, .error(.inval)), (0, .error(.inval))] {
            env.put(le(version, 4), at: arg)
            #expect(call(env, 20, 8, arg, 7) == result, "set_version \(version)")   // count is not looked at
            #expect(env.read(arg, count: 4) == le(1, 4))                          // the current version comes back
        }
        env.put(le(selfID, 2) + [0, 0] + le(0, 4), at: arg)
        #expect(call(env, 20, 10, arg, 1) == .ok())
        #expect(env.read(arg + 4, count: 4) == le(1, 4))
        env.put(le(5, 2) + [0, 0] + le(0, 4), at: arg)
        #expect(call(env, 20, 10, arg, 1) == .error(.srch))
        #expect(call(env, 20, 99, arg, 1) == .error(.nosys))
        #expect(call(env, 20, 6, 0x10, 1) == .error(.fault))
    }

    /// The 2-level event channels, with Xen's codes (xen/common/event_channel.c).
    @Test func eventChannels() {
        let env = hvmEnv()
        let selfID = UInt64(XenABI.domidSelf)
        // Unimplemented commands: -ENOSYS before the argument is read.
        for command: UInt64 in [0, 1, 2, 10, 11, 12, 13, 99] { #expect(call(env, 32, command, 0) == .error(.nosys)) }
        // alloc_unbound {dom, remote_dom, port out}: port 0 is reserved, so the first is 1.
        env.put(le(selfID, 2) + le(0, 2) + le(0xFFFF, 4), at: arg)
        #expect(call(env, 32, 6, arg) == .ok())
        #expect(env.read(arg + 4, count: 4) == le(1, 4))
        #expect(call(env, 32, 6, arg) == .ok())
        #expect(env.read(arg + 4, count: 4) == le(2, 4))
        env.put(le(3, 2) + le(0, 2) + le(0, 4), at: arg)
        #expect(call(env, 32, 6, arg) == .error(.srch), "another domain")
        #expect(call(env, 32, 6, 0x10) == .error(.fault))
        // status {dom, port, status out, vcpu out, union out}.
        env.put(le(selfID, 2) + [0, 0] + le(1, 4) + [UInt8](repeating: 0xEE, count: 16), at: arg)
        #expect(call(env, 32, 5, arg) == .ok())
        #expect(env.read(arg + 8, count: 12) == le(1, 4) + le(0, 4) + le(0, 4), "unbound, vCPU 0, remote domain 0")
        env.put(le(selfID, 2) + [0, 0] + le(0, 4), at: arg)
        #expect(call(env, 32, 5, arg) == .ok())
        #expect(env.read(arg + 8, count: 4) == le(0, 4), "port 0 reads closed")
        env.put(le(selfID, 2) + [0, 0] + le(5000, 4), at: arg)
        #expect(call(env, 32, 5, arg) == .error(.inval), "beyond the table")
        // send: unbound drops; an IPI raises on its vCPU; a closed port is -EINVAL.
        env.put(le(1, 4), at: arg)
        #expect(call(env, 32, 4, arg) == .ok() && env.raised.isEmpty)
        env.put(le(2, 4) + le(0, 4), at: arg)
        #expect(call(env, 32, 7, arg) == .ok(), "bind_ipi to vCPU 2")
        let ipi = UInt32(env.read(arg + 4, count: 1)![0])
        #expect(ipi == 3)
        env.put(le(UInt64(ipi), 4), at: arg)
        #expect(call(env, 32, 4, arg) == .ok())
        #expect(env.raised.map(\.port) == [3] && env.raised.map(\.vcpu) == [2])
        env.put(le(9, 4) + le(0, 4), at: arg)
        #expect(call(env, 32, 7, arg) == .error(.noent), "no vCPU 9")
        env.put(le(40, 4), at: arg)
        #expect(call(env, 32, 4, arg) == .error(.inval), "a free port")
        // bind_vcpu {port, vcpu}: unbound ports move; an IPI's target is fixed; no such vCPU first.
        env.put(le(1, 4) + le(3, 4), at: arg)
        #expect(call(env, 32, 8, arg) == .ok())
        #expect(env.channels[1]?.vcpu == 3)
        env.put(le(3, 4) + le(1, 4), at: arg)
        #expect(call(env, 32, 8, arg) == .error(.inval))
        env.put(le(5000, 4) + le(7, 4), at: arg)
        #expect(call(env, 32, 8, arg) == .error(.noent), "the vCPU is checked before the port")
        // unmask: any valid port (the environment clears the bit); beyond the table -EINVAL.
        env.put(le(1, 4), at: arg)
        #expect(call(env, 32, 9, arg) == .ok() && env.unmasked == [1])
        env.put(le(5000, 4), at: arg)
        #expect(call(env, 32, 9, arg) == .error(.inval))
        // close: then the port is closed, closing again -EINVAL, and the next alloc reuses it.
        env.put(le(2, 4), at: arg)
        #expect(call(env, 32, 3, arg) == .ok())
        #expect(call(env, 32, 3, arg) == .error(.inval))
        env.put(le(0, 4), at: arg)
        #expect(call(env, 32, 3, arg) == .error(.inval), "the reserved port")
        env.put(le(selfID, 2) + le(0, 2) + le(0, 4), at: arg)
        #expect(call(env, 32, 6, arg) == .ok())
        #expect(env.read(arg + 4, count: 4) == le(2, 4))
    }

    @Test func theConsolePortNotifiesTheBackEnd() {
        let env = hvmEnv()
        let port = env.channels.allocateBackend(remotePort: 1)!
        env.put(le(UInt64(port), 4), at: arg)
        #expect(call(env, 32, 4, arg) == .ok())
        #expect(env.backendNotified == [port])
        env.put(le(UInt64(XenABI.domidSelf), 2) + [0, 0] + le(UInt64(port), 4), at: arg)
        #expect(call(env, 32, 5, arg) == .ok())
        #expect(env.read(arg + 8, count: 16) == le(2, 4) + le(0, 4) + le(0, 4) + le(1, 4), "interdomain with domain 0, its port 1")
    }

    @Test func portsRunOutWithENOSPC() {
        var table = EventChannelTable(limit: 128)
        for expected in 1..<128 { #expect(table.allocateUnbound(remoteDomain: 0) == .success(UInt32(expected))) }
        #expect(table.allocateUnbound(remoteDomain: 0) == .failure(.noSpace))
        #expect(table.channels.count == 128)
    }

    @Test func upcallVectors() {
        let env = hvmEnv()
        env.put(le(1, 4) + [0xF3], at: arg)
        #expect(call(env, 34, 23, arg) == .ok() && env.upcallVectors[1] == 0xF3)
        env.put(le(1, 4) + [0x0F], at: arg)
        #expect(call(env, 34, 23, arg) == .error(.inval))
        env.put(le(8, 4) + [0xF3], at: arg)
        #expect(call(env, 34, 23, arg) == .error(.noent))
        #expect(call(FakeEnvironment(), 34, 23, arg) == .error(.nosys), "HVM only")
    }

    @Test func featuresDependOnTheGuestKind() {
        let hvm = hvmEnv(), pv = FakeEnvironment()
        for (env, expected) in [(hvm, UInt64(0x5)), (pv, 0xF)] {
            env.put(le(0, 4) + le(0xFFFF_FFFF, 4), at: arg)
            #expect(call(env, 17, 6, arg) == .ok())
            #expect(env.read(arg + 4, count: 4) == le(expected, 4))
        }
    }

    @Test func sharedInfoLayouts() {
        let time = SharedInfo.Time(tscTimestamp: 0x1122_3344_5566_7788, systemTime: 5_000, mul: 0x8000_0000, shift: -1)
        for abi in [SharedInfo.ABI.x86_64, .x86_32] {
            let page = SharedInfo(abi: abi, vcpuTimes: [time, time], wallclockSeconds: 0x1_2345_6789, wallclockNanoseconds: 7).bytes
            #expect(page.count == 4096)
            func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(page[o + $1]) << (8 * $1) } }
            func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(page[o + $1]) << (8 * $1) } }
            for id in 0..<2 {
                let v = id * 64
                #expect(page[v] == 0 && page[v + 1] == 1)                       // nothing pending, upcalls masked
                #expect(u32(v + 32) == 2 && u64(v + 40) == time.tscTimestamp && u64(v + 48) == 5_000)
                #expect(u32(v + 56) == 0x8000_0000 && page[v + 60] == 0xFF)
            }
            #expect(u32(128 + 32) == 0)                                          // no third vCPU
            let (version, sec, nsec, high) = abi == .x86_64 ? (3072, 3076, 3080, 3084) : (2304, 2308, 2312, 2340)
            #expect(u32(version) == 2 && u32(sec) == 0x2345_6789 && u32(nsec) == 7 && u32(high) == 1)
            let events = abi == .x86_64 ? 2048..<3072 : 2048..<2304
            #expect(page[events].allSatisfy { $0 == 0 })
        }
    }

    @Test(arguments: [UInt64(1_000_000), 500_000_000, 1_000_000_000, 2_100_000_000, 2_995_000_000, 9_000_000_000])
    func tscScaleGivesNanoseconds(hertz: UInt64) {
        let (mul, shift) = SharedInfo.scale(tscHertz: hertz)
        #expect(mul >= 1 << 31)
        // One second of ticks is one second, to within a part in 10^8.
        let ns = SharedInfo.nanoseconds(ticks: hertz, mul: mul, shift: shift)
        #expect(ns <= 1_000_000_000 && 1_000_000_000 - ns <= 10)
    }
}

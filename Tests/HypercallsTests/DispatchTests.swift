import Testing
@testable import Hypercalls

/// A flat 1 MiB "virtual" memory from 0x10000 and four vCPUs, recording what the VMM is told.
final class FakeEnvironment: HypercallEnvironment, @unchecked Sendable {
    static let base: UInt64 = 0x10000
    var memory = [UInt8](repeating: 0, count: 1 << 20)
    var caller = 0
    var vcpuCount = 4
    var up: Set<Int> = [0]
    var initialised: Set<Int> = [0]
    var contexts: [Int: VCPUContext] = [:]
    var console: [UInt8] = []
    var trapTable: [TrapInfo]? = nil
    var callbacks: [UInt16: UInt64] = [:]

    func read(_ virtual: UInt64, count: Int) -> [UInt8]? {
        guard virtual >= Self.base, virtual - Self.base <= UInt64(memory.count), count <= memory.count - Int(virtual - Self.base) else { return nil }
        let start = Int(virtual - Self.base)
        return Array(memory[start..<start + count])
    }
    func write(_ bytes: [UInt8], at virtual: UInt64) -> Bool {
        guard read(virtual, count: bytes.count) != nil else { return false }
        let start = Int(virtual - Self.base)
        memory.replaceSubrange(start..<start + bytes.count, with: bytes)
        return true
    }
    func put(_ bytes: [UInt8], at virtual: UInt64) { _ = write(bytes, at: virtual) }
    func isRAMPage(_ physical: UInt64) -> Bool { physical < 64 << 20 }
    func consoleWrite(_ bytes: [UInt8]) { console += bytes }
    func isUp(_ vcpu: Int) -> Bool { up.contains(vcpu) }
    func isInitialised(_ vcpu: Int) -> Bool { initialised.contains(vcpu) }
    func initialise(_ vcpu: Int, with context: VCPUContext) { initialised.insert(vcpu); contexts[vcpu] = context }
    func up(_ vcpu: Int) { up.insert(vcpu) }
    func down(_ vcpu: Int) -> Bool { up.remove(vcpu); return up.isEmpty }
    func runstate(_ vcpu: Int) -> RunstateInfo { RunstateInfo(state: up.contains(vcpu) ? 0 : 3, entryTime: 7, time: [1, 0, 0, 2]) }
    func setTrapTable(_ entries: [TrapInfo]) { trapTable = entries }
    func registerCallback(type: UInt16, address: UInt64, flags: UInt16) { callbacks[type] = address }
    func unregisterCallback(type: UInt16) { callbacks[type] = nil }

    var isHVM = false
    var params: [UInt32: UInt64] = [:]
    var sharedInfo: (frame: UInt64, abi: SharedInfo.ABI)?
    var sharedInfoABI: SharedInfo.ABI?
    func latchSharedInfoABI(_ abi: SharedInfo.ABI) { sharedInfoABI = abi }
    var grantFrames: [UInt64: UInt64] = [:]
    func hvmParam(_ index: UInt32) -> UInt64 { params[index] ?? 0 }
    func setHVMParam(_ index: UInt32, _ value: UInt64) { params[index] = value }
    func mapSharedInfo(frame: UInt64, abi: SharedInfo.ABI) -> Bool {
        guard isRAMPage(frame << 12), frame < 1 << 40 else { return false }
        sharedInfo = (frame, abi)
        return true
    }
    func mapGrantFrame(_ index: UInt64, frame: UInt64) -> Bool {
        guard isRAMPage(frame << 12), frame < 1 << 40 else { return false }
        grantFrames[index] = frame
        return true
    }

    var channels = EventChannelTable(limit: 1024)
    var raised: [(port: UInt32, vcpu: Int)] = []
    var unmasked: [UInt32] = []
    var backendNotified: [UInt32] = []
    func withEventChannels<T>(_ body: (inout EventChannelTable) -> T) -> T { body(&channels) }
    func raise(port: UInt32, vcpu: Int) { raised.append((port, vcpu)) }
    func unmask(port: UInt32) { unmasked.append(port) }
    func notifyBackend(port: UInt32) { backendNotified.append(port) }
    var upcallVectors: [Int: UInt8] = [:]
    func setUpcallVector(_ vector: UInt8, vcpu: Int) { upcallVectors[vcpu] = vector }
}

func le(_ v: UInt64, _ n: Int = 8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

func call(_ env: FakeEnvironment, _ number: UInt64, _ args: UInt64...) -> HypercallResult {
    HypercallDispatcher.handle(HypercallRequest(number: number, arguments: args), in: env)
}

/// A context with the allowed fields set and everything else zero.
func context(rip: UInt64 = 0xFFFF_FFFF_8010_0000, rsp: UInt64 = 0xFFFF_FFFF_8020_0000, cr3: UInt64 = 0x1000,
             flags: UInt64 = 1 << 2 | 1 << 5) -> [UInt8] {
    var c = [UInt8](repeating: 0, count: VCPUContext.size)
    func set(_ offset: Int, _ v: UInt64) { c.replaceSubrange(offset..<offset + 8, with: le(v)) }
    set(512, flags); set(520 + 128, rip); set(520 + 152, rsp); set(520 + 112, 7); set(520 + 104, 9); set(4984 + 24, cr3)
    return c
}

@Suite("Hypercall dispatch")
struct DispatchTests {
    let ctx: UInt64 = 0x20000

    @Test(arguments: [UInt64(1), 11, 12, 42, 127, 0xFFFF_FFFF, 0x1_0000_0018])
    func unknownHypercallsAreENOSYS(number: UInt64) {
        #expect(call(FakeEnvironment(), number, 0, 0, 0) == .error(.nosys))
    }

    @Test func isUpAndENOENT() {
        let env = FakeEnvironment()
        #expect(call(env, 24, 3, 0, 0) == .ok(1))
        #expect(call(env, 24, 3, 1, 0) == .ok(0))
        for id: UInt64 in [4, 0xFFFF_FFFF, 1000] { #expect(call(env, 24, 3, id, 0) == .error(.noent)) }
        // vcpuid is an unsigned int: the upper half of the register does not count.
        #expect(call(env, 24, 3, 0xFFFF_FFFF_0000_0001, 0) == .ok(0))
        // -ENOENT comes before the command is looked at.
        #expect(call(env, 24, 99, 4, 0) == .error(.noent))
        #expect(call(env, 24, 99, 1, 0) == .error(.nosys))
    }

    @Test func initialiseAndUp() throws {
        let env = FakeEnvironment()
        env.put(context(), at: ctx)
        #expect(call(env, 24, 1, 1, 0) == .error(.inval))           // up before initialise
        #expect(call(env, 24, 0, 1, ctx) == .ok())
        #expect(env.contexts[1] == VCPUContext(flags: 0x24, rip: 0xFFFF_FFFF_8010_0000, rsp: 0xFFFF_FFFF_8020_0000,
                                               rdi: 7, rsi: 9, pageTableBase: 0x1000))
        #expect(call(env, 24, 0, 1, ctx) == .error(.exist))          // twice
        #expect(call(env, 24, 0, 0, ctx) == .error(.exist))          // the running boot vCPU
        #expect(call(env, 24, 1, 1, 0) == .ok())
        #expect(env.up.contains(1))
        #expect(call(env, 24, 1, 1, 0) == .ok())                     // already up
    }

    /// Every byte outside the allowed fields, one at a time, is -EINVAL.
    @Test func everyStrayByteIsEINVAL() {
        let fields: [Int] = [512, 648, 672, 632, 624, 5008]          // flags, rip, rsp, rdi, rsi, ctrlreg[3]
        var allowed = Set<Int>()
        for field in fields { allowed.formUnion(field..<field + 8) }
        let env = FakeEnvironment()
        let named: [Int] = [520, 600, 656, 664, 4984, 5016, 5160]    // r15, rax, cs, rflags, ctrlreg[0], ctrlreg[4], gs_base_user
        var offsets: [Int] = Array(stride(from: 0, to: VCPUContext.size, by: 37))
        offsets += named
        offsets.removeAll { allowed.contains($0) }
        for offset in offsets {
            var c = context()
            c[offset] = 1
            env.put(c, at: ctx)
            #expect(call(env, 24, 0, 2, ctx) == .error(.inval), "byte \(offset)")
        }
        #expect(env.contexts.isEmpty)
    }

    @Test(arguments: [
        ("unknown flag", context(flags: 1 << 6)), ("non-canonical rip", context(rip: 0x0000_8000_0000_0000)),
        ("non-canonical rsp", context(rsp: 0x1234_0000_0000_0000)), ("unaligned cr3", context(cr3: 0x1008)),
        ("cr3 beyond RAM", context(cr3: 64 << 20)),
    ])
    func badFieldsAreEINVAL(_ name: String, _ bytes: [UInt8]) {
        let env = FakeEnvironment()
        env.put(bytes, at: ctx)
        #expect(call(env, 24, 0, 1, ctx) == .error(.inval))
    }

    @Test(arguments: [UInt64(0), 0x1000, FakeEnvironment.base + (1 << 20) - 100, 0xFFFF_FFFF_FFFF_F000, UInt64.max])
    func unreadableContextIsEFAULT(pointer: UInt64) {
        #expect(call(FakeEnvironment(), 24, 0, 1, pointer) == .error(.fault))
    }

    @Test func downAndTheLastVCPU() {
        let env = FakeEnvironment()
        env.up = [0, 1]
        #expect(call(env, 24, 2, 1, 0) == .ok())
        #expect(call(env, 24, 3, 1, 0) == .ok(0))
        #expect(call(env, 24, 2, 1, 0) == .ok())                     // already down
        #expect(call(env, 24, 2, 0, 0) == HypercallResult(value: 0, effect: .allVCPUsDown))
    }

    @Test func runstate() {
        let env = FakeEnvironment()
        #expect(call(env, 24, 4, 0, ctx) == .ok())
        #expect(env.read(ctx, count: 48) == RunstateInfo(state: 0, entryTime: 7, time: [1, 0, 0, 2]).bytes)
        #expect(call(env, 24, 4, 0, 8) == .error(.fault))
        #expect(call(env, 24, 10, 0, ctx) == .error(.nosys))         // register_vcpu_info
    }

    @Test func trapTable() {
        let env = FakeEnvironment()
        let table: [(UInt8, UInt64)] = [(3, 0xFFFF_FFFF_8000_1000), (14, 0xFFFF_FFFF_8000_2000), (0x80, 0x40_0000)]
        var entries: [UInt8] = []
        for (vector, address) in table { entries += [vector, 3, 0x10, 0, 0, 0, 0, 0] + le(address) }
        env.put(entries + [UInt8](repeating: 0, count: 16), at: ctx)
        #expect(call(env, 0, ctx) == .ok())
        #expect(env.trapTable?.map(\.vector) == [3, 14, 0x80])
        #expect(env.trapTable?.first?.cs == 0x10)
        env.put([9, 0, 0, 0, 0, 0, 0, 0] + le(0x8000_0000_0000_0000), at: ctx)
        #expect(call(env, 0, ctx) == .error(.inval))
        #expect(call(env, 0, 0) == .ok())
        #expect(env.trapTable == [])
        // No terminator within the limit.
        let endless = FakeEnvironment()
        let entry: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0] + le(0x1000)
        endless.put((0..<(XenABI.trapTableLimit + 1)).flatMap { _ in entry }, at: ctx)
        #expect(call(endless, 0, ctx) == .error(.tooBig))
        // Running off the end of memory before the terminator.
        let end = FakeEnvironment.base + (1 << 20)
        endless.put(entry + entry, at: end - 32)
        #expect(call(endless, 0, end - 32) == .error(.fault))
    }

    @Test func callbacks() {
        let env = FakeEnvironment()
        #expect(call(env, 4, 0xFFFF_FFFF_8000_0100, 0x8000_0000_0000_0000, 0x200) == .ok())
        #expect(env.callbacks == [0: 0xFFFF_FFFF_8000_0100, 2: 0x200])  // the non-canonical one is dropped
        env.put(le(1, 2) + le(0, 2) + le(0, 4) + le(0x300), at: ctx)
        #expect(call(env, 30, 0, ctx) == .ok())
        #expect(env.callbacks[1] == 0x300)
        env.put(le(99, 2) + le(0, 2) + le(0, 4) + le(0x300), at: ctx)
        #expect(call(env, 30, 0, ctx) == .error(.nosys))
        env.put(le(0, 2) + le(0, 2) + le(0, 4) + le(0x8000_0000_0000_0000), at: ctx)
        #expect(call(env, 30, 0, ctx) == .error(.inval))
        env.put(le(0, 2) + le(0, 2), at: ctx)
        #expect(call(env, 30, 1, ctx) == .error(.inval))             // only NMI can be unregistered
        env.put(le(4, 2) + le(0, 2), at: ctx)
        #expect(call(env, 30, 1, ctx) == .ok())
        #expect(call(env, 30, 9, ctx) == .error(.nosys))
    }

    @Test func consoleIO() {
        let env = FakeEnvironment()
        let text = Array("hello from a hypercall\n".utf8)
        env.put(text, at: ctx)
        #expect(call(env, 18, 0, UInt64(text.count), ctx) == .ok())
        #expect(env.console == text)
        // A buffer that runs off the end writes nothing at all.
        #expect(call(env, 18, 0, 5000, FakeEnvironment.base + (1 << 20) - 4000) == .error(.fault))
        #expect(call(env, 18, 0, 16, UInt64.max - 4) == .error(.fault))
        #expect(env.console == text)
        #expect(call(env, 18, 1, 10, ctx) == .ok(0))
        #expect(call(env, 18, 7, 10, ctx) == .error(.nosys))
        // count is an unsigned int: a huge upper half is ignored.
        #expect(call(env, 18, 0, 0xFFFF_FFFF_0000_0002, ctx) == .ok())
        #expect(env.console == text + Array("he".utf8))
    }

    @Test(arguments: [(UInt32(0), UInt32(0)), (1, 1), (3, 3), (4, 4), (77, 77)])
    func shutdown(reason: UInt32, expected: UInt32) {
        let env = FakeEnvironment()
        env.put(le(UInt64(reason), 4), at: 0x20000)
        #expect(call(env, 29, 2, 0x20000) == HypercallResult(value: 0, effect: .shutdown(reason: expected)))
    }

    @Test func schedOp() {
        let env = FakeEnvironment()
        #expect(call(env, 29, 0, 0) == .ok())
        #expect(call(env, 29, 1, 0) == .ok())
        #expect(call(env, 29, 2, 8) == .error(.fault))
        #expect(call(env, 29, 3, ctx) == .error(.nosys))
    }

    @Test func xenVersion() {
        let env = FakeEnvironment()
        #expect(call(env, 17, 0, 0) == .ok(0x0004_0013))
        #expect(call(env, 17, 1, ctx) == .ok())
        #expect(env.read(ctx, count: 16) == Array("-swiftlet".utf8) + [UInt8](repeating: 0, count: 7))
        #expect(call(env, 17, 3, ctx) == .ok())
        #expect(env.read(ctx, count: 30) == Array("hvm-3.0-x86_64 hvm-3.0-x86_32".utf8) + [0])
        env.put(le(0, 4) + le(0xDEAD, 4), at: ctx)
        #expect(call(env, 17, 6, ctx) == .ok())
        #expect(env.read(ctx, count: 8) == le(0, 4) + le(0xF, 4))
        env.put(le(1, 4), at: ctx)
        #expect(call(env, 17, 6, ctx) == .error(.inval))
        #expect(call(env, 17, 7, 0) == .ok(4096))
        #expect(call(env, 17, 99, 0) == .error(.nosys))
        #expect(call(env, 17, 1, 8) == .error(.fault))
    }
}

@Suite("Hypercall page")
struct HypercallPageTests {
    @Test(arguments: [true, false])
    func stubs(longMode: Bool) {
        let page = HypercallPage.bytes(longMode: longMode)
        #expect(page.count == 4096)
        let stub24 = Array(page[24 * 32..<25 * 32])
        let code: [UInt8] = [0xB8, 24, 0, 0, 0, 0xE5, 0xE8] + (longMode ? [0x48, 0x63, 0xC0] : []) + [0xC3]
        #expect(Array(stub24.prefix(code.count)) == code)
        #expect(stub24.dropFirst(code.count).allSatisfy { $0 == 0xCC })
        #expect(Array(page[23 * 32..<23 * 32 + 3]) == [0x0F, 0x0B, 0xCC])
        #expect(Array(page[127 * 32..<127 * 32 + 2]) == [0xB8, 127])
    }

    @Test func cpuidLeaves() {
        let leaves = XenABI.cpuidLeaves
        let signature = [leaves[0].ebx, leaves[0].ecx, leaves[0].edx].flatMap { le(UInt64($0), 4) }
        #expect(String(decoding: signature, as: UTF8.self) == "XenVMMXenVMM")
        #expect(leaves[0].eax == 0x4000_0002 && leaves[2].eax == 1 && leaves[2].ebx == 0x4000_0000)
    }
}

import Hypercalls

/// Hypercalls from a fuzz input, against a fake VMM whose guest memory is the input's tail.
///
/// Layout (every missing byte reads as zero):
///
///     0        number of calls - 1 (low 2 bits: 1 to 4 calls, run in order on one state)
///     1        low nibble % 9: vCPU count (0...8); high nibble: calling vCPU (mod the count)
///     2, 3     bitmaps of the vCPUs that are up, and initialised (bit n: vCPU n)
///     4        bit 0: guest frames below 64 MiB are RAM; bits 1-3: entries of runstate time;
///              bit 4: the guest is HVM (PVH, Multiboot, Linux entry) rather than xen64
///     5...7    unused
///     8...     one 48-byte record per call: selector (byte 0; below 0xF0 picks a served call,
///              `HypercallNumber.allCases[selector % count]`, else the number is argument 4),
///              byte 1 bit 0: the caller is 32-bit, 6 unused bytes, then the five arguments as
///              little-endian UInt64s
///     then     guest memory, at guest-virtual address 0
///
/// Each result must be 0, positive, or a negated `XenErrno`; the fake VMM checks that the
/// dispatcher only asks it for what the call allows (vCPUs that exist, canonical addresses,
/// contexts that passed their checks, console bytes within the count asked for, only the
/// HVM parameter and grant frames that exist).
public enum HypercallHarness {
    public static let headerSize = 8
    public static let callSize = 48

    /// Runs the calls of `input` and returns their results, in order.
    @discardableResult
    public static func run(_ input: [UInt8]) -> [HypercallResult] {
        func byte(_ index: Int) -> UInt8 { index < input.count ? input[index] : 0 }
        func u64(_ offset: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(byte(offset + $1)) << (8 * UInt64($1)) } }

        let calls = 1 + Int(byte(0) & 3)
        let memoryStart = min(input.count, headerSize + calls * callSize)
        let env = FuzzEnvironment(memory: Array(input[memoryStart...]), vcpus: byte(1), up: byte(2),
                                  initialised: byte(3), flags: byte(4))
        var results: [HypercallResult] = []
        for call in 0..<calls {
            let record = headerSize + call * callSize
            let arguments = (0..<5).map { u64(record + 8 + 8 * $0) }
            let selector = byte(record)
            let number = selector < 0xF0
                ? UInt64(HypercallNumber.allCases[Int(selector) % HypercallNumber.allCases.count].rawValue)
                : arguments[4]
            var request = HypercallRequest(number: number, arguments: arguments)
            request.is64Bit = byte(record + 1) & 1 == 0
            invariant(!request.name.isEmpty, "hypercall \(number) has no name")
            env.consoleLimit = number == UInt64(HypercallNumber.consoleIO.rawValue) ? Int(UInt32(truncatingIfNeeded: arguments[1])) : 0
            env.consoleWritten = 0
            let result = HypercallDispatcher.handle(request, in: env)
            check(result, number: number, command: Int32(truncatingIfNeeded: arguments[0]))
            results.append(result)
        }

        // VCPUOP_initialise's decoder on its own: the memory as given, and cut or padded to size.
        let memory = Array(input[memoryStart...])
        let inRAM = { (base: UInt64) in env.isRAMPage(base) }
        if memory.count != VCPUContext.size {
            invariant(VCPUContext.parse(memory, pageTableInRAM: inRAM) == .failure(.fault),
                      "a \(memory.count)-byte context was not refused with EFAULT")
        }
        let sized = Array(memory.prefix(VCPUContext.size)) + [UInt8](repeating: 0, count: max(0, VCPUContext.size - memory.count))
        if case let .success(context) = VCPUContext.parse(sized, pageTableInRAM: inRAM) {
            invariant(encode(context) == sized, "an accepted context does not round-trip")
            checkAccepted(context, env)
        }

        // shared_info's TSC scaling, for the frequency in the first call's argument 3: a second
        // of ticks must come out as a second of nanoseconds.
        let hertz = u64(headerSize + 8 + 24)
        if hertz > 0 {
            let (mul, shift) = SharedInfo.scale(tscHertz: hertz)
            let second = SharedInfo.nanoseconds(ticks: hertz, mul: mul, shift: shift)
            invariant(second >= 999_999_998 && second <= 1_000_000_002, "\(hertz) Hz: one second of ticks is \(second) ns")
        }
        _ = SharedInfo.nanoseconds(ticks: u64(headerSize + 8 + 32), mul: UInt32(truncatingIfNeeded: u64(headerSize + 8 + 16)),
                                   shift: Int8(bitPattern: byte(5)))
        return results
    }

    private static func check(_ result: HypercallResult, number: UInt64, command: Int32) {
        invariant(result.value >= 0 || XenErrno(rawValue: Int32(truncatingIfNeeded: -result.value)) != nil,
                  "hypercall \(number) returned \(result.value), not a Xen errno")
        switch result.effect {
        case .none: break
        case .shutdown:
            invariant(number == UInt64(HypercallNumber.schedOp.rawValue) && command == 2, "shutdown from hypercall \(number)")
        case .allVCPUsDown:
            invariant(number == UInt64(HypercallNumber.vcpuOp.rawValue) && command == 2, "all vCPUs down from hypercall \(number)")
        }
        if HypercallNumber(rawValue: UInt32(truncatingIfNeeded: number)) == nil || number > UInt64(UInt32.max) {
            invariant(result == .error(.nosys), "unserved hypercall \(number) did not answer ENOSYS")
        }
    }

    static func checkAccepted(_ context: VCPUContext, _ env: FuzzEnvironment) {
        invariant(context.flags & ~VCPUContext.knownFlags == 0, "context with unknown flags \(context.flags) accepted")
        invariant(isCanonical(context.rip) && isCanonical(context.rsp), "context with a non-canonical rip or rsp accepted")
        invariant(context.pageTableBase % 4096 == 0 && env.isRAMPage(context.pageTableBase),
                  "context with page-table base \(context.pageTableBase) accepted")
    }

    static func isCanonical(_ address: UInt64) -> Bool {
        let top = address >> 47
        return top == 0 || top == 0x1_FFFF
    }

    /// `struct vcpu_guest_context` with only the fields `VCPUContext` carries (x86-64 offsets).
    static func encode(_ context: VCPUContext) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: VCPUContext.size)
        for (offset, value) in [(512, context.flags), (520 + 128, context.rip), (520 + 152, context.rsp),
                                (520 + 112, context.rdi), (520 + 104, context.rsi), (4984 + 24, context.pageTableBase)] {
            bytes.replaceSubrange(offset..<offset + 8, with: le(value))
        }
        return bytes
    }
}

/// The fake VMM: flat guest memory from virtual address 0, up to eight vCPUs, and checks on
/// everything the dispatcher asks of it.
final class FuzzEnvironment: HypercallEnvironment {
    var memory: [UInt8]
    let caller: Int
    let vcpuCount: Int
    var up: Set<Int>
    var initialised: Set<Int>
    let framesAreRAM: Bool
    let isHVM: Bool
    var hvmParams: [UInt32: UInt64] = [:]
    var sharedInfoABI: SharedInfo.ABI?
    let runstateEntries: Int
    /// The count of the console_io call in progress, and the bytes it has written so far.
    var consoleLimit = 0
    var consoleWritten = 0

    init(memory: [UInt8], vcpus: UInt8, up: UInt8, initialised: UInt8, flags: UInt8) {
        self.memory = memory
        vcpuCount = Int(vcpus & 0xF) % 9
        caller = vcpuCount == 0 ? 0 : Int(vcpus >> 4) % vcpuCount
        self.up = Set((0..<vcpuCount).filter { up & 1 << $0 != 0 })
        self.initialised = Set((0..<vcpuCount).filter { initialised & 1 << $0 != 0 })
        framesAreRAM = flags & 1 != 0
        runstateEntries = Int(flags >> 1 & 7)
        isHVM = flags & 0x10 != 0
    }

    func read(_ virtual: UInt64, count: Int) -> [UInt8]? {
        invariant(count >= 0, "read of \(count) bytes")
        guard virtual <= UInt64(memory.count), count <= memory.count - Int(virtual) else { return nil }
        return Array(memory[Int(virtual)..<Int(virtual) + count])
    }

    func write(_ bytes: [UInt8], at virtual: UInt64) -> Bool {
        guard virtual <= UInt64(memory.count), bytes.count <= memory.count - Int(virtual) else { return false }
        memory.replaceSubrange(Int(virtual)..<Int(virtual) + bytes.count, with: bytes)
        return true
    }

    func isRAMPage(_ physical: UInt64) -> Bool { framesAreRAM && physical < 64 << 20 }

    func consoleWrite(_ bytes: [UInt8]) {
        consoleWritten += bytes.count
        invariant(bytes.count <= 4096 && consoleWritten <= consoleLimit,
                  "console got \(consoleWritten) bytes from a call for \(consoleLimit)")
    }

    private func checkVCPU(_ vcpu: Int) {
        invariant(vcpu >= 0 && vcpu < vcpuCount, "asked about vCPU \(vcpu) of \(vcpuCount)")
    }

    func isUp(_ vcpu: Int) -> Bool { checkVCPU(vcpu); return up.contains(vcpu) }
    func isInitialised(_ vcpu: Int) -> Bool { checkVCPU(vcpu); return initialised.contains(vcpu) }

    func initialise(_ vcpu: Int, with context: VCPUContext) {
        checkVCPU(vcpu)
        invariant(!initialised.contains(vcpu), "vCPU \(vcpu) initialised twice")
        HypercallHarness.checkAccepted(context, self)
        initialised.insert(vcpu)
    }

    func up(_ vcpu: Int) {
        checkVCPU(vcpu)
        invariant(initialised.contains(vcpu) && !up.contains(vcpu), "vCPU \(vcpu) brought up uninitialised or twice")
        up.insert(vcpu)
    }

    func down(_ vcpu: Int) -> Bool {
        checkVCPU(vcpu)
        invariant(up.contains(vcpu), "vCPU \(vcpu) taken down while down")
        up.remove(vcpu)
        return up.isEmpty
    }

    var channels = EventChannelTable(limit: 1024)
    func withEventChannels<T>(_ body: (inout EventChannelTable) -> T) -> T {
        let result = body(&channels)
        invariant(channels.channels.count <= channels.limit && channels.channels[0].binding == .reserved, "the event channel table broke its limits")
        return result
    }
    func raise(port: UInt32, vcpu: Int) {
        checkVCPU(vcpu)
        invariant(channels.isValid(port), "raised invalid port \(port)")
    }
    func unmask(port: UInt32) { invariant(channels.isValid(port), "unmasked invalid port \(port)") }
    func notifyBackend(port: UInt32) { invariant(channels.isValid(port), "notified through invalid port \(port)") }
    func setUpcallVector(_ vector: UInt8, vcpu: Int) { checkVCPU(vcpu); invariant(vector >= 0x10, "upcall vector \(vector)") }

    func runstate(_ vcpu: Int) -> RunstateInfo {
        checkVCPU(vcpu)
        let info = RunstateInfo(state: up.contains(vcpu) ? 0 : 3, entryTime: UInt64(vcpu) << 32 | 7,
                                time: (0..<runstateEntries).map { UInt64($0) * 0x1_0001 })
        invariant(info.bytes.count == 48, "runstate info of \(info.bytes.count) bytes")
        return info
    }

    func setTrapTable(_ entries: [TrapInfo]) {
        invariant(entries.count < XenABI.trapTableLimit, "trap table of \(entries.count) entries")
        invariant(entries.allSatisfy { $0.address != 0 && XenABI.isCanonical($0.address) }, "trap table with a bad address")
    }

    func registerCallback(type: UInt16, address: UInt64, flags: UInt16) {
        invariant([0, 1, 2, 4, 5, 7].contains(type), "callback of type \(type) registered")
        invariant(XenABI.isCanonical(address), "callback at non-canonical \(address) registered")
    }

    func unregisterCallback(type: UInt16) {
        invariant(type == 4, "callback of type \(type) unregistered")
    }

    func hvmParam(_ index: UInt32) -> UInt64 {
        invariant(isHVM && index < XenABI.hvmParamCount, "HVM parameter \(index) read (HVM: \(isHVM))")
        return hvmParams[index] ?? 0
    }

    func setHVMParam(_ index: UInt32, _ value: UInt64) {
        invariant(isHVM && index == XenABI.hvmParamCallbackIRQ, "HVM parameter \(index) set (HVM: \(isHVM))")
        hvmParams[index] = value
    }

    func latchSharedInfoABI(_ abi: SharedInfo.ABI) { sharedInfoABI = abi }

    func mapSharedInfo(frame: UInt64, abi: SharedInfo.ABI) -> Bool {
        let page = SharedInfo(abi: abi, vcpuTimes: [], wallclockSeconds: frame, wallclockNanoseconds: 0).bytes
        invariant(page.count == SharedInfo.size, "shared_info page of \(page.count) bytes")
        return isFrameRAM(frame)
    }

    func mapGrantFrame(_ index: UInt64, frame: UInt64) -> Bool {
        invariant(index < UInt64(XenABI.grantFrames), "grant frame \(index) mapped")
        return isFrameRAM(frame)
    }

    private func isFrameRAM(_ frame: UInt64) -> Bool { frame < (64 << 20) / 4096 && isRAMPage(frame * 4096) }
}

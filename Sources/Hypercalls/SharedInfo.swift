/// Xen's `struct shared_info` page (xen.h, arch-x86/xen.h, xen-x86_32.h, xen-x86_64.h) as a byte
/// image, in the layout of the guest's ABI: x86-64 (`xen_ulong_t` 64-bit) or x86-32 (32-bit).
/// `vcpu_info` is 64 bytes in both, with `vcpu_time_info` at offset 32; the event-channel
/// bitmaps and the wallclock sit at different offsets. The page starts with nothing pending and
/// every `evtchn_upcall_mask` set; an HVM guest's upcalls come by its callback vector regardless
/// of that byte, as under Xen (`hvm_vcpu_has_pending_irq` looks at `evtchn_upcall_pending` only).
public struct SharedInfo: Equatable, Sendable {
    public enum ABI: Sendable, Equatable { case x86_64, x86_32 }

    /// `vcpu_time_info`: system time (ns since the VM started) at TSC `tscTimestamp`, and how to
    /// scale TSC ticks to ns: `((delta << shift) * mul) >> 32` (shift right when negative).
    public struct Time: Equatable, Sendable {
        public var tscTimestamp: UInt64, systemTime: UInt64, mul: UInt32, shift: Int8
        public init(tscTimestamp: UInt64, systemTime: UInt64, mul: UInt32, shift: Int8) {
            self.tscTimestamp = tscTimestamp; self.systemTime = systemTime; self.mul = mul; self.shift = shift
        }
    }

    public static let size = 4096
    /// `XEN_LEGACY_MAX_VCPUS`: vCPUs with a `vcpu_info` slot in the page.
    public static let legacyMaxVCPUs = 32
    public static let vcpuInfoSize = 64
    static let timeOffset = 32

    public var abi: ABI
    /// One per vCPU (at most 32 are written).
    public var vcpuTimes: [Time]
    public var wallclockSeconds: UInt64
    public var wallclockNanoseconds: UInt32
    /// `evtchn_upcall_mask` of every vCPU.
    public var upcallsMasked: Bool

    public init(abi: ABI, vcpuTimes: [Time], wallclockSeconds: UInt64, wallclockNanoseconds: UInt32, upcallsMasked: Bool = true) {
        self.abi = abi; self.vcpuTimes = vcpuTimes
        self.wallclockSeconds = wallclockSeconds; self.wallclockNanoseconds = wallclockNanoseconds
        self.upcallsMasked = upcallsMasked
    }

    /// Where the 2-level event-channel state lives in the page for `abi`: the pending and mask
    /// bitmaps (`xen_ulong_t[sizeof(xen_ulong_t) * 8]` each), and in each 64-byte `vcpu_info`
    /// `evtchn_upcall_pending` (byte 0), `evtchn_upcall_mask` (byte 1) and `evtchn_pending_sel`.
    public static func eventOffsets(_ abi: ABI) -> (pending: Int, mask: Int, pendingSelector: Int, bitsPerWord: Int) {
        switch abi {
        case .x86_64: (2048, 2560, 8, 64)
        case .x86_32: (2048, 2176, 4, 32)
        }
    }

    /// Offsets of `wc_version`, `wc_sec`, `wc_nsec` and `wc_sec_hi` for the ABI.
    public var wallclockOffsets: (version: Int, seconds: Int, nanoseconds: Int, secondsHigh: Int) {
        switch abi {
        case .x86_64: (3072, 3076, 3080, 3084)
        case .x86_32: (2304, 2308, 2312, 2340)   // wc_sec_hi ends the 32-bit arch_shared_info (2316 + 6 * 4)
        }
    }

    public var bytes: [UInt8] {
        var page = [UInt8](repeating: 0, count: Self.size)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for i in 0..<MemoryLayout<T>.size { page[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        for (id, time) in vcpuTimes.prefix(Self.legacyMaxVCPUs).enumerated() {
            let base = id * Self.vcpuInfoSize
            page[base + 1] = upcallsMasked ? 1 : 0           // evtchn_upcall_mask
            let t = base + Self.timeOffset
            put(UInt32(2), t)                                // version: even, so consistent
            put(time.tscTimestamp, t + 8)
            put(time.systemTime, t + 16)
            put(time.mul, t + 24)
            put(time.shift, t + 28)
        }
        let wc = wallclockOffsets
        put(UInt32(2), wc.version)
        put(UInt32(truncatingIfNeeded: wallclockSeconds), wc.seconds)
        put(wallclockNanoseconds, wc.nanoseconds)
        put(UInt32(truncatingIfNeeded: wallclockSeconds >> 32), wc.secondsHigh)
        return page
    }

    /// `mul` and `shift` for a TSC of `hertz`: the shift brings the rate into (1, 2] GHz, so `mul`
    /// (ns per tick as a 32-bit fraction) keeps 31 or more significant bits.
    public static func scale(tscHertz hertz: UInt64) -> (mul: UInt32, shift: Int8) {
        guard hertz > 0 else { return (0, 0) }
        var rate = hertz
        var shift: Int8 = 0
        while rate > 2_000_000_000 { rate >>= 1; shift -= 1 }
        while rate <= 1_000_000_000 { rate <<= 1; shift += 1 }
        return (UInt32(truncatingIfNeeded: (UInt64(1_000_000_000) << 32) / rate), shift)
    }

    /// Nanoseconds for `ticks` TSC ticks under `mul`/`shift` (what a guest computes).
    public static func nanoseconds(ticks: UInt64, mul: UInt32, shift: Int8) -> UInt64 {
        let shifted = shift >= 0 ? ticks << UInt64(shift) : ticks >> UInt64(-Int(shift))
        return UInt64((UInt128(shifted) * UInt128(mul)) >> 32)
    }
}

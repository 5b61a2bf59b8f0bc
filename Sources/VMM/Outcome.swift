import Devices
import KVM

/// How a run ended, and the process status that stands for it.
///
/// | status | meaning |
/// |---|---|
/// | 0..255 | the guest's own status: power-off port 0x500 (`v & 0xff`), isa-debug-exit 0xF4 (`(v << 1) \| 1`) |
/// | 1 | VMM error (set-up or run-time failure in Swiftlet itself) |
/// | 2 | usage error (bad command line) |
/// | 32 | the guest asked for a reset (i8042 0xFE, KVM reset event); Swiftlet does not reboot |
/// | 34 | triple fault (`KVM_EXIT_SHUTDOWN`) |
/// | 36 | KVM could not run the guest (`KVM_EXIT_INTERNAL_ERROR`, `KVM_EXIT_FAIL_ENTRY`) |
/// | 38 | every vCPU halted with interrupts disabled, or waiting for INIT: the VM can never run again |
/// | 40, 42, 44, 46, 48 | Xen `SCHEDOP_shutdown`: crash, watchdog, suspend, soft_reset, unknown reason (poweroff 0, reboot 32) |
/// | 130, 143 | stopped by SIGINT / SIGTERM |
public enum ExitStatus {
    public static let vmmError: Int32 = 1
    public static let usage: Int32 = 2
    public static let reset: Int32 = 32
    public static let tripleFault: Int32 = 34
    public static let kvmFailure: Int32 = 36
    /// Every vCPU halted with interrupts off (or waiting for INIT): the VM is stopped.
    public static let deadlocked: Int32 = 38

    /// Xen `SCHEDOP_shutdown` reasons (sched.h) and the status each gives.
    public static func xenShutdown(_ reason: UInt32) -> Int32 {
        switch reason {
        case 0: 0          // poweroff
        case 1: reset      // reboot
        case 2: 44         // suspend
        case 3: 40         // crash
        case 4: 42         // watchdog
        case 5: 46         // soft_reset
        default: 48
        }
    }

    static func xenShutdownName(_ reason: UInt32) -> String {
        ["poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset"].indices.contains(Int(reason))
            ? ["poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset"][Int(reason)] : "\(reason) (unknown)"
    }
}

public enum VMOutcome: Equatable, Sendable {
    case guestStop(GuestRequest, vcpu: Int)
    case tripleFault(vcpu: Int, registers: String)
    case kvmFailure(vcpu: Int, what: String, registers: String)
    case vmmError(vcpu: Int?, message: String)
    case signal(Int32)
    /// Xen `SCHEDOP_shutdown` with this reason.
    case xenShutdown(reason: UInt32, vcpu: Int)
    /// `VCPUOP_down` took the last up vCPU down.
    case allVCPUsDown(vcpu: Int)
    /// Every vCPU is halted with interrupts disabled, or parked waiting for INIT or VCPUOP_up:
    /// nothing can ever run again.
    case deadlocked(states: String)

    /// The process exit status.
    public var exitStatus: Int32 {
        switch self {
        case let .guestStop(request, _):
            switch request {
            case let .powerOff(status): Int32(status)
            case let .debugExit(value): DebugExitPort.status(for: value)
            case .reset: ExitStatus.reset
            case .acpiPowerOff, .checkpoint: 0
            }
        case .tripleFault: ExitStatus.tripleFault
        case .kvmFailure: ExitStatus.kvmFailure
        case .vmmError: ExitStatus.vmmError
        case let .signal(number): 128 + number
        case let .xenShutdown(reason, _): ExitStatus.xenShutdown(reason)
        case .allVCPUsDown: 0
        case .deadlocked: ExitStatus.deadlocked
        }
    }

    /// One line saying why the VM ended.
    public var summary: String {
        switch self {
        case let .guestStop(request, vcpu):
            switch request {
            case let .powerOff(status): "guest powered off with status \(status) (port 0x500, vCPU \(vcpu))"
            case let .debugExit(value):
                "guest wrote 0x\(String(value, radix: 16)) to isa-debug-exit (port 0xf4, vCPU \(vcpu)): status \(DebugExitPort.status(for: value))"
            case let .reset(source): "guest requested a reset: \(source), vCPU \(vcpu); the VM is stopped"
            case .acpiPowerOff: "guest powered off through ACPI (S5 to the sleep control register, port 0x508, vCPU \(vcpu))"
            case let .checkpoint(label): "guest checkpoint \(label) (vCPU \(vcpu))"
            }
        case let .tripleFault(vcpu, _): "guest triple-faulted on vCPU \(vcpu) (KVM_EXIT_SHUTDOWN)"
        case let .kvmFailure(vcpu, what, _): "KVM could not run vCPU \(vcpu): \(what)"
        case let .vmmError(vcpu, message): "VMM error\(vcpu.map { " on vCPU \($0)" } ?? ""): \(message)"
        case let .signal(number): "stopped by signal \(number)"
        case let .xenShutdown(reason, vcpu):
            "guest shut down through sched_op (SCHEDOP_shutdown, reason \(ExitStatus.xenShutdownName(reason)), vCPU \(vcpu))"
        case let .allVCPUsDown(vcpu): "every vCPU is down (VCPUOP_down, last by vCPU \(vcpu)): powered off"
        case let .deadlocked(states):
            "the VM can never run again: every vCPU is halted with interrupts disabled or waiting for INIT (\(states))"
        }
    }

    /// A register dump for faults, nil otherwise.
    public var registerDump: String? {
        switch self {
        case let .tripleFault(_, registers), let .kvmFailure(_, _, registers): registers
        default: nil
        }
    }

    /// True when the guest ended on its own terms with status 0.
    public var isCleanExit: Bool { exitStatus == 0 }
}

/// Formats the vCPU's registers for a fault report.
func registerDump(_ vcpu: VCPU) -> String {
    guard let r = try? vcpu.registers(), let s = try? vcpu.specialRegisters() else {
        return "  (registers unavailable)"
    }
    func hex(_ v: UInt64) -> String {
        let digits = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
    return """
      rip \(hex(r.rip))  rsp \(hex(r.rsp))  rflags \(hex(r.rflags))
      rax \(hex(r.rax))  rbx \(hex(r.rbx))  rcx \(hex(r.rcx))  rdx \(hex(r.rdx))
      rsi \(hex(r.rsi))  rdi \(hex(r.rdi))  rbp \(hex(r.rbp))
      r8  \(hex(r.r8))  r9  \(hex(r.r9))  r10 \(hex(r.r10))  r11 \(hex(r.r11))
      r12 \(hex(r.r12))  r13 \(hex(r.r13))  r14 \(hex(r.r14))  r15 \(hex(r.r15))
      cr0 \(hex(s.cr0))  cr2 \(hex(s.cr2))  cr3 \(hex(s.cr3))  cr4 \(hex(s.cr4))  efer \(hex(s.efer))
      cs 0x\(String(s.cs.selector, radix: 16)) (base \(hex(s.cs.base)) l=\(s.cs.long ? 1 : 0) db=\(s.cs.defaultBig ? 1 : 0) dpl=\(s.cs.dpl))  ss 0x\(String(s.ss.selector, radix: 16))  gdt \(hex(s.gdt.base))/\(s.gdt.limit)  idt \(hex(s.idt.base))/\(s.idt.limit)
    """
}

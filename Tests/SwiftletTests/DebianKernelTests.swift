import Foundation
import Testing

/// Debian's stock kernel, unchanged (Linux/debian-kernel.sh: vmlinux and vmlinuz from
/// linux-image-amd64), booted with the busybox initramfs. On hardware-assisted KVM it must reach
/// `/init` and power off. Where KVM executes guest kernel mode in its instruction emulator, the
/// emulator stops it on an instruction it lacks; the test then requires every milestone before
/// that point, at least up to the point measured on that platform, and reports the last
/// milestone and the instruction. A Swiftlet failure can never hide behind the platform's: any
/// other ending, or a stop before the measured point, fails.
@Suite("Debian's stock kernel", .serialized,
       .enabled(if: Harness.kvmAvailable, Harness.kvmComment),
       .enabled("Debian's kernel or busybox cannot be downloaded here") {
           LinuxFixtures.debianKernel.isAvailable && LinuxFixtures.initramfs.isAvailable
       })
struct DebianKernelTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let file: String
        let template: String?
        /// On an emulating KVM: the last milestone the kernel must reach before the emulator
        /// stops it (measured), and the instruction it stops on.
        let emulatedFloor: String
        let emulatedStop: String
        var testDescription: String { "\(file) by linux, 2 vCPUs" + (template.map { ", CPU template \($0)" } ?? "") }
    }

    static let memory: UInt64 = 512 << 20

    static let cases: [Case] = [
        // As the host's KVM reports the CPU: CX16 shown, so the kernel uses lock cmpxchg16b.
        Case(file: "vmlinux", template: nil, emulatedFloor: "Memory: ", emulatedStop: "lock cmpxchg16b"),
        // x86-64-v1 hides CX16, POPCNT and XSAVE: the kernel goes on to its alternatives self-test.
        // The floor is the one measured without a template; where it really stops with one is
        // printed, to raise this floor once measured.
        Case(file: "vmlinux", template: "x86-64-v1", emulatedFloor: "Memory: ", emulatedStop: "int3"),
    ]

    /// Milestones of a full boot, in the order the kernel reaches them.
    static func milestones(cpus: Int) -> [String] {
        [
            "Linux version 6.",
            "BIOS-e820: ",
            "ACPI: RSDP 0x00000000000E0000",
            "ACPI: APIC 0x",
            "smpboot: Allowing \(cpus) CPUs, 0 hotplug CPUs",
            "Memory: ",
            "smp: Brought up 1 node, \(cpus) CPUs",
            "clocksource: Switched to clocksource kvm-clock",
            "ttyS0 at I/O 0x3f8 (irq = ",
            "Run /init as init process",
            "swiftlet-init: cpus online 0-\(cpus - 1), nproc \(cpus)",
            "reboot: Power down",
        ]
    }

    @Test(arguments: cases)
    func milestones(_ c: Case) throws {
        let kernel = try LinuxFixtures.debianKernel.get().appendingPathComponent(c.file)
        let initramfs = try LinuxFixtures.initramfs.get()
        var arguments = ["run", "--kernel", kernel.path, "--initrd", initramfs.path, "--boot", "linux", "--cpus", "2",
                         "--memory", "\(Self.memory >> 20)M", "--cmdline", "console=ttyS0 panic=-1 pci=off", "--no-stdin"]
        if let template = c.template { arguments += ["--cpu-template", template] }
        let result = Harness.run(Harness.binary, arguments, timeout: 900)
        let log = KernelLog(result.stdout)
        let context: String = ("status \(result.status)\nstderr: \(result.stderr)\n--- console (last 30 lines) ---\n"
            + log.lines.suffix(30).joined(separator: "\n"))

        // Every milestone reached, with none missing before the last one reached.
        let all = Self.milestones(cpus: 2)
        var reached: [String] = []
        var previous = -1
        for milestone in all {
            guard let index = log.index(of: milestone), index > previous else { break }
            reached.append(milestone)
            previous = index
        }
        let later = all.dropFirst(reached.count).filter { log.contains($0) }
        #expect(later.isEmpty, "milestones after a missing one: \(later)\n\(context)")
        #expect(log.e820 == KernelLog.expectedE820(memory: Self.memory), "\(context)")
        #expect(log.complaints.filter { !$0.contains("Kernel panic") }.isEmpty,
                "the kernel complained:\n\(log.complaints.joined(separator: "\n"))\n\(context)")

        if result.status == 0 {
            #expect(reached.count == all.count, "powered off before \(all[reached.count...].first ?? "")\n\(context)")
            // COM1 as a 16550A on I/O APIC pin 4 (Linux's IRQ number for it is its own choice).
            let console = log.interruptLine("ttyS0")
            #expect(console?.pin == "IO-APIC 4-edge" && console?.irq == log.uartIRQ, "\(context)")
            return
        }
        // Only an emulating KVM may stop it, only with an emulation failure, and only after the floor.
        try #require(LinuxFixtures.emulatedKVM, "stopped on hardware-assisted KVM\n\(context)")
        #expect(result.status == 36 && result.stderr.contains("emulation failure"), "\(context)")
        #expect(reached.contains(c.emulatedFloor), "stopped before \(c.emulatedFloor), the point measured on this platform\n\(context)")
        let failure = result.stderr.split(separator: "\n").first { $0.contains("KVM_EXIT_INTERNAL_ERROR") } ?? ""
        print("Debian \(c.file)\(c.template.map { " (\($0))" } ?? ""): stopped by this KVM's emulator after \"\(reached.last ?? "nothing")\" "
              + "(\(reached.count) of \(all.count) milestones), expected at \(c.emulatedStop): \(failure)")
    }
}

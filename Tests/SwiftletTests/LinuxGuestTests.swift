import Foundation
import Testing

/// The project's microVM guest kernel (Linux 6.12, Linux/build-kernel.sh) booted to user space
/// through the real VMM, with every milestone read from the kernel's own log: the e820 map as
/// Swiftlet built it, the firmware tables found with no complaint, the CPUs allowed and brought up
/// by Linux's own INIT-SIPI-SIPI, the clock source, the 16550, the i8042 keyboard, the initramfs, `/init`'s report,
/// and the power-off ending Swiftlet.
@Suite("Linux guest", .serialized,
       .enabled(if: Harness.kvmAvailable, Harness.kvmComment),
       .enabled("the guest kernel's source or busybox cannot be downloaded here") {
           LinuxFixtures.guestKernel.isAvailable && LinuxFixtures.initramfs.isAvailable
       })
struct LinuxGuestTests {
    enum Image: String, Sendable { case vmlinux, bzImage }

    struct Case: CustomTestStringConvertible, Sendable {
        let image: Image
        let boot: String
        let cpus: Int
        var bootCPU = 0
        var acpi = true
        var mptable = true
        var shell = false
        var testDescription: String {
            "\(image.rawValue) by \(boot), \(cpus) vCPU\(cpus == 1 ? "" : "s")" + (bootCPU != 0 ? ", boot vCPU \(bootCPU)" : "")
                + (acpi ? "" : ", no ACPI") + (mptable ? "" : ", no MP table") + (shell ? ", a line typed on stdin" : "")
        }
    }

    static let memory: UInt64 = 256 << 20
    /// `pci=off`: the kernel has PCI (ACPI needs it) but Swiftlet has no PCI bus, as Firecracker's
    /// guests are told; `panic=-1` makes a panic end the VM at once (status 32) instead of hanging.
    static let commandLine = "console=ttyS0 panic=-1 pci=off"

    static let cases: [Case] = [
        Case(image: .vmlinux, boot: "linux", cpus: 1, shell: true),
        Case(image: .bzImage, boot: "linux", cpus: 2, bootCPU: 1),
        Case(image: .vmlinux, boot: "pvh", cpus: 4),
        Case(image: .bzImage, boot: "linux", cpus: 4, bootCPU: 2, acpi: false),
        Case(image: .vmlinux, boot: "pvh", cpus: 2, mptable: false),
    ]

    /// The CPU template the guest needs on this host: on a KVM that emulates kernel mode, the
    /// instructions its emulator lacks (cmpxchg16b, xrstor, popcnt) must not be advertised.
    static var templateArguments: [String] { LinuxFixtures.emulatedKVM ? ["--cpu-template", "x86-64-v1"] : [] }

    @Test(arguments: cases)
    func bootsToUserSpace(_ c: Case) throws {
        let kernelFolder = try LinuxFixtures.guestKernel.get()
        let initramfs = try LinuxFixtures.initramfs.get()
        let kernel = kernelFolder.appendingPathComponent(c.image.rawValue)
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("linux-\(getpid())-\(c.cpus)-\(c.boot)-\(c.bootCPU).json")
        let cmdline = Self.commandLine + (c.shell ? " swiftlet.shell" : "")
        var arguments = ["run", "--kernel", kernel.path, "--initrd", initramfs.path, "--boot", c.boot,
                         "--cpus", String(c.cpus), "--boot-cpu", String(c.bootCPU), "--memory", "\(Self.memory >> 20)M",
                         "--cmdline", cmdline, "--report", report.path] + Self.templateArguments
        if !c.acpi { arguments += ["--acpi", "off"] }
        if !c.mptable { arguments += ["--mptable", "off"] }
        let result: Harness.ProcessResult
        if c.shell {
            // The shell's prompt comes after /init's report: type a command, then leave the shell.
            result = runInteractive(arguments, answers: [("swiftlet-shell# ", "echo typed-$((6*7))\n"), ("swiftlet-shell# ", "exit\n")],
                                    timeout: 600)
        } else {
            result = Harness.run(Harness.binary, arguments + ["--no-stdin"], timeout: 600)
        }
        let log = KernelLog(result.stdout)
        let context: String = ("status \(result.status)\nstderr: \(result.stderr)\n--- console (last 40 lines) ---\n"
            + log.lines.suffix(40).joined(separator: "\n"))

        // The map Swiftlet built, exactly.
        #expect(log.e820 == KernelLog.expectedE820(memory: Self.memory), "\(context)")
        // The tables.
        if c.acpi {
            for table in ["ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT 0x", "ACPI: FACP 0x", "ACPI: DSDT 0x", "ACPI: APIC 0x"] {
                #expect(log.contains(table), "missing \(table)\n\(context)")
            }
        } else {
            #expect(log.contains("Intel MultiProcessor Specification v1.4"), "\(context)")
            #expect(log.contains("MPTABLE: OEM ID: SWIFTLET"), "\(context)")
            #expect(log.contains("Processor #\(c.bootCPU) (Bootup-CPU)"), "\(context)")
        }
        if !c.mptable { #expect(!log.contains("found SMP MP-table"), "\(context)") }
        // The i8042 (from the DSDT's PNP0303 with ACPI, probed directly without) and its keyboard,
        // on I/O APIC pin 1 by whatever IRQ number Linux gave it.
        let keyboard = log.interruptLine("i8042")
        #expect(keyboard?.pin == "IO-APIC 1-edge", "\(context)")
        #expect(keyboard.map { log.contains("serio: i8042 KBD port at 0x60,0x64 irq \($0.irq)") } == true, "\(context)")
        #expect(log.contains("input: AT Translated Set 2 keyboard"), "\(context)")
        // Without ACPI tables Linux (built with ACPI) says so in ACPICA's words, once; nothing else.
        let noRSDP = "ACPI BIOS Error (bug): A valid RSDP was not found"
        #expect(log.contains(noRSDP) == !c.acpi, "\(context)")
        let complaints = log.complaints.filter { c.acpi || !$0.contains(noRSDP) }
        #expect(complaints.isEmpty, "the kernel complained:\n\(complaints.joined(separator: "\n"))\n\(context)")

        // The milestones, in boot order.
        let online = c.cpus == 1 ? "0" : "0-\(c.cpus - 1)"
        let end = c.acpi ? ["swiftlet-init: done, powering off", "reboot: Power down"]
                         : ["swiftlet-init: done, rebooting", "reboot: Restarting system"]
        let milestones = [
            "BIOS-e820: ",
            "CPU topo: Allowing \(c.cpus) present CPUs plus 0 hotplug CPUs",
            "smp: Brought up 1 node, \(c.cpus) CPU\(c.cpus == 1 ? "" : "s")",
            "clocksource: Switched to clocksource kvm-clock",
            "Unpacking initramfs...",
            "Freeing initrd memory:",
            "Run /init as init process",
            "swiftlet-init: cpus online \(online), nproc \(c.cpus)",
            "swiftlet-init: cmdline \(cmdline)",
        ] + (c.shell ? ["typed-42"] : []) + end
        var previous = -1
        for milestone in milestones {
            guard let index = log.index(of: milestone) else {
                Issue.record("milestone not reached: \(milestone)\n\(context)")
                break
            }
            #expect(index > previous, "out of order: \(milestone)\n\(context)")
            previous = index
        }

        // The console UART (found by its legacy address or the DSDT's PNP0501) before init runs; the
        // initramfs is unpacked asynchronously, so its lines may come before or after this one. Its
        // IRQ is I/O APIC pin 4, and its interrupts arrived (the tty layer writes /init's output
        // on transmit-empty interrupts). Without ACPI Linux has its legacy PIC and numbers it 4.
        let uart = log.index(of: "ttyS0 at I/O 0x3f8 (irq = ")
        #expect(uart != nil && uart! < (log.index(of: "Run /init as init process") ?? 0), "\(context)")
        let console = log.interruptLine("ttyS0")
        #expect(console?.pin == "IO-APIC 4-edge" && console?.irq == log.uartIRQ && (console?.count ?? 0) > 0, "\(context)")
        if !c.acpi { #expect(console?.irq == 4 && keyboard?.irq == 1, "\(context)") }

        // Swiftlet's side: how the VM ended, and every AP started by the guest's INIT-SIPI.
        #expect(result.status == (c.acpi ? 0 : 32), "\(context)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any], "\(context)")
        let vcpus = try #require(json["vcpus"] as? [[String: Any]], "\(context)")
        #expect(vcpus.count == c.cpus)
        for vcpu in vcpus {
            let id = vcpu["id"] as? Int ?? -1
            #expect(vcpu["boot"] as? Bool == (id == c.bootCPU))
            #expect(vcpu["bringUp"] as? String == (id == c.bootCPU ? "boot" : "INIT-SIPI"), "vCPU \(id)\n\(context)")
        }
    }

    /// The Linux guest paused at its shell with an ext2 file system on virtio-blk mounted,
    /// snapshotted over the API, killed, and restored into a new process: its console still
    /// answers, the file written before the snapshot reads back from the disk after a remount,
    /// and it powers off cleanly.
    @Test func snapshotAtTheShellRestoresInANewProcess() throws {
        let kernel = try LinuxFixtures.guestKernel.get().appendingPathComponent("vmlinux")
        let initramfs = try LinuxFixtures.initramfs.get()
        let disk = try Harness.temporaryFile("linux-snapshot-disk.img", [UInt8](repeating: 0, count: 8 << 20))
        let vmm = try RunningSwiftlet(["run", "--kernel", kernel.path, "--initrd", initramfs.path, "--boot", "linux", "--cpus", "2",
                                       "--memory", "\(Self.memory >> 20)M", "--cmdline", Self.commandLine + " swiftlet.shell",
                                       "--drive", "path=\(disk.path)"] + Self.templateArguments,
                                      socketLast: true, typing: true)
        func context(_ process: RunningSwiftlet) -> String {
            "stderr: \(process.stderr)\n--- console (last 30 lines) ---\n" + KernelLog(process.stdout).lines.suffix(30).joined(separator: "\n")
        }
        try #require(vmm.waitForOutput("swiftlet-shell# ", seconds: 600), "\(context(vmm))")
        vmm.type("mke2fs -q /dev/vda && mount -t ext2 /dev/vda /mnt && echo saved-$((6*7)) > /mnt/hello && sync && echo mounted-$((6*7))\n")
        try #require(vmm.waitForOutput("mounted-42", seconds: 300), "\(context(vmm))")
        // Paused at the shell: once its next prompt is out, waiting for a line.
        for _ in 0..<600 where vmm.stdout.components(separatedBy: "swiftlet-shell# ").count < 3 { usleep(100_000) }

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("linux-snap-\(getpid())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let state = folder + "/vm.snap", memory = folder + "/vm.mem"
        do {
            let client = try vmm.client()
            let paused = try client.request("PATCH", "/vm", #"{"state": "Paused"}"#)
            try #require(paused.status == 204, "\(paused.body)")
            let created = try client.request("PUT", "/snapshot/create",
                                             #"{"snapshot_type": "Full", "snapshot_path": "\#(state)", "mem_file_path": "\#(memory)"}"#)
            try #require(created.status == 204, "\(created.body)")
        } catch {
            usleep(500_000)
            Issue.record("\(error)\nthe VMM \(vmm.process.isRunning ? "runs" : "ended with \(vmm.process.terminationStatus)")\n\(context(vmm))")
            vmm.signal(SIGKILL)
            return
        }
        vmm.signal(SIGKILL)
        _ = vmm.wait()

        let restored = try RunningSwiftlet(["run", "--restore", state, "--memory-file", memory], socketLast: true, typing: true)
        restored.type("umount /mnt && mount -t ext2 -o ro /dev/vda /mnt && cat /mnt/hello\n")
        #expect(restored.waitForOutput("saved-42", seconds: 300), "the file did not read back\n\(context(restored))")
        restored.type("umount /mnt; exit\n")
        #expect(restored.wait() == 0, "\(context(restored))")
        #expect(restored.stdout.contains("swiftlet-init: done, powering off"), "\(context(restored))")
    }

    /// Linux's own virtio drivers against Swiftlet's devices (Guests/tools/virtio-run.sh: a TAP
    /// device in a network namespace of its own, 10.0.2.1 on the host side, virtio-host.py for
    /// vsock): an ext2 file system made, written and synced on vda, and read back after a second
    /// boot; the read-only vdb refusing a write; /dev/hwrng; a ping through virtio-net; vsock both
    /// ways; hvc0 as the console that carries all of /init's report.
    @Test(.enabled(if: VirtioGuestTests.namespaces, VirtioGuestTests.namespaceComment))
    func linuxDriversUseEveryVirtioDevice() throws {
        let kernel = try LinuxFixtures.guestKernel.get().appendingPathComponent("vmlinux")
        let initramfs = try LinuxFixtures.initramfs.get()
        let disk = try Harness.temporaryFile("linux-virtio-disk.img", [UInt8](repeating: 0, count: 16 << 20))
        let readOnly = try Harness.temporaryFile("linux-virtio-ro.img", [UInt8](repeating: 0, count: 1 << 20))
        let token = "token\(getpid())"
        func boot(_ mode: String) -> (Harness.ProcessResult, String) {
            let cmdline = "console=hvc0 panic=-1 pci=off swiftlet.virtio=\(mode) swiftlet.token=\(token)"
            let swiftlet = [Harness.binary.path, "run", "--kernel", kernel.path, "--initrd", initramfs.path, "--boot", "pvh",
                            "--memory", "\(Self.memory >> 20)M", "--cmdline", cmdline, "--no-stdin",
                            "--drive", "path=\(disk.path)", "--drive", "path=\(readOnly.path),readonly=on", "--entropy",
                            "--net", "tap=swtap0,mac=06:00:0a:00:02:02", "--console", "virtio"] + Self.templateArguments
            // The vsock socket lives in the script's own folder: a shell adds it.
            let result = Harness.run(Harness.packageRoot.appendingPathComponent("Guests/tools/virtio-run.sh"),
                                     ["exec", "/bin/sh", "-c", #"exec "$0" "$@" --vsock "cid=3,uds=$VIRTIO_WORK/v.sock""#] + swiftlet,
                                     timeout: 600)
            let log = KernelLog(result.stdout)
            return (result, "status \(result.status)\nstderr: \(result.stderr)\n--- output (last 60 lines) ---\n"
                + log.lines.suffix(60).joined(separator: "\n"))
        }

        let (first, context) = boot("write")
        #expect(first.status == 0, "\(context)")
        for line in ["swiftlet-init: cmdline console=hvc0",   // /init's report reached us through hvc0
                     "swiftlet-init: disk vda sectors 32768 ro 0", "swiftlet-init: disk vdb sectors 2048 ro 1",
                     "swiftlet-init: wrote \(token)", "swiftlet-init: vdb write refused",
                     "swiftlet-init: hwrng virtio_rng.0 16 bytes", "swiftlet-init: ping 10.0.2.1 ok",
                     "vsock-helper: reply echo: hello from linux", "vsock-helper: got ping from host",
                     "vsock host received: pong from linux", "swiftlet-init: done, powering off"] {
            #expect(first.stdout.contains(line), "missing \(line)\n\(context)")
        }
        let (second, context2) = boot("read")
        #expect(second.status == 0, "\(context2)")
        #expect(second.stdout.contains("swiftlet-init: read \(token)"), "after a reboot of the VM\n\(context2)")
    }
}

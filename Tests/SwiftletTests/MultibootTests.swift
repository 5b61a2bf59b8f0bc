import Foundation
import Testing

/// The Multiboot guest (Guests/mboot), a Multiboot 1 kernel written for a QEMU-like PC: it checks
/// the multiboot info against the spec, reads fw_cfg, wakes every AP with INIT-SIPI-SIPI and exits
/// through isa-debug-exit (port 0xf4, status (code << 1) | 1). The same guest passes under QEMU
/// (Guests/tools/compare-qemu.sh); here it runs under Swiftlet as an ELF32, as an a.out-kludge
/// flat binary and as an ELF64 container.
@Suite("Multiboot and fw_cfg", .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct MultibootTests {
    enum Image: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case elf32 = "mboot.elf", aout = "mboot-aout.bin", elf64 = "mboot64.elf"
        var testDescription: String { rawValue }
        func url(_ guests: Harness.GuestBuild) -> URL {
            switch self {
            case .elf32: guests.mboot
            case .aout: guests.mbootAout
            case .elf64: guests.mboot64
            }
        }
    }

    static let failureStatus: Int32 = (0x55 << 1) | 1    // 171: a check failed

    func run(_ kernel: URL, _ arguments: [String]) -> (Harness.ProcessResult, ProbeReport) {
        let result = Harness.swiftlet(["run", "--kernel", kernel.path, "--no-stdin"] + arguments)
        return (result, ProbeReport(result.stdout))
    }

    @Test(arguments: Image.allCases, [1, 2, 4])
    func bootsAndWakesEveryCPU(image: Image, cpus: Int) throws {
        let kernel = image.url(try Harness.builtGuests())
        let code = 16 + cpus                                      // mb.exit: the status says the guest got that far
        let cmdline = "mb.exit=\(code) expect.cpus=\(cpus) expect.ram=67108864 expect.mods=0 expect.cmdline=mbi"
        let (result, probe) = run(kernel, ["--cpus", String(cpus), "--memory", "64M", "--cmdline", cmdline])
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == Int32((code << 1) | 1), "status \(result.status): \(result.stderr)")
        #expect((probe.summary?.passed ?? 0) > 30)
        #expect(probe.summary?.failed == 0)
        #expect(result.stdout.hasPrefix("mboot: entered via multiboot\n"))

        // Multiboot info: flags 0 (mem), 2 (cmdline), 3 (mods), 6 (mmap), 9 (loader name).
        let flags = try #require(probe.facts["mb.flags"].flatMap { UInt32($0.dropFirst(2), radix: 16) })
        #expect(flags & 0x24d == 0x24d, "mb.flags \(String(flags, radix: 16))")
        #expect(probe.facts["mb.mem_upper"] == String((64 << 10) - 1024))  // RAM from 1 MiB to the end of 64 MiB
        #expect(probe.facts["mb.cmdline"] == "\(kernel.path) \(cmdline)")
        #expect(probe.facts["mb.mods"] == "0")
        #expect(probe.facts["mb.loader"]?.isEmpty == false)

        // fw_cfg.
        #expect(probe.facts["fwcfg.cpus"] == String(cpus))
        #expect(probe.facts["fwcfg.maxcpus"].flatMap(Int.init).map { $0 >= cpus } == true)
        #expect(probe.facts["fwcfg.ram"] == "67108864")
        #expect(probe.facts["fwcfg.cmdline"] == cmdline)
        #expect(probe.facts["fwcfg.cmdline_size"] == String(cmdline.utf8.count + 1))

        // SMP: every AP checked in once, with its own APIC ID.
        #expect(probe.facts["smp.started"] == String(cpus - 1))
        #expect(probe.facts["smp.ap_ids"] == (1..<cpus).map(String.init).joined(separator: ","))
    }

    @Test func modulesAndCommandLine() throws {
        let guests = try Harness.builtGuests()
        var generator = SystemRandomNumberGenerator()
        let initrd = (0..<5000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let second = Array("the second module\n".utf8)
        let third = (0..<9000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let initrdURL = try Harness.temporaryFile("mboot-initrd", initrd)
        let secondURL = try Harness.temporaryFile("mboot-mod1", second)
        let thirdURL = try Harness.temporaryFile("mboot-mod2", third)
        let cmdline = "mb.exit=7 expect.mods=3 expect.cpus=2 marker expect.cmdline=marker"
        let (result, probe) = run(guests.mboot, ["--boot", "multiboot", "--cpus", "2", "--memory", "64M",
                                                 "--cmdline", cmdline, "--initrd", initrdURL.path,
                                                 "--module", secondURL.path,
                                                 "--module", "\(thirdURL.path),third module string"])
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == (7 << 1) | 1, "status \(result.status): \(result.stderr)")
        #expect(probe.facts["mb.mods"] == "3")
        let modules: [(bytes: [UInt8], string: String)] = [
            (initrd, initrdURL.path), (second, secondURL.path), (third, "third module string"),
        ]
        for (i, module) in modules.enumerated() {
            #expect(probe.facts["mb.mod.\(i).size"] == String(module.bytes.count), "module \(i)")
            #expect(probe.facts["mb.mod.\(i).string"] == module.string, "module \(i)")
            #expect(probe.facts["mb.mod.\(i).fnv"] == String(format: "%08x", fnv1a32(module.bytes)), "module \(i)")
            let start = probe.facts["mb.mod.\(i).start"].flatMap { UInt64($0.dropFirst(2), radix: 16) }
            #expect(start.map { $0 % 4096 == 0 } == true, "module \(i) at \(probe.facts["mb.mod.\(i).start"] ?? "?")")
        }
        let mbCmdline = try #require(probe.facts["mb.cmdline"])
        #expect(mbCmdline.hasPrefix(guests.mboot.path))
        #expect(mbCmdline.hasSuffix(cmdline))
        #expect(probe.facts["fwcfg.cmdline"] == cmdline)
        #expect(probe.facts["smp.started"] == "1")
    }

    /// Without --cmdline the multiboot command line is the kernel path alone, fw_cfg's is empty.
    @Test func noCommandLine() throws {
        let kernel = try Harness.builtGuests().mboot
        let (result, probe) = run(kernel, ["--memory", "64M"])
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == 1, "status \(result.status): \(result.stderr)")
        #expect(probe.facts["mb.cmdline"] == kernel.path)
        #expect(probe.facts["fwcfg.cmdline"] == "")
        #expect(probe.facts["fwcfg.cpus"] == "1")
        #expect(probe.facts["smp.started"] == "0")
    }

    @Test(arguments: Image.allCases)
    func failedExpectationExitsWith0x55(image: Image) throws {
        let (result, probe) = run(image.url(try Harness.builtGuests()),
                                  ["--cpus", "2", "--memory", "64M", "--cmdline", "mb.exit=3 expect.cpus=3"])
        #expect(result.status == Self.failureStatus, "status \(result.status): \(result.stderr)")
        #expect(probe.failures.count == 1)
        #expect(probe.failures.first?.hasPrefix("FAIL expect-cpus:") == true, "\(probe.failures)")
        #expect(probe.facts["smp.started"] == "1")   // the rest still ran
    }

    /// The guest's exception stubs: a #GP with an error code (a selector beyond the GDT limit).
    @Test func exceptionIsReported() throws {
        let (result, probe) = run(try Harness.builtGuests().mboot, ["--memory", "64M", "--cmdline", "mb.fault=gp"])
        #expect(result.status == Self.failureStatus, "status \(result.status): \(result.stderr)")
        #expect(probe.failures.count == 1)
        #expect(probe.failures.first?.hasPrefix("FAIL exception: vector 13 ") == true, "\(probe.failures)")
        #expect(probe.failures.first?.contains(" error=0x18 ") == true, "\(probe.failures)")
    }

    /// 5 GiB: 3 GiB below the 32-bit hole, 2 GiB above 4 GiB. mem_upper covers 1 MiB to 3 GiB.
    @Test func fiveGiB() throws {
        let (result, probe) = run(try Harness.builtGuests().mboot,
                                  ["--boot", "auto", "--memory", "5G", "--cmdline", "mb.exit=2 expect.ram=5368709120"])
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == (2 << 1) | 1, "status \(result.status): \(result.stderr)")
        #expect(probe.facts["fwcfg.ram"] == String(5 << 30))
        #expect(probe.facts["mb.mem_upper"] == String(((3 << 30) - (1 << 20)) / 1024))
        #expect(probe.facts["mb.mmap.upper_end"] == "0xc0000000")
    }
}

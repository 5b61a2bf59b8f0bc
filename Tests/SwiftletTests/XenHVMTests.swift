import Foundation
import Testing

/// The Xen HVM interface as an HVM guest uses it: two PVH kernels written against Xen's public
/// headers (xenhvm32.elf stays in 32-bit protected mode and uses the 32-bit ABI and structure
/// layouts, xenhvm64.elf switches to long mode and uses the 64-bit ones) find the Xen CPUID leaves,
/// install the hypercall page through the MSR they name, and check xen_version, hvm_op
/// get/set_param, XENMEM_add_to_physmap (shared_info and its time and wallclock, the grant table),
/// grant_table_op, event_channel_op and console_io, then end the run with SCHEDOP_shutdown.
@Suite("Xen HVM basics", .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct XenHVMTests {
    func image(_ bits: Int) throws -> URL {
        let guests = try Harness.builtGuests()
        return bits == 32 ? guests.xenhvm32 : guests.xenhvm64
    }

    func report(_ path: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as? [String: Any])
    }

    /// Checks every guest run shares: no failed check, a full summary, the facts that name the ABI
    /// and what the interface reported.
    func expectCleanRun(_ result: Harness.ProcessResult, bits: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let probe = ProbeReport(result.stdout)
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))",
                sourceLocation: sourceLocation)
        #expect((probe.summary?.passed ?? 0) >= 45, "summary \(String(describing: probe.summary))", sourceLocation: sourceLocation)
        #expect(probe.summary?.failed == 0, sourceLocation: sourceLocation)
        #expect(probe.facts["abi"] == "x86_\(bits)", sourceLocation: sourceLocation)
        #expect(probe.facts["cpuid_base"] == "0x40000000", sourceLocation: sourceLocation)
        #expect(probe.facts["hypercall_msr"] == "0x40000000", sourceLocation: sourceLocation)
        #expect(probe.facts["hypercall_pages"] == "1", sourceLocation: sourceLocation)
        #expect(probe.facts["xen_version"] != nil && probe.facts["xen_version"] == probe.facts["cpuid_version"],
                sourceLocation: sourceLocation)
        #expect(probe.facts["features"] == "0x5", sourceLocation: sourceLocation)   // writable_page_tables | auto_translated_physmap
        #expect(probe.facts["grant_frames"] == "1" && probe.facts["grant_max_frames"] == "1", sourceLocation: sourceLocation)
        #expect((probe.facts["wc_sec"].flatMap(Int.init) ?? 0) > 1_577_836_800, sourceLocation: sourceLocation)
        #expect(probe.facts["tsc_to_system_mul"] != "0x0", sourceLocation: sourceLocation)
        // The PV console: its page and port, and a line the back end took from the out ring.
        #expect(probe.facts["console_pfn"] == "0xa0" && probe.facts["console_evtchn"] == "1", sourceLocation: sourceLocation)
        #expect(result.stdout.contains("xenhvm\(bits) pv console: hello\n"), sourceLocation: sourceLocation)
        // An IPI port raised on vCPU 0 came as one upcall on its vector (HVMOP_set_evtchn_upcall_vector).
        #expect(probe.facts["upcalls"] == "1", sourceLocation: sourceLocation)
        // The important lines also came through console_io.
        #expect(result.stdout.contains("xenhvm\(bits) console_io: hypercall page installed"), sourceLocation: sourceLocation)
        #expect(result.stdout.contains("xenhvm\(bits) console_io: checks done"), sourceLocation: sourceLocation)
        if let summary = probe.summary {
            #expect(result.stdout.contains("xenhvm\(bits) console_io: summary \(summary.passed) \(summary.failed)"),
                    sourceLocation: sourceLocation)
        }
    }

    /// The 64-bit kernel in an elf32-x86-64 container runs as it does from its ELF64.
    @Test func elf32ContainerRuns() throws {
        let result = Harness.swiftlet(["run", "--kernel", try Harness.builtGuests().xenhvm64ELF32.path, "--no-stdin"])
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        expectCleanRun(result, bits: 64)
    }

    /// Standard input through the PV console's in ring (`--console xen`).
    @Test(arguments: [32, 64])
    func pvConsoleInput(bits: Int) throws {
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--xen", "on", "--console", "xen",
                                       "--cmdline", "console=ttyS0 xenhvm.pv-input"], stdin: Data("typed on the host\n".utf8))
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        #expect(ProbeReport(result.stdout).facts["pv_console_input"] == "typed on the host", "\(result.stdout)")
    }

    @Test(arguments: [32, 64], [1, 2])
    func hvmGuest(bits: Int, cpus: Int) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xenhvm-\(getpid())-\(bits)-\(cpus).json")
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--xen", "on", "--cpus", String(cpus),
                                       "--no-stdin", "--report", path.path])
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(result.stdout.hasPrefix("xenhvm\(bits): entered via pvh"))
        expectCleanRun(result, bits: bits)
        #expect(ProbeReport(result.stdout).facts["shutdown"] == "poweroff")

        let json = try report(path)
        #expect(json["xen"] as? Bool == true)
        #expect(json["bootProtocol"] as? String == "pvh")
        #expect((json["reason"] as? String)?.contains("SCHEDOP_shutdown, reason poweroff") == true)
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        #expect(vcpus.count == cpus)
        let calls = try #require(vcpus[0]["hypercalls"] as? [String: Int])
        for name in ["hvm_op", "memory_op", "grant_table_op", "event_channel_op", "xen_version", "console_io"] {
            #expect((calls[name] ?? 0) >= 1, "\(name): \(calls)")
        }
        #expect(calls["sched_op"] == 1)
        #expect((calls["hvm_op"] ?? 0) >= 10 && (calls["memory_op"] ?? 0) >= 6 && (calls["grant_table_op"] ?? 0) >= 8)
    }

    /// The guest decides the exit status: SCHEDOP_shutdown with reason crash is status 40. Without
    /// `--xen`, the image's XEN_ELFNOTE_FEATURES note turns the interface on.
    @Test(arguments: [32, 64])
    func crashShutdownIsTheGuestsChoice(bits: Int) throws {
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--no-stdin",
                                       "--cmdline", "console=ttyS0 xenhvm.shutdown=crash"])
        #expect(result.status == 40, "status \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("guest shut down through sched_op (SCHEDOP_shutdown, reason crash, vCPU 0)"),
                "\(result.stderr)")
        expectCleanRun(result, bits: bits)
        #expect(ProbeReport(result.stdout).facts["shutdown"] == "crash")
    }

    /// RAM above 4 GiB: the RAM end the guest probes with XENMEM_add_to_physmap lies past the hole.
    @Test(arguments: [32, 64])
    func largeMemory(bits: Int) throws {
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--xen", "on", "--memory", "5G", "--no-stdin"])
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        expectCleanRun(result, bits: bits)
        #expect(ProbeReport(result.stdout).facts["ram_end"] == "0x180000000")
    }

    /// A CPU exception goes through the guest's IDT (32-bit gates in xenhvm32), which reports it
    /// and shuts down with reason crash.
    @Test(arguments: [32, 64])
    func exceptionCrashes(bits: Int) throws {
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--xen", "on", "--no-stdin",
                                       "--cmdline", "xenhvm.fault=ud2"])
        #expect(result.status == 40, "status \(result.status): \(result.stderr)")
        #expect(result.stdout.contains("FAIL exception 6 "), "\(result.stdout)")
        #expect(result.stdout.contains("xenhvm\(bits) console_io: exception: sched_op(SCHEDOP_shutdown, crash)"))
        #expect(result.stderr.contains("reason crash"))
    }

    /// Without the Xen interface the guest finds no leaves, reports it and exits 1 through port 0x500.
    @Test(arguments: [32, 64])
    func xenOff(bits: Int) throws {
        let result = Harness.swiftlet(["run", "--kernel", try image(bits).path, "--xen", "off", "--no-stdin"])
        #expect(result.status == 1, "status \(result.status): \(result.stderr)")
        let probe = ProbeReport(result.stdout)
        #expect(probe.checks.contains { $0.name == "xen-cpuid" && !$0.ok })
        #expect(probe.facts["shutdown"] == "port-0x500")
    }
}

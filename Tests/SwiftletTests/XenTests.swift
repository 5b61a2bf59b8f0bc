import Foundation
import Testing

/// Xen-style guests on plain KVM: a xen64 guest manages its vCPUs with vcpu_op and checks every
/// error code; a PVH guest installs the hypercall page through the MSR in 32- and 64-bit mode.
@Suite("Xen vCPU interface", .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct XenTests {
    func report(_ path: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as? [String: Any])
    }

    @Test(arguments: [1, 2, 8, 64])
    func vcpuOpGuest(cpus: Int) throws {
        let guests = try Harness.builtGuests()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xen-\(getpid())-\(cpus).json")
        let result = Harness.swiftlet(["run", "--kernel", guests.xenvcpu.path, "--boot", "xen64", "--cpus", String(cpus),
                                       "--memory", "128M", "--no-stdin", "--report", path.path])
        let probe = ProbeReport(result.stdout)
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        #expect(probe.facts["vcpus"] == String(cpus))
        #expect((probe.summary?.passed ?? 0) > 40)
        // With 3 or more vCPUs the guest keeps the last one uninitialised, to check that `up` refuses it.
        let uninitialised = probe.facts["uninitialised_vcpu"].flatMap(Int.init)
        #expect(uninitialised == (cpus >= 3 ? cpus - 1 : nil))
        let started = (1..<max(1, cpus)).filter { $0 != uninitialised }
        for id in started { #expect(result.stdout.contains("ap \(id) up via VCPUOP_up"), "AP \(id) did not report") }
        #expect(result.stderr.isEmpty)

        let json = try report(path)
        #expect(json["xen"] as? Bool == true)
        #expect((json["reason"] as? String)?.contains("SCHEDOP_shutdown, reason poweroff") == true)
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        #expect(vcpus[0]["bringUp"] as? String == "boot")
        let boot = try #require(vcpus[0]["hypercalls"] as? [String: Int])
        #expect((boot["vcpu_op"] ?? 0) >= cpus + 10)
        #expect((boot["xen_version"] ?? 0) >= 4 && (boot["sched_op"] ?? 0) >= 1 && (boot["console_io"] ?? 0) >= 1)
        #expect(boot["hypfs_op"] == 1 && boot["unknown_64_or_above"] == 1)   // the -ENOSYS probes (42, 127) count too
        #expect(vcpus[0]["trapTable"] as? Int == 3)
        let callbacks = try #require(vcpus[0]["callbacks"] as? [String: String])
        #expect(Set(callbacks.keys).isSuperset(of: ["event", "failsafe", "syscall"]))
        for id in started {
            #expect(vcpus[id]["bringUp"] as? String == "VCPUOP_up")
            #expect(((vcpus[id]["hypercalls"] as? [String: Int])?["console_io"] ?? 0) >= 1)
            #expect(vcpus[id]["initialMPState"] as? String == "UNINITIALIZED")
        }
        if let id = uninitialised {
            #expect(vcpus[id]["bringUp"] == nil || vcpus[id]["bringUp"] is NSNull)
            #expect(vcpus[id]["mpState"] as? String == "UNINITIALIZED")
        }
    }

    @Test(arguments: [("poweroff", Int32(0)), ("reboot", 32), ("crash", 40), ("watchdog", 42)])
    func shutdownReasons(reason: String, status: Int32) throws {
        let result = Harness.swiftlet(["run", "--kernel", try Harness.builtGuests().xenvcpu.path, "--boot", "xen64",
                                       "--cpus", "2", "--no-stdin", "--cmdline", "xen.shutdown=\(reason)"])
        #expect(result.status == status, "\(result.stderr)")
        if status != 0 {
            #expect(result.stderr.contains("guest shut down through sched_op (SCHEDOP_shutdown, reason \(reason), vCPU 0)"))
        }
    }

    @Test func pvhGuestInstallsThePageThroughTheMSR() throws {
        let result = Harness.swiftlet(["run", "--kernel", try Harness.builtGuests().xenpvh.path, "--no-stdin"])
        let probe = ProbeReport(result.stdout)
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        #expect(result.stdout.contains("pvh32 console_io ok"))
        #expect(result.stdout.contains("pvh64 console_io ok"))
    }

    /// Without Xen the trap port is just an unclaimed port and CPUID shows KVM.
    @Test func xenOffHidesTheInterface() throws {
        let result = Harness.swiftlet(["run", "--kernel", try Harness.builtGuests().xenpvh.path, "--no-stdin", "--xen", "off"])
        #expect(result.status != 0)
        #expect(!ProbeReport(result.stdout).failures.isEmpty)
    }
}

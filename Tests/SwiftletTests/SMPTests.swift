import Foundation
import Testing

/// The SMP guest finds the CPUs through the MP table or the MADT, checks every field, wakes each
/// AP with INIT-SIPI-SIPI (xAPIC or x2APIC), and every AP checks in from long mode. From the VMM
/// side, the report's checkpoints show each AP UNINITIALIZED, with no exit, until the guest began
/// sending SIPIs, and its first exit after that.
@Suite("SMP", .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct SMPTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let cpus: Int, boot: Int, discover: String, apic: String
        var mptable = true
        var testDescription: String { "\(cpus) vCPUs, BSP \(boot), \(discover), \(apic)\(mptable ? "" : ", no MP table")" }
    }

    static let cases: [Case] = [
        Case(cpus: 1, boot: 0, discover: "mptable", apic: "xapic"),
        Case(cpus: 1, boot: 0, discover: "madt", apic: "x2apic"),
        Case(cpus: 2, boot: 0, discover: "madt", apic: "xapic"),
        Case(cpus: 2, boot: 1, discover: "mptable", apic: "x2apic"),
        Case(cpus: 4, boot: 0, discover: "mptable", apic: "x2apic"),
        Case(cpus: 4, boot: 3, discover: "madt", apic: "xapic"),
        Case(cpus: 16, boot: 5, discover: "mptable", apic: "xapic"),
        Case(cpus: 16, boot: 0, discover: "madt", apic: "x2apic"),
        Case(cpus: 64, boot: 0, discover: "mptable", apic: "xapic"),
        Case(cpus: 64, boot: 17, discover: "madt", apic: "x2apic"),
    ]

    @Test(arguments: cases)
    func everyCPUChecksIn(_ c: Case) throws {
        let guests = try Harness.builtGuests()
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("smp-\(getpid())-\(c.cpus)-\(c.boot)-\(c.discover)-\(c.apic).json")
        var args = ["run", "--kernel", guests.smp.path, "--cpus", String(c.cpus), "--boot-cpu", String(c.boot),
                    "--memory", "128M", "--no-stdin", "--report", report.path,
                    "--cmdline", "smp.discover=\(c.discover) smp.apic=\(c.apic)"]
        if !c.mptable { args += ["--mptable", "off"] }
        let result = Harness.swiftlet(args)
        let probe = ProbeReport(result.stdout)
        #expect(probe.failures.isEmpty, "guest failures:\n\(probe.failures.joined(separator: "\n"))")
        #expect(result.status == 0, "status \(result.status): \(result.stderr)")
        #expect(probe.facts["bsp"] == String(c.boot))
        #expect(probe.facts["cpus"] == String(c.cpus))
        #expect(probe.facts["online"] == (0..<c.cpus).map(String.init).joined(separator: ","))
        #expect(result.stdout.components(separatedBy: "\nap ").count - 1 == c.cpus - 1)

        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        let checkpoints = try #require(json["checkpoints"] as? [[String: Any]])
        #expect(checkpoints.compactMap { $0["label"] as? Int } == [1, 2])
        guard checkpoints.count == 2 else { return }
        let before = try #require(checkpoints[0]["states"] as? [[String: Any]])
        let after = try #require(checkpoints[1]["states"] as? [[String: Any]])
        let sipiTime = try #require(checkpoints[0]["atMicroseconds"] as? Int)
        #expect(checkpoints[0]["vcpu"] as? Int == c.boot)
        for id in 0..<c.cpus {
            let isBoot = id == c.boot
            #expect(vcpus[id]["initialMPState"] as? String == (isBoot ? "RUNNABLE" : "UNINITIALIZED"))
            #expect(before[id]["mpState"] as? String == (isBoot ? "RUNNABLE" : "UNINITIALIZED"), "vCPU \(id) at checkpoint 1")
            if !isBoot {
                #expect(before[id]["exits"] as? Int == 0, "AP \(id) ran before any SIPI")
                #expect(after[id]["mpState"] as? String != "UNINITIALIZED", "AP \(id) never started")
                let first = try #require(vcpus[id]["firstExitMicroseconds"] as? Int, "AP \(id) never exited")
                #expect(first >= sipiTime, "AP \(id) exited before the guest started sending SIPIs")
            }
        }
    }

    /// Past 254 vCPUs there is no MP table; the MADT lists x2APIC entries and the guest still
    /// brings every CPU up.
    @Test func beyondTheMPTableLimit() throws {
        try everyCPUChecksIn(Case(cpus: 256, boot: 0, discover: "madt", apic: "x2apic", mptable: false))
    }

    @Test(arguments: [(["--acpi", "off"], "madt"), (["--mptable", "off"], "mptable")])
    func missingTablesAreReported(flags: [String], discover: String) throws {
        let result = Harness.swiftlet(["run", "--kernel", try Harness.builtGuests().smp.path, "--cpus", "2", "--no-stdin",
                                       "--cmdline", "smp.discover=\(discover)"] + flags)
        #expect(result.status == 1)
        #expect(!ProbeReport(result.stdout).failures.isEmpty)
    }

    @Test func demoGreetsFromEveryVCPU() {
        let result = Harness.swiftlet(["run", "--cpus", "8", "--no-stdin"])
        #expect(result.status == 0)
        for id in 0..<8 { #expect(result.stdout.contains("  vCPU \(id): hello\n"), "vCPU \(id) did not greet") }
    }
}

import Foundation
import Testing

/// The probe guest, booted through the real VMM by every protocol, checks its own entry state
/// against the specs and reports over COM1; these tests assert on that report and the status.
@Suite("Guest boot", .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct GuestBootTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let boot: String
        let bzImage: Bool
        let memory: String
        let memoryBytes: UInt64
        let initrd: Bool
        let cmdline: String?
        var testDescription: String {
            "\(boot)\(bzImage ? " bzImage" : "") \(memory)\(initrd ? " +initrd" : "")\(cmdline == nil ? "" : " +cmdline")"
        }
    }

    static let cases: [Case] = {
        var cases: [Case] = []
        for boot in ["pvh", "xen64", "linux"] {
            for (memory, bytes) in [("64M", UInt64(64) << 20), ("5G", UInt64(5) << 30)] {
                for initrd in [false, true] {
                    for cmdline in [nil, "root=/dev/vda ro  quiet spaces\tand=tabs swiftlet.test=1"] {
                        cases.append(Case(boot: boot, bzImage: false, memory: memory, memoryBytes: bytes,
                                          initrd: initrd, cmdline: cmdline))
                    }
                }
            }
        }
        cases.append(Case(boot: "linux", bzImage: true, memory: "64M", memoryBytes: 64 << 20, initrd: true, cmdline: "bz"))
        cases.append(Case(boot: "auto", bzImage: true, memory: "5G", memoryBytes: 5 << 30, initrd: false, cmdline: nil))
        return cases
    }()

    /// An initrd whose bytes are not all alike, so that a wrong offset changes the checksum.
    static let initrdBytes: [UInt8] = (0..<123_457).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }

    @Test(arguments: cases)
    func probeReportsCleanEntry(_ c: Case) throws {
        let guests = try Harness.builtGuests()
        var args = ["run", "--kernel", (c.bzImage ? guests.probeBzImage : guests.probe).path,
                    "--boot", c.boot, "--memory", c.memory, "--no-stdin"]
        if c.initrd { args += ["--initrd", try Harness.temporaryFile("initrd.bin", Self.initrdBytes).path] }
        args += ["--cmdline", c.cmdline ?? ""]
        let result = Harness.swiftlet(args)
        let report = ProbeReport(result.stdout)
        #expect(report.failures.isEmpty, "probe failures:\n\(report.failures.joined(separator: "\n"))")
        #expect(result.status == 0, "status \(result.status); stderr: \(result.stderr)")
        let summary = try #require(report.summary, "no summary line; output:\n\(result.stdout)\n\(result.stderr)")
        #expect(summary.failed == 0 && summary.passed >= 10)

        let expectedProtocol = c.boot == "auto" ? "linux" : c.boot
        #expect(report.facts["protocol"] == expectedProtocol)
        #expect(result.stdout.hasPrefix("probe: entered via \(expectedProtocol)"))
        #expect(report.facts["cmdline"] == (c.cmdline ?? ""))
        // Every byte of RAM but the legacy hole [0x9FC00, 0x100000) is described as RAM.
        #expect(report.facts["ram_bytes"] == String(c.memoryBytes - 0x6_0400))
        let top = c.memoryBytes > 0xC000_0000 ? c.memoryBytes + 0x4000_0000 : c.memoryBytes
        #expect(report.facts["ram_top"] == "0x" + String(top, radix: 16))
        let initrd = c.initrd ? Self.initrdBytes : []
        #expect(report.facts["initrd_size"] == String(initrd.count))
        #expect(report.facts["initrd_fnv"] == "0x" + String(fnv1a32(initrd), radix: 16).leftPadded(8))
        if expectedProtocol == "xen64" { #expect(report.facts["nr_pages"] == String(c.memoryBytes / 4096)) }
        if expectedProtocol == "linux" {
            #expect(report.facts["boot_version"] == (c.bzImage ? "0x20f" : "0x20c"))
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

import Foundation
import Testing

/// The syscall filter: on by default once the VM runs, on every thread; a forbidden call ends
/// the VMM with status 1 and a line naming the call; `--no-seccomp` leaves it off.
@Suite("Syscall filter", .enabled(if: Harness.kvmAvailable, Harness.kvmComment),
       .enabled(if: !Harness.sanitized, "a sanitizer build leaves the filter off: its runtime needs calls the filter forbids"))
struct SeccompTests {
    /// `Seccomp:` and `Seccomp_filters:` of every thread of a running VMM.
    func threadFilterModes(of pid: Int32) -> [(thread: String, mode: String)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { task in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { return nil }
            let lines = status.split(separator: "\n")
            let name = lines.first { $0.hasPrefix("Name:") }.map { String($0.dropFirst(5)).trimmingCharacters(in: .whitespaces) } ?? task
            let mode = lines.first { $0.hasPrefix("Seccomp:") }.map { String($0.dropFirst(8)).trimmingCharacters(in: .whitespaces) } ?? "?"
            return (name, mode)
        }
    }

    func runIdle(_ extra: [String]) throws -> [(thread: String, mode: String)] {
        let process = Process()
        process.executableURL = Harness.binary
        process.arguments = ["run", "--kernel", try Harness.builtGuests().probe.path, "--cpus", "2",
                             "--cmdline", "swiftlet.action=idle"] + extra
        let output = LiveOutput()
        process.standardOutput = output.pipe
        process.standardError = FileHandle.nullDevice
        process.standardInput = Pipe()
        try process.run()
        // The probe prints its summary just before it idles: by then guest code has run, so every
        // thread the VM needs exists and the filter, if on, is installed. Up to 60 s on a slow host.
        #expect(output.wait(for: "summary ", from: process), "the probe never reached its idle loop")
        let modes = threadFilterModes(of: process.processIdentifier)
        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + 15)   // SIGTERM still stops the VM cleanly under the filter
        return modes
    }

    @Test func everyThreadIsFiltered() throws {
        let modes = try runIdle([])
        // The main thread (its event loop serves the console, signals, the watchdog and the API)
        // and the two vCPU threads at least; a virtio worker would be one more.
        #expect(modes.count >= 3, "threads: \(modes)")
        for (thread, mode) in modes { #expect(mode == "2", "thread \(thread) has seccomp mode \(mode)") }
        #expect(modes.contains { $0.thread == "vcpu0" } && modes.contains { $0.thread == "vcpu1" }, "threads: \(modes)")
    }

    @Test func noSeccompLeavesItOff() throws {
        let modes = try runIdle(["--no-seccomp"])
        #expect(!modes.isEmpty)
        for (thread, mode) in modes { #expect(mode == "0", "thread \(thread) has seccomp mode \(mode)") }
    }

    @Test func forbiddenCallEndsTheVMM() {
        let refused = Harness.swiftlet(["run", "--no-stdin", "--debug-forbidden-syscall"])
        #expect(refused.status == 1)
        #expect(refused.stderr == "swiftlet: seccomp: the VMM made system call 41, which its filter forbids; rerun with --no-seccomp to debug\n")
        let allowed = Harness.swiftlet(["run", "--no-stdin", "--no-seccomp", "--debug-forbidden-syscall"])
        #expect(allowed.status == 0)
        #expect(allowed.stderr.contains("forbidden-call probe") && allowed.stderr.contains("allowed"))
    }
}

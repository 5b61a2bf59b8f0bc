import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `swiftlet` as a process, driven like Firecracker: `--api-sock`, `--config-file`, `--no-api`,
/// and `swiftlet run --api-sock`. The cases that boot a guest need /dev/kvm; the others do not.
@Suite(.serialized) struct APILaunchTests {
    // MARK: Without KVM

    @Test func servesUntilSignalledThenRemovesItsSocket() throws {
        let vmm = try RunningSwiftlet(["--id", "vm-7"])
        let info = try vmm.client().request("GET", "/")
        #expect(info.status == 200)
        #expect(info.body.contains(#""id":"vm-7""#))
        #expect(info.body.contains(#""state":"Not started""#))
        var status = stat()
        #expect(lstat(vmm.socket, &status) == 0 && status.st_mode & 0o777 == 0o600)
        vmm.signal(SIGTERM)
        #expect(vmm.wait() == 128 + SIGTERM)
        #expect(lstat(vmm.socket, &status) != 0, "the socket outlived the process")
    }

    @Test func theSyscallFilterLetsTheAPIThrough() throws {
        // The filter as installed once a VM runs, installed before any request: every
        // pre-boot request must be served under it (a forbidden call ends the process).
        let vmm = try RunningSwiftlet(["--debug-seccomp-now"])
        let client = try vmm.client()
        #expect(try client.request("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 64}"#).status == 204)
        #expect(try client.request("GET", "/vm/config").status == 200)
        #expect(try client.request("GET", "/vcpus").status == 200)
        #expect(try client.request("PUT", "/nope", "{}").status == 400)
        #expect(try vmm.client().request("GET", "/").status == 200)   // a second connection
        vmm.signal(SIGINT)
        #expect(vmm.wait() == 128 + SIGINT, "stderr: \(vmm.stderr)")
    }

    @Test func aLiveSocketIsNotTakenOver() throws {
        let first = try RunningSwiftlet([])
        let second = Harness.swiftlet(["--api-sock", first.socket])
        #expect(second.status == 1)
        #expect(second.stderr.contains("another process is serving on this socket"))
        #expect(try first.client().request("GET", "/").status == 200)
        first.signal(SIGTERM)
        _ = first.wait()
    }

    @Test(arguments: [
        (["--no-api"], "--no-api needs --config-file"),
        (["--config-file", "/x.json"], "--config-file without --api-sock"),
        (["--api-sock", "/tmp/x.sock", "--no-api", "--config-file", "/x"], "contradict"),
        (["--api-sock", "/tmp/x.sock", "--level", "Loud"], "--level Loud"),
    ])
    func launchFlagMistakesAreUsageErrors(arguments: [String], message: String) {
        let result = Harness.swiftlet(arguments)
        #expect(result.status == 2)
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test(arguments: [
        (#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64},}"#, "line 1, column"),
        (#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "cpus": 2}}"#, "unknown field `machine-config.cpus`"),
        (#"{"balloon": {"amount_mib": 0, "deflate_on_oom": false}}"#, "unknown field `balloon`"),
        (#"{"drives": [{"drive_id": "root", "path_on_host": "/x.img"}]}"#, "missing field `is_root_device`"),
        (#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#, "/nonexistent/vmlinux"),
        (#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#, "no boot source"),
    ])
    func configFileMistakesNameTheFile(json: String, message: String) throws {
        let file = try Harness.temporaryFile("bad-\(abs(json.hashValue)).json", Array(json.utf8))
        let result = Harness.swiftlet(["--no-api", "--config-file", file.path])
        #expect(result.status == 1)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        if !message.hasPrefix("/nonexistent") && !message.hasPrefix("no boot") {
            #expect(result.stderr.contains(file.path), "\(result.stderr)")
        }
    }

    // MARK: With KVM

    /// Firecracker's getting-started sequence: boot source, machine config, InstanceStart.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func gettingStartedSequenceBootsAGuest() throws {
        let guests = try Harness.builtGuests()
        let vmm = try RunningSwiftlet([])
        let client = try vmm.client()
        #expect(try client.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(guests.ticker.path)", "boot_args": "console=ttyS0"}"#).status == 204)
        #expect(try client.request("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 64}"#).status == 204)
        let start = try client.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(start.status == 204, "\(start.body)")
        #expect(try client.request("GET", "/").body.contains(#""state":"Running""#))
        #expect(vmm.wait() == 0, "stderr: \(vmm.stderr)")
        #expect(Self.tickerLines(vmm.stdout) == Self.uninterrupted)
    }

    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func configFileStartsTheVMAtOnce() throws {
        let guests = try Harness.builtGuests()
        let json = #"{"boot-source": {"kernel_image_path": "\#(guests.ticker.path)"}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#
        let file = try Harness.temporaryFile("ticker.json", Array(json.utf8))
        let result = Harness.swiftlet(["--no-api", "--config-file", file.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(Self.tickerLines(result.stdout) == Self.uninterrupted)
    }

    /// Pause: no progress while paused; resume: progress again, and the same output in the end.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func pauseAndResumeARunningGuest() throws {
        let vmm = try RunningSwiftlet.ticker(cpus: 1)
        let client = try vmm.client()
        #expect(vmm.waitForOutput("tick 5\n"))
        #expect(try client.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(try client.request("GET", "/").body.contains(#""state":"Paused""#))
        #expect(try client.request("GET", "/vcpus/0").body.contains(#""run_state":"Paused""#))
        #expect(try client.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 400)
        let atPause = vmm.stdout
        usleep(600_000)   // 6 ticks' worth of PIT time
        #expect(vmm.stdout == atPause, "the guest printed while paused")
        #expect(try client.request("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(try client.request("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 400)
        #expect(vmm.wait() == 0, "stderr: \(vmm.stderr)")
        #expect(Self.tickerLines(vmm.stdout) == Self.uninterrupted)
    }

    /// One vCPU paused while another runs: pausing the boot vCPU stops the progress, pausing a
    /// parked AP does not.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func oneVCPUPausedWhileAnotherRuns() throws {
        let vmm = try RunningSwiftlet.ticker(cpus: 2)
        let client = try vmm.client()
        #expect(vmm.waitForOutput("tick 3\n"))
        #expect(try client.request("PATCH", "/vcpus/1", #"{"state": "Paused"}"#).status == 204)
        let lastTick = Self.tickerLines(vmm.stdout).compactMap { Int($0.dropFirst("tick ".count)) }.last ?? 0
        try #require(lastTick <= 38, "the guest ran to its end before vCPU 1 was paused: a machine too slow for this test")
        #expect(vmm.waitForOutput("tick \(lastTick + 2)\n"), "the boot vCPU stopped while only vCPU 1 was paused")
        let vcpus = try client.request("GET", "/vcpus").body
        #expect(vcpus.contains(#""id":1,"last_exit":null,"mp_state":"UNINITIALIZED","run_state":"Paused""#), "\(vcpus)")
        #expect(try client.request("GET", "/").body.contains(#""state":"Running""#))
        #expect(try client.request("PATCH", "/vcpus/0", #"{"state": "Paused"}"#).status == 204)
        let atPause = vmm.stdout
        usleep(400_000)
        #expect(vmm.stdout == atPause, "the guest printed with its only running vCPU paused")
        #expect(try client.request("PATCH", "/vcpus/0", #"{"state": "Resumed"}"#).status == 204)
        #expect(try client.request("PATCH", "/vcpus/1", #"{"state": "Resumed"}"#).status == 204)
        #expect(vmm.wait() == 0, "stderr: \(vmm.stderr)")
        #expect(Self.tickerLines(vmm.stdout) == Self.uninterrupted)
    }

    /// MP state read and set over the API, at 1 and 8 vCPUs, with today's transition rules.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment), arguments: [1, 8])
    func mpStateOverTheAPI(cpus: Int) throws {
        let vmm = try RunningSwiftlet.ticker(cpus: cpus)
        let client = try vmm.client()
        #expect(vmm.waitForOutput("tick 1\n"))
        let list = try client.request("GET", "/vcpus")
        let entries = try JSONSerialization.jsonObject(with: Data(list.body.utf8)) as? [[String: Any]] ?? []
        #expect(entries.count == cpus)
        #expect(entries.first?["mp_state"] as? String == "RUNNABLE")
        #expect(entries.first?["brought_up_by"] as? String == "boot")
        #expect(entries.dropFirst().allSatisfy { $0["mp_state"] as? String == "UNINITIALIZED" })
        if cpus > 1 {
            let last = cpus - 1
            let refused = try client.request("PUT", "/vcpus/\(last)/mp-state", #"{"mp_state": "SIPI_RECEIVED"}"#)
            #expect(refused.status == 400)
            #expect(refused.body.contains("a SIPI is only accepted after INIT"))
            #expect(try client.request("PUT", "/vcpus/\(last)/mp-state", #"{"mp_state": "INIT_RECEIVED"}"#).status == 204)
            #expect(try client.request("GET", "/vcpus/\(last)").body.contains(#""mp_state":"INIT_RECEIVED""#))
        }
        #expect(try client.request("PUT", "/vcpus/0/mp-state", #"{"mp_state": "SIPI_RECEIVED"}"#).status == 400)
        #expect(try client.request("GET", "/vcpus/\(cpus)").status == 404)
        #expect(vmm.wait() == 0, "stderr: \(vmm.stderr)")
    }

    /// `swiftlet run ... --api-sock`: the API beside a VM configured on the command line.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func runWithAnAPISocket() throws {
        let guests = try Harness.builtGuests()
        let vmm = try RunningSwiftlet(["run", "--kernel", guests.ticker.path, "--cpus", "2", "--memory", "64M", "--no-stdin"],
                                      socketFlag: "--api-sock", socketLast: true)
        let client = try vmm.client()
        #expect(vmm.waitForOutput("tick 2\n"))
        let config = try client.request("GET", "/machine-config").body
        #expect(config.contains(#""vcpu_count":2"#) && config.contains(#""mem_size_mib":64"#))
        #expect(try client.request("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64}"#).status == 400)
        #expect(try client.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(try client.request("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(vmm.wait() == 0, "stderr: \(vmm.stderr)")
        #expect(Self.tickerLines(vmm.stdout) == Self.uninterrupted)
    }

    static let uninterrupted = ["ticker: start"] + (1...40).map { "tick \($0)" } + ["ticker: done"]

    static func tickerLines(_ output: String) -> [String] {
        output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("tick") }
    }
}

/// A `swiftlet` process serving the API on a socket of its own, its output collected as it comes.
final class RunningSwiftlet: @unchecked Sendable {   // the process and the collectors are thread-safe
    let process = Process()
    let socket: String
    private let out = LiveOutput(), err = LiveOutput()
    /// The VMM's standard input, when asked for (`typing: true`): what `type` writes.
    private let input: Pipe?

    init(_ arguments: [String], socketFlag: String = "--api-sock", socketLast: Bool = false, typing: Bool = false) throws {
        socket = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock").path
        process.executableURL = Harness.binary
        process.arguments = socketLast ? arguments + [socketFlag, socket] : [socketFlag, socket] + arguments
        process.standardOutput = out.pipe
        process.standardError = err.pipe
        input = typing ? Pipe() : nil
        process.standardInput = input ?? FileHandle.nullDevice
        try process.run()
        for _ in 0..<3000 where !FileManager.default.fileExists(atPath: socket) && process.isRunning { usleep(10_000) }
        guard FileManager.default.fileExists(atPath: socket) else {
            let ended = process.isRunning ? "still running" : "exited with \(process.terminationStatus)"
            throw ClientError(message: "swiftlet did not create \(socket) within 30 s (\(ended)): \(self.stderr)\(self.stdout.suffix(300))")
        }
    }

    /// The ticker guest started through the API.
    static func ticker(cpus: Int) throws -> RunningSwiftlet {
        let guests = try Harness.builtGuests()
        let vmm = try RunningSwiftlet([])
        let client = try vmm.client()
        _ = try client.request("PUT", "/boot-source", #"{"kernel_image_path": "\#(guests.ticker.path)"}"#)
        _ = try client.request("PUT", "/machine-config", #"{"vcpu_count": \#(cpus), "mem_size_mib": 64}"#)
        let start = try client.request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        guard start.status == 204 else { throw ClientError(message: "InstanceStart: \(start.body)") }
        return vmm
    }

    func client() throws -> Client { try Client(socket) }

    var stdout: String { out.text }
    var stderr: String { err.text }

    /// Waits up to `seconds` (60) for `text` in the guest's output.
    func waitForOutput(_ text: String, seconds: Int = 60) -> Bool { out.wait(for: text, from: process, seconds: seconds) }

    /// Writes `text` to the VMM's standard input (started with `typing: true`).
    func type(_ text: String) { input?.fileHandleForWriting.write(Data(text.utf8)) }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits up to 120 s for the process to end; its exit status (killed: -1).
    func wait() -> Int32 {
        for _ in 0..<12000 where process.isRunning { usleep(10_000) }
        if process.isRunning {   // SIGTERM, then SIGKILL: a hung VMM fails the test rather than hanging it
            process.terminate()
            for _ in 0..<1000 where process.isRunning { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return -1
        }
        process.waitUntilExit()
        for _ in 0..<1000 where !(out.ended && err.ended) { usleep(10_000) }   // up to 10 s for the last output
        return process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
    }

    deinit {
        if process.isRunning { process.terminate() }
    }
}

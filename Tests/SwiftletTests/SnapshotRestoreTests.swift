import Foundation
import Testing

/// Snapshots through the real VMM: the ticker guest (tick 1 to 40, then power-off) snapshotted
/// mid-run over the API, the process killed, and the VM restored in new processes, several times
/// from the same files; every restored run must end exactly as an uninterrupted run.
@Suite(.serialized, .enabled(if: Harness.kvmAvailable, Harness.kvmComment))
struct SnapshotRestoreTests {
    struct Saved {
        let state: String, memory: String
        /// The ticker's output before the snapshot (it may end mid-line).
        let before: String
    }

    static func snapshotMidRun(cpus: Int = 1, kind: String = "Full") throws -> Saved {
        let guests = try Harness.builtGuests()
        let vmm = try RunningSwiftlet(["run", "--kernel", guests.ticker.path, "--cpus", String(cpus), "--memory", "64M", "--no-stdin"],
                                      socketFlag: "--api-sock", socketLast: true)
        let client = try vmm.client()
        #expect(vmm.waitForOutput("tick 10\n"))
        #expect(try client.request("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("snap-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let state = folder + "/vm.snap", memory = folder + "/vm.mem"
        let created = try client.request("PUT", "/snapshot/create",
                                         #"{"snapshot_type": "\#(kind)", "snapshot_path": "\#(state)", "mem_file_path": "\#(memory)"}"#)
        #expect(created.status == 204, "\(created.body)")
        vmm.signal(SIGKILL)
        _ = vmm.wait()
        let before = vmm.stdout   // all it wrote, read to the end
        return Saved(state: state, memory: memory, before: before)
    }

    @Test func aRestoredRunEndsAsAnUninterruptedOne() throws {
        let saved = try Self.snapshotMidRun()
        #expect(APILaunchTests.tickerLines(saved.before).count >= 11
                && APILaunchTests.tickerLines(saved.before).count < APILaunchTests.uninterrupted.count)
        let attrs = try FileManager.default.attributesOfItem(atPath: saved.memory)
        #expect((attrs[.size] as? Int) == 64 << 20, "the memory file holds all of guest RAM")
        for round in 1...3 {   // clones of one snapshot
            let result = Harness.swiftlet(["run", "--restore", saved.state, "--memory-file", saved.memory, "--no-stdin"])
            #expect(result.status == 0, "round \(round): \(result.stderr)")
            #expect(APILaunchTests.tickerLines(saved.before + result.stdout) == APILaunchTests.uninterrupted, "round \(round)\n\(result.stdout)")
        }
    }

    @Test func twoVCPUsWithAnAPStillWaiting() throws {
        let saved = try Self.snapshotMidRun(cpus: 2)
        let result = Harness.swiftlet(["run", "--restore", saved.state, "--memory-file", saved.memory, "--no-stdin"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(APILaunchTests.tickerLines(saved.before + result.stdout) == APILaunchTests.uninterrupted)
    }

    @Test func restoredPausedThenResumedOverTheAPI() throws {
        let saved = try Self.snapshotMidRun()
        let vmm = try RunningSwiftlet(["run", "--restore", saved.state, "--memory-file", saved.memory, "--paused", "--no-stdin"],
                                      socketFlag: "--api-sock", socketLast: true)
        let client = try vmm.client()
        usleep(200_000)
        #expect(APILaunchTests.tickerLines(vmm.stdout).isEmpty, "nothing runs while paused")
        #expect(try client.request("GET", "/").body.contains(#""state":"Paused""#))
        #expect(try client.request("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        usleep(2_000_000)
        let vcpus = try client.request("GET", "/vcpus").body
        #expect(vmm.wait() == 0, "\(vmm.stderr)\n\(vcpus)")
        #expect(APILaunchTests.tickerLines(saved.before + vmm.stdout) == APILaunchTests.uninterrupted)
    }

    @Test func aMemoryFileOfTheWrongSizeIsRefused() throws {
        let saved = try Self.snapshotMidRun()
        let short = saved.memory + ".short"
        FileManager.default.createFile(atPath: short, contents: Data(count: 4096))
        let result = Harness.swiftlet(["run", "--restore", saved.state, "--memory-file", short, "--no-stdin"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(short): the memory file has 4096 bytes; the snapshot \(saved.state) needs \(64 << 20)"), "\(result.stderr)")
    }
}

import Foundation
import FuzzTargets
@testable import Hypercalls
import Loader
import Testing

/// Every committed seed (Fuzz/corpus/<target>) through the same entry function the fuzzer
/// calls, so that `swift test` catches a change that makes one of them trap or break a fuzz
/// invariant, without libFuzzer.
@Suite("Fuzz corpus replay")
struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus")

    @Test(arguments: FuzzTarget.allCases)
    func everySeedRunsCleanly(target: FuzzTarget) throws {
        let folder = Self.corpus.appendingPathComponent(target.rawValue).path
        let files = try FuzzDriver.inputFiles(at: folder)
        #expect(files.count >= 5, "\(folder) holds \(files.count) seeds")
        let harness = try LoaderHarness()
        for file in files {
            let input = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
            #expect(input.count <= target.maxLength, "\(file) is longer than the fuzzer's -max_len")
            target.run(input, in: harness)
        }
    }

    /// The compacted test kernels (headers, notes, the first bytes of each segment) are still
    /// kernels that load, so the fuzzer starts from the success paths, not only the error ones.
    /// (Debian's kernel needs more than the harness's 9 MiB: it only parses.)
    @Test func compactSeedsStillLoad() throws {
        let folder = Self.corpus.appendingPathComponent("elf").path
        let seeds = try FuzzDriver.inputFiles(at: folder)
            .filter { ($0.contains(".compact") || $0.hasSuffix(".elf")) && !$0.contains("debian") }
        #expect(seeds.count >= 10)
        let harness = try LoaderHarness()
        for seed in seeds {
            let image = try KernelImage.parse(KernelFile.read(path: seed))
            let (chosen, _) = try image.selectProtocol(nil)
            _ = try image.load(into: harness.memory, protocol: chosen, floor: LoaderHarness.floor, path: seed)
        }
    }

    /// The hand-made hypercall seeds (Fuzz/make-corpus.py) reach the calls' success paths.
    @Test(arguments: [
        ("console-write", [HypercallResult.ok()]),
        ("console-write-fault", [.error(.fault)]),
        ("xen-version-all", [.ok(0x0004_0013), .ok(), .ok(), .ok(4096)]),
        ("xen-version-capabilities", [.ok()]),
        ("trap-table", [.ok()]),
        ("set-callbacks", [.ok()]),
        ("callback-op", [.ok(), .ok()]),
        ("sched-op-shutdown", [HypercallResult(value: 0, effect: .shutdown(reason: 2))]),
        ("sched-op-yield-poll", [.ok(), .ok()]),
        ("vcpu-initialise-up", [.ok(), .ok(), .ok(1)]),
        ("vcpu-down-runstate", [.ok(), HypercallResult(value: 0, effect: .allVCPUsDown)]),
        ("vcpu-bad-context", [.error(.inval)]),
        ("hvm-param", [.ok(), .ok()]),
        ("memory-op-shared-info", [.ok()]),
        ("memory-op-grant-32", [.ok()]),
        ("grant-table-op", [.ok(), .ok(), .ok()]),
        ("event-channel-op", [.error(.nosys)]),
        ("unknown-number", [.error(.nosys)]),
    ])
    func hypercallSeedsReachTheirPaths(seed: String, expected: [HypercallResult]) throws {
        let input = [UInt8](try Data(contentsOf: Self.corpus.appendingPathComponent("hypercalls/\(seed)")))
        #expect(HypercallHarness.run(input) == expected)
    }

    /// The replay driver the fuzz executables become without libFuzzer.
    @Test func replayDriverReadsFoldersAndFiles() throws {
        let folder = Self.corpus.appendingPathComponent("xen-notes").path
        let files = try FuzzDriver.inputFiles(at: folder)
        #expect(FuzzDriver.replay(.xenNotes, arguments: ["-runs=1", folder, files[0]]) == 0)
        #expect(FuzzDriver.replay(.xenNotes, arguments: [folder + "/no-such-seed"]) == 2)
        #expect(FuzzDriver.replay(.xenNotes, arguments: []) == 2)
    }
}

import Foundation
import Testing

/// Where things are, and how to run the real `swiftlet` binary and the project's guest kernels.
enum Harness {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// /dev/kvm present and usable: the tests that boot guests need it, and say so when skipped.
    static let kvmAvailable: Bool = FileManager.default.isReadableFile(atPath: "/dev/kvm")
        && FileManager.default.isWritableFile(atPath: "/dev/kvm")
    static let kvmComment: Comment = "needs a usable /dev/kvm (absent or not accessible on this machine)"

    /// This test process (and so the `swiftlet` beside it) was built with ThreadSanitizer or
    /// AddressSanitizer.
    static let sanitized: Bool = dlsym(nil, "__tsan_init") != nil
        || dlsym(nil, "__asan_init") != nil

    /// The `swiftlet` executable built beside this test bundle.
    static let binary: URL = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("swiftlet")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return packageRoot.appendingPathComponent(".build/debug/swiftlet")
    }()

    struct GuestBuild: Sendable {
        let directory: URL
        var probe: URL { directory.appendingPathComponent("probe.elf") }
        var probeBzImage: URL { directory.appendingPathComponent("probe.bzImage") }
        var demo: URL { directory.appendingPathComponent("demo.elf") }
        var ticker: URL { directory.appendingPathComponent("ticker.elf") }
        var virtio: URL { directory.appendingPathComponent("virtio.elf") }
        var smp: URL { directory.appendingPathComponent("smp.elf") }
        var xenvcpu: URL { directory.appendingPathComponent("xenvcpu.elf") }
        var xenpvh: URL { directory.appendingPathComponent("xenpvh.elf") }
        var mboot: URL { directory.appendingPathComponent("mboot.elf") }
        var mbootAout: URL { directory.appendingPathComponent("mboot-aout.bin") }
        var mboot64: URL { directory.appendingPathComponent("mboot64.elf") }
        var xenhvm32: URL { directory.appendingPathComponent("xenhvm32.elf") }
        var xenhvm64: URL { directory.appendingPathComponent("xenhvm64.elf") }
        /// xenhvm64.elf after `objcopy -O elf32-x86-64`, as XTF ships its 64-bit tests.
        var xenhvm64ELF32: URL { directory.appendingPathComponent("xenhvm64-elf32.elf") }
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// The guest kernels, built once per test process from Guests/ with the system toolchain, into a
    /// folder of this process's own, or into `SWIFTLET_GUESTS_OUT` where that is set (make then rebuilds
    /// only what changed: for slow machines, where the guests are built beforehand).
    static let guests: Result<GuestBuild, Failure> = {
        let out = ProcessInfo.processInfo.environment["SWIFTLET_GUESTS_OUT"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-guests-\(getpid())")
        let result = run(URL(fileURLWithPath: "/usr/bin/make"),
                         ["-s", "-C", packageRoot.appendingPathComponent("Guests").path, "OUT=\(out.path)"])
        guard result.status == 0 else {
            return .failure(Failure(description: "building the guest kernels failed (\(result.status)):\n\(result.stderr)"))
        }
        return .success(GuestBuild(directory: out))
    }()

    static func builtGuests() throws -> GuestBuild { try guests.get() }

    struct ProcessResult: Sendable {
        let status: Int32
        let stdout: String
        let stderr: String
        var lines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
    }

    /// Runs a program to completion (killed after `timeout` seconds) and collects its output.
    static func run(_ program: URL, _ arguments: [String], stdin: Data? = nil, timeout: TimeInterval = 120) -> ProcessResult {
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        do { try process.run() } catch {
            return ProcessResult(status: -1, stdout: "", stderr: "could not start \(program.path): \(error)")
        }
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try? input.fileHandleForWriting.close()
        let collector = OutputCollector()
        let group = DispatchGroup()
        for (pipe, index) in [(out, 0), (err, 1)] {
            group.enter()
            DispatchQueue.global().async {
                collector.set(index, pipe.fileHandleForReading.readDataToEndOfFile())
                group.leave()
            }
        }
        let deadline = DispatchTime.now() + timeout
        if group.wait(timeout: deadline) == .timedOut {
            // SIGTERM, then SIGKILL: a VMM that hangs fails its test instead of hanging the suite.
            process.terminate()
            if group.wait(timeout: .now() + 30) == .timedOut {
                kill(process.processIdentifier, SIGKILL)
                group.wait()
            }
        }
        process.waitUntilExit()
        return ProcessResult(status: process.terminationStatus,
                       stdout: String(decoding: collector.get(0), as: UTF8.self),
                       stderr: String(decoding: collector.get(1), as: UTF8.self))
    }

    final class OutputCollector: @unchecked Sendable {
        private var data = [Data(), Data()]
        private let lock = NSLock()
        func set(_ i: Int, _ d: Data) { lock.lock(); data[i] = d; lock.unlock() }
        func get(_ i: Int) -> Data { lock.lock(); defer { lock.unlock() }; return data[i] }
    }

    /// `swiftlet ARGS`.
    static func swiftlet(_ arguments: [String], stdin: Data? = nil) -> ProcessResult {
        run(binary, arguments, stdin: stdin)
    }

    static func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-tests-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }
}

/// What the probe guest reported over the serial port.
struct ProbeReport {
    let checks: [(name: String, ok: Bool, line: String)]
    let facts: [String: String]
    let summary: (passed: Int, failed: Int)?

    init(_ output: String) {
        var checks: [(String, Bool, String)] = []
        var facts: [String: String] = [:]
        var summary: (Int, Int)?
        for line in output.split(separator: "\n").map(String.init) {
            if line.hasPrefix("ok ") {
                checks.append((String(line.dropFirst(3)), true, line))
            } else if line.hasPrefix("FAIL ") {
                let name = line.dropFirst(5).split(separator: ":").first.map(String.init) ?? ""
                checks.append((name, false, line))
            } else if line.hasPrefix("fact ") {
                let rest = line.dropFirst(5)
                let key = rest.prefix { $0 != " " }
                facts[String(key)] = String(rest.dropFirst(key.count + 1))
            } else if line.hasPrefix("summary ") {
                let parts = line.split(separator: " ")
                if parts.count == 3, let p = Int(parts[1]), let f = Int(parts[2]) { summary = (p, f) }
            }
        }
        self.checks = checks
        self.facts = facts
        self.summary = summary
    }

    var failures: [String] { checks.filter { !$0.ok }.map(\.line) }
}

/// FNV-1a, 32 bits: the checksum the probe reports for the initrd.
func fnv1a32(_ bytes: [UInt8]) -> UInt32 {
    var hash: UInt32 = 0x811C_9DC5
    for byte in bytes { hash = (hash ^ UInt32(byte)) &* 0x0100_0193 }
    return hash
}

/// A child process's output stream as it comes: read by the pipe's handler, kept until the end.
final class LiveOutput: @unchecked Sendable {   // `data` and `atEnd` behind `lock`
    let pipe = Pipe()
    private let lock = NSLock()
    private var data = Data(), atEnd = false

    init() {
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil }
            guard let self else { return }
            lock.lock(); data.append(chunk); atEnd = atEnd || chunk.isEmpty; lock.unlock()
        }
    }

    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
    /// End of file seen: every byte the process wrote is here.
    var ended: Bool { lock.lock(); defer { lock.unlock() }; return atEnd }

    /// Waits up to `seconds` (60) for `text`, or until `process` has ended; whether `text` came.
    func wait(for text: String, from process: Process, seconds: Int = 60) -> Bool {
        for _ in 0..<(seconds * 100) {
            if self.text.contains(text) { return true }
            if !process.isRunning { return self.text.contains(text) }
            usleep(10_000)
        }
        return false
    }
}

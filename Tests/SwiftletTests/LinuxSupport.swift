import Foundation
import Testing

/// The Linux fixtures the repository's own scripts provide (Linux/*.sh): the project's microVM
/// guest kernel, the busybox initramfs, and Debian's stock kernel. Each script runs once per test
/// process; it caches outside the clone, so only the first run on a machine builds or downloads.
enum LinuxFixtures {
    /// What a script gave: a folder or file, "cannot be had here" (status 3, skip), or a failure.
    enum Fetch: Sendable {
        case ready(URL)
        case unavailable(String)
        case failed(String)

        var isAvailable: Bool { if case .unavailable = self { false } else { true } }

        func get() throws -> URL {
            switch self {
            case let .ready(url): return url
            case let .unavailable(why), let .failed(why): throw Harness.Failure(description: why)
            }
        }
    }

    /// Runs `Linux/NAME` and takes the last line it printed as the path.
    static func fetch(_ name: String, _ arguments: [String] = []) -> Fetch {
        let script = Harness.packageRoot.appendingPathComponent("Linux/\(name)")
        let result = Harness.run(URL(fileURLWithPath: "/bin/bash"), [script.path] + arguments, timeout: 3600)
        let message = "Linux/\(name) exited with status \(result.status): " + result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        switch result.status {
        case 0:
            guard let last = result.lines.last(where: { !$0.isEmpty }) else { return .failed("Linux/\(name) printed no path") }
            return .ready(URL(fileURLWithPath: last))
        case 3:
            print("note: \(message)")
            return .unavailable(message)
        default:
            return .failed(message)
        }
    }

    static let guestKernel = fetch("build-kernel.sh")
    static let initramfs = fetch("build-initramfs.sh")
    static let debianKernel = fetch("debian-kernel.sh")

    /// This host's KVM runs guest kernel mode in its instruction emulator (no VMX or SVM), where
    /// Debian's stock kernel stops on instructions the emulator lacks.
    static let emulatedKVM: Bool = {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = info.split(separator: "\n").first { $0.hasPrefix("flags") }.map { $0.split(separator: " ").map(String.init) } ?? []
        return !flags.contains("vmx") && !flags.contains("svm")
    }()
}

/// A Linux console log, split into the kernel's messages (timestamps removed) and everything else.
struct KernelLog {
    let lines: [String]

    init(_ output: String) {
        lines = output.replacingOccurrences(of: "\r", with: "").split(separator: "\n", omittingEmptySubsequences: false).map { line in
            // "[    1.234567] message" -> "message"
            if line.hasPrefix("["), let close = line.firstIndex(of: "]") {
                return String(line[line.index(after: close)...].drop { $0 == " " })
            }
            return String(line)
        }
    }

    func contains(_ text: String) -> Bool { lines.contains { $0.contains(text) } }
    func first(_ prefix: String) -> String? { lines.first { $0.hasPrefix(prefix) } }
    func all(containing text: String) -> [String] { lines.filter { $0.contains(text) } }
    func index(of text: String) -> Int? { lines.firstIndex { $0.contains(text) } }

    /// The kernel's own e820 lines ("BIOS-e820: [mem 0x...-0x...] usable").
    var e820: [String] { lines.filter { $0.hasPrefix("BIOS-e820: ") } }

    /// Lines where the kernel complains about the firmware tables or hardware Swiftlet gives it, or
    /// hits a WARN or BUG ("WARNING: CPU: N PID: ..."; not a CPU-vulnerability notice such as Debian
    /// 6.1's "Speculative Return Stack Overflow: WARNING: See ... for mitigation options", which is
    /// about the host CPU's microcode on an AMD Zen).
    var complaints: [String] {
        let patterns = ["checksum", "Firmware Bug", "FW_BUG", "BIOS bug", "ACPI BIOS Error", "ACPI BIOS Warning", "ACPI Error",
                        "ACPI Warning", "WARNING: CPU:", "BUG:", "Call Trace", "Oops", "Can't read CTR", "i8042: Can't",
                        "MP-BIOS bug", "Kernel panic"]
        // Said on every boot (whether ACPICA checks table checksums early), not a complaint.
        let notices = ["Early table checksum verification"]
        return lines.filter { line in
            patterns.contains { line.localizedCaseInsensitiveContains($0) } && !notices.contains { line.contains($0) }
        }
    }

    /// The IRQ number in the 8250 driver's line for COM1, "ttyS0 at I/O 0x3f8 (irq = N, base_baud
    /// = 115200) is a 16550A". Linux numbers IRQs its own way: the ISA number where it has a legacy
    /// PIC, a dynamic one on a hardware-reduced ACPI platform (no 8259 assumed), so tests compare
    /// it with /init's report of the line rather than expect 4.
    var uartIRQ: Int? {
        let prefix = "ttyS0 at I/O 0x3f8 (irq = ", suffix = ", base_baud = 115200) is a 16550A"
        guard let line = lines.first(where: { $0.contains(prefix) && $0.hasSuffix(suffix) }),
              let start = line.range(of: prefix)?.upperBound, let end = line.range(of: suffix)?.lowerBound else { return nil }
        return Int(line[start..<end])
    }

    /// An interrupt line as /init reported it from /proc/interrupts ("swiftlet-init: irq 25
    /// IO-APIC 4-edge ttyS0, 9 interrupts"): Linux's IRQ number, the chip and pin ("IO-APIC
    /// 4-edge") and the interrupts taken, for the handler `name`.
    struct InterruptLine: Equatable { let irq: Int; let pin: String; let count: Int }

    func interruptLine(_ name: String) -> InterruptLine? {
        for line in lines where line.hasPrefix("swiftlet-init: irq ") {
            let words = line.dropFirst("swiftlet-init: irq ".count).split(separator: " ")
            guard words.count == 6, words[3] == "\(name),", words[5] == "interrupts",
                  let irq = Int(words[0]), let count = Int(words[4]) else { continue }
            return InterruptLine(irq: irq, pin: "\(words[1]) \(words[2])", count: count)
        }
        return nil
    }

    /// The e820 lines Linux prints for Swiftlet's map of `memory` bytes (README, Guest memory layout).
    static func expectedE820(memory: UInt64) -> [String] {
        func hex(_ value: UInt64) -> String { "0x" + String(repeating: "0", count: 16 - String(value, radix: 16).count) + String(value, radix: 16) }
        func line(_ start: UInt64, _ end: UInt64, _ kind: String) -> String { "BIOS-e820: [mem \(hex(start))-\(hex(end - 1))] \(kind)" }
        let low = min(memory, 3 << 30)
        var map = [line(0, 0x9_FC00, "usable"), line(0x9_FC00, 0x10_0000, "reserved"), line(0x10_0000, low, "usable")]
        if memory > 3 << 30 { map.append(line(1 << 32, (1 << 32) + memory - (3 << 30), "usable")) }
        return map
    }
}

/// `swiftlet ARGS` with standard input fed from `answers`, in order: each answer is written to the
/// VMM's standard input once its prompt has appeared on standard output (one more time than the
/// earlier answers to the same prompt).
func runInteractive(_ arguments: [String], answers: [(prompt: String, answer: String)], timeout: TimeInterval) -> Harness.ProcessResult {
    let process = Process()
    process.executableURL = Harness.binary
    process.arguments = arguments
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    let feeder = Feeder(answers: answers, input: input.fileHandleForWriting)
    out.fileHandleForReading.readabilityHandler = { handle in
        let chunk = handle.availableData
        feeder.received(chunk)
        if chunk.isEmpty { handle.readabilityHandler = nil }
    }
    do { try process.run() } catch {
        return Harness.ProcessResult(status: -1, stdout: "", stderr: "could not start swiftlet: \(error)")
    }
    let stderrData = Harness.OutputCollector()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        stderrData.set(1, err.fileHandleForReading.readDataToEndOfFile())
        group.leave()
    }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        process.terminate()   // then SIGKILL: a hung VMM fails the test rather than hanging it
        if group.wait(timeout: .now() + 30) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            group.wait()
        }
    }
    process.waitUntilExit()
    out.fileHandleForReading.readabilityHandler = nil
    try? input.fileHandleForWriting.close()
    return Harness.ProcessResult(status: process.terminationStatus,
                                 stdout: String(decoding: feeder.output, as: UTF8.self),
                                 stderr: String(decoding: stderrData.get(1), as: UTF8.self))
}

/// Collects a process's output and answers its prompts, from the pipe's reader thread.
private final class Feeder: @unchecked Sendable {   // every field is behind `lock`
    private let lock = NSLock()
    private let answers: [(prompt: String, answer: String)]
    private let input: FileHandle
    private var data = Data()
    private var answered = 0

    init(answers: [(prompt: String, answer: String)], input: FileHandle) {
        self.answers = answers
        self.input = input
    }

    func received(_ chunk: Data) {
        lock.lock(); defer { lock.unlock() }
        data.append(chunk)
        let text = String(decoding: data, as: UTF8.self)
        // An answer goes once its prompt has appeared more often than earlier answers used it.
        while answered < answers.count {
            let prompt = answers[answered].prompt
            let used = answers[..<answered].filter { $0.prompt == prompt }.count
            guard text.components(separatedBy: prompt).count - 1 > used else { break }
            input.write(Data(answers[answered].answer.utf8))
            answered += 1
        }
    }

    var output: Data { lock.lock(); defer { lock.unlock() }; return data }
}

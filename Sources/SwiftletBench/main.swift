// swiftlet-bench: Swiftlet beside the KVM floor (Benchmarks/floor) and QEMU microvm, in one run.
// Usage: swift run -c release swiftlet-bench [--runs N] [--count N] [--json] [--quick] [--swiftlet PATH]
// Needs make, cc, GNU as/ld; qemu-system-x86_64 for the QEMU columns (Benchmarks/run.sh installs it).
import Foundation

struct Options {
    var runs = 5
    var count = 20000
    var json = false
    var quick = false
    var swiftlet: String?

    init(_ arguments: [String]) {
        var i = 0
        while i < arguments.count {
            switch arguments[i] {
            case "--runs": i += 1; runs = max(1, Int(arguments[i]) ?? runs)
            case "--count": i += 1; count = max(100, Int(arguments[i]) ?? count)
            case "--json": json = true
            case "--quick": quick = true
            case "--swiftlet": i += 1; swiftlet = arguments[i]
            case "--help", "-h":
                print("usage: swiftlet-bench [--runs N] [--count N] [--json] [--quick] [--swiftlet PATH]")
                exit(0)
            default:
                FileHandle.standardError.write(Data("swiftlet-bench: unknown option \(arguments[i])\n".utf8))
                exit(2)
            }
            i += 1
        }
    }
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let binDir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
let swiftlet = options.swiftlet.map { URL(fileURLWithPath: $0) } ?? binDir.appendingPathComponent("swiftlet")
let work = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-bench-\(getpid())")

func log(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }

/// Runs a program to completion with posix_spawn and wait4: wall time from spawn to reaped exit,
/// and that child's own peak RSS. Output goes to files, read after the exit.
@discardableResult
func run(_ path: String, _ arguments: [String]) -> (status: Int32, out: String, err: String, seconds: Double, maxRSSKiB: Int) {
    let outPath = work.appendingPathComponent("stdout").path, errPath = work.appendingPathComponent("stderr").path
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let start = monotonicNow()
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return (-1, "", "could not start \(path)", 0, 0) }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let seconds = Double(monotonicNow() - start) / 1e9
    let exitStatus: Int32 = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return (exitStatus, out, err, seconds, Int(usage.ru_maxrss))
}

func monotonicNow() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

struct Stats: Codable {
    var min: Double, median: Double, max: Double
    init(_ values: [Double]) {
        let sorted = values.sorted()
        min = sorted.first ?? .nan
        max = sorted.last ?? .nan
        median = sorted.isEmpty ? .nan : sorted[sorted.count / 2]
    }
}

struct Row: Codable {
    var group: String
    var name: String
    var unit: String
    var stats: Stats?
    var note: String?
}

var rows: [Row] = []
@MainActor func record(_ group: String, _ name: String, _ unit: String, _ values: [Double], note: String? = nil) {
    rows.append(Row(group: group, name: name, unit: unit, stats: values.isEmpty ? nil : Stats(values), note: note))
}
@MainActor func median(_ group: String, _ name: String) -> Double? {
    rows.first { $0.group == group && $0.name == name }?.stats?.median
}

// MARK: Build the guests and the floor.

guard FileManager.default.isExecutableFile(atPath: swiftlet.path) else {
    log("swiftlet-bench: \(swiftlet.path) not found; build with `swift build -c release` first")
    exit(1)
}
try? FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
let benchOut = work.appendingPathComponent("bench").path, guestOut = work.appendingPathComponent("guests").path
for (dir, out) in [("Benchmarks", benchOut), ("Guests", guestOut)] {
    let made = run("/usr/bin/make", ["-s", "-C", root.appendingPathComponent(dir).path, "OUT=\(out)", "COUNT=\(options.count)"])
    guard made.status == 0 else { log("building \(dir) failed:\n\(made.err)"); exit(1) }
}
func bench(_ mode: String) -> String { "\(benchOut)/bench-\(mode).elf" }
let floor = "\(benchOut)/floor"

func report(_ arguments: [String]) -> (json: [String: Any], seconds: Double, spawnedAt: UInt64, maxRSSKiB: Int)? {
    let path = work.appendingPathComponent("report.json").path
    let spawnedAt = monotonicNow()
    let result = run(swiftlet.path, ["run", "--no-stdin", "--report", path] + arguments)
    guard let data = FileManager.default.contents(atPath: path),
          let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        log("swiftlet \(arguments.joined(separator: " ")) gave no report: \(result.err)")
        return nil
    }
    try? FileManager.default.removeItem(atPath: path)
    return (json, result.seconds, spawnedAt, result.maxRSSKiB)
}

func checkpointSpan(_ json: [String: Any]) -> Double? {
    guard let cps = json["checkpoints"] as? [[String: Any]], cps.count >= 2,
          let a = cps[0]["atMicroseconds"] as? Double, let b = cps[1]["atMicroseconds"] as? Double else { return nil }
    return (b - a) * 1000
}

// MARK: 1, 2. Exit and hypercall round trips.

log("exit round trips (\(options.count) exits x \(options.runs) runs)...")
for mode in ["pio", "pioin", "mmio"] {
    var floorValues: [Double] = [], swiftletValues: [Double] = []
    for _ in 0..<options.runs {
        let f = run(floor, [bench(mode)])
        if let obj = try? JSONSerialization.jsonObject(with: Data(f.out.utf8)) as? [String: Any],
           let a = obj["checkpoint1Nanoseconds"] as? Double, let b = obj["checkpoint2Nanoseconds"] as? Double {
            floorValues.append((b - a) / Double(options.count))
        }
        if let r = report(["--kernel", bench(mode)]), let span = checkpointSpan(r.json) {
            swiftletValues.append(span / Double(options.count))
        }
    }
    record("exit round trip", "\(mode) floor (C, bare KVM_RUN)", "ns/exit", floorValues)
    record("exit round trip", "\(mode) swiftlet", "ns/exit", swiftletValues)
}
var hcall: [Double] = []
for _ in 0..<options.runs {
    if let r = report(["--kernel", bench("hcall"), "--xen", "on"]), let span = checkpointSpan(r.json) {
        hcall.append(span / Double(options.count))
    }
}
record("hypercall round trip", "VCPUOP_is_up through the page (swiftlet)", "ns/call", hcall)

// MARK: 3. Start to done, and to the first instruction.

log("start to done...")
var startDone: [Double] = [], firstExit: [Double] = []
for _ in 0..<options.runs {
    if let r = report(["--kernel", bench("done")]) {
        startDone.append(r.seconds * 1e3)
        if let start = r.json["runStartMonotonicNanoseconds"] as? Double,
           let vcpus = r.json["vcpus"] as? [[String: Any]], let first = vcpus.first?["firstExitMicroseconds"] as? Double {
            firstExit.append((start + first * 1000 - Double(r.spawnedAt)) / 1e6)
        }
    }
}
record("start to done", "swiftlet, PVH guest", "ms", startDone)
record("start to done", "swiftlet, process start to first guest exit", "ms", firstExit)
let qemu = which("qemu-system-x86_64")
func qemuArguments(_ kernel: String, memory: String = "128M", cpus: Int = 1) -> [String] {
    ["-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", memory, "-smp", String(cpus), "-nodefaults", "-no-user-config",
     "-nographic", "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", kernel]
}
if let qemu {
    var values: [Double] = []
    for _ in 0..<options.runs {
        let r = run(qemu, qemuArguments(bench("done")))
        if r.status == 1 { values.append(r.seconds * 1e3) } else { log("qemu: status \(r.status): \(r.err)") }
    }
    record("start to done", "qemu-system-x86_64 -M microvm", "ms", values)
} else {
    record("start to done", "qemu-system-x86_64 -M microvm", "ms", [], note: "not installed (Benchmarks/run.sh installs qemu-system-x86)")
}

// MARK: 4. AP bring-up.

log("AP bring-up...")
for cpus in options.quick ? [2, 8] : [2, 8, 64] {
    var sipi: [Double] = []
    for _ in 0..<options.runs {
        if let r = report(["--kernel", "\(guestOut)/smp.elf", "--cpus", String(cpus), "--memory", "128M"]),
           let vcpus = r.json["vcpus"] as? [[String: Any]], let first = vcpus.first?["firstExitMicroseconds"] as? Double,
           let cps = r.json["checkpoints"] as? [[String: Any]], cps.count >= 2, let end = cps[1]["atMicroseconds"] as? Double {
            sipi.append((end - first) / 1000)
        }
    }
    record("AP bring-up", "\(cpus) vCPUs, INIT-SIPI-SIPI (smp guest)", "ms", sipi)
    var up: [Double] = []
    for _ in 0..<options.runs {
        if let r = report(["--kernel", "\(guestOut)/xenvcpu.elf", "--boot", "xen64", "--cpus", String(cpus), "--memory", "128M",
                           "--cmdline", "xen.bench=1"]),
           let vcpus = r.json["vcpus"] as? [[String: Any]], let first = vcpus.first?["firstExitMicroseconds"] as? Double,
           let cps = r.json["checkpoints"] as? [[String: Any]],
           let end = cps.first(where: { $0["label"] as? Int == 2 })?["atMicroseconds"] as? Double {
            up.append((end - first) / 1000)
        }
    }
    record("AP bring-up", "\(cpus) vCPUs, VCPUOP_initialise + VCPUOP_up (xenvcpu guest)", "ms", up)
}

// MARK: 5. Memory.

log("memory...")
for (cpus, memory) in [(1, "128M"), (64, "128M"), (1, "16G")] {
    var peak: [Double] = [], anonymous: [Double] = []
    for _ in 0..<max(1, options.runs / 2) {
        if let r = report(["--kernel", bench("done"), "--cpus", String(cpus), "--memory", memory]),
           let guest = r.json["guestResidentBytes"] as? Double, let anon = r.json["anonymousRSSBytes"] as? Double,
           let hwm = r.json["peakRSSBytes"] as? Double {
            // Swiftlet's own VmHWM, taken after exec: wait4's ru_maxrss would also count the
            // spawning process, shared with the child until exec (posix_spawn's CLONE_VM).
            peak.append((hwm - guest) / 1_048_576)
            anonymous.append((anon - guest) / 1_048_576)
        }
    }
    record("memory", "swiftlet peak RSS - guest-touched, \(cpus) vCPU, \(memory)", "MiB", peak)
    record("memory", "  of which private (RssAnon - guest-touched)", "MiB", anonymous)
}
if let qemu {
    for (cpus, memory) in [(1, "128M"), (1, "16G")] {
        // wait4's ru_maxrss: also covers this process until QEMU's exec, but QEMU is the larger.
        let r = run(qemu, qemuArguments(bench("done"), memory: memory, cpus: cpus))
        record("memory", "qemu microvm peak RSS, \(cpus) vCPU, \(memory)", "MiB", [Double(r.maxRSSKiB) / 1024])
    }
}

// MARK: 6. Scaling.

log("scaling...")
for cpus in options.quick ? [1, 8, 64] : [1, 2, 4, 8, 16, 32, 64] {
    var values: [Double] = []
    for _ in 0..<options.runs { if let r = report(["--kernel", bench("done"), "--cpus", String(cpus)]) { values.append(r.seconds * 1e3) } }
    record("scaling: vCPUs", "\(cpus) vCPUs", "ms", values)
}
for memory in options.quick ? ["64M", "16G"] : ["64M", "256M", "1G", "4G", "16G"] {
    var values: [Double] = []
    for _ in 0..<options.runs { if let r = report(["--kernel", bench("done"), "--memory", memory]) { values.append(r.seconds * 1e3) } }
    record("scaling: memory", memory, "ms", values)
}

// MARK: Ratios and output.

var ratios: [String: Double] = [:]
if let s = median("exit round trip", "pio swiftlet"), let f = median("exit round trip", "pio floor (C, bare KVM_RUN)") { ratios["pio exit / floor"] = s / f }
if let s = median("exit round trip", "mmio swiftlet"), let f = median("exit round trip", "mmio floor (C, bare KVM_RUN)") { ratios["mmio exit / floor"] = s / f }
if let h = median("hypercall round trip", "VCPUOP_is_up through the page (swiftlet)"), let f = median("exit round trip", "pio floor (C, bare KVM_RUN)") {
    ratios["hypercall / floor pio exit"] = h / f
}
if let s = median("start to done", "swiftlet, PVH guest"), let q = median("start to done", "qemu-system-x86_64 -M microvm") {
    ratios["qemu start-to-done / swiftlet"] = q / s
}

let machine = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
    .split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
if options.json {
    struct Output: Codable { var date: String; var machine: String; var runs: Int; var count: Int; var rows: [Row]; var ratios: [String: Double] }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let output = Output(date: ISO8601DateFormatter().string(from: Date()), machine: machine, runs: options.runs, count: options.count, rows: rows, ratios: ratios)
    print(String(decoding: try! encoder.encode(output), as: UTF8.self))
} else {
    func f(_ v: Double) -> String { v.isNaN ? "-" : (v >= 100 ? String(format: "%.0f", v) : String(format: "%.2f", v)) }
    print("Swiftlet benchmarks — \(ISO8601DateFormatter().string(from: Date())) — \(machine), \(ProcessInfo.processInfo.activeProcessorCount) CPUs")
    print("(\(options.runs) runs each; \(options.count) exits per round-trip run; min / median / max; swiftlet: \(swiftlet.path))\n")
    var group = ""
    for row in rows {
        if row.group != group { group = row.group; print("\(group)") }
        let values = row.stats.map { "\(f($0.min)) / \(f($0.median)) / \(f($0.max)) \(row.unit)" } ?? (row.note ?? "-")
        print("  \(row.name.padding(toLength: 62, withPad: " ", startingAt: 0)) \(values)")
    }
    print("\nratios (medians)")
    for (name, value) in ratios.sorted(by: { $0.key < $1.key }) { print("  \(name.padding(toLength: 62, withPad: " ", startingAt: 0)) \(String(format: "%.2f", value))x") }
}
try? FileManager.default.removeItem(at: work)

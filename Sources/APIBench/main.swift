// swiftlet-api-bench: what the control plane costs. Usage:
//   swift build -c release && .build/release/swiftlet-api-bench [--runs N] [--requests N] [--swiftlet PATH] [--kernel ELF]
//
// 1. process start to API socket accepting: wall time, and the CPU time the process had used by
//    then (utime + stime from /proc/PID/stat; Firecracker's own bound is 8 CPU-ms);
// 2. GET / round trip on a keep-alive connection (this client on the same machine);
// 3. private memory (RssAnon, and Private_* from smaps_rollup) of an idle VMM with the API on;
// 4. with /dev/kvm and --kernel (a guest that runs a while, e.g. Guests' ticker.elf): PATCH /vm
//    Paused and Resumed round trips on a running VM.
// Medians of --runs processes; times are this machine's, compare ratios within one run.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

var runs = 20, requests = 5000
var swiftletPath: String?, kernel: String?
var arguments = Array(CommandLine.arguments.dropFirst())
while !arguments.isEmpty {
    let flag = arguments.removeFirst()
    switch flag {
    case "--runs": runs = Int(arguments.removeFirst()) ?? runs
    case "--requests": requests = Int(arguments.removeFirst()) ?? requests
    case "--swiftlet": swiftletPath = arguments.removeFirst()
    case "--kernel": kernel = arguments.removeFirst()
    default:
        FileHandle.standardError.write(Data("usage: swiftlet-api-bench [--runs N] [--requests N] [--swiftlet PATH] [--kernel ELF]\n".utf8))
        exit(2)
    }
}
let binary = swiftletPath ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    .deletingLastPathComponent().appendingPathComponent("swiftlet").path

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Connects to a Unix socket; -1 if nobody accepts.
func connectTo(_ path: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
    let ok = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    if ok != 0 { close(fd); return -1 }
    return fd
}

/// One request, one response (Content-Length framing); the status code.
func roundTrip(_ fd: Int32, _ request: [UInt8], buffer: inout [UInt8]) -> Int {
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    var received = 0
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, $0.count - received, 0) }
        if n <= 0 { return -1 }
        received += n
        let text = String(decoding: buffer[0..<received], as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { continue }
        let head = text[..<end.lowerBound]
        let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length {
            return Int(head.split(separator: " ")[1]) ?? -1
        }
    }
}

func request(_ method: String, _ path: String, _ body: String = "") -> [UInt8] {
    Array(("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\n"
        + (body.isEmpty ? "" : "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n") + "\r\n" + body).utf8)
}

/// CPU time the process has used, in ms: the sum of its threads' on-CPU nanoseconds
/// (/proc/PID/task/TID/schedstat), finer than utime + stime's clock ticks.
func cpuMilliseconds(_ pid: pid_t) -> Double {
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return .nan }
    var nanoseconds = 0.0
    for task in tasks {
        if let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8) {
            nanoseconds += Double(text.split(separator: " ").first ?? "") ?? 0
        }
    }
    return nanoseconds / 1e6
}

func statusKiB(_ pid: pid_t, _ field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
    return text.split(separator: "\n").first { $0.hasPrefix(field) }
        .flatMap { Int($0.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") } ?? -1
}

func privateKiB(_ pid: pid_t) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return -1 }
    return text.split(separator: "\n").filter { $0.hasPrefix("Private_") }
        .map { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0 }.reduce(0, +)
}

func spawn(_ args: [String]) -> (pid: pid_t, socket: String) {
    let socketPath = "/tmp/swiftlet-api-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv = ([binary, "--api-sock", socketPath] + args).map { strdup($0) } + [nil]
    posix_spawn(&pid, binary, &actions, nil, argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    argv.forEach { free($0) }
    return (pid, socketPath)
}

func end(_ pid: pid_t, _ socket: String) {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    unlink(socket)
}

print("swiftlet-api-bench: \(binary), \(runs) processes, \(requests) requests")

// 1. Start to accepting.
var wall: [Double] = [], cpu: [Double] = []
for _ in 0..<runs {
    let start = now()
    let (pid, socketPath) = spawn([])
    var fd: Int32 = -1
    while fd < 0 {
        fd = connectTo(socketPath)
        if fd < 0 { usleep(50) }
    }
    wall.append(Double(now() - start) / 1e6)
    cpu.append(cpuMilliseconds(pid))
    close(fd)
    end(pid, socketPath)
}
print(String(format: "start to API socket accepting: median %.2f ms wall, %.2f CPU-ms (all threads' schedstat)",
             median(wall), median(cpu)))
// The same for `swiftlet --version`: what any start of the binary costs, API or not.
var versionWall: [Double] = []
for _ in 0..<runs {
    let start = now()
    var pid: pid_t = 0
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    let argv = ([binary, "--version"] as [String]).map { strdup($0) } + [nil]
    posix_spawn(&pid, binary, &actions, nil, argv, environ)
    posix_spawn_file_actions_destroy(&actions)
    argv.forEach { free($0) }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    versionWall.append(Double(now() - start) / 1e6)
}
print(String(format: "for comparison, swiftlet --version start to exit: median %.2f ms wall", median(versionWall)))

// The floor: the same client against a canned HTTP answer from a bare socket loop in this
// process (one thread, blocking recv/send): what the socket and this client cost alone.
let floorPath = "/tmp/swiftlet-api-bench-floor-\(getpid()).sock"
unlink(floorPath)
let floorListener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
var floorAddress = sockaddr_un()
floorAddress.sun_family = sa_family_t(AF_UNIX)
withUnsafeMutableBytes(of: &floorAddress.sun_path) { raw in for (i, b) in floorPath.utf8.enumerated() { raw[i] = b } }
_ = withUnsafePointer(to: &floorAddress) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(floorListener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
}
listen(floorListener, 4)
var floorThread = pthread_t()
let listenerBox = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
listenerBox.pointee = floorListener
pthread_create(&floorThread, nil, floorServer, listenerBox)
var floorFD: Int32 = -1
while floorFD < 0 { floorFD = connectTo(floorPath); if floorFD < 0 { usleep(100) } }
var floorBuffer = [UInt8](repeating: 0, count: 65536)
var floorTrips: [Double] = []
for _ in 0..<requests {
    let t = now()
    guard roundTrip(floorFD, request("GET", "/"), buffer: &floorBuffer) == 200 else { print("floor failed"); exit(1) }
    floorTrips.append(Double(now() - t) / 1000)
}
close(floorFD)
pthread_join(floorThread, nil)
close(floorListener)
unlink(floorPath)

// 2, 3. Round trips and idle memory.
let (pid, socketPath) = spawn([])
var fd: Int32 = -1
while fd < 0 { fd = connectTo(socketPath); if fd < 0 { usleep(100) } }
var buffer = [UInt8](repeating: 0, count: 65536)
let get = request("GET", "/")
for _ in 0..<200 { _ = roundTrip(fd, get, buffer: &buffer) }   // warm up
var trips: [Double] = []
for _ in 0..<requests {
    let t = now()
    guard roundTrip(fd, get, buffer: &buffer) == 200 else { print("GET / failed"); exit(1) }
    trips.append(Double(now() - t) / 1000)
}
print(String(format: "GET / round trip (keep-alive): median %.1f us, p99 %.1f us", median(trips), percentile(trips, 0.99)))
print(String(format: "  floor (canned answer from a bare socket loop, same client): median %.1f us; Swiftlet / floor %.2fx",
             median(floorTrips), median(trips) / median(floorTrips)))
let put = request("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256}"#)
var puts: [Double] = []
for _ in 0..<requests {
    let t = now()
    guard roundTrip(fd, put, buffer: &buffer) == 204 else { print("PUT failed"); exit(1) }
    puts.append(Double(now() - t) / 1000)
}
print(String(format: "PUT /machine-config round trip: median %.1f us, p99 %.1f us", median(puts), percentile(puts, 0.99)))
usleep(200_000)
print("idle VMM with the API on, no VM: RssAnon \(statusKiB(pid, "RssAnon:")) KiB, private (smaps_rollup) \(privateKiB(pid)) KiB, VmRSS \(statusKiB(pid, "VmRSS:")) KiB, threads \(statusKiB(pid, "Threads:"))")
close(fd)
end(pid, socketPath)

// 4. Pause and resume on a running VM.
if let kernel {
    guard access("/dev/kvm", R_OK | W_OK) == 0 else {
        print("pause/resume: not measured: /dev/kvm is not usable here")
        exit(0)
    }
    let (pid, socketPath) = spawn([])
    var fd: Int32 = -1
    while fd < 0 { fd = connectTo(socketPath); if fd < 0 { usleep(100) } }
    _ = roundTrip(fd, request("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)"}"#), buffer: &buffer)
    _ = roundTrip(fd, request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#), buffer: &buffer)
    usleep(100_000)
    var pauses: [Double] = [], resumes: [Double] = []
    for _ in 0..<min(requests, 200) {
        var t = now()
        guard roundTrip(fd, request("PATCH", "/vm", #"{"state": "Paused"}"#), buffer: &buffer) == 204 else { break }
        pauses.append(Double(now() - t) / 1000)
        t = now()
        guard roundTrip(fd, request("PATCH", "/vm", #"{"state": "Resumed"}"#), buffer: &buffer) == 204 else { break }
        resumes.append(Double(now() - t) / 1000)
    }
    print(String(format: "pause (PATCH /vm Paused, every vCPU held): median %.1f us over %d; resume: median %.1f us",
                 median(pauses), pauses.count, median(resumes)))
    if let running = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8), !running.isEmpty {
        print("running VM with the API on: RssAnon \(statusKiB(pid, "RssAnon:")) KiB (guest RAM it touched included)")
    }
    close(fd)
    end(pid, socketPath)
}

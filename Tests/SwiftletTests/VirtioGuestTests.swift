import Foundation
import Testing

/// The virtio guest (Guests/virtio): a driver written from VIRTIO 1.2 that finds its devices
/// through `virtio_mmio.device=` words and checks the block and entropy devices. Under QEMU's
/// microvm it proves the driver against a second implementation; under Swiftlet it is the judge.
@Suite(.serialized) struct VirtioGuestTests {
    static let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// An image of `sectors` sectors following the guest's convention: every byte of sector n is n ^ 0xA5.
    static func image(_ name: String, sectors: Int = 64) throws -> URL {
        var bytes: [UInt8] = []
        for n in 0..<sectors { bytes += [UInt8](repeating: UInt8((n ^ 0xA5) & 0xFF), count: 512) }
        return try Harness.temporaryFile(name, bytes)
    }

    /// A network namespace with a TAP device can be made here (root, or CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN): Guests/tools/virtio-run.sh needs one for the network check.
    static let namespaces: Bool = Harness.run(URL(fileURLWithPath: "/bin/sh"),
        ["-c", "unshare -n sh -c 'ip tuntap add dev t0 mode tap' 2>/dev/null"]).status == 0
    static let namespaceComment: Comment = "needs a network namespace with a TAP device (run as root)"

    static func run(_ vmm: String, _ extra: [String] = []) throws -> (Harness.ProcessResult, ProbeReport) {
        let guests = try Harness.builtGuests()
        let result = Harness.run(Harness.packageRoot.appendingPathComponent("Guests/tools/virtio-run.sh"),
                                 [vmm, guests.virtio.path] + extra, timeout: 400)
        return (result, ProbeReport(result.stdout))
    }

    @Test(.enabled(if: qemu != nil, "needs qemu-system-x86_64 (not installed here)"), .enabled(if: namespaces, namespaceComment))
    func theDriverWorksWithQEMU() throws {
        let (result, report) = try Self.run("qemu")
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(report.summary?.failed == 0)
        #expect(report.facts["devices"] == "5")
        #expect(report.facts["net-received"] == "echo: swiftlet virtio-net guest")
        #expect(result.stdout.contains("--- console\nvirtio-console: hello from the guest\n"))
    }

    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment), .enabled(if: namespaces, namespaceComment))
    func everyDeviceChecksOutUnderSwiftlet() throws {
        let (result, report) = try Self.run("swiftlet", [Harness.binary.path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(report.failures.isEmpty, "\(report.failures)")
        // Drives, network, vsock, entropy, console: in that order, from 0xD0000000 and IRQ 5.
        #expect(report.facts["devices"] == "6")
        #expect(report.facts["device0"]?.hasPrefix("0xd0000000 irq 5") == true, "\(report.facts)")
        #expect(report.facts["blk0-id"] == "swiftlet-disk")
        #expect(report.facts["blk1-read-only"] == "1")
        #expect(report.facts["blk1-capacity-sectors"] == "8")
        // Swiftlet requires VERSION_1 and asks for a reset after a bad buffer (both allowed, not
        // required, by the spec: QEMU does neither).
        for device in 0..<6 { #expect(report.facts["device\(device)-features-ok-without-version-1"] == "0") }
        #expect(report.facts["blk0-needs-reset-after-bad-buffer"] == "1")
        #expect(report.facts["blk1-needs-reset-after-bad-buffer"] == "1")
        // Network: the MAC from --net, num_buffers 1 (§5.1.6.4), the helper's echo through the TAP.
        #expect(report.facts["net-mac"] == "2:53:57:0:0:2")
        #expect(report.facts["net-num-buffers"] == "1")
        #expect(report.facts["net-received"] == "echo: swiftlet virtio-net guest")
        // Console: its line on standard output, standard input in its receive queue.
        #expect(result.stdout.contains("virtio-console: hello from the guest"))
        #expect(report.facts["console-input"] == "typed.")
        // vsock both ways, Firecracker's host side.
        #expect(report.facts["vsock-cid"] == "3")
        #expect(report.facts["vsock-from-host"] == "ping from host")
        #expect(report.facts["vsock-echo"] == "echo: hello vsock")
        // Firecracker's host-side ports come from [2^30, 2^31), the first one 2^30; the helper asks
        // again while the guest is not yet listening, and each refused request uses up a port.
        let hostPort = result.stdout.split(separator: "\n").first { $0.hasPrefix("vsock host got: OK ") }
            .flatMap { UInt32($0.dropFirst("vsock host got: OK ".count)) }
        #expect(hostPort.map { (1 << 30)..<(1 << 31) ~= $0 } == true, "host side's port \(String(describing: hostPort))")
        #expect(result.stdout.contains("vsock host received: pong from the guest"))
        #expect(result.stdout.contains("vsock guest sent: hello vsock"))
    }

    /// With `KVM_IOEVENTFD` a queue notification completes inside KVM: the guest's bench mode makes
    /// 5000 block requests and 20000 frames (one QueueNotify write per request, per ring-full of
    /// frames), and the vCPU's MMIO write exits stay at what setting the devices up costs.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment), .enabled(if: namespaces, namespaceComment))
    func queueNotificationsDoNotExitToTheVMM() throws {
        let guests = try Harness.builtGuests()
        let disk = try Self.image("virtio-bench.img", sectors: 4096)
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("virtio-bench-\(getpid()).json")
        let result = Harness.run(Harness.packageRoot.appendingPathComponent("Guests/tools/virtio-run.sh"),
                                 ["exec", Harness.binary.path, "run", "--kernel", guests.virtio.path, "--memory", "64M",
                                  "--no-stdin", "--cmdline", "virtio.bench", "--drive", "path=\(disk.path)",
                                  "--net", "tap=swtap0", "--report", report.path], timeout: 600)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        for line in ["bench blk-4k-read done 4000", "bench blk-64k-read done 1000", "bench net-tx done 20000"] {
            #expect(result.stdout.contains(line), "\(result.stdout)")
        }
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        let vcpus = try #require(json["vcpus"] as? [[String: Any]])
        let writes = vcpus.reduce(0) { $0 + ((($1["exitCounts"] as? [String: Int]) ?? [:])["mmio-write"] ?? 0) }
        #expect(writes < 500, "\(writes) MMIO write exits for 5000 requests and 2500+ notifications")
    }
}

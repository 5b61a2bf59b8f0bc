@testable import API
import Foundation
import Logging
import Testing
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Every route and every refusal of the API, through the router and the controller with a fake VM
/// (no sockets, no KVM).
@Suite struct RouterTests {
    let host: FakeHost
    let router: APIRouter
    let kernel: String

    init() throws {
        host = try FakeHost()
        router = APIRouter(controller: host.controller())
        kernel = try TempFile.make(bytes: Array("not really a kernel".utf8))
    }

    @discardableResult
    func call(_ method: String, _ uri: String, _ body: String? = nil) -> APIResponse {
        router.handle(APIRequest(method: method, uri: uri, body: body.map { Array($0.utf8) }))
    }

    func json(_ response: APIResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
    }

    func configure(cpus: Int = 2) {
        #expect(call("PUT", "/machine-config", #"{"vcpu_count": \#(cpus), "mem_size_mib": 64}"#).status == 204)
        #expect(call("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#).status == 204)
    }

    func start(cpus: Int = 2) {
        configure(cpus: cpus)
        let response = call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(response.status == 204, "\(response.faultMessage ?? "")")
    }

    // MARK: Instance information

    @Test func instanceInfoAndVersion() {
        let info = call("GET", "/")
        #expect(info.status == 200)
        let fields = json(info)
        #expect(fields["id"] as? String == "test-vm")
        #expect(fields["state"] as? String == "Not started")
        #expect(fields["app_name"] as? String == "Swiftlet")
        #expect(fields["vmm_version"] as? String == "9.9.9")
        let version = json(call("GET", "/version"))
        #expect(version["firecracker_version"] as? String == APIRouter.firecrackerAPIVersion)
        #expect(version["swiftlet_version"] as? String == "9.9.9")
        // A query string and a trailing slash name the same resource, as in Firecracker.
        #expect(call("GET", "/version/").status == 200)
        #expect(call("GET", "/?x=1").status == 200)
    }

    // MARK: Machine configuration

    @Test func machineConfigDefaultsPutAndPatch() {
        let defaults = json(call("GET", "/machine-config"))
        #expect(defaults["vcpu_count"] as? Int == 1)
        #expect(defaults["mem_size_mib"] as? Int == 128)
        #expect(defaults["smt"] as? Bool == false)
        #expect(call("PUT", "/machine-config", #"{"vcpu_count": 4, "mem_size_mib": 256, "smt": true, "track_dirty_pages": true}"#).status == 204)
        var now = json(call("GET", "/machine-config"))
        #expect(now["vcpu_count"] as? Int == 4)
        #expect(now["mem_size_mib"] as? Int == 256)
        #expect(now["track_dirty_pages"] as? Bool == true)
        #expect(call("PATCH", "/machine-config", #"{"mem_size_mib": 512}"#).status == 204)
        now = json(call("GET", "/machine-config"))
        #expect(now["vcpu_count"] as? Int == 4)
        #expect(now["mem_size_mib"] as? Int == 512)
        // PUT replaces: the fields it leaves out go back to their defaults.
        #expect(call("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 64}"#).status == 204)
        #expect(json(call("GET", "/machine-config"))["track_dirty_pages"] as? Bool == false)
    }

    @Test(arguments: [
        (#"{"mem_size_mib": 64}"#, "missing field `vcpu_count`"),
        (#"{"vcpu_count": 0, "mem_size_mib": 64}"#, "`vcpu_count` 0: at least one vCPU is needed"),
        (#"{"vcpu_count": 255, "mem_size_mib": 64}"#, "at most 254"),
        (#"{"vcpu_count": 1, "mem_size_mib": 1}"#, "`mem_size_mib` 1: at least"),
        (#"{"vcpu_count": 1, "mem_size_mib": -5}"#, "`mem_size_mib` -5"),
        (#"{"vcpu_count": 3, "mem_size_mib": 64, "smt": true}"#, "must be 1 or even"),
        (#"{"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}"#, "x86-64-v1"),
        (#"{"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}"#, "`huge_pages` \"2M\""),
        (#"{"vcpu_count": "1", "mem_size_mib": 64}"#, "`vcpu_count`: expected an integer, found a string"),
        (#"{"vcpu_count": 1.5, "mem_size_mib": 64}"#, "1.5 is not an integer"),
        (#"{"vcpu_count": 1, "mem_size_mib": 64, "smt": "yes"}"#, "`smt`: expected a boolean"),
        (#"{"vcpu_count": 1, "mem_size_mib": 64, "vcpus": 2}"#, "unknown field `vcpus`"),
        (#"{"vcpu_count": 1, "vcpu_count": 2, "mem_size_mib": 64}"#, "duplicate field `vcpu_count`"),
        (#"{"vcpu_count": 1, "mem_size_mib": 64,}"#, "not valid JSON: line 1, column"),
        (#"[1, 2]"#, "expected an object, found an array"),
        ("\u{FF}\u{FE}", "not valid JSON"),
    ])
    func machineConfigRefusals(body: String, message: String) {
        let before = call("GET", "/machine-config").body
        let response = call("PUT", "/machine-config", body)
        #expect(response.status == 400)
        #expect(response.faultMessage?.contains(message) == true, "\(response.faultMessage ?? "no message")")
        #expect(call("GET", "/machine-config").body == before, "a refused request changed the configuration")
    }

    @Test func emptyPatchAndBodylessRequests() {
        #expect(call("PATCH", "/machine-config", "{}").faultMessage == "Empty PATCH request.")
        #expect(call("PATCH", "/machine-config").faultMessage == "Empty PATCH request.")
        #expect(call("PUT", "/machine-config").faultMessage == "Empty PUT request.")
        #expect(call("GET", "/machine-config", "{}").faultMessage == "GET request cannot have a body.")
    }

    @Test func unknownPathsAndMethods() {
        for (method, uri) in [("GET", "/nope"), ("DELETE", "/"), ("POST", "/actions"), ("GET", "/actions"),
                              ("PUT", "/vm"), ("GET", "/vcpus/0/mp-state/x")] {
            let response = call(method, uri, method == "GET" || method == "DELETE" ? nil : "{}")
            #expect(response.status == 400, "\(method) \(uri)")
            #expect(response.faultMessage?.hasPrefix("Invalid request method and/or path: \(method)") == true,
                    "\(method) \(uri): \(response.faultMessage ?? "")")
        }
        #expect(call("PUT", "/balloon", "{}").faultMessage?.contains("no a balloon device yet") == true)
    }

    // MARK: Boot source, start, pre-boot-only resources

    @Test func bootSourceAndFullConfig() throws {
        #expect(call("PUT", "/boot-source", #"{"kernel_image_path": ""}"#).status == 400)
        #expect(call("PUT", "/boot-source", #"{"boot_args": "x"}"#).faultMessage?.contains("kernel_image_path") == true)
        configure()
        let full = json(call("GET", "/vm/config"))
        let boot = try #require(full["boot-source"] as? [String: Any])
        #expect(boot["kernel_image_path"] as? String == kernel)
        #expect(boot["boot_args"] as? String == "console=ttyS0")
        #expect((full["machine-config"] as? [String: Any])?["vcpu_count"] as? Int == 2)
        // The same shape reads back as a config file.
        let file = try VMConfigFile.decode(call("GET", "/vm/config").body)
        #expect(file.bootSource?.kernel_image_path == kernel)
        #expect(file.machineConfig?.vcpu_count == 2)
    }

    @Test func startNeedsABootSourceAndHappensOnce() {
        let refused = call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(refused.status == 400)
        #expect(refused.faultMessage?.contains("PUT /boot-source") == true)
        #expect(json(call("GET", "/"))["state"] as? String == "Not started")
        start()
        #expect(waitFor { json(call("GET", "/"))["state"] as? String == "Running" })
        let again = call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(again.status == 400)
        #expect(again.faultMessage?.contains("already been started") == true)
        #expect(host.vm?.status().count == 2)
    }

    @Test func aKernelThatCannotBeReadLeavesTheVMUnstarted() {
        #expect(call("PUT", "/boot-source", #"{"kernel_image_path": "/nonexistent/vmlinux"}"#).status == 204)
        let response = call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(response.status == 400)
        #expect(response.faultMessage?.contains("/nonexistent/vmlinux") == true)
        #expect(json(call("GET", "/"))["state"] as? String == "Not started")
        // Fixed, it starts.
        start()
        #expect(host.vm != nil)
    }

    @Test func preBootResourcesAreRefusedAfterStart() {
        start()
        for (method, uri, body) in [("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 64}"#),
                                    ("PATCH", "/machine-config", #"{"vcpu_count": 1}"#),
                                    ("PUT", "/boot-source", #"{"kernel_image_path": "/x"}"#),
                                    ("PUT", "/logger", #"{"level": "Info"}"#),
                                    ("PUT", "/metrics", #"{"metrics_path": "/tmp/x"}"#)] {
            let response = call(method, uri, body)
            #expect(response.status == 400, "\(method) \(uri)")
            #expect(response.faultMessage?.contains("not supported after starting the microVM") == true,
                    "\(method) \(uri): \(response.faultMessage ?? "")")
        }
        #expect(json(call("GET", "/machine-config"))["vcpu_count"] as? Int == 2)
    }

    // MARK: Actions

    @Test func actions() throws {
        #expect(call("PUT", "/actions", #"{"action_type": "Reboot"}"#).faultMessage?.contains("InstanceStart, SendCtrlAltDel or FlushMetrics") == true)
        #expect(call("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#).faultMessage?.contains("before starting") == true)
        #expect(call("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).faultMessage?.contains("PUT /metrics first") == true)
        let metrics = try TempFile.make(bytes: [])
        #expect(call("PUT", "/metrics", #"{"metrics_path": "\#(metrics)"}"#).status == 204)
        #expect(call("PUT", "/metrics", #"{"metrics_path": "\#(metrics)"}"#).faultMessage?.contains("set once") == true)
        start()
        #expect(call("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#).status == 204)
        #expect(host.vm?.ctrlAltDelCount == 1)
        #expect(call("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        #expect(call("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        let lines = try TempFile.read(metrics).split(separator: "\n")
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        let api = try #require(first["api_server"] as? [String: Any])
        #expect((api["requests"] as? [String: Int])?["PUT"] ?? 0 >= 5)
        #expect((api["errors"] as? Int ?? 0) >= 3)
        let vcpus = try #require(first["vcpus"] as? [[String: Any]])
        #expect(vcpus.count == 2)
        #expect((vcpus[0]["exits"] as? [String: Int])?["io"] == 3)
        #expect(first["utc_timestamp_ms"] as? Int ?? 0 > 1_700_000_000_000)
    }

    // MARK: Pause and resume

    @Test func vmStateTransitions() {
        #expect(call("PATCH", "/vm", #"{"state": "Paused"}"#).faultMessage?.contains("has not started") == true)
        start()
        #expect(waitFor { host.vm?.state == .running })
        #expect(call("PATCH", "/vm", #"{"state": "Resumed"}"#).faultMessage == "the VM is already running")
        #expect(call("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(json(call("GET", "/"))["state"] as? String == "Paused")
        #expect(call("PATCH", "/vm", #"{"state": "Paused"}"#).faultMessage == "the VM is already paused")
        #expect(call("PATCH", "/vm", #"{"state": "Stopped"}"#).faultMessage?.contains("use \"Paused\" or \"Resumed\"") == true)
        #expect(call("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(json(call("GET", "/"))["state"] as? String == "Running")
        host.vm?.stop(.signal(15))
        #expect(waitFor { host.exits.withLock { $0 } == [.signal(15)] })
        #expect(call("PATCH", "/vm", #"{"state": "Paused"}"#).faultMessage?.contains("stopped") == true)
        #expect(json(call("GET", "/"))["state"] as? String == "Stopped")
    }

    // MARK: vCPUs (Swiftlet's extension)

    @Test func vcpusBeforeStart() throws {
        configure(cpus: 3)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(call("GET", "/vcpus").body)) as? [[String: Any]])
        #expect(list.count == 3)
        #expect(list.allSatisfy { $0["run_state"] as? String == "Not started" })
        // Every documented member is present, null where nothing is known yet.
        let text = String(decoding: call("GET", "/vcpus/2").body, as: UTF8.self)
        for member in ["\"id\":2", "\"apic_id\":2", "\"mp_state\":null", "\"brought_up_by\":null", "\"last_exit\":null", "\"exits\":{}"] {
            #expect(text.contains(member), "\(member) in \(text)")
        }
        #expect(call("PUT", "/vcpus/1/mp-state", #"{"mp_state": "RUNNABLE"}"#).faultMessage?.contains("before starting") == true)
        #expect(call("PATCH", "/vcpus/1", #"{"state": "Paused"}"#).faultMessage?.contains("before starting") == true)
    }

    @Test func vcpusAfterStart() throws {
        start(cpus: 8)
        #expect(waitFor { host.vm?.state == .running })
        let one = json(call("GET", "/vcpus/0"))
        #expect(one["mp_state"] as? String == "RUNNABLE")
        #expect(one["brought_up_by"] as? String == "boot")
        #expect(one["last_exit"] as? String == "io")
        #expect((one["exits"] as? [String: Int])?["io"] == 3)
        #expect(json(call("GET", "/vcpus/7"))["mp_state"] as? String == "UNINITIALIZED")
        #expect(call("GET", "/vcpus/8").status == 404)
        #expect(call("GET", "/vcpus/x").status == 400)
        #expect(call("GET", "/vcpus/-1").status == 400)
        #expect(call("PUT", "/vcpus/8/mp-state", #"{"mp_state": "RUNNABLE"}"#).status == 404)
    }

    @Test func mpStateOverTheAPI() {
        start(cpus: 8)
        // Today's rules: a SIPI only after INIT; only a RUNNABLE vCPU halts.
        let early = call("PUT", "/vcpus/5/mp-state", #"{"mp_state": "SIPI_RECEIVED"}"#)
        #expect(early.status == 400)
        #expect(early.faultMessage == "vCPU 5 cannot go from UNINITIALIZED to SIPI_RECEIVED: a SIPI is only accepted after INIT (INIT_RECEIVED)")
        #expect(call("PUT", "/vcpus/5/mp-state", #"{"mp_state": "INIT_RECEIVED"}"#).status == 204)
        #expect(json(call("GET", "/vcpus/5"))["mp_state"] as? String == "INIT_RECEIVED")
        #expect(call("PUT", "/vcpus/5/mp-state", #"{"mp_state": "SIPI_RECEIVED"}"#).status == 204)
        #expect(call("PUT", "/vcpus/5/mp-state", #"{"mp_state": "HALTED"}"#).faultMessage?.contains("only a RUNNABLE vCPU can halt") == true)
        #expect(call("PUT", "/vcpus/5/mp-state", #"{"mp_state": "runnable"}"#).faultMessage?.contains("\"RUNNABLE\"") == true)
        #expect(call("PUT", "/vcpus/5/mp-state", #"{"state": "RUNNABLE"}"#).faultMessage?.contains("unknown field `state`") == true)
    }

    @Test func onePausedVCPUWhileTheOthersRun() throws {
        start(cpus: 2)
        #expect(waitFor { host.vm?.state == .running })
        #expect(call("PATCH", "/vcpus/1", #"{"state": "Paused"}"#).status == 204)
        #expect(json(call("GET", "/vcpus/1"))["run_state"] as? String == "Paused")
        #expect(json(call("GET", "/vcpus/0"))["run_state"] as? String == "Running")
        #expect(json(call("GET", "/"))["state"] as? String == "Running")
        #expect(call("PATCH", "/vcpus/1", #"{"state": "Paused"}"#).faultMessage == "vCPU 1 is already paused")
        #expect(call("PATCH", "/vcpus/0", #"{"state": "Resumed"}"#).faultMessage == "vCPU 0 is not paused")
        #expect(call("PATCH", "/vcpus/1", #"{"state": "Resumed"}"#).status == 204)
        #expect(call("PATCH", "/vcpus/4", #"{"state": "Paused"}"#).status == 404)
    }

    // MARK: Drives and entropy

    @Test func drivesAndEntropy() throws {
        let disk = try TempFile.make(bytes: [UInt8](repeating: 0, count: 1024))
        #expect(call("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "\#(disk)", "is_root_device": true, "is_read_only": false}"#).status == 204)
        #expect(call("PUT", "/drives/data", #"{"drive_id": "data", "path_on_host": "\#(disk)", "is_root_device": false, "is_read_only": true, "cache_type": "Unsafe", "io_engine": "Sync"}"#).status == 204)
        #expect(call("PUT", "/drives/other", #"{"drive_id": "other", "path_on_host": "\#(disk)", "is_root_device": true}"#).faultMessage?.contains("root block device already exists") == true)
        #expect(call("PUT", "/drives/x", #"{"drive_id": "y", "path_on_host": "\#(disk)", "is_root_device": false}"#).faultMessage == "The id from the path does not match the id from the body!")
        #expect(call("PUT", "/drives/a-b", #"{"drive_id": "a-b", "path_on_host": "\#(disk)", "is_root_device": false}"#).faultMessage?.contains("alphanumeric") == true)
        #expect(call("PUT", "/drives/z", #"{"drive_id": "z", "path_on_host": "\#(disk)", "is_root_device": false, "io_engine": "Async"}"#).faultMessage?.contains("Sync") == true)
        #expect(call("PUT", "/drives/z", #"{"drive_id": "z", "path_on_host": "\#(disk)"}"#).faultMessage?.contains("missing field `is_root_device`") == true)
        #expect(call("PATCH", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "/x.img"}"#).faultMessage?.contains("before starting") == true)
        #expect(call("PUT", "/entropy", "{}").status == 204)
        #expect(call("PUT", "/entropy", #"{"rate_limiter": {}}"#).faultMessage?.contains("unknown field `rate_limiter`") == true)
        let config = try VMConfigFile.decode(call("GET", "/vm/config").body)
        #expect(config.drives?.map(\.drive_id) == ["rootfs", "data"])
        #expect(config.entropy != nil)
        // The same file applies again, and after start the drives are pre-boot only.
        configure()
        start()
        #expect(call("PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "\#(disk)", "is_root_device": true}"#).faultMessage?.contains("not supported after starting") == true)
        // A new backing file while the VM runs, as Firecracker's PATCH /drives does.
        #expect(call("PATCH", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "/images/new.img"}"#).status == 204)
        #expect(host.vm?.replacedDrives["rootfs"] == "/images/new.img")
        #expect(try VMConfigFile.decode(call("GET", "/vm/config").body).drives?.first?.path_on_host == "/images/new.img")
        #expect(call("PATCH", "/drives/rootfs", #"{"drive_id": "data", "path_on_host": "/y.img"}"#).faultMessage == "The id from the path does not match the id from the body!")
        #expect(call("PATCH", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": ""}"#).status == 400)
        #expect(call("PUT", "/entropy", "{}").faultMessage?.contains("not supported after starting") == true)
    }

    // MARK: CPU configuration

    /// Firecracker's `PUT /cpu-config` with its custom template JSON: checked at once (a bad
    /// template is a 400 naming the field), applied to the VM built, pre-boot only.
    @Test func customCPUTemplate() throws {
        let template = #"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [{"register": "ecx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0"}]}]}"#
        let bad = call("PUT", "/cpu-config", #"{"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [{"register": "exx", "bitmap": "0b1"}]}]}"#)
        #expect(bad.status == 400 && bad.faultMessage?.contains("PUT /cpu-config") == true, "\(bad.body)")
        #expect(call("PUT", "/cpu-config", #"{"cpuid_modifiers": [], "reg_modifiers": []}"#).faultMessage?.contains("reg_modifiers") == true)
        let good = call("PUT", "/cpu-config", template)
        #expect(good.status == 204, "\(good.body)")
        configure()
        start()
        #expect(host.builtTemplate.withLock { $0 } == "PUT /cpu-config")
        #expect(call("PUT", "/cpu-config", template).faultMessage?.contains("not supported after starting") == true)
    }

    // MARK: Network interfaces, vsock, console

    @Test func networkVsockAndConsole() throws {
        #expect(call("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#).status == 204)
        #expect(call("PUT", "/network-interfaces/eth1", #"{"iface_id": "eth1", "host_dev_name": "tap1"}"#).status == 204)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2", "host_dev_name": "tap0"}"#).faultMessage?.contains("already in use") == true)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2", "host_dev_name": "tap2", "guest_mac": "06:00:AC:10:00:02"}"#).faultMessage?.contains("already in use") == true)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth3", "host_dev_name": "tap2"}"#).faultMessage == "The id from the path does not match the id from the body!")
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2", "host_dev_name": "tap2", "guest_mac": "06:00:ac:10:00"}"#).faultMessage?.contains("not a MAC address") == true)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2", "host_dev_name": "tap2", "guest_mac": "07:00:ac:10:00:02"}"#).faultMessage?.contains("multicast") == true)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2", "host_dev_name": "tap2", "rx_rate_limiter": {}}"#).faultMessage?.contains("unknown field `rx_rate_limiter`") == true)
        #expect(call("PUT", "/network-interfaces/eth2", #"{"iface_id": "eth2"}"#).faultMessage?.contains("missing field `host_dev_name`") == true)
        #expect(call("PUT", "/vsock", #"{"guest_cid": 2, "uds_path": "/tmp/v.sock"}"#).faultMessage?.contains("reserved") == true)
        #expect(call("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "/tmp/v.sock"}"#).status == 204)
        #expect(call("PUT", "/vsock", #"{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "/tmp/v.sock"}"#).status == 204)
        #expect(call("PUT", "/console", #"{"kind": "hvc"}"#).faultMessage?.contains("\"serial\"") == true)
        #expect(call("PUT", "/console", #"{"kind": "virtio"}"#).status == 204)
        let config = try VMConfigFile.decode(call("GET", "/vm/config").body)
        #expect(config.networkInterfaces?.map(\.iface_id) == ["eth0", "eth1"])
        #expect(config.vsock?.guest_cid == 3 && config.console?.kind == "virtio")
        #expect(call("PUT", "/boot-source", #"{"kernel_image_path": "\#(kernel)"}"#).status == 204)
        #expect(call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        let (devices, commandLine) = host.builtDevices.withLock { $0 }
        #expect(devices == [.net(tap: "tap0", mac: [6, 0, 0xAC, 0x10, 0, 2], id: "eth0"), .net(tap: "tap1", mac: nil, id: "eth1"),
                            .vsock(cid: 3, udsPath: "/tmp/v.sock"), .console])
        #expect(commandLine.hasPrefix("console=hvc0 "), "the default boot arguments name hvc0")
        #expect(call("PUT", "/vsock", #"{"guest_cid": 4, "uds_path": "/tmp/v.sock"}"#).faultMessage?.contains("not supported after starting") == true)
        #expect(call("PATCH", "/network-interfaces/eth0", #"{"iface_id": "eth0"}"#).status == 400)
    }

    @Test func atMostNineVirtioDevices() {
        for i in 0..<9 {
            #expect(call("PUT", "/network-interfaces/n\(i)", #"{"iface_id": "n\#(i)", "host_dev_name": "t\#(i)"}"#).status == 204)
        }
        #expect(call("PUT", "/entropy", "{}").faultMessage?.contains("at most 9 virtio devices") == true)
        #expect(call("PUT", "/network-interfaces/n0", #"{"iface_id": "n0", "host_dev_name": "t0"}"#).status == 204, "a replacement still fits")
    }

    // MARK: Snapshots

    @Test func snapshotCreateNeedsAPausedVM() throws {
        let create = #"{"snapshot_type": "Full", "snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem"}"#
        #expect(call("PUT", "/snapshot/create", create).faultMessage?.contains("must be paused") == true)
        start()
        #expect(call("PUT", "/snapshot/create", create).faultMessage?.contains("must be paused") == true)
        #expect(call("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(call("PUT", "/snapshot/create", create).status == 204)
        #expect(call("PUT", "/snapshot/create", #"{"snapshot_type": "Diff", "snapshot_path": "/s/d.snap", "mem_file_path": "/s/d.mem"}"#).status == 204)
        #expect(call("PUT", "/snapshot/create", #"{"snapshot_type": "Half", "snapshot_path": "/s/d.snap", "mem_file_path": "/s/d.mem"}"#).faultMessage?.contains("\"Full\" or \"Diff\"") == true)
        #expect(call("PUT", "/snapshot/create", #"{"snapshot_path": "/s/d.snap"}"#).faultMessage?.contains("missing field `mem_file_path`") == true)
        #expect(host.vm?.snapshots.map(\.2) == [.full, .diff])
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap", "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"}}"#).faultMessage?.contains("after starting") == true)
    }

    @Test func snapshotLoadIntoAFreshProcess() throws {
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap", "mem_backend": {"backend_type": "Uffd", "backend_path": "/s/uffd.sock"}}"#).faultMessage?.contains("\"File\" only") == true)
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap"}"#).faultMessage?.contains("mem_backend") == true)
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/missing.snap", "mem_file_path": "/s/vm.mem"}"#).faultMessage?.contains("/missing.snap: cannot read the snapshot") == true)
        // Refused loads change nothing: a good one still works, and stays paused without resume_vm.
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap", "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"}}"#).status == 204)
        #expect(host.vm?.state == .paused)
        #expect(call("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem"}"#).faultMessage?.contains("after starting") == true)
    }

    @Test func snapshotLoadWithResume() throws {
        #expect(call("PUT", "/snapshot/load", #"{"snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem", "resume_vm": true}"#).status == 204)
        #expect(host.vm?.state == .running)
    }

    // MARK: Logger

    @Test func logger() throws {
        let log = try TempFile.make(bytes: [])
        #expect(call("PUT", "/logger", #"{"log_path": "\#(log)", "level": "Debug", "show_level": true}"#).status == 204)
        #expect(call("PUT", "/logger", #"{"level": "Loud"}"#).faultMessage?.contains("Error, Warning, Info, Debug, Trace or Off") == true)
        #expect(call("PUT", "/logger", #"{"log_path": "/nonexistent/dir/log"}"#).faultMessage?.contains("/nonexistent/dir/log") == true)
        let sink = router.controller.logSink
        Logger(label: "swiftlet.test", factory: { sink.handler(label: $0) }).info("hello from the test")
        #expect(try TempFile.read(log).contains("[info] swiftlet.test: hello from the test"))
        #expect(json(call("GET", "/vm/config"))["logger"] != nil)
    }
}

/// Polls `condition` for up to two seconds (state changes that happen on the VM's thread).
func waitFor(_ condition: () -> Bool) -> Bool {
    for _ in 0..<2000 {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

enum TempFile {
    static func make(bytes: [UInt8]) throws -> String {
        var template = Array("/tmp/swiftlet-api-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw Failure(message: "mkstemp failed") }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw Failure(message: "cannot read \(path)") }
        return String(decoding: data, as: UTF8.self)
    }

    struct Failure: Error { let message: String }
}

/// The request and response bodies of Firecracker's API (its OpenAPI document, v1.x), as far as
/// Swiftlet has the resources, and Swiftlet's own `/vcpus` extension. Member names are
/// Firecracker's (snake_case; the config file's sections are kebab-case).

/// `GET /`.
public struct InstanceInfo: Codable, Equatable, Sendable {
    public var id: String
    public var state: String
    public var vmm_version: String
    public var app_name: String
}

/// `GET /version`: `firecracker_version` is the version of Firecracker's API that Swiftlet
/// follows (tools compare it); `swiftlet_version` is Swiftlet's own.
public struct VersionInfo: Codable, Equatable, Sendable {
    public var firecracker_version: String
    public var swiftlet_version: String
}

/// `PUT`/`PATCH`/`GET /machine-config` and the config file's `machine-config`.
public struct MachineConfigBody: Codable, Equatable, Sendable, StrictBody {
    public var vcpu_count: Int?
    public var mem_size_mib: Int?
    public var smt: Bool?
    public var track_dirty_pages: Bool?
    /// Firecracker's static template name ("None"), or one of Swiftlet's built-in templates.
    public var cpu_template: String?
    /// Firecracker's hugetlbfs backing: only "None" (no huge pages) is offered.
    public var huge_pages: String?

    public init(vcpu_count: Int? = nil, mem_size_mib: Int? = nil, smt: Bool? = nil, track_dirty_pages: Bool? = nil,
                cpu_template: String? = nil, huge_pages: String? = nil) {
        self.vcpu_count = vcpu_count; self.mem_size_mib = mem_size_mib; self.smt = smt
        self.track_dirty_pages = track_dirty_pages; self.cpu_template = cpu_template; self.huge_pages = huge_pages
    }

    static let fields: [String: FieldShape] = [
        "vcpu_count": .integer, "mem_size_mib": .integer, "smt": .boolean, "track_dirty_pages": .boolean,
        "cpu_template": .string, "huge_pages": .string,
    ]

    var isEmpty: Bool {
        vcpu_count == nil && mem_size_mib == nil && smt == nil && track_dirty_pages == nil && cpu_template == nil && huge_pages == nil
    }
}

/// `PUT /boot-source` and the config file's `boot-source`.
public struct BootSourceBody: Codable, Equatable, Sendable, StrictBody {
    public var kernel_image_path: String
    public var boot_args: String?
    public var initrd_path: String?

    public init(kernel_image_path: String, boot_args: String? = nil, initrd_path: String? = nil) {
        self.kernel_image_path = kernel_image_path; self.boot_args = boot_args; self.initrd_path = initrd_path
    }

    static let fields: [String: FieldShape] = ["kernel_image_path": .string, "boot_args": .string, "initrd_path": .string]
}

/// `PUT /actions`.
struct ActionBody: Codable, StrictBody {
    var action_type: String
    static let fields: [String: FieldShape] = ["action_type": .string]
}

/// `PATCH /vm` and `PATCH /vcpus/{id}`.
struct StateBody: Codable, StrictBody {
    var state: String
    static let fields: [String: FieldShape] = ["state": .string]
}

/// `PUT /vcpus/{id}/mp-state`.
struct MPStateBody: Codable, StrictBody {
    var mp_state: String
    static let fields: [String: FieldShape] = ["mp_state": .string]
}

/// `PUT /logger` and the config file's `logger`.
public struct LoggerBody: Codable, Equatable, Sendable, StrictBody {
    public var log_path: String?
    public var level: String?
    public var show_level: Bool?
    public var show_log_origin: Bool?
    public var module: String?

    public init(log_path: String? = nil, level: String? = nil, show_level: Bool? = nil, show_log_origin: Bool? = nil,
                module: String? = nil) {
        self.log_path = log_path; self.level = level; self.show_level = show_level
        self.show_log_origin = show_log_origin; self.module = module
    }

    static let fields: [String: FieldShape] = [
        "log_path": .string, "level": .string, "show_level": .boolean, "show_log_origin": .boolean, "module": .string,
    ]
}

/// `PUT /metrics` and the config file's `metrics`.
public struct MetricsBody: Codable, Equatable, Sendable, StrictBody {
    public var metrics_path: String
    public init(metrics_path: String) { self.metrics_path = metrics_path }
    static let fields: [String: FieldShape] = ["metrics_path": .string]
}

/// `PUT /drives/{drive_id}` and the config file's `drives` (Firecracker's `Drive`).
public struct DriveBody: Codable, Equatable, Sendable, StrictBody {
    public var drive_id: String
    public var path_on_host: String
    public var is_root_device: Bool
    public var is_read_only: Bool?
    /// Firecracker's host cache policy: "Unsafe" (no flush to the host disk; Swiftlet still
    /// does what FLUSH asks) or "Writeback"; both accepted.
    public var cache_type: String?
    /// Firecracker's I/O engine: Swiftlet has the synchronous one ("Sync").
    public var io_engine: String?

    public init(drive_id: String, path_on_host: String, is_root_device: Bool, is_read_only: Bool? = nil) {
        self.drive_id = drive_id; self.path_on_host = path_on_host
        self.is_root_device = is_root_device; self.is_read_only = is_read_only
    }

    static let fields: [String: FieldShape] = [
        "drive_id": .string, "path_on_host": .string, "is_root_device": .boolean, "is_read_only": .boolean,
        "cache_type": .string, "io_engine": .string,
    ]
}

/// `PATCH /drives/{drive_id}` (Firecracker's `PartialDrive`, without a rate limiter).
public struct PartialDriveBody: Codable, Equatable, Sendable, StrictBody {
    public var drive_id: String
    public var path_on_host: String?
    static let fields: [String: FieldShape] = ["drive_id": .string, "path_on_host": .string]
}

/// `PUT /entropy` and the config file's `entropy` (Firecracker's `EntropyDevice`, without a
/// rate limiter).
public struct EntropyBody: Codable, Equatable, Sendable, StrictBody {
    public init() {}
    static let fields: [String: FieldShape] = [:]
}

/// `PUT /network-interfaces/{iface_id}` and the config file's `network-interfaces` (Firecracker's
/// `NetworkInterface`, without rate limiters).
public struct NetworkInterfaceBody: Codable, Equatable, Sendable, StrictBody {
    public var iface_id: String
    public var host_dev_name: String
    public var guest_mac: String?

    public init(iface_id: String, host_dev_name: String, guest_mac: String? = nil) {
        self.iface_id = iface_id; self.host_dev_name = host_dev_name; self.guest_mac = guest_mac
    }

    static let fields: [String: FieldShape] = ["iface_id": .string, "host_dev_name": .string, "guest_mac": .string]
}

/// `PUT /vsock` and the config file's `vsock` (Firecracker's `Vsock`; `vsock_id` is accepted and
/// ignored, as Firecracker has deprecated it).
public struct VsockBody: Codable, Equatable, Sendable, StrictBody {
    public var guest_cid: Int
    public var uds_path: String
    public var vsock_id: String?

    public init(guest_cid: Int, uds_path: String) { self.guest_cid = guest_cid; self.uds_path = uds_path }

    static let fields: [String: FieldShape] = ["guest_cid": .integer, "uds_path": .string, "vsock_id": .string]
}

/// `PUT /console` and the config file's `console` (Swiftlet's extension): `kind` "serial" (the
/// 16550, the default) or "virtio" (a virtio console, hvc0, gets standard input).
public struct ConsoleBody: Codable, Equatable, Sendable, StrictBody {
    public var kind: String
    public init(kind: String) { self.kind = kind }
    static let fields: [String: FieldShape] = ["kind": .string]
}

/// `PUT /snapshot/create` (Firecracker's `SnapshotCreateParams`).
public struct SnapshotCreateBody: Codable, Equatable, Sendable, StrictBody {
    public var snapshot_type: String?
    public var snapshot_path: String
    public var mem_file_path: String
    static let fields: [String: FieldShape] = ["snapshot_type": .string, "snapshot_path": .string, "mem_file_path": .string]
}

/// `mem_backend` of `PUT /snapshot/load`.
public struct MemoryBackendBody: Codable, Equatable, Sendable, StrictBody {
    public var backend_type: String
    public var backend_path: String
    static let fields: [String: FieldShape] = ["backend_type": .string, "backend_path": .string]
}

/// `PUT /snapshot/load` (Firecracker's `SnapshotLoadParams`; `mem_file_path` is its deprecated
/// form of `mem_backend`).
public struct SnapshotLoadBody: Codable, Equatable, Sendable, StrictBody {
    public var snapshot_path: String
    public var mem_backend: MemoryBackendBody?
    public var mem_file_path: String?
    public var enable_diff_snapshots: Bool?
    public var track_dirty_pages: Bool?
    public var resume_vm: Bool?
    static let fields: [String: FieldShape] = [
        "snapshot_path": .string, "mem_backend": .object(MemoryBackendBody.self), "mem_file_path": .string,
        "enable_diff_snapshots": .boolean, "track_dirty_pages": .boolean, "resume_vm": .boolean,
    ]
}

/// The config file (`--config-file`) and `GET /vm/config`: Firecracker's full VM configuration,
/// with the sections Swiftlet has.
public struct VMConfigFile: Codable, Equatable, Sendable, StrictBody {
    public var bootSource: BootSourceBody?
    public var machineConfig: MachineConfigBody?
    public var logger: LoggerBody?
    public var metrics: MetricsBody?
    public var drives: [DriveBody]?
    public var entropy: EntropyBody?
    public var networkInterfaces: [NetworkInterfaceBody]?
    public var vsock: VsockBody?
    public var console: ConsoleBody?

    public init(bootSource: BootSourceBody? = nil, machineConfig: MachineConfigBody? = nil, logger: LoggerBody? = nil,
                metrics: MetricsBody? = nil, drives: [DriveBody]? = nil, entropy: EntropyBody? = nil,
                networkInterfaces: [NetworkInterfaceBody]? = nil, vsock: VsockBody? = nil, console: ConsoleBody? = nil) {
        self.bootSource = bootSource; self.machineConfig = machineConfig; self.logger = logger; self.metrics = metrics
        self.drives = drives; self.entropy = entropy; self.networkInterfaces = networkInterfaces; self.vsock = vsock
        self.console = console
    }

    enum CodingKeys: String, CodingKey {
        case bootSource = "boot-source", machineConfig = "machine-config", logger, metrics, drives, entropy
        case networkInterfaces = "network-interfaces", vsock, console
    }

    /// Decodes a config file's bytes with the API's rules (unknown fields refused).
    public static func decode(_ bytes: [UInt8]) throws(APIError) -> VMConfigFile {
        do { return try StrictJSON.decode(VMConfigFile.self, from: bytes) } catch { throw APIError(error.message) }
    }

    static let fields: [String: FieldShape] = [
        "boot-source": .object(BootSourceBody.self), "machine-config": .object(MachineConfigBody.self),
        "logger": .object(LoggerBody.self), "metrics": .object(MetricsBody.self),
        "drives": .arrayOf(DriveBody.self), "entropy": .object(EntropyBody.self),
        "network-interfaces": .arrayOf(NetworkInterfaceBody.self), "vsock": .object(VsockBody.self),
        "console": .object(ConsoleBody.self),
    ]
}

/// One vCPU in `GET /vcpus` and `GET /vcpus/{id}` (Swiftlet's extension).
public struct VCPUInfo: Codable, Equatable, Sendable {
    public var id: Int
    public var apic_id: Int
    /// `KVM_GET_MP_STATE` as KVM spells it (RUNNABLE, UNINITIALIZED, INIT_RECEIVED, HALTED,
    /// SIPI_RECEIVED), null before the VM is built.
    public var mp_state: String?
    /// Swiftlet's own view: "Not started", "Running", "Paused", "Parked" (VCPUOP_down), "Stopped".
    public var run_state: String
    /// "boot", "INIT-SIPI" or "VCPUOP_up"; null while the vCPU has not run.
    public var brought_up_by: String?
    /// Exits from `KVM_RUN` by kind.
    public var exits: [String: Int]
    public var last_exit: String?

    /// Every member always present: null says "not known yet" instead of leaving it out.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(apic_id, forKey: .apic_id)
        try c.encode(mp_state, forKey: .mp_state)
        try c.encode(run_state, forKey: .run_state)
        try c.encode(brought_up_by, forKey: .brought_up_by)
        try c.encode(exits, forKey: .exits)
        try c.encode(last_exit, forKey: .last_exit)
    }
}

/// The body of every error response.
struct Fault: Codable {
    var fault_message: String
}

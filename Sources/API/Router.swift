import FoundationEssentials

/// One HTTP request as the router sees it: no sockets, so every route and error is testable alone.
public struct APIRequest: Sendable {
    public var method: String
    public var uri: String
    /// nil when the request has no body (no Content-Length or zero, as Firecracker treats it).
    public var body: [UInt8]?

    public init(method: String, uri: String, body: [UInt8]? = nil) {
        self.method = method; self.uri = uri; self.body = body.flatMap { $0.isEmpty ? nil : $0 }
    }
}

public struct APIResponse: Sendable, Equatable {
    public var status: Int
    public var body: [UInt8]

    static let noContent = APIResponse(status: 204, body: [])
    static func json<T: Encodable>(_ value: T) -> APIResponse { APIResponse(status: 200, body: encodeJSON(value)) }
    public static func fault(_ error: APIError) -> APIResponse {
        APIResponse(status: error.status, body: encodeJSON(Fault(fault_message: error.message)))
    }

    /// The fault message of an error response, for tests and logs.
    public var faultMessage: String? {
        guard status >= 400 else { return nil }
        return try? StrictJSON.decodeFault(body)
    }
}

/// Firecracker's routes (its OpenAPI document, v1.x) for the resources Swiftlet has, and
/// Swiftlet's `/vcpus` extension. Status codes are Firecracker's: 200 with a body for reads,
/// 204 for accepted changes, 400 with `{"fault_message": ...}` for every refusal, 404 only for a
/// vCPU id that does not exist (an extension: Firecracker has no such resource).
public struct APIRouter: Sendable {
    public static let firecrackerAPIVersion = "1.10.0"
    /// Firecracker's resources Swiftlet does not have yet, and what to say about them.
    static let absent: [String: String] = [
        "balloon": "a balloon device", "mmds": "a metadata service (MMDS)",
        "serial": "serial output redirection", "hotplug": "memory hot-plug", "pmem": "pmem devices",
    ]

    public let controller: VMController

    public init(controller: VMController) { self.controller = controller }

    public func handle(_ request: APIRequest) -> APIResponse {
        let response: APIResponse
        do throws(APIError) {
            response = try route(request)
        } catch {
            response = .fault(error)
        }
        controller.metrics.countRequest(method: request.method, failed: response.status >= 400)
        return response
    }

    func route(_ request: APIRequest) throws(APIError) -> APIResponse {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let tokens = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let method = request.method
        // Firecracker's rules for bodies come before the path is looked at.
        switch (method, request.body) {
        case ("GET", .some): throw APIError("GET request cannot have a body.")
        case ("PUT", nil): throw APIError("Empty PUT request.")
        case ("PATCH", nil): throw APIError("Empty PATCH request.")
        default: break
        }
        let body = request.body ?? []
        let invalid = APIError("Invalid request method and/or path: \(method) \(path).")

        switch (method, tokens.first ?? "", tokens.count) {
        case ("GET", "", 0):
            return .json(controller.instanceInfo)
        case ("GET", "version", 1):
            return .json(VersionInfo(firecracker_version: Self.firecrackerAPIVersion, swiftlet_version: controller.vmmVersion))
        case ("GET", "machine-config", 1):
            return .json(controller.machineConfig)
        case ("PUT", "machine-config", 1):
            try controller.putMachineConfig(try decode(MachineConfigBody.self, body))
        case ("PATCH", "machine-config", 1):
            try controller.patchMachineConfig(try decode(MachineConfigBody.self, body))
        case ("PUT", "boot-source", 1):
            try controller.putBootSource(try decode(BootSourceBody.self, body))
        case ("PUT", "actions", 1):
            let action = try decode(ActionBody.self, body)
            switch action.action_type {
            case "InstanceStart": try controller.start()
            case "SendCtrlAltDel": try controller.sendCtrlAltDel()
            case "FlushMetrics": try controller.flushMetrics()
            default:
                throw APIError("`action_type` \"\(action.action_type)\": use InstanceStart, SendCtrlAltDel or FlushMetrics")
            }
        case ("PATCH", "vm", 1):
            try controller.setVMState(try decode(StateBody.self, body).state)
        case ("GET", "vm", 2) where tokens[1] == "config":
            return .json(controller.fullConfig)
        case ("PUT", "logger", 1):
            try controller.putLogger(try decode(LoggerBody.self, body))
        case ("PUT", "metrics", 1):
            try controller.putMetrics(try decode(MetricsBody.self, body))
        case ("GET", "vcpus", 1):
            return .json(controller.vcpus())
        case ("GET", "vcpus", 2):
            let id = try vcpuID(tokens[1])
            guard let vcpu = controller.vcpus().first(where: { $0.id == id }) else {
                throw APIError("no vCPU \(id)", status: 404)
            }
            return .json(vcpu)
        case ("PATCH", "vcpus", 2):
            let id = try vcpuID(tokens[1])
            try controller.setVCPUState(try decode(StateBody.self, body).state, vcpu: id)
        case ("PUT", "drives", 2):
            try controller.putDrive(try decode(DriveBody.self, body), pathID: tokens[1])
        case ("PUT", "drives", 1):
            throw APIError("The ID cannot be empty.")
        case ("PATCH", "drives", 2):
            try controller.patchDrive(try decode(PartialDriveBody.self, body), pathID: tokens[1])
        case ("PUT", "entropy", 1):
            try controller.putEntropy(try decode(EntropyBody.self, body))
        case ("PUT", "network-interfaces", 2):
            try controller.putNetworkInterface(try decode(NetworkInterfaceBody.self, body), pathID: tokens[1])
        case ("PUT", "network-interfaces", 1):
            throw APIError("The ID cannot be empty.")
        case ("PATCH", "network-interfaces", 2):
            throw APIError("PATCH /network-interfaces changes rate limiters, and Swiftlet has none; the interface is unchanged")
        case ("PUT", "vsock", 1):
            try controller.putVsock(try decode(VsockBody.self, body))
        case ("PUT", "snapshot", 2) where tokens[1] == "create":
            try controller.createSnapshot(try decode(SnapshotCreateBody.self, body))
        case ("PUT", "snapshot", 2) where tokens[1] == "load":
            try controller.loadSnapshot(try decode(SnapshotLoadBody.self, body))
        case ("PUT", "cpu-config", 1):
            try controller.putCPUConfig(body)
        case ("PUT", "console", 1):
            try controller.putConsole(try decode(ConsoleBody.self, body))
        case ("PUT", "vcpus", 3) where tokens[2] == "mp-state":
            let id = try vcpuID(tokens[1])
            try controller.setMPState(try decode(MPStateBody.self, body).mp_state, vcpu: id)
        case (_, let resource, _) where Self.absent[resource] != nil && ["GET", "PUT", "PATCH"].contains(method):
            throw APIError("\(invalid.message) Swiftlet has no \(Self.absent[resource]!) yet.")
        default:
            throw invalid
        }
        return .noContent
    }

    /// A vCPU index in a path: 404 when this VM has no such vCPU.
    func vcpuID(_ token: String) throws(APIError) -> Int {
        let count = controller.vcpuCount
        guard let id = Int(token), id >= 0 else {
            throw APIError("vCPU id \"\(token)\": use a number from 0 to \(count - 1)")
        }
        guard id < count else { throw APIError("no vCPU \(id): this VM has vCPUs 0 to \(count - 1)", status: 404) }
        return id
    }

    func decode<T: StrictBody>(_ type: T.Type, _ body: [UInt8]) throws(APIError) -> T {
        do { return try StrictJSON.decode(type, from: body) } catch {
            throw APIError("An error occurred when deserializing the json body of a request: \(error.message).")
        }
    }
}

extension StrictJSON {
    static func decodeFault(_ body: [UInt8]) throws -> String {
        try JSONDecoder().decode(Fault.self, from: Data(body)).fault_message
    }
}

import API
import JSON
import Loader
import VMM

/// The API's request decoding and routing, fed a sequence of requests: each is `METHOD URI`, a
/// newline, then the body; requests are separated by a NUL byte. The controller is fresh for every
/// input, its VM simulated (no KVM) and its files fake, so any order of requests can be tried,
/// InstanceStart, pause and MP-state changes included.
///
/// Besides not crashing, every answer must be what the API promises: 200 with a JSON body, 204
/// with none, or 400/404 with `{"fault_message": ...}` and a message that is not empty.
public enum APIHarness {
    /// No file is read or written: a kernel path that is not absolute cannot be read, any other
    /// reads as four bytes; log and metrics files are /dev/null.
    static let files = HostFiles(read: { path throws(LoaderError) in
        guard path.hasPrefix("/") else { throw .unreadable(path: path, errno: 2) }
        return KernelFile(path: path, bytes: [0x7F, 0x45, 0x4C, 0x46])
    }, openForAppend: HostFiles.none.openForAppend)

    /// Never run: the simulated VM needs no loop, only the controller's signature does.
    static let loop = try? MainLoop()

    public static func run(_ input: [UInt8]) {
        guard let loop else { return }
        let controller = VMController(id: "fuzz", vmmVersion: "0", loop: loop, build: { configuration throws(MachineError) in
            SimulatedVM(cpus: configuration.cpus)
        }, serialOutput: { _ in }, files: files, restore: { _, _, _ throws(MachineError) in SimulatedVM(cpus: 1) })
        let router = APIRouter(controller: controller)
        for request in input.split(separator: 0, omittingEmptySubsequences: false).prefix(32) {
            let line = request.prefix { $0 != 0x0A }
            let parts = line.split(separator: 0x20, maxSplits: 1)
            let method = String(decoding: parts.first ?? [], as: UTF8.self)
            let uri = String(decoding: parts.count > 1 ? parts[1] : [], as: UTF8.self)
            let body = Array(request.dropFirst(line.count + 1))
            check(router.handle(APIRequest(method: method, uri: uri, body: body)))
        }
        _ = controller.stopVM(.signal(15))
    }

    static func check(_ response: APIResponse) {
        switch response.status {
        case 200:
            guard (try? JSONValue.parse(response.body)) != nil else { fatalError("200 without a JSON body") }
        case 204:
            guard response.body.isEmpty else { fatalError("204 with a body") }
        case 400, 404:
            guard let message = response.faultMessage, !message.isEmpty else { fatalError("\(response.status) without a fault message") }
        default:
            fatalError("unexpected status \(response.status)")
        }
    }
}

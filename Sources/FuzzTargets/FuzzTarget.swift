#if SWIFTLET_FUZZING
import FuzzEngine
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FoundationEssentials
import Loader

/// The fuzz targets: each is one executable (`FuzzELF`, ...) whose `main` is `FuzzDriver.main`,
/// and one corpus folder, `Fuzz/corpus/<name>`.
///
/// A target's `run` must return normally for every input: a Swift trap (overflow, index out of
/// range, force unwrap, `fatalError` from a broken invariant) or an ASan report is the bug.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `KernelImage.parse` of a whole file, then protocol selection and `load` for every protocol.
    case elf
    /// The Xen note walk and desc decoding, on raw note bytes wrapped into a PT_NOTE and a SHT_NOTE.
    case xenNotes = "xen-notes"
    /// `BzImage.parse` (the setup header), then protocol selection and `load`.
    case bzImage = "bzimage"
    /// `HypercallDispatcher.handle` against a fake environment whose memory is the input, and
    /// `VCPUContext.parse`.
    case hypercalls
    /// The API: request decoding and routing against a simulated VM (`APIHarness`).
    case api
    /// Split-virtqueue processing over guest memory the input fills (`VirtqueueHarness`).
    case virtqueue
    /// The snapshot file decoder (`SnapshotFile.decode`), on whole files with a right checksum
    /// (the harness recomputes it, so the fuzzer reaches the state's decoding).
    case snapshot

    /// The executable (SwiftPM product) that fuzzes this target.
    public var product: String {
        switch self {
        case .elf: "FuzzELF"
        case .xenNotes: "FuzzXenNotes"
        case .bzImage: "FuzzBzImage"
        case .hypercalls: "FuzzHypercalls"
        case .api: "FuzzAPI"
        case .virtqueue: "FuzzVirtqueue"
        case .snapshot: "FuzzSnapshot"
        }
    }

    /// libFuzzer's `-max_len`: room for the largest committed seed of the target.
    public var maxLength: Int {
        switch self {
        case .elf: 65536
        case .xenNotes: 4096
        case .bzImage: 8192
        case .hypercalls: 8192
        case .api: 4096
        case .virtqueue: 16384
        case .snapshot: 16384
        }
    }

    /// Runs one input through the target, loading into this process's shared guest memory.
    public func run(_ input: [UInt8]) { run(input, in: LoaderHarness.shared) }

    /// Runs one input through the target, loading into `harness`'s guest memory (tests that run
    /// in parallel each bring their own).
    public func run(_ input: [UInt8], in harness: LoaderHarness) {
        switch self {
        case .elf: harness.elf(input)
        case .xenNotes: harness.xenNotes(input)
        case .bzImage: harness.bzImage(input)
        case .hypercalls: _ = HypercallHarness.run(input)
        case .api: APIHarness.run(input)
        case .virtqueue: VirtqueueHarness.run(input)
        case .snapshot: SnapshotHarness.run(input)
        }
    }
}

/// Stops the process when the code under test broke a promise the fuzzer checks: libFuzzer
/// records the input as a crash, like any trap.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant broken: \(message())") }
}

/// `main` of every fuzz executable.
///
/// Built with `-sanitize=fuzzer -DSWIFTLET_FUZZING`, it hands the command line to libFuzzer's
/// driver (`LLVMFuzzerRunDriver`), so every libFuzzer flag works; built normally, it replays
/// files and folders of inputs.
///
/// Why the executable keeps a Swift `main` rather than libFuzzer's: SwiftPM compiles an
/// executable's entry point as `<Module>_main` and links with `--defsym main=<Module>_main`
/// (so that tests can link the module), which fails when the module has no entry point, and
/// which overrides any other `main` anyway. lld applies the `--defsym` before it scans archives,
/// so it never takes libFuzzer's `main` (FuzzerMain.o) out of libclang_rt.fuzzer; gold and bfd
/// do take it, and then need the `LLVMFuzzerTestOneInput` it calls (each executable exports
/// one: without it, bfd reports the undefined symbol and gold stops with "internal error in
/// format_file_lineno"), but the `--defsym` still decides which `main` runs: this one.
public enum FuzzDriver {
    public static func main(_ target: FuzzTarget) -> Never {
        #if SWIFTLET_FUZZING
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        let status = LLVMFuzzerRunDriver(&argc, &argv, callback(for: target))
        exit(status)
        #else
        exit(replay(target, arguments: Array(CommandLine.arguments.dropFirst())))
        #endif
    }

    #if SWIFTLET_FUZZING
    /// A C function pointer cannot capture the target: one closure per target.
    private static func callback(for target: FuzzTarget) -> @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32 {
        switch target {
        case .elf: { data, size in FuzzTarget.elf.run(FuzzDriver.bytes(data, size)); return 0 }
        case .xenNotes: { data, size in FuzzTarget.xenNotes.run(FuzzDriver.bytes(data, size)); return 0 }
        case .bzImage: { data, size in FuzzTarget.bzImage.run(FuzzDriver.bytes(data, size)); return 0 }
        case .hypercalls: { data, size in FuzzTarget.hypercalls.run(FuzzDriver.bytes(data, size)); return 0 }
        case .api: { data, size in FuzzTarget.api.run(FuzzDriver.bytes(data, size)); return 0 }
        case .virtqueue: { data, size in FuzzTarget.virtqueue.run(FuzzDriver.bytes(data, size)); return 0 }
        case .snapshot: { data, size in FuzzTarget.snapshot.run(FuzzDriver.bytes(data, size)); return 0 }
        }
    }

    /// One input, as `LLVMFuzzerTestOneInput` receives it.
    public static func testOneInput(_ target: FuzzTarget, _ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        target.run(bytes(data, size))
        return 0
    }

    private static func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
        // unsafe: libFuzzer hands over `size` readable bytes at `data` for the duration of the call.
        Array(UnsafeBufferPointer(start: data, count: data == nil ? 0 : size))
    }
    #endif

    /// Runs every file named, and every file in every folder named, through `target`; arguments
    /// starting with '-' (libFuzzer flags) are ignored. A crashing input stops the process with
    /// its trap and backtrace, which is the point. Returns the exit status.
    public static func replay(_ target: FuzzTarget, arguments: [String]) -> Int32 {
        let paths = arguments.filter { !$0.hasPrefix("-") }
        if paths.isEmpty {
            print("usage: \(target.product) FILE_OR_FOLDER...   (replays inputs; build with Fuzz/run.sh to fuzz)")
            return 2
        }
        var count = 0
        for path in paths {
            let files: [String]
            do { files = try inputFiles(at: path) } catch {
                print("\(target.product): \(path): \(error)")
                return 2
            }
            for file in files {
                do {
                    target.run(try KernelFile.read(path: file).bytes)
                } catch .empty {
                    target.run([])
                } catch {
                    print("\(target.product): \(error)")
                    return 2
                }
                count += 1
            }
        }
        print("\(target.product): replayed \(count) input\(count == 1 ? "" : "s"), no crash")
        return 0
    }

    /// The path itself if it is a file, else the regular files directly inside it, sorted.
    public static func inputFiles(at path: String) throws -> [String] {
        var isFolder: Bool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw NoSuchInput(path: path)
        }
        guard isFolder else { return [path] }
        return try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            .map { path + "/" + $0 }
            .filter { var folder: Bool = false; return FileManager.default.fileExists(atPath: $0, isDirectory: &folder) && !folder }
    }
}

struct NoSuchInput: Error, CustomStringConvertible {
    let path: String
    var description: String { "no such file or folder" }
}

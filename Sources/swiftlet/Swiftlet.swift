import ArgumentParser
import VMM
#if canImport(Glibc)
import Glibc
#endif

@main
struct Swiftlet: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "swiftlet",
        abstract: "A microVM monitor for Linux KVM.",
        discussion: """
            Runs a guest kernel on /dev/kvm with a 16550 serial console on COM1. With no \
            --kernel, `swiftlet run` boots the built-in demo guest.

            With no subcommand, Swiftlet takes Firecracker's flags: `swiftlet --api-sock PATH` \
            serves Firecracker's API on a Unix socket (configure with PUT /boot-source and \
            PUT /machine-config, boot with PUT /actions InstanceStart), and --config-file starts \
            a VM from Firecracker's JSON configuration at once. See the README's API section.
            """,
        version: version,
        subcommands: [Run.self, Inspect.self],
        defaultSubcommand: nil)

    @OptionGroup(title: "Firecracker-compatible launch (no subcommand)")
    var launch: LaunchOptions

    func run() throws {
        guard launch.isLaunch else {
            print(Swiftlet.helpMessage())
            return
        }
        try launch.launch(version: Self.version)
    }

    /// Parses, runs, and maps every failure to one line and an exit status: 2 for usage errors,
    /// 1 for run-time errors; never a trap or a backtrace.
    static func main() {
        // `swiftlet run ...` and `swiftlet inspect ...` are parsed without the launch options: the
        // root's option group would otherwise take a subcommand's own `--api-sock`.
        let arguments = Array(CommandLine.arguments.dropFirst())
        let root: any ParsableCommand.Type = arguments.first.map(Subcommands.names.contains) == true ? Subcommands.self : Swiftlet.self
        do {
            var command = try root.parseAsRoot(arguments)
            try command.run()
        } catch let exit as ExitCode {
            Glibc.exit(exit.rawValue)
        } catch let failure as RuntimeFailure {
            printError("swiftlet: \(failure.message)")
            Glibc.exit(ExitStatus.vmmError)
        } catch {
            let code = root.exitCode(for: error)
            if code == .success {
                print(root.fullMessage(for: error))
                Glibc.exit(0)
            }
            let message = root.message(for: error).split(separator: "\n").joined(separator: " ")
            printError("swiftlet: \(message) (see 'swiftlet help')")
            Glibc.exit(ExitStatus.usage)
        }
    }
}

/// `swiftlet` with a subcommand: the same command tree without the launch options.
struct Subcommands: ParsableCommand {
    static let names = Set(configuration.subcommands.map { $0._commandName })
    static let configuration = CommandConfiguration(commandName: "swiftlet", abstract: Swiftlet.configuration.abstract,
                                                    version: Swiftlet.version, subcommands: [Run.self, Inspect.self])
}

/// A run-time failure (exit status 1) with its one-line message.
struct RuntimeFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

func printError(_ line: String, newline: Bool = true) {
    var text = Array(line.utf8)
    if newline { text.append(UInt8(ascii: "\n")) }
    writeAll(STDERR_FILENO, text)
}

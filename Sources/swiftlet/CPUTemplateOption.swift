import ArgumentParser
import Loader
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// `--cpu-template FILE|NAME`: a built-in template's name, `help`, or a Firecracker custom CPU
/// template file (x86_64 JSON).
enum CPUTemplateOption {
    /// The template `argument` names. A bad template is a usage error: one line, status 2;
    /// `help` prints the built-ins and ends with status 0.
    static func load(_ argument: String) throws -> CPUTemplate {
        if argument == "help" {
            print(help, terminator: "")
            throw ExitCode.success
        }
        do { if let template = try CPUTemplate.builtIn(named: argument) { return template } } catch { throw usage(error.description) }
        let file: KernelFile
        do throws(LoaderError) { file = try KernelFile.read(path: argument) } catch {
            switch error {
            case .empty: file = KernelFile(path: argument, bytes: [])   // refused below as JSON
            case let .unreadable(_, code):
                throw usage("--cpu-template \(argument): neither a built-in template (\(CPUTemplate.builtInNames.joined(separator: ", "))) "
                            + "nor a readable file (\(String(cString: strerror(code))))")
            default: throw usage(error.description)
            }
        }
        do { return try CPUTemplate(json: file.bytes, source: argument) } catch { throw usage(error.description) }
    }

    private static func usage(_ message: String) -> ExitCode {
        printError("swiftlet: \(message)")
        return ExitCode(ExitStatus.usage)
    }

    /// The built-ins, one line each, then each one's JSON: a starting point for a custom file.
    static var help: String {
        var text = "Built-in CPU templates (--cpu-template NAME); a file in the same JSON form is a custom one:\n"
        for builtIn in CPUTemplate.builtIns { text += "  \(builtIn.name)  \(builtIn.summary)\n" }
        for builtIn in CPUTemplate.builtIns { text += "\n\(builtIn.name):\n\(builtIn.json)\n" }
        return text
    }
}

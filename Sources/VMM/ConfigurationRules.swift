#if canImport(Glibc)
import Glibc
#endif

/// A field of the VM's configuration, named as each front end names it, so one rule serves the
/// command line, Firecracker's JSON configuration and its API alike.
public enum ConfigurationField: String, Sendable, CaseIterable {
    case memory, cpus, bootCPU

    /// The command-line option.
    public var option: String {
        switch self {
        case .memory: "--memory"
        case .cpus: "--cpus"
        case .bootCPU: "--boot-cpu"
        }
    }

    /// The field in Firecracker's JSON (`machine-config`), or Swiftlet's extension of it.
    public var jsonField: String {
        switch self {
        case .memory: "mem_size_mib"
        case .cpus: "vcpu_count"
        case .bootCPU: "boot_vcpu"
        }
    }
}

/// A configuration value no VM can have: which field, and what is wrong with it and how to fix it
/// (the front end adds how the user wrote the field and its value).
public struct ConfigurationError: Error, Equatable, Sendable {
    public let field: ConfigurationField
    public let problem: String

    /// The one-line message for the command line: `--cpus 0: at least one vCPU is needed`, with
    /// `value` as the user wrote it.
    public func commandLineMessage(value: String) -> String { "\(field.option) \(value): \(problem)" }
}

/// The checks every configuration passes before a VM is built, whatever front end it came from.
/// Checks that need /dev/kvm (its vCPU limit) are the machine builder's.
public enum ConfigurationRules {
    /// The least guest RAM Swiftlet accepts.
    public static let minimumMemory = MachineConfiguration.minimumMemory

    /// This host's RAM in bytes.
    public static var hostMemoryBytes: UInt64 {
        UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Checks memory size, vCPU count and boot vCPU; the first problem found is thrown.
    public static func check(memoryBytes: UInt64, cpus: Int, bootCPU: Int, mpTable: Bool,
                             hostMemoryBytes: UInt64 = hostMemoryBytes) throws(ConfigurationError) {
        guard memoryBytes >= minimumMemory else {
            throw ConfigurationError(field: .memory, problem: "at least \(minimumMemory >> 20)M of guest RAM is needed")
        }
        guard memoryBytes % 4096 == 0 else { throw ConfigurationError(field: .memory, problem: "must be a multiple of 4K") }
        guard memoryBytes <= hostMemoryBytes else {
            throw ConfigurationError(field: .memory, problem: "larger than this host's \(hostMemoryBytes >> 20) MiB of RAM")
        }
        guard cpus >= 1 else { throw ConfigurationError(field: .cpus, problem: "at least one vCPU is needed") }
        if mpTable && cpus > MachineConfiguration.maxCPUsWithMPTable {
            throw ConfigurationError(field: .cpus, problem: "the MP table describes at most \(MachineConfiguration.maxCPUsWithMPTable) "
                                     + "vCPUs; add --mptable off to use more")
        }
        guard bootCPU >= 0, bootCPU < cpus else {
            throw ConfigurationError(field: .bootCPU, problem: "must be between 0 and \(cpus - 1) for \(cpus) vCPU\(cpus == 1 ? "" : "s")")
        }
    }
}

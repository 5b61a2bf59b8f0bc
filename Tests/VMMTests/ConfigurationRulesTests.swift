import Testing
@testable import VMM

/// The configuration checks the CLI, the config file and the API share.
@Suite("Configuration rules")
struct ConfigurationRulesTests {
    static let host: UInt64 = 8 << 30

    struct Case: Sendable, CustomTestStringConvertible {
        let memory: UInt64, cpus: Int, bootCPU: Int, mpTable: Bool
        let field: ConfigurationField?
        let problem: String?
        var testDescription: String { "\(memory >> 10)K, \(cpus) vCPUs, boot \(bootCPU), MP table \(mpTable)" }
    }

    static let cases: [Case] = [
        Case(memory: 128 << 20, cpus: 1, bootCPU: 0, mpTable: true, field: nil, problem: nil),
        Case(memory: 2 << 20, cpus: 254, bootCPU: 253, mpTable: true, field: nil, problem: nil),
        Case(memory: 8 << 30, cpus: 1024, bootCPU: 1000, mpTable: false, field: nil, problem: nil),
        Case(memory: (2 << 20) - 4096, cpus: 1, bootCPU: 0, mpTable: true, field: .memory, problem: "at least 2M of guest RAM is needed"),
        Case(memory: (4 << 20) + 1024, cpus: 1, bootCPU: 0, mpTable: true, field: .memory, problem: "must be a multiple of 4K"),
        Case(memory: (8 << 30) + 4096, cpus: 1, bootCPU: 0, mpTable: true, field: .memory, problem: "larger than this host's 8192 MiB of RAM"),
        Case(memory: 128 << 20, cpus: 0, bootCPU: 0, mpTable: true, field: .cpus, problem: "at least one vCPU is needed"),
        Case(memory: 128 << 20, cpus: 255, bootCPU: 0, mpTable: true, field: .cpus,
             problem: "the MP table describes at most 254 vCPUs; add --mptable off to use more"),
        Case(memory: 128 << 20, cpus: 2, bootCPU: 2, mpTable: true, field: .bootCPU, problem: "must be between 0 and 1 for 2 vCPUs"),
        Case(memory: 128 << 20, cpus: 1, bootCPU: -1, mpTable: true, field: .bootCPU, problem: "must be between 0 and 0 for 1 vCPU"),
    ]

    @Test(arguments: cases)
    func check(_ c: Case) {
        do throws(ConfigurationError) {
            try ConfigurationRules.check(memoryBytes: c.memory, cpus: c.cpus, bootCPU: c.bootCPU, mpTable: c.mpTable, hostMemoryBytes: Self.host)
            #expect(c.field == nil, "accepted, expected \(c.problem ?? "")")
        } catch {
            #expect(error.field == c.field)
            #expect(error.problem == c.problem)
        }
    }

    @Test func fieldsAreNamedForEachFrontEnd() {
        #expect(ConfigurationField.allCases.map(\.option) == ["--memory", "--cpus", "--boot-cpu"])
        #expect(ConfigurationField.allCases.map(\.jsonField) == ["mem_size_mib", "vcpu_count", "boot_vcpu"])
    }
}

@Suite("virtio device specs")
struct VirtioSpecTests {
    @Test(arguments: [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa"), (27, "vdab"), (701, "vdzz"), (702, "vdaaa")])
    func diskNamesFollowLinux(index: Int, name: String) {
        #expect(VirtioDeviceSpec.diskName(index) == name)
    }
}

import DemoGuest
import Foundation
import Loader
import Testing
import VMM

/// Every bad input ends with one line naming the problem, and status 2 (usage) or 1 (run time).
@Suite("Command line")
struct CommandLineTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let arguments: [String]
        let status: Int32
        let message: String
        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let usageCases: [Case] = [
        Case(arguments: ["run", "--memory", "abc"], status: 2,
             message: "swiftlet: --memory abc: not a size; write a number with an optional unit K, M, G or T, e.g. 512M or 4G (see 'swiftlet help')"),
        Case(arguments: ["run", "--memory", "0"], status: 2,
             message: "swiftlet: --memory 0: the size must be greater than zero (see 'swiftlet help')"),
        Case(arguments: ["run", "--memory", "1M"], status: 2,
             message: "swiftlet: --memory 1M: at least 2M of guest RAM is needed (see 'swiftlet help')"),
        Case(arguments: ["run", "--memory", "4097K"], status: 2,
             message: "swiftlet: --memory 4097K: must be a multiple of 4K (see 'swiftlet help')"),
        Case(arguments: ["run", "--memory", "99999999999999999999G"], status: 2,
             message: "swiftlet: --memory 99999999999999999999G: not a size; write a number with an optional unit K, M, G or T, e.g. 512M or 4G (see 'swiftlet help')"),
        Case(arguments: ["run", "--cpus", "255"], status: 2,
             message: "swiftlet: --cpus 255: the MP table describes at most 254 vCPUs; add --mptable off to use more (see 'swiftlet help')"),
        Case(arguments: ["run", "--acpi", "maybe"], status: 2,
             message: "swiftlet: The value 'maybe' is invalid for '--acpi <on|off>'. Please provide one of 'on' and 'off'. (see 'swiftlet help')"),
        Case(arguments: ["run", "--cpus", "0"], status: 2,
             message: "swiftlet: --cpus 0: at least one vCPU is needed (see 'swiftlet help')"),
        Case(arguments: ["run", "--cpus", "2", "--boot-cpu", "2"], status: 2,
             message: "swiftlet: --boot-cpu 2: must be between 0 and 1 for 2 vCPUs (see 'swiftlet help')"),
        Case(arguments: ["run", "--boot", "efi"], status: 2,
             message: "swiftlet: The value 'efi' is invalid for '--boot <auto|pvh|multiboot|xen64|linux>'. Please provide one of 'auto', 'pvh', 'multiboot', 'xen64' or 'linux'. (see 'swiftlet help')"),
        Case(arguments: ["inspect"], status: 2,
             message: "swiftlet: Missing expected argument '<path>' (see 'swiftlet help')"),
        Case(arguments: ["run", "--kernel", "/nonexistent/vmlinux"], status: 1,
             message: "swiftlet: /nonexistent/vmlinux: cannot read kernel image: No such file or directory"),
        Case(arguments: ["inspect", "/nonexistent/vmlinux"], status: 1,
             message: "swiftlet: /nonexistent/vmlinux: cannot read kernel image: No such file or directory"),
        Case(arguments: ["run", "--initrd", "/nonexistent/initrd"], status: 1,
             message: "swiftlet: /nonexistent/initrd: cannot read initrd: No such file or directory"),
        Case(arguments: ["run", "--module", "/nonexistent/module,with text"], status: 1,
             message: "swiftlet: /nonexistent/module: cannot read module: No such file or directory"),
    ]

    /// Run-time refusals whose wording depends on this host or build: the start of the line.
    static let runtimeCases: [Case] = [
        Case(arguments: ["run", "--memory", "1000000T"], status: 2, message: "swiftlet: --memory 1000000T: larger than this host's "),
        Case(arguments: ["run", "--module", "/etc/hostname"], status: 1,
             message: "swiftlet: --module /etc/hostname: modules are for Multiboot kernels; this kernel boots by pvh ("),
        Case(arguments: ["run", "--boot", "multiboot"], status: 1,
             message: "swiftlet: <demo guest>: cannot boot with --boot multiboot: no Multiboot header"),
    ]

    @Test(arguments: runtimeCases)
    func badArgumentsForThisHost(_ c: Case) {
        let result = Harness.swiftlet(c.arguments + ["--no-stdin"])
        #expect(result.status == c.status)
        #expect(result.stderr.hasPrefix(c.message), "stderr: \(result.stderr)")
        #expect(result.stderr.filter { $0 == "\n" }.count == 1)
        #expect(result.stdout.isEmpty)
    }

    /// The vCPU limit is this KVM's (`KVM_CAP_MAX_VCPUS`), so only a usable /dev/kvm can refuse it.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func moreVCPUsThanThisKVMAllows() {
        let result = Harness.swiftlet(["run", "--cpus", "100000", "--mptable", "off", "--no-stdin"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("swiftlet: --cpus 100000 is out of range: this KVM allows 1 to "), "stderr: \(result.stderr)")
        #expect(result.stderr.filter { $0 == "\n" }.count == 1)
    }

    /// `run`'s own `--api-sock` reaches it (the launch options of `swiftlet` without a subcommand
    /// once took it silently): a path that is not a socket is refused before /dev/kvm is opened.
    @Test func runChecksItsAPISocketPath() throws {
        let file = try Harness.temporaryFile("not-a-socket", [1])
        let result = Harness.swiftlet(["run", "--no-stdin", "--api-sock", file.path])
        #expect(result.status == 1)
        #expect(result.stderr == "swiftlet: --api-sock \(file.path): the path exists and is not a socket; remove it or choose another path\n")
    }

    @Test func initrdTooLargeForMemory() throws {
        let initrd = try Harness.temporaryFile("big-initrd", [UInt8](repeating: 0x5A, count: 6 << 20))
        let result = Harness.swiftlet(["run", "--memory", "4M", "--initrd", initrd.path, "--no-stdin"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("swiftlet: initrd of 6291456 bytes does not fit: "), "stderr: \(result.stderr)")
        #expect(result.stderr.hasSuffix("; use more --memory\n"))
    }

    @Test(arguments: usageCases)
    func badArguments(_ c: Case) {
        let result = Harness.swiftlet(c.arguments + (c.arguments.first == "run" ? ["--no-stdin"] : []))
        #expect(result.status == c.status)
        #expect(result.stderr == c.message + "\n")
        #expect(result.stdout.isEmpty)
    }

    @Test func helpNamesTheOptions() {
        let result = Harness.swiftlet(["run", "--help"])
        #expect(result.status == 0)
        for option in ["--kernel", "--initrd", "--cmdline", "--memory", "--cpus", "--boot-cpu", "--boot", "--report"] {
            #expect(result.stdout.contains(option))
        }
    }
}

/// `--cpu-template`: a bad template is a usage error (one line, status 2) found before KVM is
/// opened; a template that asks for more than this host's KVM has is a run-time error (status 1).
@Suite("CPU templates")
struct CPUTemplateCommandLineTests {
    static let keep = String(repeating: "x", count: 32)

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let json: String
        /// The message after "swiftlet: PATH: ".
        let message: String
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "short bitmap", json: """
            {"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
                                  "modifiers": [{"register": "ecx", "bitmap": "0b\(keep.dropLast())"}]}]}
            """, message: "cpuid_modifiers[0].modifiers[0].bitmap: 31 characters after \"0b\"; a CPUID register bitmap has 32 (0, 1 or x)"),
        Case(name: "trailing comma", json: "{\"msr_modifiers\": [],\n}",
             message: "not valid JSON: line 2, column 1: expected a field name in double quotes after ',', found '}'"),
        Case(name: "decimal leaf", json: "{\"cpuid_modifiers\": [{\"leaf\": \"7\", \"subleaf\": \"0x0\", \"flags\": 1, \"modifiers\": []}]}",
             message: "cpuid_modifiers[0].leaf: \"7\" has no 0x or 0b prefix; write hexadecimal as \"0x...\" or binary as \"0b...\", e.g. \"0x7\" for decimal 7"),
        Case(name: "aarch64 field", json: "{\"vcpu_features\": []}",
             message: "unknown field \"vcpu_features\" (vcpu_features is for aarch64 templates); an x86_64 CPU template has cpuid_modifiers, msr_modifiers and kvm_capabilities"),
        Case(name: "empty file", json: "", message: "not valid JSON: line 1, column 1: expected a JSON value, found end of file"),
    ]

    @Test(arguments: cases)
    func badTemplateIsAUsageError(_ c: Case) throws {
        let path = try Harness.temporaryFile("template-\(c.name.replacingOccurrences(of: " ", with: "-")).json", Array(c.json.utf8)).path
        let result = Harness.swiftlet(["run", "--no-stdin", "--cpu-template", path])
        #expect(result.status == 2)
        #expect(result.stderr == "swiftlet: \(path): \(c.message)\n")
        #expect(result.stdout.isEmpty)
    }

    @Test(arguments: ["x86-64-v9", "/nonexistent/template.json"])
    func unknownNameListsTheBuiltIns(_ name: String) {
        let result = Harness.swiftlet(["run", "--no-stdin", "--cpu-template", name])
        #expect(result.status == 2)
        #expect(result.stderr == "swiftlet: --cpu-template \(name): neither a built-in template (x86-64-v1, x86-64-v2, x86-64-v3) "
                + "nor a readable file (No such file or directory)\n")
    }

    @Test func helpPrintsTheBuiltIns() {
        let result = Harness.swiftlet(["run", "--cpu-template", "help"])
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty)
        for name in ["x86-64-v1", "x86-64-v2", "x86-64-v3"] { #expect(result.stdout.contains("\n\(name):\n{\n")) }
        #expect(result.stdout.contains("\"cpuid_modifiers\""))
    }

    /// The demo guest boots with a built-in and with a custom file that changes CPUID and an MSR.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment), arguments: ["x86-64-v1", "x86-64-v3", "custom"])
    func demoBootsWithATemplate(_ name: String) throws {
        var template = name
        if name == "custom" {
            let avxOff = String(Self.keep.prefix(3)) + "0" + String(Self.keep.dropFirst(4))    // CPUID.1:ECX[28]
            template = try Harness.temporaryFile("custom-template.json", Array("""
                {"kvm_capabilities": ["3"],
                 "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
                                      "modifiers": [{"register": "ecx", "bitmap": "0b\(avxOff)"}]}],
                 "msr_modifiers": [{"addr": "0x1a0", "bitmap": "0b\(Self.keep)\(Self.keep)"}]}
                """.utf8)).path
        }
        let result = Harness.swiftlet(["run", "--no-stdin", "--cpu-template", template])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.hasPrefix("Hello from the Swiftlet demo guest!"))
    }

    /// CPUID.7.0:EBX[22] is reserved: no KVM offers it, so setting it is refused, naming the bit.
    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment))
    func unsupportedBitIsARunTimeError() throws {
        let setBit22 = String(Self.keep.prefix(9)) + "1" + String(Self.keep.dropFirst(10))
        let path = try Harness.temporaryFile("unsupported-template.json", Array("""
            {"cpuid_modifiers": [{"leaf": "0x7", "subleaf": "0x0", "flags": 1,
                                  "modifiers": [{"register": "ebx", "bitmap": "0b\(setBit22)"}]}]}
            """.utf8)).path
        let result = Harness.swiftlet(["run", "--no-stdin", "--cpu-template", path])
        #expect(result.status == 1)
        #expect(result.stderr == "swiftlet: \(path): cpuid_modifiers[0].modifiers[0]: CPUID leaf 0x7 subleaf 0x0 EBX bit 22 is not "
                + "supported by this host's KVM; a template may only clear (0) or keep (x) it\n")
    }
}

/// Bad kernel images, made from the probe by patching its headers.
@Suite("Bad images")
struct BadImageTests {
    static func probeBytes() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: Harness.builtGuests().probe))
    }

    static func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
    static func u64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
    static func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { for i in 0..<8 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt32) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }

    /// File offsets of each program header of an ELF64 image, with its p_type.
    static func programHeaders(_ b: [UInt8]) -> [(offset: Int, type: UInt32)] {
        let phoff = Int(u64(b, 32)), size = u16(b, 54), count = u16(b, 56)
        return (0..<count).map { i in
            let o = phoff + i * size
            return (o, UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24)
        }
    }

    /// A minimal ELF32 i386 image: one PT_LOAD at 1 MiB, no notes, so no 32-bit-capable entry.
    static func elf32WithoutNotes() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x100)
        b.replaceSubrange(0..<7, with: [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1])
        b[16] = 2; b[18] = 3; b[20] = 1                       // ET_EXEC, EM_386, EV_CURRENT
        put32(&b, 24, 0x10_0000)                              // e_entry
        put32(&b, 28, 52)                                     // e_phoff
        b[40] = 52; b[42] = 32; b[44] = 1                     // e_ehsize, e_phentsize, e_phnum
        put32(&b, 52, 1)                                      // PT_LOAD
        put32(&b, 56, 0x80)                                   // p_offset
        put32(&b, 60, 0x10_0000); put32(&b, 64, 0x10_0000)    // p_vaddr, p_paddr
        put32(&b, 68, 0x10); put32(&b, 72, 0x10); put32(&b, 76, 5)
        b[0x80] = 0xF4                                        // hlt
        return b
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let make: @Sendable ([UInt8]) -> [UInt8]
        /// The line's start (after "swiftlet: ") and a fragment that must follow; sizes that depend
        /// on the probe's build are left out.
        let message: @Sendable (String) -> String
        var suffix: String = ""
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "not an ELF", make: { _ in Array("#!/bin/sh\necho not a kernel\n".utf8) },
             message: { "\($0): not an ELF or bzImage kernel (no ELF magic, no HdrS header at 0x202)" }),
        Case(name: "truncated ELF header", make: { Array($0.prefix(40)) },
             message: { "\($0): truncated ELF: ELF header at offset 0x0 runs past the end of the file (size 0x28)" }),
        Case(name: "truncated program headers", make: { Array($0.prefix(Int(u64($0, 32)) + 20)) },
             message: { "\($0): truncated ELF: program header" }, suffix: "runs past the end of the file (size 0x54)"),
        Case(name: "truncated segment", make: { image in
            let load = programHeaders(image).first { $0.type == 1 }!
            return Array(image.prefix(Int(u64(image, load.offset + 8)) + 16))
        }, message: { "\($0): truncated ELF: segment 0 (p_filesz 0x" }, suffix: "at offset 0x1000 runs past the end of the file (size 0x1010)"),
        Case(name: "segment outside memory", make: { image in
            var b = image
            let load = programHeaders(b).first { $0.type == 1 }!
            put64(&b, load.offset + 24, 0x7FF0_0000)          // p_paddr far above 64 MiB
            return b
        }, message: { "\($0): segment 0 [0x7ff00000, 0x7ff" }, suffix: ") is outside guest memory (64 MiB)"),
        Case(name: "segment below 1 MiB", make: { image in
            var b = image
            let load = programHeaders(b).first { $0.type == 1 }!
            put64(&b, load.offset + 24, 0x8000)
            return b
        }, message: { "\($0): segment 0 [0x8000, 0x" }, suffix: ") starts below the lowest loadable address 0x100000"),
        Case(name: "impossible note size", make: { image in
            var b = image
            let note = programHeaders(b).first { $0.type == 4 }!
            put32(&b, Int(u64(b, note.offset + 8)) + 4, 0xFFFF_FF00)   // descsz of the first note
            return b
        }, message: { "\($0): Xen note at offset 0x" }, suffix: "has an impossible size (descsz 0xffffff00, only 0x"),
        Case(name: "overlapping segments", make: { image in
            var b = image
            let loads = programHeaders(b).filter { $0.type == 1 }
            put64(&b, loads[1].offset + 24, u64(b, loads[0].offset + 24) + 0x1000)   // segment 1 inside segment 0
            return b
        }, message: { "\($0): segment 1 [0x101000, 0x" }, suffix: ") overlaps segment 0 [0x100000, 0x105000)"),
        Case(name: "unknown Multiboot requirement", make: { _ in
            [0x1BAD_B002, 0x0000_0010, 0 &- (0x1BAD_B002 &+ 0x10) as UInt32].flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
                + [UInt8](repeating: 0x90, count: 64)
        }, message: { "\($0): unsupported Multiboot: header flags at offset 0x0 is 0x10 (expected no requirement bits beyond 0-2 (bit 4 is set))" }),
        Case(name: "no usable entry point", make: { _ in elf32WithoutNotes() },
             message: { "\($0): no usable entry point" }),
    ]

    @Test(arguments: cases)
    func refusedWithOneLine(_ c: Case) throws {
        let path = try Harness.temporaryFile("bad-\(c.name.replacingOccurrences(of: " ", with: "-"))", c.make(Self.probeBytes())).path
        let run = Harness.swiftlet(["run", "--kernel", path, "--memory", "64M", "--no-stdin"])
        #expect(run.status == 1)
        #expect(run.stderr.hasPrefix("swiftlet: " + c.message(path)), "stderr: \(run.stderr)")
        #expect(c.suffix.isEmpty || run.stderr.contains(c.suffix), "stderr: \(run.stderr)")
        #expect(run.stderr.filter { $0 == "\n" }.count == 1)
        #expect(!run.stderr.contains("Fatal error") && !run.stderr.contains("backtrace"))
    }
}

/// Without a usable /dev/kvm the VM is not built, and the one line says what to check. (The
/// tests run as root, so a permission failure cannot be produced here; it takes the same path
/// with EACCES.) Input errors come first: a bad kernel is named even without KVM.
@Suite("No KVM")
struct NoKVMTests {
    @Test func missingDeviceIsNamed() throws {
        let config = MachineConfiguration(kernel: KernelFile(path: "demo", bytes: demoGuestImage), memorySize: 64 << 20,
                                          forwardInput: false, serialOutput: { _ in })
        do {
            _ = try Machine(config, kvmPath: "/nonexistent/kvm")
            Issue.record("a Machine was built without KVM")
        } catch {
            #expect(error.description == "cannot open /nonexistent/kvm: No such file or directory; "
                    + "is KVM enabled on this host, and may you read and write it (group kvm)?")
        }
        let bad = MachineConfiguration(kernel: KernelFile(path: "junk", bytes: [1, 2, 3]), forwardInput: false, serialOutput: { _ in })
        do {
            _ = try Machine(bad, kvmPath: "/nonexistent/kvm")
            Issue.record("a Machine was built from junk")
        } catch {
            #expect(error.description.hasPrefix("junk: not an ELF or bzImage kernel"))
        }
    }
}

import KVM
import JSON
import Testing
@testable import X86

@Suite("CPU template: reading")
struct CPUTemplateParsingTests {
    static func parse(_ json: String) throws(CPUTemplateError) -> CPUTemplate {
        try CPUTemplate(json: Array(json.utf8), source: "t.json")
    }

    @Test func everyField() throws {
        let template = try Self.parse("""
            {
              "kvm_capabilities": ["171", "!172"],
              "cpuid_modifiers": [
                {"leaf": "0x80000001", "subleaf": "0b11", "flags": 1, "comment": "ignored, as Firecracker does",
                 "modifiers": [
                   {"register": "eax", "bitmap": "0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxx10"},
                   {"register": "edx", "bitmap": "0bxxxx_xxxx_xxxx_xxxx_xxxx_xxxx_0xx0_1xxx"}
                 ]},
                {"leaf": "0xD", "subleaf": "0x0", "flags": 0, "modifiers": []}
              ],
              "msr_modifiers": [
                {"addr": "0x1A0", "bitmap": "0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0"}
              ]
            }
            """)
        #expect(template.source == "t.json")
        #expect(template.kvmCapabilities == [KVMCapabilityChange(capability: 171, required: true, path: "kvm_capabilities[0]"),
                                             KVMCapabilityChange(capability: 172, required: false, path: "kvm_capabilities[1]")])
        #expect(template.cpuidModifiers.count == 2)
        let first = template.cpuidModifiers[0]
        #expect(first.leaf == 0x8000_0001 && first.subleaf == 3 && first.flags == 1 && first.path == "cpuid_modifiers[0]")
        #expect(first.modifiers == [
            CPUIDRegisterModifier(register: .eax, bitmap: RegisterBitmap(mask: 0x8000_0003, value: 0x8000_0002),
                                  path: "cpuid_modifiers[0].modifiers[0]"),
            CPUIDRegisterModifier(register: .edx, bitmap: RegisterBitmap(mask: 0x98, value: 0x08),
                                  path: "cpuid_modifiers[0].modifiers[1]"),
        ])
        #expect(template.cpuidModifiers[1] == CPUIDLeafModifier(leaf: 0xD, subleaf: 0, flags: 0, modifiers: [], path: "cpuid_modifiers[1]"))
        #expect(template.msrModifiers == [MSRModifier(address: 0x1A0, bitmap: RegisterBitmap(mask: 1 << 63 | 1, value: 1 << 63),
                                                      path: "msr_modifiers[0]")])
    }

    @Test func emptyTemplate() throws {
        #expect(try Self.parse("{}") == CPUTemplate(source: "t.json"))
        #expect(try Self.parse(" {\"cpuid_modifiers\": [], \"msr_modifiers\": [], \"kvm_capabilities\": []}\n") == CPUTemplate(source: "t.json"))
    }

    @Test(arguments: ["0b0000000000000000000000000000000x", "0b1111111111111111111111111111111x", "0bx10x_xxxx_xxxx_xxxx_xxxx_xxxx_xxxx_xx01"])
    func bitmapTextRoundTrips(_ text: String) throws {
        let template = try Self.parse("{\"cpuid_modifiers\": [{\"leaf\": \"0x1\", \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": [{\"register\": \"ecx\", \"bitmap\": \"\(text)\"}]}]}")
        #expect(template.cpuidModifiers[0].modifiers[0].bitmap.text == text.filter { $0 != "_" })
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        let json: String
        let message: String
        var testDescription: String { message }
    }

    /// A CPUID modifier around `fields`, for short cases.
    static func leaf(_ fields: String) -> String { "{\"cpuid_modifiers\": [{\(fields)}]}" }
    static let ok = "\"leaf\": \"0x1\", \"subleaf\": \"0x0\", \"flags\": 0"
    static func register(_ fields: String) -> String { leaf(ok + ", \"modifiers\": [{\(fields)}]") }
    static let ones = String(repeating: "x", count: 32)

    static let badCases: [Bad] = [
        Bad(json: "", message: "t.json: not valid JSON: line 1, column 1: expected a JSON value, found end of file"),
        Bad(json: "{\"cpuid_modifiers\": [],}",
            message: "t.json: not valid JSON: line 1, column 24: expected a field name in double quotes after ',', found '}'"),
        Bad(json: "{\"msr_modifiers\": [{\"addr\": \"0x1\"},]}",
            message: "t.json: not valid JSON: line 1, column 36: expected a JSON value after ',', found ']' (JSON allows no trailing comma)"),
        Bad(json: "{\n  \"cpuid_modifiers\": [\n    {\"leaf\": 0x1}\n  ]\n}",
            message: "t.json: not valid JSON: line 3, column 15: expected ',' or '}' after the value of \"leaf\", found 'x'"),
        Bad(json: "{\"a\": \"tab\there\"}", message: "t.json: not valid JSON: line 1, column 11: control character 0x9 in a string; write it as an escape such as \\n"),
        Bad(json: "{} {}", message: "t.json: not valid JSON: line 1, column 4: unexpected '{' after the JSON value"),
        Bad(json: String(repeating: "[", count: 70), message: "t.json: not valid JSON: line 1, column 65: nested deeper than 64 levels"),
        Bad(json: "[]", message: "t.json: expected an object, found an array"),
        Bad(json: "{\"cpuid_modifier\": []}",
            message: "t.json: unknown field \"cpuid_modifier\"; an x86_64 CPU template has cpuid_modifiers, msr_modifiers and kvm_capabilities"),
        Bad(json: "{\"vcpu_features\": []}",
            message: "t.json: unknown field \"vcpu_features\" (vcpu_features is for aarch64 templates); an x86_64 CPU template has cpuid_modifiers, msr_modifiers and kvm_capabilities"),
        Bad(json: "{\"msr_modifiers\": [], \"msr_modifiers\": []}", message: "t.json: \"msr_modifiers\" is given twice; keep one"),
        Bad(json: "{\"cpuid_modifiers\": {}}", message: "t.json: cpuid_modifiers: expected an array, found an object"),
        Bad(json: "{\"cpuid_modifiers\": [7]}", message: "t.json: cpuid_modifiers[0]: expected an object, found a number"),
        Bad(json: leaf("\"leaf\": \"0x1\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0]: missing \"subleaf\"; a CPUID modifier has leaf, subleaf, flags and modifiers"),
        Bad(json: leaf("\"leaf\": 7, \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: 7 is a JSON number; write it as a string with 0x (hexadecimal) or 0b (binary), e.g. \"0x7\""),
        Bad(json: leaf("\"leaf\": \"10\", \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: \"10\" has no 0x or 0b prefix; write hexadecimal as \"0x...\" or binary as \"0b...\", e.g. \"0xa\" for decimal 10"),
        Bad(json: leaf("\"leaf\": \"0xzz\", \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: \"0xzz\" is not a hexadecimal number (0-9 and a-f after 0x)"),
        Bad(json: leaf("\"leaf\": \"0x+1\", \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: \"0x+1\" is not a hexadecimal number (0-9 and a-f after 0x)"),
        Bad(json: leaf("\"leaf\": \"0x1\", \"subleaf\": \"0b102\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].subleaf: \"0b102\" is not a binary number (0 and 1 after 0b)"),
        Bad(json: leaf("\"leaf\": \"0x100000000\", \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: \"0x100000000\" does not fit in 32 bits"),
        Bad(json: leaf("\"leaf\": true, \"subleaf\": \"0x0\", \"flags\": 0, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].leaf: expected a string such as \"0x1\", found a boolean"),
        Bad(json: leaf("\"leaf\": \"0x1\", \"subleaf\": \"0x0\", \"flags\": \"1\", \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].flags: expected a number (0, or 1 for a leaf with subleaves), found a string"),
        Bad(json: leaf("\"leaf\": \"0x1\", \"subleaf\": \"0x0\", \"flags\": -1, \"modifiers\": []"),
            message: "t.json: cpuid_modifiers[0].flags: -1 is not a flags value; write 0, or 1 (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) for a leaf with subleaves"),
        Bad(json: leaf(ok + ", \"modifiers\": null"), message: "t.json: cpuid_modifiers[0].modifiers: expected an array, found null"),
        Bad(json: register("\"register\": \"ekx\", \"bitmap\": \"0b\(ones)\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0].register: \"ekx\" is not a CPUID register; use \"eax\", \"ebx\", \"ecx\" or \"edx\""),
        Bad(json: register("\"register\": \"EAX\", \"bitmap\": \"0b\(ones)\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0].register: \"EAX\" is not a CPUID register; use \"eax\", \"ebx\", \"ecx\" or \"edx\""),
        Bad(json: register("\"bitmap\": \"0b\(ones)\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0]: missing \"register\"; a CPUID register modifier has register and bitmap"),
        Bad(json: "{\"cpuid_modifiers\": [" + String(repeating: "{\(ok), \"modifiers\": []}, ", count: 2)
                + "{\(ok), \"modifiers\": [{\"register\": \"eax\", \"bitmap\": \"0b\(ones.dropLast())\"}]}]}",
            message: "t.json: cpuid_modifiers[2].modifiers[0].bitmap: 31 characters after \"0b\"; a CPUID register bitmap has 32 (0, 1 or x)"),
        Bad(json: register("\"register\": \"eax\", \"bitmap\": \"0b\(ones)x\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0].bitmap: 33 characters after \"0b\"; a CPUID register bitmap has 32 (0, 1 or x)"),
        Bad(json: register("\"register\": \"eax\", \"bitmap\": \"\(ones)\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0].bitmap: \"\(ones)\" does not start with 0b; write \"0b\" and 32 characters 0, 1 or x, highest bit first"),
        Bad(json: register("\"register\": \"eax\", \"bitmap\": \"0bxxxxX\(ones.dropFirst(5))\""),
            message: "t.json: cpuid_modifiers[0].modifiers[0].bitmap: \"X\" (character 5 after \"0b\") is not 0, 1 or x; 0 clears a bit, 1 sets it, x keeps it"),
        Bad(json: register("\"register\": \"eax\", \"bitmap\": 42"),
            message: "t.json: cpuid_modifiers[0].modifiers[0].bitmap: expected a string of \"0b\" and 32 characters 0, 1 or x, found a number"),
        Bad(json: "{\"msr_modifiers\": [{\"bitmap\": \"0b\(ones)\(ones)\"}]}",
            message: "t.json: msr_modifiers[0]: missing \"addr\"; an MSR modifier has addr and bitmap"),
        Bad(json: "{\"msr_modifiers\": [{\"addr\": \"0x10a\", \"bitmap\": \"0b\(ones)\(ones.dropLast())\"}]}",
            message: "t.json: msr_modifiers[0].bitmap: 63 characters after \"0b\"; an MSR bitmap has 64 (0, 1 or x)"),
        Bad(json: "{\"msr_modifiers\": [{\"addr\": 266, \"bitmap\": \"0b\(ones)\(ones)\"}]}",
            message: "t.json: msr_modifiers[0].addr: 266 is a JSON number; write it as a string with 0x (hexadecimal) or 0b (binary), e.g. \"0x10a\""),
        Bad(json: "{\"kvm_capabilities\": [\"171\", \"cap\"]}",
            message: "t.json: kvm_capabilities[1]: \"cap\" is not a KVM capability; write its decimal number (KVM_CAP_* in <linux/kvm.h>), e.g. \"171\", or \"!171\" to drop it"),
        Bad(json: "{\"kvm_capabilities\": [171]}",
            message: "t.json: kvm_capabilities[0]: expected a string such as \"171\" or \"!171\", found a number"),
    ]

    @Test(arguments: badCases)
    func refusedWithItsPath(_ c: Bad) {
        #expect(throws: CPUTemplateError.self) { try Self.parse(c.json) }
        do {
            _ = try Self.parse(c.json)
        } catch {
            #expect(error.description == c.message)
        }
    }

    @Test func jsonStringEscapes() throws {
        let value = try JSONValue.parse(Array(#"{"k\"\\\/\b\f\n\r\t": "\u00e9\ud83d\ude00é", "n": [-0.5e+3, 0, true, false, null]}"#.utf8))
        #expect(value == .object([.init(key: "k\"\\/\u{8}\u{C}\n\r\t", value: .string("é😀é")),
                                  .init(key: "n", value: .array([.number("-0.5e+3"), .number("0"), .bool(true), .bool(false), .null]))]))
    }
}

@Suite("CPU template: applying")
struct CPUTemplateApplyTests {
    static func template(_ modifiers: String, msrs: String = "") throws -> CPUTemplate {
        try CPUTemplate(json: Array("{\"cpuid_modifiers\": [\(modifiers)], \"msr_modifiers\": [\(msrs)]}".utf8), source: "t.json")
    }

    static func modifier(_ leaf: String, subleaf: String = "0x0", flags: Int = 0, _ registers: [(String, String)]) -> String {
        let list = registers.map { "{\"register\": \"\($0.0)\", \"bitmap\": \"0b\($0.1)\"}" }.joined(separator: ", ")
        return "{\"leaf\": \"\(leaf)\", \"subleaf\": \"\(subleaf)\", \"flags\": \(flags), \"modifiers\": [\(list)]}"
    }

    /// 32 bitmap characters: `x` everywhere but the given bits.
    static func bits(_ set: [Int: Character]) -> String {
        String((0..<32).reversed().map { set[$0] ?? "x" })
    }

    static let supported = [
        CPUIDEntry(function: 0, eax: 0x1F),
        CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0x0000_0800, ecx: 0x0000_00F1, edx: 0x0000_00F0),
        CPUIDEntry(function: 7, index: 0, flags: CPUIDEntry.significantIndex, eax: 1, ebx: 0xFF, ecx: 0, edx: 0),
        CPUIDEntry(function: 7, index: 1, flags: CPUIDEntry.significantIndex, eax: 0xF0, ebx: 0, ecx: 0, edx: 0),
        CPUIDEntry(function: 0xB, index: 0, flags: CPUIDEntry.significantIndex, ebx: 1, edx: 0),
        CPUIDEntry(function: 0x8000_0006, ecx: 0x0000_F0F0),
    ]

    @Test func clearSetAndKeep() throws {
        // ECX of leaf 1 is 0xF1: clear bit 0, keep bit 4, set bit 7 (supported); EAX takes any value.
        let t = try Self.template(Self.modifier("0x1", [("ecx", Self.bits([0: "0", 7: "1"])),
                                                         ("eax", "00000000000000000000000000000000")]))
        let result = try t.apply(to: Self.supported)
        #expect(result[1].ecx == 0xF0)
        #expect(result[1].eax == 0)
        #expect(result[1].ebx == Self.supported[1].ebx && result[1].edx == Self.supported[1].edx)
        #expect(Array(result[2...]) == Array(Self.supported[2...]))
    }

    @Test func valueRegistersTakeAnyBits() throws {
        // Leaf 0x80000006 describes the L2 cache: a value, not features.
        let t = try Self.template(Self.modifier("0x80000006", [("ecx", "00000000000000010000000000000001")]))
        #expect(try t.apply(to: Self.supported)[5].ecx == 0x0001_0001)
    }

    @Test func modifiersOfOneRegisterApplyInOrder() throws {
        let t = try Self.template(Self.modifier("0x80000006", [("ecx", Self.bits([0: "1"])), ("ecx", Self.bits([4: "0"]))])
                                  + ", " + Self.modifier("0x80000006", [("ecx", Self.bits([1: "1"]))]))
        #expect(try t.apply(to: Self.supported)[5].ecx == 0xF0E3)
    }

    @Test func significantSubleafSelectsTheEntry() throws {
        let t = try Self.template(Self.modifier("0x7", subleaf: "0x1", flags: 1, [("eax", Self.bits([4: "0"]))]))
        let result = try t.apply(to: Self.supported)
        #expect(result[2] == Self.supported[2])
        #expect(result[3].eax == 0xE0)
    }

    @Test func subleafIgnoredWhereItDoesNotMatter() throws {
        // Leaf 1 has no subleaves: subleaf 5 still names it. The template's flags (1) are not copied.
        let t = try Self.template(Self.modifier("0x1", subleaf: "0x5", flags: 1, [("ecx", Self.bits([0: "0"]))]))
        let result = try t.apply(to: Self.supported)
        #expect(result[1].ecx == 0xF0)
        #expect(result[1].flags == 0)
    }

    @Test func flagsOfTheEntryAreKept() throws {
        let t = try Self.template(Self.modifier("0x7", subleaf: "0x0", flags: 0, [("ebx", Self.bits([0: "0"]))]))
        let result = try t.apply(to: Self.supported)
        #expect(result[2].ebx == 0xFE && result[2].flags == CPUIDEntry.significantIndex)
    }

    struct Refusal: CustomTestStringConvertible, Sendable {
        let name: String
        let modifier: String
        let message: String
        var testDescription: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "one unsupported feature bit",
                modifier: modifier("0x7", subleaf: "0x0", flags: 1, [("ebx", bits([5: "1", 9: "1"]))]),
                message: "t.json: cpuid_modifiers[0].modifiers[0]: CPUID leaf 0x7 subleaf 0x0 EBX bit 9 is not supported by this host's KVM; a template may only clear (0) or keep (x) it"),
        Refusal(name: "several unsupported feature bits",
                modifier: modifier("0x1", [("ecx", bits([0: "1"])), ("edx", bits([1: "1", 31: "1", 4: "1"]))]),
                message: "t.json: cpuid_modifiers[0].modifiers[1]: CPUID leaf 0x1 subleaf 0x0 EDX bits 1, 31 are not supported by this host's KVM; a template may only clear (0) or keep (x) them"),
        Refusal(name: "a subleaf-1 feature",
                modifier: modifier("0x7", subleaf: "0x1", flags: 1, [("eax", bits([3: "1"]))]),
                message: "t.json: cpuid_modifiers[0].modifiers[0]: CPUID leaf 0x7 subleaf 0x1 EAX bit 3 is not supported by this host's KVM; a template may only clear (0) or keep (x) it"),
        Refusal(name: "an unlisted leaf with a set bit",
                modifier: modifier("0x1d", [("eax", bits([0: "0"])), ("ebx", bits([2: "1"]))]),
                message: "t.json: cpuid_modifiers[0]: CPUID leaf 0x1d subleaf 0x0 is not supported by this host's KVM, and the modifier sets bits in it; remove the modifier, or only clear (0) and keep (x) bits there"),
        Refusal(name: "an unlisted subleaf with a set bit",
                modifier: modifier("0x7", subleaf: "0x2", flags: 1, [("edx", bits([0: "1"]))]),
                message: "t.json: cpuid_modifiers[0]: CPUID leaf 0x7 subleaf 0x2 is not supported by this host's KVM, and the modifier sets bits in it; remove the modifier, or only clear (0) and keep (x) bits there"),
    ]

    @Test(arguments: refusals)
    func unsupportedBitsAreRefused(_ c: Refusal) throws {
        let t = try Self.template(c.modifier)
        #expect(throws: CPUTemplateError.self) { try t.apply(to: Self.supported) }
        do { _ = try t.apply(to: Self.supported) } catch { #expect(error.description == c.message) }
    }

    @Test func unlistedLeafThatOnlyClearsIsSkipped() throws {
        let t = try Self.template(Self.modifier("0x1d", [("eax", String(repeating: "0", count: 32))])
                                  + ", " + Self.modifier("0x7", subleaf: "0x2", flags: 1, [("edx", Self.bits([0: "0"]))]))
        #expect(try t.apply(to: Self.supported) == Self.supported)
    }

    /// Swiftlet's own bits are in the base table, so a template may set them though KVM's list lacks them.
    @Test func hypervisorAndHTTBitsMayBeSet() throws {
        #expect(Self.supported[1].ecx & CPUIDTemplate.hypervisorBit == 0 && Self.supported[1].edx & CPUIDTemplate.httBit == 0)
        let t = try Self.template(Self.modifier("0x1", [("ecx", Self.bits([31: "1"])), ("edx", Self.bits([28: "1"]))]))
        #expect(throws: CPUTemplateError.self) { try t.apply(to: Self.supported) }
        let result = try t.apply(to: CPUIDTemplate.base(from: Self.supported))
        #expect(result[1].ecx & CPUIDTemplate.hypervisorBit != 0 && result[1].edx & CPUIDTemplate.httBit != 0)
    }

    /// Per-vCPU fields come after the template: the APIC ID and count in leaf 1 EBX, the topology
    /// leaves, and Swiftlet's bits survive a template that changes them.
    @Test(arguments: [(UInt32(0), 1), (5, 8)])
    func perVCPUFieldsWin(apicID: UInt32, count: Int) throws {
        let t = try Self.template(Self.modifier("0x1", [("ebx", String(repeating: "1", count: 32)), ("ecx", Self.bits([31: "0"])),
                                                         ("edx", Self.bits([28: "0"]))])
                                  + ", " + Self.modifier("0xb", subleaf: "0x1", flags: 1, [("edx", String(repeating: "1", count: 32))]))
        let base = try t.apply(to: CPUIDTemplate.base(from: Self.supported))
        #expect(base[1].ebx == 0xFFFF_FFFF)
        let entries = CPUIDTemplate.entries(from: base, apicID: apicID, count: count)
        let leaf1 = try #require(entries.first { $0.function == 1 })
        #expect(leaf1.ebx >> 24 == apicID)
        #expect((leaf1.ebx >> 16) & 0xFF == UInt32(count == 1 ? 1 : 8))
        #expect(leaf1.ebx & 0xFFFF == 0xFFFF)   // the template's part of EBX
        #expect(leaf1.ecx & CPUIDTemplate.hypervisorBit != 0 && leaf1.edx & CPUIDTemplate.httBit != 0)
        let topology = entries.filter { $0.function == 0xB }
        #expect(topology.count == 3 && topology.allSatisfy { $0.edx == apicID })
    }

    @Test func msrModifiersComposeInOrder() throws {
        let ones = String(repeating: "x", count: 60)
        let t = try Self.template("", msrs: """
            {"addr": "0x1a0", "bitmap": "0b\(ones)1x0x"}, {"addr": "0x10a", "bitmap": "0b\(ones)xxx1"},
            {"addr": "0x1a0", "bitmap": "0b\(ones)x1xx"}
            """)
        #expect(t.msrAddresses == [0x1A0, 0x10A])
        #expect(t.msrValue(0x1A0, current: 0b0011) == 0b1101)
        #expect(t.msrValue(0x10A, current: 0) == 1)
        #expect(t.msrValue(0x999, current: 7) == 7)
        #expect(t.location(ofMSR: 0x10A).description == "t.json: msr_modifiers[1]")
        let refused = CPUTemplateError.msrNotSupported(t.location(ofMSR: 0x1A0), address: 0x1A0)
        #expect(refused.description == "t.json: msr_modifiers[0]: MSR 0x1a0 is not supported by this host's KVM (KVM_GET_MSRS cannot read it); remove the modifier")
    }

    @Test func requiredCapabilitiesAreChecked() throws {
        let t = try CPUTemplate(json: Array("{\"kvm_capabilities\": [\"!5\", \"171\", \"7\"]}".utf8), source: "t.json")
        try t.checkCapabilities { $0 != 5 }
        #expect(throws: CPUTemplateError.self) { try t.checkCapabilities { $0 != 7 } }
        do { try t.checkCapabilities { $0 == 5 } } catch {
            #expect(error.description == "t.json: kvm_capabilities[1]: this host's KVM does not have capability 171 (KVM_CHECK_EXTENSION says 0)")
        }
    }
}

@Suite("CPU template: built-ins")
struct BuiltInTemplateTests {
    /// (leaf, subleaf, register, bit, psABI level; 0: in no level, hidden by every built-in).
    static let features: [(name: String, leaf: UInt32, subleaf: UInt32, register: CPUIDRegister, bit: Int, level: Int)] = [
        ("SSE3", 1, 0, .ecx, 0, 2), ("PCLMULQDQ", 1, 0, .ecx, 1, 0), ("SSSE3", 1, 0, .ecx, 9, 2), ("FMA", 1, 0, .ecx, 12, 3),
        ("CMPXCHG16B", 1, 0, .ecx, 13, 2), ("SSE4.1", 1, 0, .ecx, 19, 2), ("SSE4.2", 1, 0, .ecx, 20, 2), ("MOVBE", 1, 0, .ecx, 22, 3),
        ("POPCNT", 1, 0, .ecx, 23, 2), ("AES", 1, 0, .ecx, 25, 0), ("XSAVE", 1, 0, .ecx, 26, 3), ("OSXSAVE", 1, 0, .ecx, 27, 3),
        ("AVX", 1, 0, .ecx, 28, 3), ("F16C", 1, 0, .ecx, 29, 3), ("RDRAND", 1, 0, .ecx, 30, 0),
        ("BMI1", 7, 0, .ebx, 3, 3), ("HLE", 7, 0, .ebx, 4, 0), ("AVX2", 7, 0, .ebx, 5, 3), ("BMI2", 7, 0, .ebx, 8, 3),
        ("RTM", 7, 0, .ebx, 11, 0), ("MPX", 7, 0, .ebx, 14, 0), ("AVX512F", 7, 0, .ebx, 16, 4), ("AVX512DQ", 7, 0, .ebx, 17, 4),
        ("RDSEED", 7, 0, .ebx, 18, 0), ("ADX", 7, 0, .ebx, 19, 0), ("AVX512_IFMA", 7, 0, .ebx, 21, 0),
        ("CLFLUSHOPT", 7, 0, .ebx, 23, 0), ("CLWB", 7, 0, .ebx, 24, 0), ("AVX512PF", 7, 0, .ebx, 26, 0),
        ("AVX512ER", 7, 0, .ebx, 27, 0), ("AVX512CD", 7, 0, .ebx, 28, 4), ("SHA", 7, 0, .ebx, 29, 0),
        ("AVX512BW", 7, 0, .ebx, 30, 4), ("AVX512VL", 7, 0, .ebx, 31, 4),
        ("PREFETCHWT1", 7, 0, .ecx, 0, 0), ("AVX512_VBMI", 7, 0, .ecx, 1, 0), ("PKU", 7, 0, .ecx, 3, 0), ("OSPKE", 7, 0, .ecx, 4, 0),
        ("WAITPKG", 7, 0, .ecx, 5, 0), ("AVX512_VBMI2", 7, 0, .ecx, 6, 0), ("CET_SS", 7, 0, .ecx, 7, 0), ("GFNI", 7, 0, .ecx, 8, 0),
        ("VAES", 7, 0, .ecx, 9, 0), ("VPCLMULQDQ", 7, 0, .ecx, 10, 0), ("AVX512_VNNI", 7, 0, .ecx, 11, 0),
        ("AVX512_BITALG", 7, 0, .ecx, 12, 0), ("AVX512_VPOPCNTDQ", 7, 0, .ecx, 14, 0), ("RDPID", 7, 0, .ecx, 22, 0),
        ("KL", 7, 0, .ecx, 23, 0), ("CLDEMOTE", 7, 0, .ecx, 25, 0), ("MOVDIRI", 7, 0, .ecx, 27, 0), ("MOVDIR64B", 7, 0, .ecx, 28, 0),
        ("ENQCMD", 7, 0, .ecx, 29, 0),
        ("AVX512_4VNNIW", 7, 0, .edx, 2, 0), ("AVX512_4FMAPS", 7, 0, .edx, 3, 0), ("UINTR", 7, 0, .edx, 5, 0),
        ("AVX512_VP2INTERSECT", 7, 0, .edx, 8, 0), ("SERIALIZE", 7, 0, .edx, 14, 0), ("TSXLDTRK", 7, 0, .edx, 16, 0),
        ("CET_IBT", 7, 0, .edx, 20, 0), ("AMX_BF16", 7, 0, .edx, 22, 0), ("AVX512_FP16", 7, 0, .edx, 23, 0),
        ("AMX_TILE", 7, 0, .edx, 24, 0), ("AMX_INT8", 7, 0, .edx, 25, 0),
        ("SHA512", 7, 1, .eax, 0, 0), ("SM3", 7, 1, .eax, 1, 0), ("SM4", 7, 1, .eax, 2, 0), ("RAO_INT", 7, 1, .eax, 3, 0),
        ("AVX_VNNI", 7, 1, .eax, 4, 0), ("AVX512_BF16", 7, 1, .eax, 5, 0), ("CMPCCXADD", 7, 1, .eax, 7, 0),
        ("AMX_FP16", 7, 1, .eax, 21, 0), ("AVX_IFMA", 7, 1, .eax, 23, 0),
        ("AVX_VNNI_INT8", 7, 1, .edx, 4, 0), ("AVX_NE_CONVERT", 7, 1, .edx, 5, 0), ("AMX_COMPLEX", 7, 1, .edx, 8, 0),
        ("AVX_VNNI_INT16", 7, 1, .edx, 10, 0), ("PREFETCHI", 7, 1, .edx, 14, 0), ("AVX10", 7, 1, .edx, 19, 0),
        ("APX_F", 7, 1, .edx, 21, 0),
        ("LAHF_SAHF", 0x8000_0001, 0, .ecx, 0, 2), ("LZCNT", 0x8000_0001, 0, .ecx, 5, 3), ("SSE4A", 0x8000_0001, 0, .ecx, 6, 0),
        ("PREFETCHW", 0x8000_0001, 0, .ecx, 8, 0), ("XOP", 0x8000_0001, 0, .ecx, 11, 0), ("LWP", 0x8000_0001, 0, .ecx, 15, 0),
        ("FMA4", 0x8000_0001, 0, .ecx, 16, 0), ("TBM", 0x8000_0001, 0, .ecx, 21, 0),
        ("MMXEXT", 0x8000_0001, 0, .edx, 22, 0), ("3DNOWEXT", 0x8000_0001, 0, .edx, 30, 0), ("3DNOW", 0x8000_0001, 0, .edx, 31, 0),
    ]

    /// A host with every bit of every register set, in every leaf the built-ins touch and one they do not.
    static let everything: [CPUIDEntry] = [(UInt32(1), UInt32(0), UInt32(0)), (7, 0, 1), (7, 1, 1), (0xD, 0, 1), (0xD, 1, 1),
                                           (0xD, 2, 1), (0x8000_0001, 0, 0), (0x8000_0008, 0, 0)].map {
        CPUIDEntry(function: $0.0, index: $0.1, flags: $0.2, eax: ~0, ebx: ~0, ecx: ~0, edx: ~0)
    }

    /// The bits of leaf 0xD a level keeps (all others of EAX and EDX in subleaves 0 and 1, and ECX
    /// of subleaf 1, are cleared): x87 and SSE state; AVX state and XSAVEOPT from v3.
    static func xsaveKept(level: Int, subleaf: UInt32, _ register: CPUIDRegister) -> UInt32 {
        switch (subleaf, register) {
        case (0, .eax): level >= 3 ? 0b111 : 0b11
        case (1, .eax): level >= 3 ? 0b1 : 0
        case (0, .edx), (1, .ecx), (1, .edx): 0
        default: ~0
        }
    }

    @Test(arguments: [("x86-64-v1", 1), ("x86-64-v2", 2), ("x86-64-v3", 3)])
    func hidesExactlyItsBits(name: String, level: Int) throws {
        let template = try #require(try CPUTemplate.builtIn(named: name))
        #expect(template.source == name && template.msrModifiers.isEmpty && template.kvmCapabilities.isEmpty)
        let result = try template.apply(to: Self.everything)
        for (entry, original) in zip(result, Self.everything) {
            for register in CPUIDRegister.allCases {
                var expected = original[register]
                if entry.function == 0xD {
                    expected = Self.xsaveKept(level: level, subleaf: entry.index, register)
                }
                for feature in Self.features where feature.leaf == entry.function && feature.subleaf == entry.index
                    && feature.register == register && (feature.level == 0 || feature.level > level) {
                    expected &= ~(1 << feature.bit)
                }
                let hidden = (0..<32).filter { (expected ^ entry[register]) >> $0 & 1 != 0 }
                #expect(entry[register] == expected,
                        "leaf 0x\(String(entry.function, radix: 16)).\(entry.index) \(register): bits \(hidden) differ")
            }
        }
    }

    @Test(arguments: ["CMPXCHG16B", "POPCNT", "XSAVE", "OSXSAVE", "AVX", "AVX2", "AVX512F"])
    func v1HidesWhatThisHostsEmulatorLacks(_ name: String) throws {
        let feature = try #require(Self.features.first { $0.name == name })
        let result = try #require(try CPUTemplate.builtIn(named: "x86-64-v1")).apply(to: Self.everything)
        let entry = try #require(result.first { $0.function == feature.leaf && $0.index == feature.subleaf })
        #expect(entry[feature.register] >> feature.bit & 1 == 0)
    }

    @Test func levelsNestAndNamesResolve() throws {
        #expect(CPUTemplate.builtInNames == ["x86-64-v1", "x86-64-v2", "x86-64-v3"])
        #expect(try CPUTemplate.builtIn(named: "x86-64-v4") == nil)
        let visible = try CPUTemplate.builtInNames.map { name in
            try #require(try CPUTemplate.builtIn(named: name)).apply(to: Self.everything)
        }
        for (lower, higher) in zip(visible, visible.dropFirst()) {
            for (a, b) in zip(lower, higher) {
                for register in CPUIDRegister.allCases { #expect(a[register] & ~b[register] == 0) }   // each level a superset
            }
        }
        #expect(visible[0] != visible[1] && visible[1] != visible[2])
    }
}

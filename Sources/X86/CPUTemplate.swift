import JSON
import KVM

/// A CPU template in Firecracker's custom CPU template format (x86_64): bitmaps that set, clear or
/// keep bits of CPUID registers and MSRs, so a guest sees a chosen feature set. See Firecracker's
/// docs/cpu_templates/cpu-templates.md for the format; where Swiftlet reads it differently, it
/// says so here.
///
/// ```json
/// {"cpuid_modifiers": [{"leaf": "0x7", "subleaf": "0x0", "flags": 1,
///                       "modifiers": [{"register": "ebx", "bitmap": "0bxxxxxxxxxxxxxxxxxxxxxxxxxx0xxxxx"}]}],
///  "msr_modifiers": [{"addr": "0x1a0", "bitmap": "0bxxxx...(64)"}],
///  "kvm_capabilities": ["171", "!172"]}
/// ```
///
/// Reading, as Firecracker does: every top-level field is optional and an unknown one is refused
/// (serde `deny_unknown_fields`; the aarch64 fields `reg_modifiers` and `vcpu_features` too);
/// inside a modifier every field is required and unknown ones are ignored; `leaf`, `subleaf` and
/// `addr` are strings with a `0x` or `0b` prefix (no decimal, no JSON numbers); `flags` is a JSON
/// number; registers are `eax`, `ebx`, `ecx`, `edx`; `_` may separate bitmap digits. Stricter than
/// Firecracker: a bitmap must start with `0b` and have exactly 32 (CPUID) or 64 (MSR) digits,
/// where Firecracker takes the prefix as optional and a short bitmap as keeping the high bits;
/// and JSON is strict RFC 8259 like serde_json (no trailing commas).
///
/// Applying, see `apply(to:)` and `msrValue(_:current:)`.
public struct CPUTemplate: Equatable, Sendable {
    /// Where the template came from (a path or a built-in's name), for messages.
    public var source: String
    public var cpuidModifiers: [CPUIDLeafModifier]
    public var msrModifiers: [MSRModifier]
    public var kvmCapabilities: [KVMCapabilityChange]

    public init(source: String, cpuidModifiers: [CPUIDLeafModifier] = [], msrModifiers: [MSRModifier] = [],
                kvmCapabilities: [KVMCapabilityChange] = []) {
        self.source = source; self.cpuidModifiers = cpuidModifiers
        self.msrModifiers = msrModifiers; self.kvmCapabilities = kvmCapabilities
    }
}

/// A CPUID output register.
public enum CPUIDRegister: String, Sendable, CaseIterable {
    case eax, ebx, ecx, edx
}

extension CPUIDEntry {
    public subscript(register: CPUIDRegister) -> UInt32 {
        get {
            switch register {
            case .eax: eax
            case .ebx: ebx
            case .ecx: ecx
            case .edx: edx
            }
        }
        set {
            switch register {
            case .eax: eax = newValue
            case .ebx: ebx = newValue
            case .ecx: ecx = newValue
            case .edx: edx = newValue
            }
        }
    }
}

/// A tri-state bitmap, written `0b` + one of `0`, `1`, `x` per bit, most significant first: the
/// bits in `mask` become the bits of `value`, the others are kept.
public struct RegisterBitmap<Word: FixedWidthInteger & UnsignedInteger & Sendable>: Equatable, Sendable {
    /// 1 where the bitmap says 0 or 1.
    public var mask: Word
    /// 1 where the bitmap says 1.
    public var value: Word

    public init(mask: Word, value: Word) {
        self.mask = mask
        self.value = value & mask
    }

    public func apply(to word: Word) -> Word { (word & ~mask) | value }

    /// The bitmap as written in a template.
    public var text: String {
        var text = "0b"
        for bit in (0..<Word.bitWidth).reversed() {
            let forced = (mask >> bit) & 1 != 0, set = (value >> bit) & 1 != 0
            text.append(forced ? (set ? "1" : "0") : "x")
        }
        return text
    }
}

/// One register of a CPUID leaf modifier.
public struct CPUIDRegisterModifier: Equatable, Sendable {
    public var register: CPUIDRegister
    public var bitmap: RegisterBitmap<UInt32>
    /// Its JSON path, e.g. `cpuid_modifiers[0].modifiers[1]`.
    public var path: String
}

/// The changes to one CPUID leaf and subleaf.
public struct CPUIDLeafModifier: Equatable, Sendable {
    public var leaf: UInt32
    public var subleaf: UInt32
    /// As written (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX` is 1). Swiftlet keeps KVM's flags for the
    /// entry: Firecracker copies these into it, where a 0 for a leaf with subleaves would make KVM
    /// answer every subleaf with this one.
    public var flags: UInt32
    public var modifiers: [CPUIDRegisterModifier]
    public var path: String
}

/// The change to one MSR.
public struct MSRModifier: Equatable, Sendable {
    public var address: UInt32
    public var bitmap: RegisterBitmap<UInt64>
    public var path: String
}

/// An entry of `kvm_capabilities`: `"171"` asks that KVM have capability 171 (checked with
/// `KVM_CHECK_EXTENSION`, as Firecracker does); `"!171"` takes it off Firecracker's own list of
/// required capabilities, which Swiftlet does not have (it checks what it uses), so it is ignored.
public struct KVMCapabilityChange: Equatable, Sendable {
    public var capability: UInt32
    public var required: Bool
    public var path: String
}

/// A template that cannot be read or applied. Each names the template and the JSON path of the
/// field, says what is wrong and how to fix it, on one line.
public enum CPUTemplateError: Error, Equatable, CustomStringConvertible {
    /// `source` and a JSON path such as `cpuid_modifiers[2].modifiers[0].bitmap` (empty: the document).
    public struct Location: Equatable, Sendable, CustomStringConvertible {
        public var source: String
        public var path: String
        public var description: String { path.isEmpty ? source : "\(source): \(path)" }
        func appending(_ component: String) -> Location {
            Location(source: source, path: path.isEmpty ? component : path + (component.hasPrefix("[") ? "" : ".") + component)
        }
    }

    case invalidJSON(source: String, JSONSyntaxError)
    case wrongType(Location, expected: String, found: String)
    /// `shape` names the object and lists its fields, e.g. "a CPUID leaf modifier has leaf, ...".
    case missingField(Location, field: String, shape: String)
    case unknownField(Location, field: String, shape: String)
    case duplicateField(Location, field: String)
    /// A number written as a JSON number rather than a string.
    case numberNotAString(Location, literal: String)
    case numberWithoutPrefix(Location, text: String)
    case invalidDigits(Location, text: String)
    case numberTooLarge(Location, text: String, bits: Int)
    case invalidFlags(Location, literal: String)
    case unknownRegister(Location, name: String)
    case bitmapWithoutPrefix(Location, text: String, width: Int)
    case bitmapCharacter(Location, character: String, position: Int)
    case bitmapLength(Location, count: Int, width: Int)
    case invalidCapability(Location, text: String)
    // Applying the template to this host.
    case unsupportedBits(Location, leaf: UInt32, subleaf: UInt32, register: CPUIDRegister, bits: [Int])
    case leafNotListed(Location, leaf: UInt32, subleaf: UInt32)
    case capabilityMissing(Location, capability: UInt32)
    case msrNotSupported(Location, address: UInt32)
    case msrRefused(Location, address: UInt32, value: UInt64, vcpu: Int, detail: String)

    public var description: String {
        switch self {
        case let .invalidJSON(source, error):
            return "\(source): not valid JSON: \(error)"
        case let .wrongType(at, expected, found):
            return "\(at): expected \(expected), found \(found)"
        case let .missingField(at, field, shape):
            return "\(at): missing \"\(field)\"; \(shape)"
        case let .unknownField(at, field, shape):
            let aarch64 = ["reg_modifiers", "vcpu_features"].contains(field) ? " (\(field) is for aarch64 templates)" : ""
            return "\(at): unknown field \"\(field)\"\(aarch64); \(shape)"
        case let .duplicateField(at, field):
            return "\(at): \"\(field)\" is given twice; keep one"
        case let .numberNotAString(at, literal):
            let example = UInt64(literal).map { "\"0x\(String($0, radix: 16))\"" } ?? "\"0x1\""
            return "\(at): \(literal) is a JSON number; write it as a string with 0x (hexadecimal) or 0b (binary), e.g. \(example)"
        case let .numberWithoutPrefix(at, text):
            let example = UInt64(text).map { ", e.g. \"0x\(String($0, radix: 16))\" for decimal \(text)" } ?? ""
            return "\(at): \"\(text)\" has no 0x or 0b prefix; write hexadecimal as \"0x...\" or binary as \"0b...\"\(example)"
        case let .invalidDigits(at, text):
            return text.hasPrefix("0b") ? "\(at): \"\(text)\" is not a binary number (0 and 1 after 0b)"
                                        : "\(at): \"\(text)\" is not a hexadecimal number (0-9 and a-f after 0x)"
        case let .numberTooLarge(at, text, bits):
            return "\(at): \"\(text)\" does not fit in \(bits) bits"
        case let .invalidFlags(at, literal):
            return "\(at): \(literal) is not a flags value; write 0, or 1 (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) for a leaf with subleaves"
        case let .unknownRegister(at, name):
            return "\(at): \"\(name)\" is not a CPUID register; use \"eax\", \"ebx\", \"ecx\" or \"edx\""
        case let .bitmapWithoutPrefix(at, text, width):
            return "\(at): \"\(text)\" does not start with 0b; write \"0b\" and \(width) characters 0, 1 or x, highest bit first"
        case let .bitmapCharacter(at, character, position):
            return "\(at): \"\(character)\" (character \(position) after \"0b\") is not 0, 1 or x; 0 clears a bit, 1 sets it, x keeps it"
        case let .bitmapLength(at, count, width):
            return "\(at): \(count) characters after \"0b\"; \(width == 32 ? "a CPUID register" : "an MSR") bitmap has \(width) (0, 1 or x)"
        case let .invalidCapability(at, text):
            return "\(at): \"\(text)\" is not a KVM capability; write its decimal number (KVM_CAP_* in <linux/kvm.h>), e.g. \"171\", or \"!171\" to drop it"
        case let .unsupportedBits(at, leaf, subleaf, register, bits):
            let list = bits.map(String.init).joined(separator: ", ")
            return "\(at): CPUID leaf \(Self.hex(leaf)) subleaf \(Self.hex(subleaf)) \(register.rawValue.uppercased()) "
                + "bit\(bits.count == 1 ? "" : "s") \(list) \(bits.count == 1 ? "is" : "are") not supported by this host's KVM; "
                + "a template may only clear (0) or keep (x) \(bits.count == 1 ? "it" : "them")"
        case let .leafNotListed(at, leaf, subleaf):
            return "\(at): CPUID leaf \(Self.hex(leaf)) subleaf \(Self.hex(subleaf)) is not supported by this host's KVM, "
                + "and the modifier sets bits in it; remove the modifier, or only clear (0) and keep (x) bits there"
        case let .capabilityMissing(at, capability):
            return "\(at): this host's KVM does not have capability \(capability) (KVM_CHECK_EXTENSION says 0)"
        case let .msrNotSupported(at, address):
            return "\(at): MSR \(Self.hex(address)) is not supported by this host's KVM (KVM_GET_MSRS cannot read it); remove the modifier"
        case let .msrRefused(at, address, value, vcpu, detail):
            return "\(at): this host's KVM refused \(Self.hex(value)) for MSR \(Self.hex(address)) on vCPU \(vcpu) (\(detail))"
        }
    }

    static func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }
}

// MARK: Reading

extension CPUTemplate {
    static let topShape = "an x86_64 CPU template has cpuid_modifiers, msr_modifiers and kvm_capabilities"
    static let leafShape = "a CPUID modifier has leaf, subleaf, flags and modifiers"
    static let registerShape = "a CPUID register modifier has register and bitmap"
    static let msrShape = "an MSR modifier has addr and bitmap"

    /// Reads a template from JSON text; `source` names it in errors.
    public init(json: [UInt8], source: String) throws(CPUTemplateError) {
        let document: JSONValue
        do { document = try JSONValue.parse(json) } catch { throw .invalidJSON(source: source, error) }
        let top = CPUTemplateError.Location(source: source, path: "")
        let fields = try Self.object(document, at: top, known: ["cpuid_modifiers", "msr_modifiers", "kvm_capabilities"],
                                     strict: true, shape: Self.topShape)
        self.init(source: source)
        if let list = fields["cpuid_modifiers"] {
            cpuidModifiers = try Self.array(list, at: top.appending("cpuid_modifiers")).map { (at, item) throws(CPUTemplateError) in
                try Self.leafModifier(item, at: at)
            }
        }
        if let list = fields["msr_modifiers"] {
            msrModifiers = try Self.array(list, at: top.appending("msr_modifiers")).map { (at, item) throws(CPUTemplateError) in
                let fields = try Self.object(item, at: at, known: ["addr", "bitmap"], shape: Self.msrShape)
                return MSRModifier(address: UInt32(try Self.number(fields["addr"]!, at: at.appending("addr"), bits: 32)),
                                   bitmap: try Self.bitmap(fields["bitmap"]!, at: at.appending("bitmap")), path: at.path)
            }
        }
        if let list = fields["kvm_capabilities"] {
            kvmCapabilities = try Self.array(list, at: top.appending("kvm_capabilities")).map { (at, item) throws(CPUTemplateError) in
                guard case let .string(text) = item else {
                    throw .wrongType(at, expected: "a string such as \"171\" or \"!171\"", found: item.kindDescription)
                }
                let digits = text.hasPrefix("!") ? text.dropFirst() : Substring(text)
                guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt32(digits) else {
                    throw .invalidCapability(at, text: text)
                }
                return KVMCapabilityChange(capability: number, required: !text.hasPrefix("!"), path: at.path)
            }
        }
    }

    static func leafModifier(_ item: JSONValue, at: CPUTemplateError.Location) throws(CPUTemplateError) -> CPUIDLeafModifier {
        let fields = try object(item, at: at, known: ["leaf", "subleaf", "flags", "modifiers"], shape: leafShape)
        let flagsAt = at.appending("flags")
        guard case let .number(literal) = fields["flags"]! else {
            throw .wrongType(flagsAt, expected: "a number (0, or 1 for a leaf with subleaves)", found: fields["flags"]!.kindDescription)
        }
        guard let flags = UInt32(literal) else { throw .invalidFlags(flagsAt, literal: literal) }
        let modifiers = try array(fields["modifiers"]!, at: at.appending("modifiers")).map { (at, item) throws(CPUTemplateError) in
            let fields = try object(item, at: at, known: ["register", "bitmap"], shape: registerShape)
            let registerAt = at.appending("register")
            guard case let .string(name) = fields["register"]! else {
                throw .wrongType(registerAt, expected: "a string: \"eax\", \"ebx\", \"ecx\" or \"edx\"", found: fields["register"]!.kindDescription)
            }
            guard let register = CPUIDRegister(rawValue: name) else { throw .unknownRegister(registerAt, name: name) }
            return CPUIDRegisterModifier(register: register, bitmap: try bitmap(fields["bitmap"]!, at: at.appending("bitmap")), path: at.path)
        }
        return CPUIDLeafModifier(leaf: UInt32(try number(fields["leaf"]!, at: at.appending("leaf"), bits: 32)),
                                 subleaf: UInt32(try number(fields["subleaf"]!, at: at.appending("subleaf"), bits: 32)),
                                 flags: flags, modifiers: modifiers, path: at.path)
    }

    /// An object's fields by name: every name in `known` must be there; others are refused when
    /// `strict`, ignored otherwise (Firecracker's rule: strict only at the top level).
    static func object(_ value: JSONValue, at: CPUTemplateError.Location, known: [String], strict: Bool = false,
                       shape: String) throws(CPUTemplateError) -> [String: JSONValue] {
        guard case let .object(members) = value else { throw .wrongType(at, expected: "an object", found: value.kindDescription) }
        var fields: [String: JSONValue] = [:]
        for member in members {
            guard known.contains(member.key) else {
                if strict { throw .unknownField(at, field: member.key, shape: shape) }
                continue
            }
            guard fields.updateValue(member.value, forKey: member.key) == nil else { throw .duplicateField(at, field: member.key) }
        }
        if !strict, let missing = known.first(where: { fields[$0] == nil }) {
            throw .missingField(at, field: missing, shape: shape)
        }
        return fields
    }

    /// An array's elements, each with its path.
    static func array(_ value: JSONValue, at: CPUTemplateError.Location) throws(CPUTemplateError) -> [(CPUTemplateError.Location, JSONValue)] {
        guard case let .array(elements) = value else { throw .wrongType(at, expected: "an array", found: value.kindDescription) }
        return elements.enumerated().map { (at.appending("[\($0.offset)]"), $0.element) }
    }

    /// A `"0x..."` or `"0b..."` string.
    static func number(_ value: JSONValue, at: CPUTemplateError.Location, bits: Int) throws(CPUTemplateError) -> UInt64 {
        guard case let .string(text) = value else {
            if case let .number(literal) = value { throw .numberNotAString(at, literal: literal) }
            throw .wrongType(at, expected: "a string such as \"0x1\"", found: value.kindDescription)
        }
        let radix: Int
        if text.hasPrefix("0x") { radix = 16 } else if text.hasPrefix("0b") { radix = 2 } else {
            throw .numberWithoutPrefix(at, text: text)
        }
        let digits = text.dropFirst(2)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.hexDigitValue.map { $0 < radix } == true }) else {
            throw .invalidDigits(at, text: text)
        }
        guard let number = UInt64(digits, radix: radix), bits == 64 || number >> bits == 0 else {
            throw .numberTooLarge(at, text: text, bits: bits)
        }
        return number
    }

    /// `"0b"` + one `0`, `1` or `x` per bit (`_` between them ignored), highest bit first.
    static func bitmap<Word>(_ value: JSONValue, at: CPUTemplateError.Location) throws(CPUTemplateError) -> RegisterBitmap<Word> {
        let width = Word.bitWidth
        guard case let .string(text) = value else {
            throw .wrongType(at, expected: "a string of \"0b\" and \(width) characters 0, 1 or x", found: value.kindDescription)
        }
        guard text.hasPrefix("0b") else { throw .bitmapWithoutPrefix(at, text: text, width: width) }
        var mask: Word = 0, bits: Word = 0, count = 0
        for (position, character) in text.dropFirst(2).enumerated() where character != "_" {
            guard character == "0" || character == "1" || character == "x" else {
                throw .bitmapCharacter(at, character: String(character), position: position + 1)
            }
            count += 1
            mask <<= 1
            bits <<= 1
            if character != "x" { mask |= 1 }
            if character == "1" { bits |= 1 }
        }
        guard count == width else { throw .bitmapLength(at, count: count, width: width) }
        return RegisterBitmap(mask: mask, value: bits)
    }
}

// MARK: Applying

extension CPUTemplate {
    /// Applies the CPUID modifiers to `entries`: Swiftlet's base table, that is KVM's supported
    /// list with Swiftlet's own changes (Xen leaves, hypervisor and HTT bits); the per-vCPU fields
    /// come after (`CPUIDTemplate.entries`).
    ///
    /// A modifier matches the entry with its leaf, and its subleaf where the entry's flags say the
    /// subleaf matters; several modifiers of one register apply in order. In a register of feature
    /// bits (`isFeatureRegister`) a template may only set a bit that is set in `entries`: it
    /// cannot give the guest a feature this KVM does not offer (Firecracker sets it anyway); bits
    /// Swiftlet sets itself are set in `entries`, so setting them again is accepted. Other
    /// registers hold values (signature, sizes, cache descriptions) and take any bits. A modifier
    /// for a leaf this KVM does not list is refused if it sets a bit, as Firecracker refuses it; one
    /// that only clears or keeps bits is skipped (the leaf does not exist for the guest), so one
    /// template serves hosts with and without the leaf. Leaves 0xB and 0x1F are skipped: Swiftlet
    /// generates them per vCPU (Firecracker likewise rewrites its per-vCPU leaves after the template).
    public func apply(to entries: [CPUIDEntry]) throws(CPUTemplateError) -> [CPUIDEntry] {
        var result = entries
        for leafModifier in cpuidModifiers where !CPUIDTemplate.generatedLeaves.contains(leafModifier.leaf) {
            let at = CPUTemplateError.Location(source: source, path: leafModifier.path)
            guard let index = entries.firstIndex(where: {
                $0.function == leafModifier.leaf && ($0.flags & CPUIDEntry.significantIndex == 0 || $0.index == leafModifier.subleaf)
            }) else {
                if leafModifier.modifiers.contains(where: { $0.bitmap.value != 0 }) {
                    throw .leafNotListed(at, leaf: leafModifier.leaf, subleaf: leafModifier.subleaf)
                }
                continue
            }
            let supported = entries[index]
            for modifier in leafModifier.modifiers {
                let register = modifier.register
                let missing = modifier.bitmap.value & ~supported[register]
                if missing != 0, Self.isFeatureRegister(leaf: supported.function, subleaf: supported.index, register) {
                    throw .unsupportedBits(CPUTemplateError.Location(source: source, path: modifier.path), leaf: leafModifier.leaf,
                                           subleaf: leafModifier.subleaf, register: register,
                                           bits: (0..<32).filter { missing >> $0 & 1 != 0 })
                }
                result[index][register] = modifier.bitmap.apply(to: result[index][register])
            }
        }
        return result
    }

    /// Registers whose bits say "this feature is present" (Intel SDM Vol. 2A, CPUID; AMD APM
    /// Vol. 3, appendix E): a set bit there is a promise KVM must be able to keep.
    public static func isFeatureRegister(leaf: UInt32, subleaf: UInt32, _ register: CPUIDRegister) -> Bool {
        switch (leaf, register) {
        case (0x1, .ecx), (0x1, .edx), (0x6, .eax), (0x6, .ecx): true
        case (0x7, .ebx), (0x7, .ecx), (0x7, .edx): true
        case (0x7, .eax): subleaf != 0                          // subleaf 0: the last subleaf
        case (0xD, .eax), (0xD, .edx): subleaf <= 1             // XCR0 components; XSAVEOPT and kin; XSS
        case (0xD, .ecx): subleaf == 1                          // XSS components
        case (0x8000_0001, .ecx), (0x8000_0001, .edx), (0x8000_0007, .edx), (0x8000_0008, .ebx), (0x8000_0021, .eax): true
        default: false
        }
    }

    /// The capabilities the template needs; each must be present (`KVM_CHECK_EXTENSION` > 0).
    public func checkCapabilities(_ present: (UInt32) -> Bool) throws(CPUTemplateError) {
        for change in kvmCapabilities where change.required && !present(change.capability) {
            throw .capabilityMissing(CPUTemplateError.Location(source: source, path: change.path), capability: change.capability)
        }
    }

    /// Each MSR the template changes, once, in the order first named.
    public var msrAddresses: [UInt32] {
        var seen: Set<UInt32> = []
        return msrModifiers.map(\.address).filter { seen.insert($0).inserted }
    }

    /// Where the first modifier of MSR `address` is, for messages.
    public func location(ofMSR address: UInt32) -> CPUTemplateError.Location {
        CPUTemplateError.Location(source: source, path: msrModifiers.first { $0.address == address }?.path ?? "msr_modifiers")
    }

    /// MSR `address`'s new value from its `current` one: every modifier for it, in order.
    public func msrValue(_ address: UInt32, current: UInt64) -> UInt64 {
        msrModifiers.filter { $0.address == address }.reduce(current) { $1.bitmap.apply(to: $0) }
    }
}

// MARK: Built-in templates

extension CPUTemplate {
    /// The built-in templates, named after the x86-64 psABI microarchitecture levels. Each hides
    /// from the guest every instruction-set extension above its level, so a guest sees the same
    /// instruction set on any host of at least that level:
    ///
    /// - above v1 (hidden by `x86-64-v1`): SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B,
    ///   LAHF/SAHF in 64-bit mode;
    /// - above v2 (hidden by v1 and v2): XSAVE and OSXSAVE, AVX, AVX2, FMA, F16C, BMI1, BMI2,
    ///   LZCNT, MOVBE; leaf 0xD then offers only x87 and SSE state, without XSAVEOPT and kin;
    /// - above v3 (hidden by all three): AVX-512 F, CD, BW, DQ, VL; leaf 0xD offers x87, SSE and
    ///   AVX state and XSAVEOPT, not XSAVEC, XSAVES, XFD or any supervisor state;
    /// - in no level, hidden by all three, since hosts of one level differ in them: PCLMULQDQ,
    ///   AES, RDRAND, RDSEED, SHA, ADX, HLE, RTM, TSXLDTRK, MPX, CLFLUSHOPT, CLWB, PREFETCHWT1,
    ///   PREFETCHW, PKU/OSPKE, WAITPKG, CET (shadow stacks, IBT), GFNI, VAES, VPCLMULQDQ, RDPID,
    ///   Key Locker, CLDEMOTE, MOVDIRI, MOVDIR64B, ENQCMD, UINTR, SERIALIZE, every other AVX-512,
    ///   AVX-VNNI/IFMA/NE-CONVERT family and AMX extension, SHA512, SM3, SM4, RAO-INT, CMPCCXADD,
    ///   PREFETCHI, AVX10, APX, and AMD's SSE4a, XOP, FMA4, TBM, LWP, MMX extensions and 3DNow!.
    ///
    /// Kept: what the kernel rather than applications use (paging, APIC, timers, PCID, SMEP/SMAP,
    /// FSGSBASE, speculation controls, virtualization, performance monitoring), string-copy hints
    /// (ERMS, FSRM) and RDTSCP. A template only hides: on a host below its level the guest sees
    /// the host's smaller set. `x86-64-v1` also suits a KVM whose instruction emulator lacks
    /// `lock cmpxchg16b`, `xrstor` or `popcnt`.
    public static let builtIns: [(name: String, summary: String, json: String)] = [
        ("x86-64-v1", "baseline x86-64: no SSE3 and later, no CMPXCHG16B, POPCNT or XSAVE", levelJSON(1)),
        ("x86-64-v2", "x86-64-v1 and SSE3 to SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF; no XSAVE or AVX", levelJSON(2)),
        ("x86-64-v3", "x86-64-v2 and XSAVE, AVX, AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE; no AVX-512", levelJSON(3)),
    ]

    public static var builtInNames: [String] { builtIns.map(\.name) }

    /// The built-in template `name`, or nil. Read like a file (the tests check that each reads).
    public static func builtIn(named name: String) throws(CPUTemplateError) -> CPUTemplate? {
        guard let entry = builtIns.first(where: { $0.name == name }) else { return nil }
        return try CPUTemplate(json: Array(entry.json.utf8), source: name)
    }

    /// One register the built-ins modify: its bitmap at `x86-64-v3`, and the feature bits that
    /// `x86-64-v2` hides besides (v3's own) and that `x86-64-v1` hides besides (v2's own).
    struct LevelRegister {
        let leaf: String, subleaf: String, flags: Int, register: String
        let v3Bitmap: String
        var v3Features: [Int] = []
        var v2Features: [Int] = []
    }

    static let levelRegisters: [LevelRegister] = [
        // v3: FMA 12, MOVBE 22, XSAVE 26, OSXSAVE 27, AVX 28, F16C 29; v2: SSE3 0, SSSE3 9, CX16 13,
        // SSE4.1 19, SSE4.2 20, POPCNT 23.
        LevelRegister(leaf: "0x1", subleaf: "0x0", flags: 0, register: "ecx", v3Bitmap: "x0xxxx0xxxxxxxxxxxxxxxxxxxxxxx0x",
                      v3Features: [12, 22, 26, 27, 28, 29], v2Features: [0, 9, 13, 19, 20, 23]),
        // v3: BMI1 3, AVX2 5, BMI2 8.
        LevelRegister(leaf: "0x7", subleaf: "0x0", flags: 1, register: "ebx", v3Bitmap: "000000x00x0x0000x0xx0xxxxxx0xxxx",
                      v3Features: [3, 5, 8]),
        LevelRegister(leaf: "0x7", subleaf: "0x0", flags: 1, register: "ecx", v3Bitmap: "xx000x0x00xxxxxxx0x0000000000x00"),
        LevelRegister(leaf: "0x7", subleaf: "0x0", flags: 1, register: "edx", v3Bitmap: "xxxxxx0000x0xxx0x0xxxxx0xx0x00xx"),
        LevelRegister(leaf: "0x7", subleaf: "0x1", flags: 1, register: "eax", v3Bitmap: "xxxxxxxx0x0xxxxxxxxxxxxx0x000000"),
        LevelRegister(leaf: "0x7", subleaf: "0x1", flags: 1, register: "edx", v3Bitmap: "xxxxxxxxxx0x0xxxx0xxx0x0xx00xxxx"),
        // v3: AVX state (XCR0 bit 2).
        LevelRegister(leaf: "0xd", subleaf: "0x0", flags: 1, register: "eax", v3Bitmap: "00000000000000000000000000000xxx",
                      v3Features: [2]),
        LevelRegister(leaf: "0xd", subleaf: "0x0", flags: 1, register: "edx", v3Bitmap: "00000000000000000000000000000000"),
        // v3: XSAVEOPT 0.
        LevelRegister(leaf: "0xd", subleaf: "0x1", flags: 1, register: "eax", v3Bitmap: "0000000000000000000000000000000x",
                      v3Features: [0]),
        LevelRegister(leaf: "0xd", subleaf: "0x1", flags: 1, register: "ecx", v3Bitmap: "00000000000000000000000000000000"),
        LevelRegister(leaf: "0xd", subleaf: "0x1", flags: 1, register: "edx", v3Bitmap: "00000000000000000000000000000000"),
        // v3: LZCNT 5; v2: LAHF/SAHF 0.
        LevelRegister(leaf: "0x80000001", subleaf: "0x0", flags: 0, register: "ecx", v3Bitmap: "xxxxxxxxxx0xxxx00xxx0xx0x0xxxxxx",
                      v3Features: [5], v2Features: [0]),
        LevelRegister(leaf: "0x80000001", subleaf: "0x0", flags: 0, register: "edx", v3Bitmap: "00xxxxxxx0xxxxxxxxxxxxxxxxxxxxxx"),
    ]

    /// The built-in for psABI level `level` (1 to 3) as template JSON: `--cpu-template help`
    /// prints it, and it is read like any file.
    static func levelJSON(_ level: Int) -> String {
        func bitmap(_ register: LevelRegister) -> String {
            var bits = Array(register.v3Bitmap)
            let hidden = (level < 3 ? register.v3Features : []) + (level < 2 ? register.v2Features : [])
            for bit in hidden { bits[bits.count - 1 - bit] = "0" }
            return "0b" + String(bits)
        }
        var leaves: [String] = []
        var index = 0
        while index < levelRegisters.count {
            let first = levelRegisters[index]
            let group = levelRegisters[index...].prefix { $0.leaf == first.leaf && $0.subleaf == first.subleaf }
            let modifiers = group.map { #"      {"register": "\#($0.register)", "bitmap": "\#(bitmap($0))"}"# }
            leaves.append(#"    {"leaf": "\#(first.leaf)", "subleaf": "\#(first.subleaf)", "flags": \#(first.flags), "modifiers": ["#
                          + "\n" + modifiers.joined(separator: ",\n") + "\n    ]}")
            index += group.count
        }
        return "{\n  \"cpuid_modifiers\": [\n" + leaves.joined(separator: ",\n") + "\n  ]\n}"
    }
}

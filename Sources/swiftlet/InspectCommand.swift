import ArgumentParser
import FoundationEssentials
import Loader
import VMM

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a kernel image's format, Xen ELF notes, entry points, segments, and the boot protocol `run` would use.")

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Argument(help: ArgumentHelp("The kernel image (ELF or bzImage).", valueName: "path"))
    var path: String

    func run() throws {
        let report: Inspection
        do { report = try Inspection(file: KernelFile.read(path: path)) } catch {
            throw RuntimeFailure(error.description)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text, terminator: "")
        }
    }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

/// What `inspect` reports, for text and JSON alike.
struct Inspection: Encodable {
    struct Note: Encodable {
        let type: UInt32
        let name: String
        let value: String
        let fileOffset: String
    }
    struct Segment: Encodable {
        let type: String
        let offset: String, virtualAddress: String, physicalAddress: String
        let fileSize: String, memorySize: String, flags: String
    }
    struct EntryPoint: Encodable { let name: String; let address: String }
    struct ProtocolChoice: Encodable { let name: String?; let reason: String }
    struct Multiboot: Encodable {
        let fileOffset: String
        let flags: String
        let flagNames: [String]
        let headerAddress: String?, loadAddress: String?, loadEndAddress: String?, bssEndAddress: String?, entryAddress: String?
        /// Set when the header is there but unusable.
        let error: String?
    }

    let path: String
    let format: String
    let notesSource: String?
    let notes: [Note]
    let entryPoints: [EntryPoint]
    let segments: [Segment]
    let multiboot: Multiboot?
    let bootProtocol: ProtocolChoice
    /// What each explicit --boot choice would do.
    let protocols: [String: ProtocolChoice]
    /// What `--xen auto` decides for this image.
    let xenAuto: Bool

    init(file: KernelFile) throws(LoaderError) {
        let image = try KernelImage.parse(file)
        path = file.path
        switch image {
        case let .elf(elf):
            format = "ELF\(elf.elfClass == .elf64 ? 64 : 32) \(elf.machine == 62 ? "x86-64" : elf.machine == 3 ? "i386" : "machine \(elf.machine)")"
            notesSource = elf.notes.source.rawValue
            notes = elf.notes.all.map {
                Note(type: $0.type, name: $0.name, value: Self.describe($0.value), fileOffset: hex($0.fileOffset))
            }
            var entries = [EntryPoint(name: "ELF e_entry", address: hex(elf.entry))]
            if let e = elf.notes.phys32Entry { entries.append(.init(name: "XEN_ELFNOTE_PHYS32_ENTRY (PVH, physical)", address: hex(e))) }
            if let e = elf.notes.entry { entries.append(.init(name: "XEN_ELFNOTE_ENTRY (xen64, virtual)", address: hex(e))) }
            entryPoints = entries
            segments = elf.programHeaders.map {
                let flags = ($0.flags & 4 != 0 ? "R" : "-") + ($0.flags & 2 != 0 ? "W" : "-") + ($0.flags & 1 != 0 ? "X" : "-")
                return Segment(type: Self.segmentType($0.type), offset: hex($0.offset), virtualAddress: hex($0.virtualAddress),
                               physicalAddress: hex($0.physicalAddress), fileSize: hex($0.fileSize),
                               memorySize: hex($0.memorySize), flags: flags)
            }
        case let .bzImage(bz):
            format = "bzImage (boot protocol \(bz.version >> 8).\(String(format2: bz.version & 0xFF)))"
            notesSource = nil
            notes = []
            entryPoints = bz.supports64BitEntry ? [.init(name: "64-bit entry (load address + 0x200)", address: hex(bz.loadAddress + 0x200))] : []
            segments = [Segment(type: "protected-mode payload", offset: hex(UInt64(bz.protectedModeOffset)),
                                virtualAddress: hex(bz.loadAddress), physicalAddress: hex(bz.loadAddress),
                                fileSize: hex(bz.payloadSize), memorySize: hex(bz.memorySize), flags: "RWX")]
        case let .multiboot(mb):
            format = "flat binary with a Multiboot header"
            notesSource = nil
            notes = []
            entryPoints = mb.header.addresses.map { [.init(name: "Multiboot entry_addr (32-bit, physical)", address: hex(UInt64($0.entry)))] } ?? []
            let a = mb.header.addresses
            let lead = UInt64((a?.header ?? 0) &- (a?.load ?? 0))
            let fileSize = a.map { $0.loadEnd == 0 ? UInt64(mb.bytes.count) - (mb.header.fileOffset - lead) : UInt64($0.loadEnd &- $0.load) } ?? 0
            let memorySize = a.map { $0.bssEnd == 0 ? fileSize : UInt64($0.bssEnd &- $0.load) } ?? 0
            segments = [Segment(type: "multiboot load", offset: hex(mb.header.fileOffset - lead),
                                virtualAddress: hex(UInt64(a?.load ?? 0)), physicalAddress: hex(UInt64(a?.load ?? 0)),
                                fileSize: hex(fileSize), memorySize: hex(memorySize), flags: "RWX")]
        }
        do {
            multiboot = try image.multibootHeader().map { h in
                let a = h.addresses
                return Multiboot(fileOffset: hex(h.fileOffset), flags: hex(UInt64(h.flags)), flagNames: h.flagNames,
                                 headerAddress: a.map { hex(UInt64($0.header)) }, loadAddress: a.map { hex(UInt64($0.load)) },
                                 loadEndAddress: a.map { hex(UInt64($0.loadEnd)) }, bssEndAddress: a.map { hex(UInt64($0.bssEnd)) },
                                 entryAddress: a.map { hex(UInt64($0.entry)) }, error: nil)
            }
        } catch {
            multiboot = Multiboot(fileOffset: "?", flags: "?", flagNames: [], headerAddress: nil, loadAddress: nil,
                                  loadEndAddress: nil, bssEndAddress: nil, entryAddress: nil, error: error.description)
        }
        func choice(_ requested: BootProtocol?) -> ProtocolChoice {
            do {
                let (chosen, reason) = try image.selectProtocol(requested)
                return ProtocolChoice(name: chosen.rawValue, reason: reason)
            } catch {
                return ProtocolChoice(name: nil, reason: error.description)
            }
        }
        bootProtocol = choice(nil)
        protocols = Dictionary(uniqueKeysWithValues: BootProtocol.allCases.map { ($0.rawValue, choice($0)) })
        xenAuto = XenMode.auto.enabled(for: image)
    }

    static func segmentType(_ type: UInt32) -> String {
        switch type {
        case 0: "NULL"
        case 1: "LOAD"
        case 2: "DYNAMIC"
        case 3: "INTERP"
        case 4: "NOTE"
        case 6: "PHDR"
        case 7: "TLS"
        case 0x6474_E550: "GNU_EH_FRAME"
        case 0x6474_E551: "GNU_STACK"
        case 0x6474_E552: "GNU_RELRO"
        case 0x6474_E553: "GNU_PROPERTY"
        default: hex(UInt64(type))
        }
    }

    static func describe(_ value: XenNoteValue) -> String {
        switch value {
        case let .integer(v): hex(v)
        case let .string(s): "\"\(s)\""
        case let .features(list):
            list.map { ($0.required ? "!" : "") + $0.name + ($0.bit.map { " (bit \($0))" } ?? " (unknown)") }
                .joined(separator: ", ")
        case let .featureBitmap(words): words.map { hex(UInt64($0)) }.joined(separator: " ")
        case let .l1MfnValid(words): words.map(hex).joined(separator: " ")
        case let .phys32Reloc(align, minimum, maximum):
            "align \(align.map { hex(UInt64($0)) } ?? "default"), min \(minimum.map { hex(UInt64($0)) } ?? "default"), max \(maximum.map { hex(UInt64($0)) } ?? "default")"
        case let .bytes(bytes):
            bytes.isEmpty ? "(empty)" : bytes.prefix(32).map { String($0, radix: 16).leftPadded(2) }.joined(separator: " ")
                + (bytes.count > 32 ? " … (\(bytes.count) bytes)" : "")
        }
    }

    var text: String {
        var out = "\(path): \(format)\n"
        if let name = bootProtocol.name {
            out += "\nBoot protocol: \(name) — \(bootProtocol.reason)\n"
        } else {
            out += "\nBoot protocol: none — \(bootProtocol.reason)\n"
        }
        out += "Xen interface with --xen auto: \(xenAuto ? "on" : "off")\n"
        for key in BootProtocol.allCases.map(\.rawValue) {
            guard let p = protocols[key] else { continue }
            out += "  --boot \(key.padded(9)) \(p.name != nil ? "ok: " : "no: ")\(p.reason)\n"
        }
        if let mb = multiboot {
            if let error = mb.error {
                out += "\nMultiboot header: unusable: \(error)\n"
            } else {
                out += "\nMultiboot header at offset \(mb.fileOffset): flags \(mb.flags) (\(mb.flagNames.joined(separator: ", ")))\n"
                if let h = mb.headerAddress, let l = mb.loadAddress, let le = mb.loadEndAddress, let b = mb.bssEndAddress, let e = mb.entryAddress {
                    out += "  header_addr \(h)  load_addr \(l)  load_end_addr \(le)  bss_end_addr \(b)  entry_addr \(e)\n"
                }
            }
        }
        out += "\nEntry points:\n"
        for entry in entryPoints { out += "  \(entry.name.padded(42)) \(entry.address)\n" }
        if let source = notesSource {
            out += "\nXen ELF notes (\(notes.count), from \(source)):\n"
            for note in notes { out += "  \(note.name.padded(20)) \(note.value)\n" }
        }
        out += "\nSegments:\n  \("type".padded(14)) \("offset".padded(12)) \("vaddr".padded(20)) \("paddr".padded(12)) \("filesz".padded(12)) \("memsz".padded(12)) flags\n"
        for s in segments {
            out += "  \(s.type.padded(14)) \(s.offset.padded(12)) \(s.virtualAddress.padded(20)) \(s.physicalAddress.padded(12)) \(s.fileSize.padded(12)) \(s.memorySize.padded(12)) \(s.flags)\n"
        }
        return out
    }
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
    init(format2 value: UInt16) { self = String(value).leftPadded(2) }
}

import Foundation
import GuestMemory
import Testing
@testable import Loader

/// A real kernel: Debian's amd64 vmlinux, provided by `shared/tools/debian-vmlinux.sh`.
/// These tests fail (never skip) when the script cannot provide it, saying why.
///
/// What `readelf -n` shows for Debian's 6.1 kernel (one PT_NOTE over `.notes`): GUEST_OS "linux",
/// GUEST_VERSION "2.6", XEN_VERSION "xen-3.0", VIRT_BASE 0xffffffff80000000, INIT_P2M, ENTRY
/// (virtual startup_xen), FEATURES (41 bytes, no NUL), SUPPORTED_FEATURES, PAE_MODE "yes", LOADER
/// "generic", L1_MFN_VALID, SUSPEND_CANCEL, MOD_START_PFN, HV_START_LOW, PADDR_OFFSET 0, then GNU
/// and Linux notes, then PHYS32_ENTRY with an 8-byte desc. No HYPERCALL_PAGE (Linux dropped it
/// in 5.x), no PHYS32_RELOC (added after 6.1).
@Suite("Debian vmlinux", .serialized)
struct DebianVmlinuxTests {
    /// Runs the script and returns the path it prints, or records why it could not.
    static func vmlinuxPath() throws -> String {
        let testsDirectory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent()
        let packageRoot = testsDirectory.deletingLastPathComponent().deletingLastPathComponent()
        var candidates = [
            packageRoot.appendingPathComponent("shared/tools/debian-vmlinux.sh").path,
            packageRoot.deletingLastPathComponent().appendingPathComponent("shared/tools/debian-vmlinux.sh").path,
        ]
        if let override = ProcessInfo.processInfo.environment["SWIFTLET_DEBIAN_VMLINUX_SCRIPT"] { candidates.insert(override, at: 0) }
        guard let script = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) || FileManager.default.fileExists(atPath: $0) }) else {
            throw VmlinuxUnavailable(reason: "debian-vmlinux.sh not found; looked at \(candidates.joined(separator: ", "))")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stdout = String(decoding: outData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let stderr = String(decoding: errData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, let path = stdout.split(separator: "\n").last.map(String.init),
              FileManager.default.fileExists(atPath: path) else {
            throw VmlinuxUnavailable(reason: "\(script) exited with status \(process.terminationStatus) and printed no kernel path: "
                + (stderr.isEmpty ? "(no message)" : stderr))
        }
        return path
    }

    struct VmlinuxUnavailable: Error, CustomStringConvertible {
        let reason: String
        var description: String { "cannot get the Debian vmlinux: \(reason)" }
    }

    static func image() throws -> (KernelFile, ELFImage) {
        let file = try KernelFile.read(path: try vmlinuxPath())
        guard case let .elf(elf) = try KernelImage.parse(file) else {
            throw VmlinuxUnavailable(reason: "\(file.path) is not an ELF file")
        }
        return (file, elf)
    }

    @Test("Xen notes of a real kernel")
    func notes() throws {
        let (_, image) = try Self.image()
        #expect(image.elfClass == .elf64)
        #expect(image.machine == 62)
        #expect(image.notes.source == .programHeaders)

        let notes = image.notes
        let phys32 = try #require(notes.phys32Entry, "no PHYS32_ENTRY")
        let entry = try #require(notes.entry, "no ENTRY")
        #expect(notes.virtBase == 0xFFFF_FFFF_8000_0000)
        #expect(notes.paddrOffset == 0)
        #expect(notes.hypercallPage == nil)   // Linux stopped emitting it; check the assumption
        #expect(notes.guestOS == "linux")
        #expect(notes.features.contains(XenFeature(name: "writable_page_tables", required: true)))
        #expect(notes.features.contains(XenFeature(name: "pae_pgdir_above_4gb", required: false)))
        #expect(notes.features.allSatisfy { $0.bit != nil })
        #expect(notes.all.allSatisfy { $0.kind != nil })
        if case let .featureBitmap(words)? = notes.first(.supportedFeatures) {
            #expect(words.count == 1)
        } else {
            Issue.record("SUPPORTED_FEATURES missing or malformed")
        }

        // PHYS32_ENTRY lies inside a load segment at its physical address; ENTRY at its virtual one.
        let segments = image.loadSegments
        #expect(segments.contains { phys32 >= $0.physicalAddress && phys32 - $0.physicalAddress < $0.memorySize })
        #expect(segments.contains { entry >= $0.virtualAddress && entry - $0.virtualAddress < $0.memorySize })
        #expect(segments.contains { image.entry >= $0.physicalAddress && image.entry - $0.physicalAddress < $0.memorySize })
    }

    @Test("a real kernel selects PVH and loads")
    func selectsPVHAndLoads() throws {
        let (file, image) = try Self.image()
        let kernel = KernelImage.elf(image)
        let (chosen, reason) = try kernel.selectProtocol(nil)
        #expect(chosen == .pvh)
        #expect(reason.contains("PHYS32_ENTRY"))
        #expect(try kernel.selectProtocol(.xen64).0 == .xen64)
        #expect(try kernel.selectProtocol(.linux).0 == .linux)

        let memory = try GuestMemory(regions: [(0, 256 << 20)])
        let loaded = try kernel.load(into: memory, protocol: .pvh, floor: 0x10_0000, path: file.path)
        #expect(loaded.entry == image.notes.phys32Entry)
        let first = try #require(image.loadSegments.first)
        #expect(loaded.physicalStart == first.physicalAddress)
        let sample = Int(min(first.fileSize, 4096))
        #expect(try memory.read(at: GuestAddress(first.physicalAddress), count: sample)
                == Array(file.bytes[Int(first.offset)..<(Int(first.offset) + sample)]))

        let xen = try kernel.load(into: memory, protocol: .xen64, floor: 0x10_0000, path: file.path)
        #expect(xen.entry == image.notes.entry)
        #expect(xen.virtualBase == 0xFFFF_FFFF_8000_0000)
    }
}

import Foundation
import GuestMemory
import Testing
@testable import Loader

/// A real kernel: Debian's amd64 vmlinux, fetched from Debian's linux-image package by the
/// repository's `Linux/debian-kernel.sh` into its cache. These tests fail when the script fails,
/// and are skipped, saying why, only when the package cannot be downloaded here (status 3).
///
/// What `readelf -n` shows for Debian's 6.1 kernel (one PT_NOTE over `.notes`): GUEST_OS "linux",
/// GUEST_VERSION "2.6", XEN_VERSION "xen-3.0", VIRT_BASE 0xffffffff80000000, INIT_P2M, ENTRY
/// (virtual startup_xen), FEATURES (41 bytes, no NUL), SUPPORTED_FEATURES, PAE_MODE "yes", LOADER
/// "generic", L1_MFN_VALID, SUSPEND_CANCEL, MOD_START_PFN, HV_START_LOW, PADDR_OFFSET 0, then GNU
/// and Linux notes, then PHYS32_ENTRY with an 8-byte desc. No HYPERCALL_PAGE (Linux dropped it
/// in 5.x), no PHYS32_RELOC (added after 6.1).
/// `Linux/debian-kernel.sh`, run once per test process: its status, output and error text.
enum DebianKernelFetch {
    static let result: (status: Int32, stdout: String, stderr: String) = {
        let testsDirectory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent()
        let script = testsDirectory.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Linux/debian-kernel.sh")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script.path]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { return (-1, "", "cannot run \(script.path): \(error)") }
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stderr = String(decoding: errData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if process.terminationStatus == 3 { print("skipping the Debian vmlinux tests: \(stderr)") }
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), stderr)
    }()

    /// The vmlinux path, or an error saying why the script gave none.
    static func vmlinuxPath() throws -> String {
        let folder = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last.map(String.init) ?? ""
        let path = folder + "/vmlinux"
        guard result.status == 0, FileManager.default.fileExists(atPath: path) else {
            throw VmlinuxUnavailable(reason: "Linux/debian-kernel.sh exited with status \(result.status) and printed no kernel folder: "
                + (result.stderr.isEmpty ? "(no message)" : result.stderr))
        }
        return path
    }

    struct VmlinuxUnavailable: Error, CustomStringConvertible {
        let reason: String
        var description: String { "cannot get the Debian vmlinux: \(reason)" }
    }

}

@Suite("Debian vmlinux", .serialized, .enabled("Debian's kernel package cannot be downloaded here") { DebianKernelFetch.result.status != 3 })
struct DebianVmlinuxTests {
    static func image() throws -> (KernelFile, ELFImage) {
        let file = try KernelFile.read(path: try DebianKernelFetch.vmlinuxPath())
        guard case let .elf(elf) = try KernelImage.parse(file) else {
            throw DebianKernelFetch.VmlinuxUnavailable(reason: "\(file.path) is not an ELF file")
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

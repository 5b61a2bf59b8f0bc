import DemoGuest
import Foundation
import Testing

@Suite("Demo guest")
struct DemoGuestTests {
    /// The bytes embedded in the binary are exactly what Guests/demo builds to.
    @Test func embeddedBytesAreReproducibleFromSource() throws {
        let built = try Data(contentsOf: Harness.builtGuests().demo)
        #expect(!demoGuestImage.isEmpty)
        #expect([UInt8](built) == demoGuestImage,
                "Sources/DemoGuest/DemoGuestImage.swift is stale: run Guests/gen-demo.sh")
    }

    @Test(.enabled(if: Harness.kvmAvailable, Harness.kvmComment),
          arguments: [("128M", "128", "console=ttyS0", nil), ("5G", "5120", "quiet", "quiet"), ("64M", "64", "(none)", "")])
    func greetsWithItsBootFacts(memory: String, mib: String, shown: String, cmdline: String?) {
        var args = ["run", "--no-stdin", "--memory", memory]
        if let cmdline { args += ["--cmdline", cmdline] }
        let result = Harness.swiftlet(args)
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty)
        #expect(result.stdout == """
            Hello from the Swiftlet demo guest!
              booted by: PVH (hvm_start_info v1)
              memory:    \(mib) MiB
              cmdline:   \(shown)

            """)
    }
}

@Suite("inspect")
struct InspectTests {
    /// A 64-bit kernel in an ELF32 container (objcopy -O elf32-x86-64, as XTF ships its tests)
    /// is read, shown and chosen to boot by PVH; `auto` turns Xen on for it (it declares features).
    @Test func elf32ContainerOf64BitCode() throws {
        let result = Harness.swiftlet(["inspect", try Harness.builtGuests().xenhvm64ELF32.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains(": ELF32 x86-64\n"))
        #expect(result.stdout.contains("Boot protocol: pvh"))
        #expect(result.stdout.contains("Xen interface with --xen auto: on"))
        let ticker = Harness.swiftlet(["inspect", try Harness.builtGuests().ticker.path])
        #expect(ticker.stdout.contains("Xen interface with --xen auto: off"))
    }

    @Test func probeText() throws {
        let result = Harness.swiftlet(["inspect", try Harness.builtGuests().probe.path])
        #expect(result.status == 0)
        let text = result.stdout
        #expect(text.contains("ELF64 x86-64"))
        #expect(text.contains("Boot protocol: pvh — has XEN_ELFNOTE_PHYS32_ENTRY"))
        for line in ["GUEST_OS             \"swiftlet-probe\"", "VIRT_BASE            0xffffffff80000000",
                     "PADDR_OFFSET         0x0", "PHYS32_ENTRY         0x", "ENTRY                0xffffffff80",
                     "FEATURES             !writable_page_tables (bit 0), auto_translated_physmap (bit 2), supervisor_mode_kernel (bit 3)",
                     "SUPPORTED_FEATURES   0xd", "SUSPEND_CANCEL       0x1", "PAE_MODE             \"yes\""] {
            #expect(text.contains(line), "missing: \(line)")
        }
        #expect(text.contains("ELF e_entry                                0x100200"))
        #expect(text.contains("LOAD ") && text.contains("NOTE "))
    }

    @Test func probeJSON() throws {
        let result = Harness.swiftlet(["inspect", "--json", try Harness.builtGuests().probe.path])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let boot = try #require(object["bootProtocol"] as? [String: Any])
        #expect(boot["name"] as? String == "pvh")
        let notes = try #require(object["notes"] as? [[String: Any]])
        #expect(Set(notes.compactMap { $0["name"] as? String }).isSuperset(of: ["PHYS32_ENTRY", "ENTRY", "VIRT_BASE", "GUEST_OS"]))
        let protocols = try #require(object["protocols"] as? [String: [String: Any]])
        #expect(protocols["xen64"]?["name"] as? String == "xen64")
        #expect(protocols["linux"]?["name"] as? String == "linux")
    }

    @Test func bzImageText() throws {
        let result = Harness.swiftlet(["inspect", try Harness.builtGuests().probeBzImage.path])
        #expect(result.status == 0)
        #expect(result.stdout.contains("bzImage (boot protocol 2.15)"))
        #expect(result.stdout.contains("Boot protocol: linux"))
        #expect(result.stdout.contains("64-bit entry (load address + 0x200)        0x100200"))
    }

    /// A real Debian vmlinux: its Xen notes by name, PHYS32_ENTRY among them, and PVH chosen.
    @Test(.enabled("Debian's kernel package cannot be downloaded here") { LinuxFixtures.debianKernel.isAvailable })
    func debianVmlinux() throws {
        let path = try LinuxFixtures.debianKernel.get().appendingPathComponent("vmlinux").path
        let result = Harness.swiftlet(["inspect", path])
        #expect(result.status == 0, "\(result.stderr)")
        for name in ["GUEST_OS             \"linux\"", "XEN_VERSION          \"xen-3.0\"", "VIRT_BASE            0xffffffff80000000",
                     "ENTRY                0xffffffff8", "PHYS32_ENTRY         0x1", "FEATURES             !writable_page_tables",
                     "HV_START_LOW", "L1_MFN_VALID", "SUSPEND_CANCEL", "MOD_START_PFN", "INIT_P2M", "PADDR_OFFSET"] {
            #expect(result.stdout.contains(name), "missing: \(name)")
        }
        #expect(result.stdout.contains("Boot protocol: pvh — has XEN_ELFNOTE_PHYS32_ENTRY"))
    }
}

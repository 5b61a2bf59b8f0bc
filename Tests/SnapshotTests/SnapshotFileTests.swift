import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Snapshot

@Suite("snapshot file")
struct SnapshotFileTests {
    static let state = MachineState(
        swiftletVersion: "0.9.0",
        host: .init(cpuVendor: "GenuineIntel", cpuid: [.init(function: 0, index: 0, flags: 0, eax: 0xD, ebx: 1, ecx: 2, edx: 3)]),
        snapshotType: "Full",
        memory: .init(size: 128 << 20, regions: [.init(guestAddress: 0, size: 128 << 20, fileOffset: 0)]),
        configuration: .init(cpus: 2, bootCPU: 0, memorySize: 128 << 20, xen: false, trackDirtyPages: false,
                             virtio: [.init(kind: "block", parameters: ["path": "/images/root.img", "id": "root"])]),
        vcpus: [.init(id: 0, kvm: ["regs": Bytes([1, 2, 3]), "lapic": Bytes([UInt8](repeating: 7, count: 1024))],
                      msrs: [.init(index: 0x10, value: 12345)], mpState: 0, runState: "Running")],
        vm: .init(irqchips: [Bytes([0]), Bytes([1]), Bytes([2])], pit: Bytes([9]), clock: Bytes([8])),
        devices: .init(serial: .init(registers: ["lcr": 3], receiveFIFO: Bytes(Array("hi".utf8))),
                       firmwareConfig: .init(selector: 5, offset: 1),
                       virtio: [.init(status: 15, deviceFeaturesSel: 1, driverFeaturesSel: 1, driverFeatures: 1 << 32, queueSel: 0,
                                      interruptStatus: 1, configGeneration: 0, activated: true,
                                      queues: [.init(size: 256, descriptorTable: 0x1000, availableRing: 0x2000, usedRing: 0x3000,
                                                     ready: true, nextAvailable: 17, nextUsed: 17, signalledUsed: 16)])]))

    @Test func roundTrip() throws {
        let bytes = try SnapshotFile.encode(Self.state)
        #expect(bytes.starts(with: Array("SWLTSNAP".utf8)))
        #expect(try SnapshotFile.decode(bytes, path: "s") == Self.state)
    }

    @Test func crc32IsZlibs() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    enum Damage: String, CaseIterable, Sendable {
        case empty, short, foreign, truncated, extra, version, corrupted, hugeLength

        func apply(_ b: [UInt8]) -> [UInt8] {
            var c = b
            switch self {
            case .empty: return []
            case .short: return Array(b.prefix(10))
            case .foreign: return Array("ELF".utf8) + b
            case .truncated: return Array(b.dropLast(100))
            case .extra: return b + [0]
            case .version: c[8] = 2
            case .corrupted: c[40] ^= 1
            case .hugeLength: c[23] = 0x7F
            }
            return c
        }

        var message: String {
            switch self {
            case .empty: "the file is empty"
            case .foreign: "not a Swiftlet snapshot"
            case .short: "truncated: 10 bytes"
            case .truncated: "truncated:"
            case .extra: "1 bytes after the end"
            case .version: "format version 2; this Swiftlet reads version 1"
            case .corrupted: "checksum does not match"
            case .hugeLength: "larger than any snapshot's"
            }
        }
    }

    @Test(arguments: Damage.allCases)
    func badFilesAreRefusedNamingTheProblem(_ damage: Damage) throws {
        let bytes = damage.apply(try SnapshotFile.encode(Self.state))
        do {
            _ = try SnapshotFile.decode(bytes, path: "/snaps/vm.snap")
            Issue.record("\(damage): decoded")
        } catch {
            #expect(error.description.hasPrefix("/snaps/vm.snap: "), "\(error)")
            #expect(error.description.contains(damage.message), "\(damage): \(error)")
        }
    }

    @Test func aStateThatDoesNotDecodeNamesTheField() throws {
        // A valid frame around JSON with a field missing: the checksum is right, the state is not.
        let body = Array(#"{"swiftletVersion": "1"}"#.utf8)
        var bytes = SnapshotFile.magic
        SnapshotFile.append(&bytes, UInt32(1)); SnapshotFile.append(&bytes, UInt32(0)); SnapshotFile.append(&bytes, UInt64(body.count))
        bytes += body
        SnapshotFile.append(&bytes, CRC32.checksum(bytes))
        #expect(throws: SnapshotError.self) { try SnapshotFile.decode(bytes, path: "x") }
        do { _ = try SnapshotFile.decode(bytes, path: "x") } catch {
            #expect(error.problem.contains("missing field"), "\(error)")
        }
    }

    @Test func memoryFileSize() {
        let memory = MachineState.Memory(size: 4 << 30, regions: [.init(guestAddress: 0, size: 3 << 30, fileOffset: 0),
                                                                 .init(guestAddress: 4 << 30, size: 1 << 30, fileOffset: 3 << 30)])
        #expect(memory.fileSize == 4 << 30)
    }
}

@Suite("snapshot fuzz seeds")
struct SnapshotSeedTests {
    /// The fuzz target's "full" seed (Fuzz/make-corpus.py writes it in Python) is a snapshot this
    /// decoder reads: the fuzzer starts from the success path.
    @Test func theFullSeedDecodes() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/snapshot/full").path
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let state = try SnapshotFile.decode(bytes, path: path)
        #expect(state.vcpus.first?.kvm["lapic"]?.bytes.count == 1024)
        #expect(state.devices.virtio.first?.queues.first?.nextAvailable == 17)
    }
}

@Suite("snapshot files on disk")
struct SnapshotReadTests {
    @Test func readingNamesTheFile() throws {
        #expect(throws: SnapshotError(path: "/nonexistent.snap", problem: "cannot read the snapshot: No such file or directory")) {
            try SnapshotFile.read(path: "/nonexistent.snap")
        }
        let path = "/tmp/swiftlet-snap-\(getpid())"
        let bytes = try SnapshotFile.encode(SnapshotFileTests.state)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        defer { unlink(path) }
        #expect(try SnapshotFile.read(path: path) == SnapshotFileTests.state)
    }
}

import Devices
import GuestMemory
import KVM
import Logging
import Snapshot
import Virtio
import X86
#if canImport(Glibc)
import Glibc
#endif

/// Firecracker's snapshot types.
public enum SnapshotKind: String, Sendable {
    /// All of guest memory.
    case full = "Full"
    /// Only the pages written since the last snapshot (needs `trackDirtyPages`).
    case diff = "Diff"
}

extension VirtioDeviceSpec {
    /// The spec as a snapshot records it.
    var saved: MachineState.VirtioSpec {
        switch self {
        case let .block(path, readOnly, id, root):
            .init(kind: "block", parameters: ["path": path, "read_only": readOnly ? "1" : "0", "id": id, "root": root ? "1" : "0"])
        case .entropy: .init(kind: "entropy")
        case let .net(tap, mac, id):
            .init(kind: "net", parameters: ["tap": tap, "id": id].merging(mac.map { ["mac": $0.map { String($0, radix: 16) }.joined(separator: ":")] } ?? [:]) { a, _ in a })
        case let .vsock(cid, path): .init(kind: "vsock", parameters: ["cid": String(cid), "uds_path": path])
        case .console: .init(kind: "console")
        }
    }

    /// A recorded spec back; nil (with the snapshot's path in the caller's error) if it is not one.
    init?(saved: MachineState.VirtioSpec) {
        let p = saved.parameters
        switch saved.kind {
        case "block":
            guard let path = p["path"], let id = p["id"] else { return nil }
            self = .block(path: path, readOnly: p["read_only"] == "1", id: id, root: p["root"] == "1")
        case "entropy": self = .entropy
        case "net":
            guard let tap = p["tap"], let id = p["id"] else { return nil }
            let mac = p["mac"].flatMap { text in
                let bytes = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
                return bytes.count == 6 ? bytes : nil
            }
            self = .net(tap: tap, mac: mac, id: id)
        case "vsock":
            guard let cid = p["cid"].flatMap(UInt64.init), let path = p["uds_path"] else { return nil }
            self = .vsock(cid: cid, udsPath: path)
        case "console": self = .console
        default: return nil
        }
    }
}

extension Machine {
    /// The CPU vendor in CPUID leaf 0 ("GenuineIntel", "AuthenticAMD", ...).
    static func vendor(_ cpuid: [CPUIDEntry]) -> String {
        guard let leaf = cpuid.first(where: { $0.function == 0 }) else { return "unknown" }
        let bytes = [leaf.ebx, leaf.edx, leaf.ecx].flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * UInt32($0))) } }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Saves the paused VM (Firecracker's `PUT /snapshot/create`): its state to `statePath`, guest
    /// memory to `memoryPath` (all of it, or for `.diff` the pages written since the last
    /// snapshot, each at its place in a file of the full size). The VM stays paused.
    public func createSnapshot(statePath: String, memoryPath: String, kind: SnapshotKind,
                               swiftletVersion: String) throws(MachineError) {
        guard state == .paused else {
            throw .configuration("a snapshot needs a paused VM (it is \(state.rawValue)); PATCH /vm {\"state\": \"Paused\"} first")
        }
        guard !xenEnabled else {
            throw .configuration("snapshots of a VM with the Xen-style interface are not supported yet")
        }
        if kind == .diff && !configuration.trackDirtyPages {
            throw .configuration("a Diff snapshot needs dirty-page tracking: set track_dirty_pages in the machine configuration")
        }
        let state = try captureState(kind: kind, swiftletVersion: swiftletVersion)
        try writeMemory(to: memoryPath, kind: kind, layout: state.memory)
        let bytes: [UInt8]
        do { bytes = try SnapshotFile.encode(state) } catch { throw .configuration("\(statePath): cannot encode the state: \(error)") }
        try Self.writeFile(bytes, to: statePath)
    }

    func captureState(kind: SnapshotKind, swiftletVersion: String) throws(MachineError) -> MachineState {
        var vcpuStates: [MachineState.VCPU] = []
        do {
            let indices = try system.savedMSRIndices()
            for slot in slots {
                let vcpu = slot.vcpu
                var kvm: [String: Bytes] = [:]
                for part in KVMState.perVCPU { kvm[part.rawValue] = Bytes(try vcpu.save(part)) }
                vcpuStates.append(.init(id: vcpu.id, kvm: kvm, msrs: try Self.readableMSRs(vcpu, indices),
                                        mpState: try vcpu.mpState()?.rawValue ?? 0,
                                        runState: slot.parked.load(ordering: .acquiring) ? "Parked" : "Running",
                                        tscKHz: try? vcpu.tscKHz()))
            }
            var irqchips: [Bytes] = []
            for chip: UInt32 in 0..<3 { irqchips.append(Bytes(try vm.save(.irqchip, chip: chip))) }
            let vmState = MachineState.VM(irqchips: irqchips, pit: Bytes(try vm.save(.pit2)), clock: Bytes(try vm.save(.clock)))
            var offset: UInt64 = 0
            let regions = memory.regions.map { region -> MachineState.Region in
                defer { offset += region.size }
                return .init(guestAddress: region.start.rawValue, size: region.size, fileOffset: offset)
            }
            let saved = serial.savedState
            let cursor = firmwareConfig.savedState
            let devices = MachineState.Devices(
                serial: .init(registers: saved.registers, receiveFIFO: Bytes(saved.receiveFIFO)),
                firmwareConfig: .init(selector: cursor.selector, offset: cursor.offset),
                virtio: transports.map { transport in
                    let t = transport.savedState
                    return .init(status: t.status, deviceFeaturesSel: t.deviceFeaturesSel, driverFeaturesSel: t.driverFeaturesSel,
                                 driverFeatures: t.driverFeatures, queueSel: t.queueSel, interruptStatus: t.interruptStatus,
                                 configGeneration: t.configGeneration, activated: t.activated,
                                 queues: t.queues.map { q in
                                     let place = q.position
                                     return .init(size: q.size, descriptorTable: q.descriptorTable, availableRing: q.availableRing,
                                                  usedRing: q.usedRing, ready: q.ready, nextAvailable: place.nextAvailable,
                                                  nextUsed: place.nextUsed, signalledUsed: place.signalledUsed)
                                 })
                })
            return MachineState(
                swiftletVersion: swiftletVersion,
                host: .init(cpuVendor: Self.vendor(cpuid), cpuid: cpuid.map {
                    .init(function: $0.function, index: $0.index, flags: $0.flags, eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx)
                }),
                snapshotType: kind.rawValue,
                memory: .init(size: memory.size, regions: regions),
                configuration: .init(cpus: configuration.cpus, bootCPU: configuration.bootCPU, memorySize: configuration.memorySize,
                                     xen: xenEnabled, trackDirtyPages: configuration.trackDirtyPages,
                                     virtio: configuration.virtio.map(\.saved),
                                     commandLine: String(decoding: configuration.commandLine, as: UTF8.self),
                                     bootProtocol: bootProtocol.rawValue),
                vcpus: vcpuStates, vm: vmState, devices: devices)
        } catch { throw .kvm(error) }
    }

    /// Every MSR of `indices` that KVM will read for this vCPU (`KVM_GET_MSRS` stops at the
    /// first it refuses: that one is left out and the rest read on).
    static func readableMSRs(_ vcpu: VCPU, _ indices: [UInt32]) throws(KVMError) -> [MachineState.MSR] {
        var result: [MachineState.MSR] = []
        var rest = indices[...]
        while !rest.isEmpty {
            let values = try vcpu.msrs(Array(rest))
            for (index, value) in zip(rest, values) { result.append(.init(index: index, value: value)) }
            rest = rest.dropFirst(values.count + 1)   // the one after those read was refused
        }
        return result
    }

    func writeMemory(to path: String, kind: SnapshotKind, layout: MachineState.Memory) throws(MachineError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .configuration("\(path): cannot write the memory file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(layout.fileSize)) == 0 else {
            throw .configuration("\(path): cannot size the memory file: \(String(cString: strerror(errno)))")
        }
        for (index, region) in layout.regions.enumerated() {
            var result: Int
            if configuration.trackDirtyPages {
                // Reading the log clears it: a full snapshot starts the next diff's count too.
                let bitmap: [UInt64]
                do { bitmap = try vm.dirtyPages(slot: UInt32(index), pages: Int(region.size / 4096)) } catch { throw .kvm(error) }
                result = kind == .diff ? memory.writePages(of: index, bitmap: bitmap, to: fd, offset: Int64(region.fileOffset))
                                       : memory.writeRegion(index, to: fd, offset: Int64(region.fileOffset))
            } else {
                result = memory.writeRegion(index, to: fd, offset: Int64(region.fileOffset))
            }
            if result < 0 { throw .configuration("\(path): writing guest memory failed: \(String(cString: strerror(Int32(-result))))") }
        }
    }

    /// Writes `bytes` to `path` whole or not at all (a temporary file renamed over it).
    static func writeFile(_ bytes: [UInt8], to path: String) throws(MachineError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .configuration("\(path): cannot write the snapshot: \(String(cString: strerror(errno)))") }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n <= 0 {
                let code = errno
                close(fd); unlink(temporary)
                throw .configuration("\(path): cannot write the snapshot: \(String(cString: strerror(code)))")
            }
            done += n
        }
        fsync(fd)
        close(fd)
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw .configuration("\(path): cannot write the snapshot: \(String(cString: strerror(errno)))")
        }
    }
}

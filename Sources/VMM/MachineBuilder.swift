import Devices
import GuestMemory
import Hypercalls
import KVM
import Loader
import Logging
import Virtio
import X86

/// The phases that build a `Machine`, each a function of what the earlier ones made, so that
/// another entry (restoring a snapshot: memory from a file, no boot structures, vCPU state from
/// the snapshot) can reuse the ones it needs in its own order. `Machine.init` runs them all:
///
/// 1. `checkConfiguration`, `kernel`: the configuration rules, the kernel parsed, its protocol chosen;
/// 2. `guestMemory`: the RAM regions (anonymous, not yet touched);
/// 3. `bootStructures`: the kernel and initrd loaded, the boot information, the ACPI tables, the
///    hypercall page (every input error is found here, before /dev/kvm is opened);
/// 4. `virtualMachine`: /dev/kvm, the VM, its TSS, the in-kernel irqchip and PIT, the boot vCPU id;
/// 5. `cpuid` and `writeMPTable`: what every vCPU's CPUID says, and the MP table that reports it;
/// 6. `registerMemory`: the RAM regions as KVM memory slots;
/// 7. `devices`: the port and MMIO buses and the devices on them;
/// 8. `vcpus`: every vCPU with its CPUID, MSRs, FPU and LAPIC; the boot vCPU's registers.
enum MachineBuilder {
    /// The parsed kernel and the protocol it boots by.
    struct Kernel {
        let image: KernelImage
        let `protocol`: BootProtocol
        let reason: String

        /// The command line the guest sees: a Multiboot kernel given the CLI's default gets none.
        /// Other kernels get a `virtio_mmio.device=` word per virtio device (as Firecracker
        /// appends them) and `root=/dev/vdX` for a root drive.
        func guestCommandLine(_ configuration: MachineConfiguration) -> [UInt8] {
            if `protocol` == .multiboot { return configuration.commandLineIsDefault ? [] : configuration.commandLine }
            var words = VirtioWindow.allocate(configuration.virtio.count).map(\.kernelParameter)
            var disk = 0
            for spec in configuration.virtio {
                guard case let .block(_, _, _, root) = spec else { continue }
                if root { words.append("root=/dev/\(VirtioDeviceSpec.diskName(disk))") }
                disk += 1
            }
            guard !words.isEmpty else { return configuration.commandLine }
            let joined = Array(words.joined(separator: " ").utf8)
            return configuration.commandLine.isEmpty ? joined : configuration.commandLine + [0x20] + joined
        }
    }

    /// The virtio devices, made before /dev/kvm is opened (a drive that cannot be opened is an
    /// input error), with their windows and pins.
    struct VirtioSet {
        let devices: [any VirtioDevice]
        let windows: [VirtioWindow]
    }

    /// The devices of the port and MMIO buses, and the ones the VMM talks to.
    struct DeviceSet {
        let ports: Bus
        let mmio: Bus
        let serial: Serial16550
        let keyboard: I8042
        /// The block devices by drive id, with their transports (for `PATCH /drives`).
        let drives: [String: (device: BlockDevice, transport: MMIOTransport)]
        /// One per virtio device, in window order.
        let workers: [VirtioWorker]
        let transports: [MMIOTransport]
        let firmwareConfig: FirmwareConfig
        let console: ConsoleDevice?
    }

    /// A device type's name in thread names and logs.
    static func shortName(_ deviceID: UInt32) -> String {
        switch deviceID {
        case 1: "net"
        case 2: "blk"
        case 3: "console"
        case 4: "rng"
        case 19: "vsock"
        default: "dev\(deviceID)"
        }
    }

    static func checkConfiguration(_ configuration: MachineConfiguration) throws(MachineError) {
        do throws(ConfigurationError) {
            try ConfigurationRules.check(memoryBytes: configuration.memorySize, cpus: configuration.cpus,
                                         bootCPU: configuration.bootCPU, mpTable: configuration.mpTable)
        } catch {
            let value = switch error.field {
            case .memory: "\(configuration.memorySize >> 10)K"
            case .cpus: "\(configuration.cpus)"
            case .bootCPU: "\(configuration.bootCPU)"
            }
            throw .configuration(error.commandLineMessage(value: value))
        }
    }

    static func kernel(_ configuration: MachineConfiguration) throws(MachineError) -> Kernel {
        do {
            let image = try KernelImage.parse(configuration.kernel)
            let (chosen, reason) = try image.selectProtocol(configuration.bootProtocol)
            return Kernel(image: image, protocol: chosen, reason: reason)
        } catch { throw .loader(error) }
    }

    static func virtioDevices(_ configuration: MachineConfiguration) throws(MachineError) -> VirtioSet {
        guard configuration.virtio.count <= Layout.virtioIRQs.count else {
            throw .configuration("\(configuration.virtio.count) virtio devices: at most \(Layout.virtioIRQs.count) fit the interrupt pins Swiftlet gives them")
        }
        var devices: [any VirtioDevice] = []
        for spec in configuration.virtio {
            switch spec {
            case let .block(path, readOnly, id, _):
                do { devices.append(try BlockDevice(path: path, readOnly: readOnly, id: id)) } catch {
                    throw .configuration("--drive \(error.description)")
                }
            case .entropy:
                devices.append(EntropyDevice())
            case let .net(tap, mac, id):
                do { devices.append(try NetDevice(tap: tap, mac: mac, id: id)) } catch {
                    throw .configuration("--net \(id): \(error.description)")
                }
            case let .vsock(cid, path):
                do { devices.append(try VsockDevice(guestCID: cid, udsPath: path)) } catch {
                    throw .configuration("--vsock: \(error.description)")
                }
            case .console:
                devices.append(ConsoleDevice(output: configuration.serialOutput))
            }
        }
        return VirtioSet(devices: devices, windows: VirtioWindow.allocate(devices.count))
    }

    static func guestMemory(size: UInt64) throws(MachineError) -> GuestMemory {
        do { return try GuestMemory(regions: Layout.ramRegions(size: size)) } catch { throw .memory(error) }
    }

    /// Loads the kernel (and the hypercall page a xen64 kernel's note asks for), then writes the
    /// boot information and ACPI tables. Returns the boot vCPU's state and the kernel's entry.
    static func bootStructures(_ configuration: MachineConfiguration, kernel: Kernel, xen: Bool, virtio: [VirtioWindow],
                               in memory: GuestMemory) throws(MachineError) -> (BootState, entry: UInt64) {
        let loaded: LoadedKernel
        do {
            loaded = try kernel.image.load(into: memory, protocol: kernel.protocol, floor: Layout.kernelFloor,
                                           path: configuration.kernel.path)
        } catch { throw .loader(error) }
        if xen, kernel.protocol == .xen64, case let .elf(elf) = kernel.image, let page = elf.notes.hypercallPage {
            let physical = loaded.virtualBase != 0 && page >= loaded.virtualBase ? page - loaded.virtualBase : page
            guard physical % 4096 == 0, memory.contains(GuestAddress(physical), length: 4096) else {
                throw .configuration("\(configuration.kernel.path): XEN_ELFNOTE_HYPERCALL_PAGE 0x\(String(page, radix: 16)) is not a page-aligned address in guest RAM")
            }
            do { try memory.write(HypercallPage.bytes(longMode: true), at: GuestAddress(physical)) } catch { throw .memory(error) }
        }
        // Multiboot: the command line starts with the kernel's path, as GRUB and QEMU pass it, and
        // the initrd is module 0 (its string is its path), followed by the --module files.
        let guestCommandLine = kernel.guestCommandLine(configuration)
        var boot = BootConfiguration(protocol: kernel.protocol, kernel: loaded, memorySize: configuration.memorySize,
                                     commandLine: guestCommandLine, initrd: configuration.initrd?.bytes)
        if kernel.protocol == .multiboot {
            boot.commandLine = Array(configuration.kernel.path.utf8) + (guestCommandLine.isEmpty ? [] : [0x20] + guestCommandLine)
            boot.initrd = nil
            boot.modules = (configuration.initrd.map { [($0, $0.path)] } ?? []).map { BootModule(bytes: $0.0.bytes, string: $0.1) }
                + configuration.modules.map { BootModule(bytes: $0.file.bytes, string: $0.string) }
        } else if let first = configuration.modules.first {
            throw .configuration("--module \(first.file.path): modules are for Multiboot kernels; this kernel boots by "
                + "\(kernel.protocol.rawValue) (\(kernel.reason)); pass one file as --initrd instead")
        }
        if case let .bzImage(bz) = kernel.image {
            boot.kernelCommandLineLimit = bz.version >= 0x0206 ? Int(bz.cmdlineSize) : 255
            boot.initrdCeiling = UInt64(bz.initrdAddressMax) + 1
        } else if kernel.protocol == .linux {
            boot.initrdCeiling = 0x8000_0000
        }
        if configuration.acpi {
            var acpi = ACPI(cpus: configuration.cpus, bootCPU: configuration.bootCPU)
            acpi.virtioDevices = virtio
            boot.acpi = acpi
        }
        // Everything but the MP table, which needs KVM's CPUID (`writeMPTable`).
        do { return (try BootSetup.prepare(boot, in: memory), loaded.entry) } catch { throw .boot(error) }
    }

    /// /dev/kvm, the VM, its interrupt controllers and PIT, the boot vCPU, and (Xen) MSR exits.
    static func virtualMachine(_ configuration: MachineConfiguration, kvmPath: String,
                               xen: Bool) throws(MachineError) -> (system: KVMSystem, vm: VirtualMachine) {
        do {
            let system = try KVMSystem(path: kvmPath)
            let limit = system.maxVCPUs
            guard (1...limit).contains(configuration.cpus) else {
                throw MachineError.configuration("--cpus \(configuration.cpus) is out of range: this KVM allows 1 to \(limit)")
            }
            let vm = try system.createVM()
            try vm.setTSSAddress(Layout.kvmTSS)
            try vm.createInterruptController()
            try vm.createPIT()
            if configuration.bootCPU != 0 { try vm.setBootCPU(configuration.bootCPU) }
            if xen {
                // Unknown and invalid MSR accesses come to userspace: the hypercall-page MSR is one.
                try vm.enable(.userSpaceMSR, arguments: [Machine.msrExitInvalid | Machine.msrExitUnknown])
            }
            return (system, vm)
        } catch let error as KVMError {
            throw .kvm(error)
        } catch let error as MachineError {
            throw error
        } catch {
            throw .configuration("\(error)")
        }
    }

    /// KVM's supported CPUID with Xen's leaves (if on) and the CPU template applied.
    static func cpuid(_ configuration: MachineConfiguration, system: KVMSystem, xen: Bool) throws(MachineError) -> [CPUIDEntry] {
        var supported: [CPUIDEntry]
        do { supported = try system.supportedCPUID() } catch { throw .kvm(error) }
        if xen {
            // Xen's leaves replace KVM's own signature at the hypervisor base.
            supported.removeAll { $0.function >= XenABI.cpuidBase && $0.function < XenABI.cpuidBase + 0x100 }
            supported += XenABI.cpuidLeaves.map { CPUIDEntry(function: $0.function, eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx) }
        }
        if let template = configuration.cpuTemplate {   // before the per-vCPU fields (CPUIDTemplate.entries)
            do { supported = try Machine.templatedCPUID(supported, template: template, system: system) } catch { throw .cpuTemplate(error) }
        }
        return supported
    }

    /// The MP table, which reports the boot vCPU's CPUID signature and features.
    static func writeMPTable(_ configuration: MachineConfiguration, cpuid: [CPUIDEntry], in memory: GuestMemory) throws(MachineError) {
        let leaf1 = CPUIDTemplate.entries(from: cpuid, apicID: 0, count: configuration.cpus).first { $0.function == 1 }
        let table = MPTable(cpus: configuration.cpus, bootCPU: configuration.bootCPU,
                            cpuSignature: (leaf1?.eax ?? 0) & 0xFFF, featureFlags: leaf1?.edx ?? 0)
        do { try BootSetup.write(table, in: memory) } catch { throw .memory(error) }
    }

    static func registerMemory(_ memory: GuestMemory, with vm: VirtualMachine, trackDirtyPages: Bool = false) throws(MachineError) {
        do {
            for (slot, region) in memory.regions.enumerated() {
                try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: region.start.rawValue,
                                       size: region.size, hostAddress: region.hostAddress, logDirtyPages: trackDirtyPages)
            }
        } catch { throw .kvm(error) }
    }

    /// The devices; their interrupts go through the in-kernel PIC/IOAPIC.
    static func devices(_ configuration: MachineConfiguration, vm: VirtualMachine, commandLine: [UInt8],
                        virtio: VirtioSet, memory: GuestMemory, logger: Logger) throws(MachineError) -> DeviceSet {
        let serial = Serial16550(output: configuration.serialOutput, interruptLine: { high in
            try? vm.setInterruptLine(Serial16550.com1IRQ, high: high)
        })
        let firmwareConfig = FirmwareConfig(items: FirmwareConfig.items(
            cpus: configuration.cpus, ramBytes: configuration.memorySize, commandLine: commandLine))
        let keyboard = I8042(keyboardInterruptLine: { high in
            try? vm.setInterruptLine(I8042.keyboardIRQ, high: high)
        })
        var portDevices: [(base: UInt64, length: UInt64, device: any BusDevice)] = [
            (Serial16550.com1Port, Serial16550.registerCount, serial),
            (DebugExitPort.defaultPort, DebugExitPort.width, DebugExitPort()),
            (PowerOffPort.defaultPort, PowerOffPort.width, PowerOffPort()),
            (CheckpointPort.defaultPort, CheckpointPort.width, CheckpointPort()),
            (I8042.dataPort, I8042.commandPort - I8042.dataPort + 1, keyboard),
            (FirmwareConfig.selectorPort, FirmwareConfig.width, firmwareConfig),
        ]
        if configuration.acpi {   // the FADT's sleep control/status registers
            portDevices.append((ACPI.sleepControlPort, 2, SleepControlPort(poweroffSleepType: ACPI.s5SleepType)))
        }
        // virtio-mmio: register accesses exit to the vCPU that makes them; notifications and
        // interrupts go through eventfds that KVM serves, and each device works on its own thread.
        var drives: [String: (device: BlockDevice, transport: MMIOTransport)] = [:]
        var workers: [VirtioWorker] = []
        var transports: [MMIOTransport] = []
        var mmioDevices: [(base: UInt64, length: UInt64, device: any BusDevice)] = []
        for (index, (device, window)) in zip(virtio.devices, virtio.windows).enumerated() {
            let worker: VirtioWorker
            do {
                worker = try VirtioWorker(name: "virtio\(index)-\(Self.shortName(device.deviceID))",
                                          queues: device.queueMaxSizes.count, window: window, vm: vm, logger: logger)
            } catch { throw .configuration(error.description) }
            let transport = MMIOTransport(device: device, memory: memory, logger: logger,
                                          notify: worker.notify, interrupt: worker.interrupt)
            do { try worker.attach(transport) } catch { throw .configuration(error.description) }
            workers.append(worker)
            transports.append(transport)
            if let block = device as? BlockDevice { drives[block.id] = (block, transport) }
            mmioDevices.append((window.base, Layout.virtioSlotSize, VirtioMMIODevice(transport)))
        }
        do {
            return DeviceSet(ports: try Bus(.port, devices: portDevices, logger: logger),
                             mmio: try Bus(.mmio, devices: mmioDevices, logger: logger), serial: serial, keyboard: keyboard,
                             drives: drives, workers: workers, transports: transports, firmwareConfig: firmwareConfig, console: virtio.devices.lazy.compactMap { $0 as? ConsoleDevice }.first)
        } catch { throw .configuration(error.description) }
    }

    /// Every vCPU: CPUID, MSRs, FPU, LAPIC; registers only for the boot vCPU. The others stay
    /// UNINITIALIZED until the guest sends INIT-SIPI-SIPI. Then the template's MSR modifiers.
    static func vcpus(_ configuration: MachineConfiguration, vm: VirtualMachine, cpuid: [CPUIDEntry],
                      boot: BootState) throws(MachineError) -> [VCPU] {
        var vcpus: [VCPU] = []
        do {
            for id in 0..<configuration.cpus {
                let vcpu = try vm.createVCPU(id: id)
                try vcpu.setCPUID(CPUIDTemplate.entries(from: cpuid, apicID: UInt32(id), count: configuration.cpus))
                try vcpu.setMSRs(BootMSRs.values)
                try vcpu.setFPU(controlWord: 0x37F, mxcsr: 0x1F80)
                try Machine.configureLocalAPIC(vcpu)
                if id == configuration.bootCPU {
                    try vcpu.setRegisters(boot.registers)
                    var sregs = try vcpu.specialRegisters()
                    boot.apply(to: &sregs)
                    try vcpu.setSpecialRegisters(sregs)
                }
                vcpus.append(vcpu)
            }
        } catch { throw .kvm(error) }
        if let template = configuration.cpuTemplate {   // after the boot MSRs
            for vcpu in vcpus { try Machine.applyMSRModifiers(of: template, to: vcpu) }
        }
        return vcpus
    }
}

/// A virtio-mmio transport on the MMIO bus.
final class VirtioMMIODevice: BusDevice {
    let transport: MMIOTransport
    init(_ transport: MMIOTransport) { self.transport = transport }

    func read(offset: UInt64, size: Int) -> UInt64 {
        UInt64(transport.read(offset: Int(offset), size: size))
    }

    func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        transport.write(offset: Int(offset), size: size, value: UInt32(truncatingIfNeeded: value))
        return nil
    }
}

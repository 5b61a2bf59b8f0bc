/// Everything a snapshot holds but guest memory: what made it, the machine it describes, and the
/// state of every vCPU, of the VM's in-kernel devices and of Swiftlet's devices. Plain records: the
/// VMM fills them from KVM and its devices, and applies them back.
public struct MachineState: Codable, Equatable, Sendable {
    public var swiftletVersion: String
    public var host: Host
    /// "Full" or "Diff" (Firecracker's names).
    public var snapshotType: String
    public var memory: Memory
    public var configuration: Configuration
    public var vcpus: [VCPU]
    public var vm: VM
    public var devices: Devices
    /// The Xen-style interface's state (HVM parameters, the shared_info frame), if it is on.
    public var xen: [String: UInt64]?

    public init(swiftletVersion: String, host: Host, snapshotType: String, memory: Memory, configuration: Configuration,
                vcpus: [VCPU], vm: VM, devices: Devices, xen: [String: UInt64]? = nil) {
        self.swiftletVersion = swiftletVersion; self.host = host; self.snapshotType = snapshotType; self.memory = memory
        self.configuration = configuration; self.vcpus = vcpus; self.vm = vm; self.devices = devices; self.xen = xen
    }

    /// The host the snapshot was made on: a restore needs the same CPU vendor and CPUID.
    public struct Host: Codable, Equatable, Sendable {
        public var cpuVendor: String
        /// The CPUID the vCPUs were given (vCPU 0's; the others differ only in their APIC ID).
        public var cpuid: [CPUIDEntry]
        public init(cpuVendor: String, cpuid: [CPUIDEntry]) { self.cpuVendor = cpuVendor; self.cpuid = cpuid }
    }

    public struct CPUIDEntry: Codable, Equatable, Sendable {
        public var function: UInt32, index: UInt32, flags: UInt32
        public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32
        public init(function: UInt32, index: UInt32, flags: UInt32, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) {
            self.function = function; self.index = index; self.flags = flags
            self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
        }
    }

    /// Guest RAM as the memory file holds it: each region at its offset in the file.
    public struct Memory: Codable, Equatable, Sendable {
        public var size: UInt64
        public var regions: [Region]
        public init(size: UInt64, regions: [Region]) { self.size = size; self.regions = regions }
        /// Bytes the memory file must have.
        public var fileSize: UInt64 { regions.map { $0.fileOffset + $0.size }.max() ?? 0 }
    }

    public struct Region: Codable, Equatable, Sendable {
        public var guestAddress: UInt64, size: UInt64, fileOffset: UInt64
        public init(guestAddress: UInt64, size: UInt64, fileOffset: UInt64) {
            self.guestAddress = guestAddress; self.size = size; self.fileOffset = fileOffset
        }
    }

    /// The machine configuration a restore rebuilds (devices by their specs, no kernel: the kernel
    /// is in guest memory).
    public struct Configuration: Codable, Equatable, Sendable {
        public var cpus: Int
        public var bootCPU: Int
        public var memorySize: UInt64
        public var xen: Bool
        public var trackDirtyPages: Bool
        public var virtio: [VirtioSpec]
        /// The command line the guest was booted with (fw_cfg serves it).
        public var commandLine: String
        /// The protocol it was booted by (for reports).
        public var bootProtocol: String
        public init(cpus: Int, bootCPU: Int, memorySize: UInt64, xen: Bool, trackDirtyPages: Bool, virtio: [VirtioSpec],
                    commandLine: String = "", bootProtocol: String = "pvh") {
            self.cpus = cpus; self.bootCPU = bootCPU; self.memorySize = memorySize; self.xen = xen
            self.trackDirtyPages = trackDirtyPages; self.virtio = virtio; self.commandLine = commandLine
            self.bootProtocol = bootProtocol
        }
    }

    /// A virtio device as configured: `kind` block, net, vsock, entropy or console, and its
    /// parameters (the drive's file, the TAP device, the vsock socket...).
    public struct VirtioSpec: Codable, Equatable, Sendable {
        public var kind: String
        public var parameters: [String: String]
        public init(kind: String, parameters: [String: String] = [:]) { self.kind = kind; self.parameters = parameters }
    }

    /// One vCPU: KVM's structures as the kernel gives them (`KVM_GET_REGS`, `_SREGS`, `_XSAVE`,
    /// `_XCRS`, `_DEBUGREGS`, `_LAPIC`, `_VCPU_EVENTS`, by those names), every MSR KVM saves, its
    /// MP state, and Swiftlet's own view of it.
    public struct VCPU: Codable, Equatable, Sendable {
        public var id: Int
        public var kvm: [String: Bytes]
        public var msrs: [MSR]
        public var mpState: UInt32
        /// "Running", "Parked" (taken down by VCPUOP_down)...
        public var runState: String
        public var tscKHz: UInt32?
        public init(id: Int, kvm: [String: Bytes], msrs: [MSR], mpState: UInt32, runState: String, tscKHz: UInt32? = nil) {
            self.id = id; self.kvm = kvm; self.msrs = msrs; self.mpState = mpState; self.runState = runState; self.tscKHz = tscKHz
        }
    }

    public struct MSR: Codable, Equatable, Sendable {
        public var index: UInt32, value: UInt64
        public init(index: UInt32, value: UInt64) { self.index = index; self.value = value }
    }

    /// The in-kernel devices: the PIC pair and the IOAPIC (`KVM_GET_IRQCHIP` 0, 1, 2), the PIT
    /// (`KVM_GET_PIT2`) and the KVM clock (`KVM_GET_CLOCK`).
    public struct VM: Codable, Equatable, Sendable {
        public var irqchips: [Bytes]
        public var pit: Bytes
        public var clock: Bytes
        public init(irqchips: [Bytes], pit: Bytes, clock: Bytes) { self.irqchips = irqchips; self.pit = pit; self.clock = clock }
    }

    /// Swiftlet's devices.
    public struct Devices: Codable, Equatable, Sendable {
        public var serial: Serial
        public var firmwareConfig: FirmwareConfig
        public var virtio: [VirtioTransport]
        public init(serial: Serial, firmwareConfig: FirmwareConfig, virtio: [VirtioTransport]) {
            self.serial = serial; self.firmwareConfig = firmwareConfig; self.virtio = virtio
        }
    }

    /// The 16550's registers and its receive FIFO.
    public struct Serial: Codable, Equatable, Sendable {
        public var registers: [String: UInt8]
        public var receiveFIFO: Bytes
        public init(registers: [String: UInt8], receiveFIFO: Bytes) { self.registers = registers; self.receiveFIFO = receiveFIFO }
    }

    public struct FirmwareConfig: Codable, Equatable, Sendable {
        public var selector: UInt16, offset: UInt32
        public init(selector: UInt16, offset: UInt32) { self.selector = selector; self.offset = offset }
    }

    /// A virtio-mmio transport: its registers, each queue, and what its device keeps.
    public struct VirtioTransport: Codable, Equatable, Sendable {
        public var status: UInt32
        public var deviceFeaturesSel: UInt32, driverFeaturesSel: UInt32
        public var driverFeatures: UInt64
        public var queueSel: UInt32
        public var interruptStatus: UInt32
        public var configGeneration: UInt32
        public var activated: Bool
        public var queues: [Queue]
        public init(status: UInt32, deviceFeaturesSel: UInt32, driverFeaturesSel: UInt32, driverFeatures: UInt64, queueSel: UInt32,
                    interruptStatus: UInt32, configGeneration: UInt32, activated: Bool, queues: [Queue]) {
            self.status = status; self.deviceFeaturesSel = deviceFeaturesSel; self.driverFeaturesSel = driverFeaturesSel
            self.driverFeatures = driverFeatures; self.queueSel = queueSel; self.interruptStatus = interruptStatus
            self.configGeneration = configGeneration; self.activated = activated; self.queues = queues
        }
    }

    /// A split virtqueue: the driver's configuration and the device's place in it.
    public struct Queue: Codable, Equatable, Sendable {
        public var size: UInt16
        public var descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64
        public var ready: Bool
        public var nextAvailable: UInt16, nextUsed: UInt16
        public var signalledUsed: UInt16?
        public init(size: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64, ready: Bool,
                    nextAvailable: UInt16, nextUsed: UInt16, signalledUsed: UInt16?) {
            self.size = size; self.descriptorTable = descriptorTable; self.availableRing = availableRing; self.usedRing = usedRing
            self.ready = ready; self.nextAvailable = nextAvailable; self.nextUsed = nextUsed; self.signalledUsed = signalledUsed
        }
    }
}

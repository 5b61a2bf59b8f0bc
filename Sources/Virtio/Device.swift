import EventLoop
import GuestMemory

/// Where a device meets its host side: its worker's event loop (for the device's own descriptors:
/// a TAP device, sockets, standard input) and a way to have the transport serve one of its
/// queues there, when the device has something for the driver. `process` only queues the work
/// on the loop (it may be called while a queue is being served).
public struct DeviceContext: Sendable {
    public let loop: MainLoop
    public let process: @Sendable (Int) -> Void

    public init(loop: MainLoop, transport: MMIOTransport) {
        self.loop = loop
        // Weak: the device keeps the context, and the transport keeps the device.
        process = { [weak transport] queue in
            guard let transport else { return }
            loop.execute { transport.process(queue: queue) }
        }
    }
}

/// What a virtio device type provides to the transport (VIRTIO 1.2 §5): its ID, features,
/// configuration space and queues, and the work a notified queue asks for.
public protocol VirtioDevice: AnyObject, Sendable {
    /// §5: 1 network, 2 block, 3 console, 4 entropy, 19 socket.
    var deviceID: UInt32 { get }
    /// The device's own feature bits (the transport adds VERSION_1 and the ring features).
    var deviceFeatures: UInt64 { get }
    /// The largest size of each queue; their count is the device's number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// Reads the device-specific configuration space (§4.2.2: offset 0x100 on); out of range: 0.
    func readConfig(offset: Int, size: Int) -> UInt32
    /// Writes it (most devices ignore writes).
    func writeConfig(offset: Int, size: Int, value: UInt32)
    /// The driver has set DRIVER_OK with these features.
    func activate(features: UInt64)
    /// Serves what the driver made available on queue `index`; returns true if it used buffers.
    /// A `VirtqueueError` puts the device in DEVICE_NEEDS_RESET.
    func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool
    /// Back to the state before the driver found it (status 0).
    func reset()
    /// The device's worker is ready; a device with host descriptors starts watching them.
    func attach(_ context: DeviceContext)
}

extension VirtioDevice {
    public func writeConfig(offset: Int, size: Int, value: UInt32) {}
    public func attach(_ context: DeviceContext) {}

    /// Little-endian bytes of a configuration space, read as the driver asks (1, 2 or 4 bytes).
    public static func configValue(_ bytes: [UInt8], offset: Int, size: Int) -> UInt32 {
        guard offset >= 0, size > 0, offset + size <= bytes.count else { return 0 }
        var value: UInt32 = 0
        for i in 0..<size { value |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return value
    }
}

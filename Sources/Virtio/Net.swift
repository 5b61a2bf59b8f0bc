import CSwiftletSystem
import EventLoop
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TAP device that cannot back a network interface, naming it and what to fix.
public struct TapError: Error, Equatable, Sendable, CustomStringConvertible {
    public let name: String
    public let problem: String
    public var description: String { "TAP device \(name): \(problem)" }
}

/// The network device (VIRTIO 1.2 §5.1) over a Linux TAP device: one receive and one transmit
/// queue, the MAC address in the configuration space when one was given (`VIRTIO_NET_F_MAC`), and
/// the link reported up (`VIRTIO_NET_F_STATUS`). Every buffer starts with the 12-byte
/// `virtio_net_hdr_v1`. No offloads are offered: the host kernel completes checksums and
/// segments before a frame reaches the TAP's reader, and frames the guest sends are whole.
///
/// Received frames wait in the TAP device's own queue while the driver has no receive buffers:
/// the worker stops watching the TAP until the driver adds some (its notification).
public final class NetDevice: VirtioDevice {
    public static let queueSize: UInt16 = 256
    /// `struct virtio_net_hdr_v1` (§5.1.6): flags, gso_type, hdr_len, gso_size, csum_start,
    /// csum_offset, num_buffers.
    public static let headerSize = 12
    /// The largest buffer taken from or given to the TAP device: a header and a 64 KiB frame.
    static let maxBuffer = headerSize + 65550
    /// At most this many frames per turn of the worker, so one direction cannot starve the other.
    static let batch = 64

    public enum Feature {
        public static let mac: UInt64 = 1 << 5, status: UInt64 = 1 << 16
    }
    public enum Queue {
        public static let receive = 0, transmit = 1
    }

    /// What the device has counted (for metrics and tests).
    public struct Counters: Equatable, Sendable {
        public var received = 0, transmitted = 0
        /// Frames that did not fit the driver's buffers, or that the TAP refused.
        public var receiveDropped = 0, transmitDropped = 0
    }

    struct Receive {
        var active = false
        /// The TAP is watched for readability (off while the driver has no buffers).
        var watching = false
        /// A frame read from the TAP that found no buffer yet.
        var pending: [UInt8]? = nil
        var context: DeviceContext?
    }

    public let id: String
    public let tapName: String
    public let mac: [UInt8]?
    let fd: Int32
    let receive = Mutex(Receive())
    let counters = Mutex(Counters())
    /// Where a frame is read from the TAP: one buffer, used by the worker alone.
    let readBuffer = Mutex([UInt8](repeating: 0, count: maxBuffer))

    /// Attaches to TAP device `tap` (which must exist, or the caller must be allowed to create
    /// it). `mac`: six bytes, or nil to let the driver choose its own.
    public init(tap: String, mac: [UInt8]? = nil, id: String) throws(TapError) {
        if let mac, mac.count != 6 { throw TapError(name: tap, problem: "a MAC address has 6 bytes") }
        let fd = cswiftlet_tap_open(tap, Int32(Self.headerSize))
        guard fd >= 0 else {
            let hint = -fd == EPERM ? " (creating a TAP device needs CAP_NET_ADMIN: create it first, e.g. ip tuntap add NAME mode tap)" : ""
            throw TapError(name: tap, problem: "cannot open it: \(String(cString: strerror(-fd)))\(hint)")
        }
        self.fd = fd
        self.tapName = tap
        self.mac = mac
        self.id = id
    }

    deinit { close(fd) }

    /// Parses `aa:bb:cc:dd:ee:ff`.
    public static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        let bytes = parts.compactMap { $0.count == 2 && $0.allSatisfy(\.isHexDigit) ? UInt8($0, radix: 16) : nil }
        return bytes.count == 6 ? bytes : nil
    }

    public var deviceID: UInt32 { 1 }
    public var deviceFeatures: UInt64 { (mac == nil ? 0 : Feature.mac) | Feature.status }
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize] }
    public var statistics: Counters { counters.withLock { $0 } }

    /// `struct virtio_net_config` (§5.1.4): mac, then status (VIRTIO_NET_S_LINK_UP).
    public func readConfig(offset: Int, size: Int) -> UInt32 {
        Self.configValue((mac ?? [0, 0, 0, 0, 0, 0]) + [1, 0], offset: offset, size: size)
    }

    public func attach(_ context: DeviceContext) {
        receive.withLock { $0.context = context }
        try? context.loop.watch(fd, for: []) { [weak self] events in self?.tapReadable(events) }
    }

    public func activate(features: UInt64) {
        receive.withLock { r in
            r.active = true
            setWatching(&r, true)
        }
    }

    public func reset() {
        receive.withLock { r in
            r.active = false
            r.pending = nil
            setWatching(&r, false)
        }
    }

    private func setWatching(_ r: inout Receive, _ on: Bool) {
        guard r.watching != on, let context = r.context else { return }
        r.watching = on
        context.loop.change(fd, to: on ? .readable : [])
    }

    /// On the worker: frames wait. Watching stops until the receive queue has been served (the
    /// pass turns it back on unless the driver has no buffers), so a transport that will not
    /// serve it (no driver yet, or one that needs a reset) cannot make the worker spin.
    private func tapReadable(_ events: MainLoop.Events) {
        guard let context = receive.withLock({ r -> DeviceContext? in setWatching(&r, false); return r.context }) else { return }
        if !events.intersection([.error, .hangUp]).isEmpty {
            context.loop.unwatch(fd)   // the TAP device went away: nothing more will come
            return
        }
        context.process(Queue.receive)
    }

    public func process(queue index: Int, _ queue: inout Virtqueue, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        index == Queue.receive ? try receiveFrames(&queue, memory) : try transmitFrames(&queue, memory)
    }

    // MARK: Receive (TAP to guest)

    private func receiveFrames(_ queue: inout Virtqueue, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        var frames = 0
        var r = receive.withLock { $0 }
        defer {
            receive.withLock { stored in
                stored.pending = r.pending
                setWatching(&stored, stored.active && r.watching)
            }
        }
        guard r.active else { return false }
        r.watching = true
        while frames < Self.batch {
            if r.pending == nil {
                let frame = readBuffer.withLock { buffer -> [UInt8]? in
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    return n > 0 ? Array(buffer[0..<n]) : nil
                }
                guard let frame else { break }   // EAGAIN: the TAP is empty; keep watching it
                guard frame.count >= Self.headerSize else { continue }
                r.pending = frame
            }
            guard let chain = try queue.pop(from: memory) else {
                r.watching = false   // no buffers: the driver's notification brings the worker back
                break
            }
            var frame = r.pending!
            r.pending = nil
            frame[10] = 1; frame[11] = 0   // num_buffers: one buffer holds it (no VIRTIO_NET_F_MRG_RXBUF)
            var written = 0
            if chain.writableLength >= frame.count {
                written = chain.scatter(frame, memory: memory)
                counters.withLock { $0.received += 1 }
            } else {
                written = 0   // a driver's buffer too small for the frame: the frame is dropped
                counters.withLock { $0.receiveDropped += 1 }
            }
            try queue.push(head: chain.head, written: UInt32(written), to: memory)
            used = true
            frames += 1
        }
        return used
    }

    // MARK: Transmit (guest to TAP)

    private func transmitFrames(_ queue: inout Virtqueue, _ memory: GuestMemory) throws(VirtqueueError) -> Bool {
        var used = false
        while let chain = try queue.pop(from: memory) {
            let length = chain.readableLength
            if length > Self.headerSize && length <= Self.maxBuffer {
                // The guest's header is not passed on: nothing it could ask for was negotiated.
                var buffer = [UInt8](repeating: 0, count: Self.headerSize)
                buffer.reserveCapacity(length)
                let frame = DescriptorChain.gather(chain.readable, count: length, memory: memory).dropFirst(Self.headerSize)
                buffer += frame
                let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                counters.withLock { if n == buffer.count { $0.transmitted += 1 } else { $0.transmitDropped += 1 } }
            } else {
                counters.withLock { $0.transmitDropped += 1 }
            }
            try queue.push(head: chain.head, written: 0, to: memory)
            used = true
        }
        return used
    }
}

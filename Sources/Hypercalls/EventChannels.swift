/// The domain's event channels (Xen's 2-level ABI, `public/event_channel.h`): what each port is
/// bound to and which vCPU it notifies. Pending and mask bits are not here: they live in the
/// guest's shared_info page, which the VMM updates when a port fires (`HypercallEnvironment.raise`).
///
/// Ports grow in buckets of 64 up to the ABI's limit (32-bit shared_info: 32 × 32 = 1024 ports;
/// 64-bit: 64 × 64 = 4096). Port 0 is reserved, as in Xen.
public struct EventChannelTable: Equatable, Sendable {
    public enum Binding: Equatable, Sendable {
        case free
        case reserved
        /// Allocated for `remoteDomain` to bind to.
        case unbound(remoteDomain: UInt16)
        /// Connected to a port of another domain: for Swiftlet, the back end of a device it serves
        /// (the PV console), which `send` notifies.
        case interdomain(remoteDomain: UInt16, remotePort: UInt32)
        /// An inter-processor interrupt to `vcpu`.
        case ipi
    }

    public struct Channel: Equatable, Sendable {
        public var binding: Binding
        public var vcpu: UInt32
    }

    /// What `send` must do.
    public enum Delivery: Equatable, Sendable {
        /// Mark `port` pending for `vcpu` (an IPI).
        case raise(port: UInt32, vcpu: UInt32)
        /// Notify the back end behind the interdomain port.
        case backend(port: UInt32)
        /// Nothing (an unbound port drops the notification, as Xen does).
        case drop
    }

    /// `EVTCHNSTAT_*`.
    public enum Status: UInt32, Sendable {
        case closed = 0, unbound = 1, interdomain = 2, pirq = 3, virq = 4, ipi = 5
    }

    public static let bucket = 64
    public private(set) var channels: [Channel]
    public let limit: Int

    public init(limit: Int) {
        self.limit = limit
        channels = [Channel(binding: .reserved, vcpu: 0)] + Array(repeating: Channel(binding: .free, vcpu: 0), count: Self.bucket - 1)
    }

    /// The most ports a layout's pending bitmap holds.
    public static func limit(for abi: SharedInfo.ABI) -> Int { abi == .x86_64 ? 4096 : 1024 }

    public func isValid(_ port: UInt32) -> Bool { Int(port) < channels.count }

    public subscript(port: UInt32) -> Channel? { isValid(port) ? channels[Int(port)] : nil }

    /// Xen's `get_free_port`: the lowest free port, growing the table by a bucket when full.
    mutating func freePort() -> Result<UInt32, XenErrno> {
        if let index = channels.firstIndex(where: { $0.binding == .free }) { return .success(UInt32(index)) }
        guard channels.count + Self.bucket <= limit else { return .failure(.noSpace) }
        channels += Array(repeating: Channel(binding: .free, vcpu: 0), count: Self.bucket)
        return freePort()
    }

    /// `EVTCHNOP_alloc_unbound`.
    public mutating func allocateUnbound(remoteDomain: UInt16) -> Result<UInt32, XenErrno> {
        freePort().map { port in
            channels[Int(port)] = Channel(binding: .unbound(remoteDomain: remoteDomain), vcpu: 0)
            return port
        }
    }

    /// A port the VMM binds to one of its back ends (the PV console): interdomain with domain 0.
    public mutating func allocateBackend(remotePort: UInt32) -> UInt32? {
        guard case let .success(port) = freePort() else { return nil }
        channels[Int(port)] = Channel(binding: .interdomain(remoteDomain: 0, remotePort: remotePort), vcpu: 0)
        return port
    }

    /// `EVTCHNOP_bind_ipi`.
    public mutating func bindIPI(vcpu: UInt32, vcpuCount: Int) -> Result<UInt32, XenErrno> {
        guard Int(vcpu) < vcpuCount else { return .failure(.noent) }
        return freePort().map { port in
            channels[Int(port)] = Channel(binding: .ipi, vcpu: vcpu)
            return port
        }
    }

    /// `EVTCHNOP_close`: a free or reserved port is -EINVAL; an interdomain port's back end is
    /// the VMM's and stays; the port is free again, notifying vCPU 0.
    public mutating func close(_ port: UInt32) -> XenErrno? {
        guard let channel = self[port] else { return .inval }
        switch channel.binding {
        case .free, .reserved: return .inval
        case .unbound, .interdomain, .ipi: channels[Int(port)] = Channel(binding: .free, vcpu: 0)
        }
        return nil
    }

    /// `EVTCHNOP_send`.
    public func send(_ port: UInt32) -> Result<Delivery, XenErrno> {
        guard let channel = self[port] else { return .failure(.inval) }
        switch channel.binding {
        case .interdomain: return .success(.backend(port: port))
        case .ipi: return .success(.raise(port: port, vcpu: channel.vcpu))
        case .unbound: return .success(.drop)
        case .free, .reserved: return .failure(.inval)
        }
    }

    /// `EVTCHNOP_bind_vcpu`: the vCPU must exist (-ENOENT), the port be valid (-EINVAL); unbound and
    /// interdomain ports move, others are -EINVAL (an IPI's target is fixed, as in Xen).
    public mutating func bindVCPU(_ port: UInt32, vcpu: UInt32, vcpuCount: Int) -> XenErrno? {
        guard Int(vcpu) < vcpuCount else { return .noent }
        guard let channel = self[port] else { return .inval }
        switch channel.binding {
        case .unbound, .interdomain: channels[Int(port)].vcpu = vcpu
        case .free, .reserved, .ipi: return .inval
        }
        return nil
    }

    /// `EVTCHNOP_status`: (status, vcpu, the union's two words).
    public func status(_ port: UInt32) -> Result<(Status, UInt32, UInt32, UInt32), XenErrno> {
        guard let channel = self[port] else { return .failure(.inval) }
        switch channel.binding {
        case .free, .reserved: return .success((.closed, channel.vcpu, 0, 0))
        case let .unbound(remote): return .success((.unbound, channel.vcpu, UInt32(remote), 0))
        case let .interdomain(remote, remotePort): return .success((.interdomain, channel.vcpu, UInt32(remote), remotePort))
        case .ipi: return .success((.ipi, channel.vcpu, 0, 0))
        }
    }
}

extension HypercallDispatcher {
    /// `event_channel_op` (`EVTCHNOP_*`, `public/event_channel.h`), Xen's checks and codes: an
    /// unknown or unimplemented command is -ENOSYS before anything is read; the argument that
    /// cannot be read is -EFAULT; then each operation's own rules. Layouts (the same in both ABIs):
    /// alloc_unbound {dom u16 @0, remote_dom u16 @2, port u32 @4 (out)}; close, send, unmask
    /// {port u32}; status {dom u16 @0, port u32 @4, status u32 @8 (out), vcpu u32 @12 (out),
    /// union @16 (out)}; bind_vcpu {port u32, vcpu u32}; bind_ipi {vcpu u32, port u32 @4 (out)}.
    static func eventChannelOp(_ command: Int32, _ argument: UInt64, _ env: some HypercallEnvironment) -> HypercallResult {
        let size: Int
        switch command {
        case 3, 4, 9: size = 4           // close, send, unmask
        case 6, 7, 8: size = 8           // alloc_unbound, bind_ipi, bind_vcpu
        case 5: size = 24                // status
        default: return .error(.nosys)   // bind_interdomain, bind_virq, bind_pirq, reset, FIFO ABI
        }
        guard let bytes = env.read(argument, count: size) else { return .error(.fault) }
        let word0 = u32(bytes, 0)
        switch command {
        case 6:   // alloc_unbound
            guard u16(bytes, 0) == XenABI.domidSelf else { return .error(.srch) }
            let remote = u16(bytes, 2) == XenABI.domidSelf ? XenABI.selfDomainID : u16(bytes, 2)
            switch env.withEventChannels({ $0.allocateUnbound(remoteDomain: remote) }) {
            case let .failure(errno): return .error(errno)
            case let .success(port):
                guard let at = advance(argument, by: 4), env.write(le(port), at: at) else { return .error(.fault) }
                return .ok()
            }
        case 7:   // bind_ipi
            let count = env.vcpuCount
            switch env.withEventChannels({ $0.bindIPI(vcpu: word0, vcpuCount: count) }) {
            case let .failure(errno): return .error(errno)
            case let .success(port):
                guard let at = advance(argument, by: 4), env.write(le(port), at: at) else { return .error(.fault) }
                return .ok()
            }
        case 3:   // close
            if let errno = env.withEventChannels({ $0.close(word0) }) { return .error(errno) }
            return .ok()
        case 4:   // send
            switch env.withEventChannels({ $0.send(word0) }) {
            case let .failure(errno): return .error(errno)
            case let .success(.raise(port, vcpu)): env.raise(port: port, vcpu: Int(vcpu))
            case let .success(.backend(port)): env.notifyBackend(port: port)
            case .success(.drop): break
            }
            return .ok()
        case 9:   // unmask
            guard env.withEventChannels({ $0.isValid(word0) }) else { return .error(.inval) }
            env.unmask(port: word0)
            return .ok()
        case 8:   // bind_vcpu
            let count = env.vcpuCount
            if let errno = env.withEventChannels({ $0.bindVCPU(word0, vcpu: u32(bytes, 4), vcpuCount: count) }) { return .error(errno) }
            return .ok()
        default:  // 5: status
            guard u16(bytes, 0) == XenABI.domidSelf else { return .error(.srch) }
            switch env.withEventChannels({ $0.status(u32(bytes, 4)) }) {
            case let .failure(errno): return .error(errno)
            case let .success((status, vcpu, u0, u1)):
                guard let at = advance(argument, by: 8),
                      env.write(le(status.rawValue) + le(vcpu) + le(u0) + le(u1), at: at) else { return .error(.fault) }
                return .ok()
            }
        }
    }
}

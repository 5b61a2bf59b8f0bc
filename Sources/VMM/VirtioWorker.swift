import CSwiftletSystem
import KVM
import Logging
import Synchronization
import Virtio
import X86
#if canImport(Glibc)
import Glibc
#endif

/// One virtio device's worker: a thread with an event loop of its own that serves the device's
/// queues when the guest notifies them and the device's host descriptors (a TAP device, sockets,
/// standard input). Its vCPUs never wait for it.
///
/// Each queue has an eventfd. KVM signals it when the guest writes the queue's index to
/// QueueNotify (`KVM_IOEVENTFD` with data match), so a notification never leaves the kernel; where
/// KVM refuses that, the MMIO exit reaches the transport, which signals the same eventfd. The
/// device's interrupt is an eventfd too, given to KVM with `KVM_IRQFD`; where KVM refuses that,
/// the worker pulses the pin with `KVM_IRQ_LINE`.
final class VirtioWorker: Sendable {
    let name: String
    let loop: MainLoop
    let notifications: [Int32]
    let interruptFD: Int32
    /// KVM delivers `notifications` and `interruptFD` itself (else the slow paths above).
    let kernelNotifies: Bool
    let kernelInterrupts: Bool
    private let thread = Mutex<NativeThread?>(nil)
    private let irq: UInt32
    private let vm: VirtualMachine

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(name: String, queues: Int, window: VirtioWindow, vm: VirtualMachine, logger: Logger) throws(Failure) {
        self.name = name
        self.vm = vm
        irq = UInt32(window.irq)
        do { loop = try MainLoop() } catch { throw Failure(description: "\(name): \(error)") }
        var fds: [Int32] = []
        for _ in 0..<queues {
            let fd = cswiftlet_eventfd()
            guard fd >= 0 else {
                for fd in fds { close(fd) }
                throw Failure(description: "\(name): eventfd failed: \(String(cString: strerror(errno)))")
            }
            fds.append(fd)
        }
        notifications = fds
        interruptFD = cswiftlet_eventfd()
        var notifies = vm.check(.ioeventfd) > 0
        if notifies {
            let address = window.base + UInt64(MMIOTransport.Register.queueNotify)
            for (queue, fd) in fds.enumerated() {
                do { try vm.setIOEventFD(fd, mmioAddress: address, length: 4, datamatch: UInt64(queue)) } catch {
                    logger.notice("virtio: KVM_IOEVENTFD refused; notifications exit to the VMM",
                                  metadata: ["device": "\(name)", "error": "\(error)"])
                    notifies = false
                    break
                }
            }
        }
        kernelNotifies = notifies
        var interrupts = interruptFD >= 0 && vm.check(.irqfd) > 0
        if interrupts {
            do { try vm.setIRQFD(interruptFD, gsi: irq) } catch {
                logger.notice("virtio: KVM_IRQFD refused; interrupts go through KVM_IRQ_LINE",
                              metadata: ["device": "\(name)", "error": "\(error)"])
                interrupts = false
            }
        }
        kernelInterrupts = interrupts
    }

    deinit {
        for fd in notifications { close(fd) }
        if interruptFD >= 0 { close(interruptFD) }
    }

    /// The transport's notification path when KVM did not take it: the queue's eventfd.
    @Sendable func notify(_ queue: Int) {
        guard queue < notifications.count else { return }
        var one: UInt64 = 1
        _ = write(notifications[queue], &one, 8)
    }

    /// An edge on the device's pin.
    @Sendable func interrupt() {
        if kernelInterrupts {
            var one: UInt64 = 1
            _ = write(interruptFD, &one, 8)
        } else {
            try? vm.setInterruptLine(irq, high: true)
            try? vm.setInterruptLine(irq, high: false)
        }
    }

    /// Serves `transport`'s queues on this worker's loop, and lets the device watch its own
    /// descriptors there.
    func attach(_ transport: MMIOTransport) throws(Failure) {
        for (queue, fd) in notifications.enumerated() {
            do {
                try loop.watch(fd, for: .readable) { _ in
                    var count: UInt64 = 0
                    guard read(fd, &count, 8) == 8 else { return }
                    transport.process(queue: queue)
                }
            } catch { throw Failure(description: "\(name): \(error)") }
        }
        transport.device.attach(DeviceContext(loop: loop, transport: transport))
    }

    func start() throws(NativeThread.SpawnError) {
        let loop = loop
        let started = try NativeThread(name: name) { loop.run() }
        thread.withLock { $0 = started }
    }

    /// Ends the thread after the work in progress.
    func stop() {
        loop.stop()
        thread.withLock { t in t?.join(); t = nil }
    }
}

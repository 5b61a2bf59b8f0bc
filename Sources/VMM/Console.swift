import CSwiftletSystem
import Devices
#if canImport(Glibc)
import Glibc
#endif

/// Writes all of `bytes` to `fd`, retrying on EINTR/EAGAIN; gives up quietly if the fd is gone
/// (a closed pipe must not kill the VM).
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n > 0 { offset += n; continue }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            return
        }
    }
}

/// Forwards standard input to the guest's console (the serial port, or the virtio console) from
/// the main loop. When stdin is a terminal it
/// is put in non-canonical, no-echo mode (signals still work) and restored by `stop`.
///
/// A pipe or terminal is watched with epoll and read only when epoll says it is readable. While
/// the guest has not drained the receive FIFO, watching stops and a one-shot timer retries in
/// `retryNanoseconds`; a regular file (which epoll refuses) is read on that timer alone. Nothing
/// waits on a thread of its own, and the loop never blocks in a read.
final class ConsoleInput: @unchecked Sendable {   // every var is touched on the loop's thread only
    static let retryNanoseconds: UInt64 = 5_000_000

    private let source: Int32
    /// Hands bytes to the console device; returns how many it took.
    private let receive: @Sendable ([UInt8]) -> Int
    private let loop: MainLoop
    private var savedTerminal: termios?
    private var pending: [UInt8] = []
    private var watching = false
    /// epoll takes the source (a pipe, socket or terminal), as opposed to a regular file.
    private var pollable = true
    private var retry: MainLoop.Timer?
    private var ended = false

    init(source: Int32 = STDIN_FILENO, into receive: @escaping @Sendable ([UInt8]) -> Int, on loop: MainLoop) throws(MainLoop.Failure) {
        self.source = source
        self.receive = receive
        self.loop = loop
        if isatty(source) == 1 {
            var mode = termios()
            if tcgetattr(source, &mode) == 0 {
                savedTerminal = mode
                mode.c_lflag &= ~tcflag_t(ICANON | ECHO)
                tcsetattr(source, TCSANOW, &mode)
            }
        }
        do {
            try loop.watch(source, for: .readable) { [self] _ in readable() }
            watching = true
        } catch where error.errno == EPERM {
            // A regular file or /dev/null: always readable, so read it on the timer.
            pollable = false
            try scheduleRetry()
        }
    }

    /// Reads what is there and hands it to the serial port.
    private func readable() {
        guard !ended else { return }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = read(source, &buffer, buffer.count)
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return }
        if n <= 0 { end(); return }           // EOF or error: no more input
        pending += buffer[0..<n]
        push()
    }

    /// Hands pending bytes to the guest; if its FIFO is full, stops reading and retries later.
    private func push() {
        let taken = receive(pending)
        pending.removeFirst(taken)
        if pending.isEmpty {
            if !pollable && retry == nil { try? scheduleRetry() }   // a file: keep reading on the timer
            return
        }
        if watching {
            loop.unwatch(source)
            watching = false
        }
        if retry == nil { try? scheduleRetry() }
    }

    private func scheduleRetry() throws(MainLoop.Failure) {
        retry = try loop.schedule(after: Self.retryNanoseconds) { [self] in
            retry = nil
            guard !ended else { return }
            if !pending.isEmpty { push() }   // schedules the next retry while some is left
            if pending.isEmpty { resumeReading() }
        }
    }

    /// Reads on: a pollable source is watched again (read once epoll says so, never here: with
    /// nothing to read, a read would block the loop); a file is read now, and `push` schedules
    /// the next round.
    private func resumeReading() {
        guard pollable else { readable(); return }
        guard !watching else { return }
        do {
            try loop.watch(source, for: .readable) { [self] _ in readable() }
            watching = true
        } catch {
            end()   // cannot be watched any more: no more input, the VM runs on
        }
    }

    private func end() {
        ended = true
        if watching { loop.unwatch(source); watching = false }
        if let retry { loop.cancel(retry) }
        retry = nil
    }

    /// Stops forwarding and restores the terminal.
    func stop() {
        end()
        if var mode = savedTerminal { tcsetattr(source, TCSANOW, &mode) }
        savedTerminal = nil
    }
}

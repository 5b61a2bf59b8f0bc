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

/// Forwards standard input to the serial port on its own thread, until stopped. When stdin is
/// a terminal it is put in non-canonical, no-echo mode (signals still work) and restored after.
final class ConsoleInput: @unchecked Sendable {   // the fds and saved termios are immutable after init
    private let source: Int32
    private let wakeRead: Int32, wakeWrite: Int32
    private var savedTerminal: termios?
    private var thread: NativeThread?

    init?(source: Int32 = STDIN_FILENO) {
        var fds: [Int32] = [0, 0]
        guard csystem_pipe_cloexec(&fds) == 0 else { return nil }
        self.source = source
        wakeRead = fds[0]; wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead); close(wakeWrite)
    }

    func start(into serial: Serial16550) throws(NativeThread.SpawnError) {
        if isatty(source) == 1 {
            var mode = termios()
            if tcgetattr(source, &mode) == 0 {
                savedTerminal = mode
                mode.c_lflag &= ~tcflag_t(ICANON | ECHO)
                tcsetattr(source, TCSANOW, &mode)
            }
        }
        let source = source, wake = wakeRead
        thread = try NativeThread(name: "serial-in") {
            var buffer = [UInt8](repeating: 0, count: 256)
            var polls = [pollfd(fd: source, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            while true {
                if poll(&polls, 2, -1) < 0 { if errno == EINTR { continue } else { return } }
                if polls[1].revents != 0 { return }
                guard polls[0].revents != 0 else { continue }
                let n = read(source, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }                     // EOF or error: no more input
                var pending = buffer[0..<n]
                while !pending.isEmpty {
                    let taken = serial.receive(pending)
                    pending = pending.dropFirst(taken)
                    if !pending.isEmpty {
                        // The guest has not drained the FIFO: wait a little, or stop if asked.
                        var wakeOnly = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
                        if poll(&wakeOnly, 1, 5) > 0 { return }
                    }
                }
            }
        }
    }

    /// Stops the input thread, joins it and restores the terminal.
    func stop() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        thread?.join()
        thread = nil
        if var mode = savedTerminal { tcsetattr(source, TCSANOW, &mode) }
        savedTerminal = nil
    }
}

import Devices
import Synchronization
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// The main loop (epoll with eventfd, timerfd, signalfd) and the console on it, without KVM.
@Suite("Main loop", .serialized)
struct MainLoopTests {
    /// Runs `loop` on a thread of its own for the body, then stops and joins it.
    func running(_ loop: MainLoop, _ body: () throws -> Void) throws {
        let thread = try NativeThread(name: "loop-test") { loop.run() }
        defer { loop.stop(); thread.join() }
        try body()
    }

    func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<2000 {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    @Test func tasksFromOtherThreadsRunOnTheLoopInOrder() throws {
        let loop = try MainLoop()
        let seen = Mutex<[Int]>([])
        let onLoop = Mutex<[Bool]>([])
        try running(loop) {
            for i in 0..<100 { loop.execute { seen.withLock { $0.append(i) }; onLoop.withLock { $0.append(loop.inLoop) } } }
            #expect(eventually { seen.withLock { $0.count } == 100 })
        }
        #expect(seen.withLock { $0 } == Array(0..<100))
        #expect(onLoop.withLock { $0.allSatisfy { $0 } })
        #expect(!loop.inLoop)
    }

    @Test func performRunsInlineWhenTheLoopIsNotRunning() throws {
        let loop = try MainLoop()
        let ran = Mutex(false)
        loop.perform { ran.withLock { $0 = true } }
        #expect(ran.withLock { $0 })
    }

    @Test func timersFireOnceOrRepeatAndCanBeCancelled() throws {
        let loop = try MainLoop()
        let once = Mutex(0), repeating = Mutex(0), cancelled = Mutex(0)
        try running(loop) {
            try loop.schedule(after: 1_000_000) { once.withLock { $0 += 1 } }
            let timer = try loop.schedule(after: 1_000_000, every: 2_000_000) { repeating.withLock { $0 += 1 } }
            let never = try loop.schedule(after: 500_000_000) { cancelled.withLock { $0 += 1 } }
            loop.cancel(never)
            #expect(eventually { repeating.withLock { $0 } >= 5 })
            loop.cancel(timer)
            let stoppedAt = repeating.withLock { $0 }
            usleep(20_000)
            #expect(repeating.withLock { $0 } <= stoppedAt + 1)
        }
        #expect(once.withLock { $0 } == 1)
        #expect(cancelled.withLock { $0 } == 0)
    }

    @Test func watchedDescriptorsReportReadiness() throws {
        let loop = try MainLoop()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let received = Mutex<[UInt8]>([])
        let readEnd = fds[0]
        try running(loop) {
            try loop.watch(readEnd, for: .readable) { _ in
                var byte: UInt8 = 0
                if read(readEnd, &byte, 1) == 1 { received.withLock { $0.append(byte) } }
            }
            for b: UInt8 in [7, 8, 9] { var v = b; _ = write(fds[1], &v, 1) }
            #expect(eventually { received.withLock { $0 } == [7, 8, 9] })
            loop.unwatch(readEnd)
            var v: UInt8 = 10
            _ = write(fds[1], &v, 1)
            usleep(20_000)
            #expect(received.withLock { $0 } == [7, 8, 9])
        }
    }

    @Test func signalsArriveThroughTheSignalfd() throws {
        let loop = try MainLoop()
        let got = Mutex<[Int32]>([])
        let ready = Mutex(false)
        let thread = try NativeThread(name: "signal-test") {
            // A thread-directed signal, blocked on the loop's thread: only its signalfd sees it.
            MainLoop.blockSignals([SIGWINCH])
            do { try loop.handleSignals([SIGWINCH]) { number in got.withLock { $0.append(number) } } } catch { return }
            ready.withLock { $0 = true }
            loop.run()
        }
        #expect(eventually { ready.withLock { $0 } })
        thread.signal(SIGWINCH)
        #expect(eventually { got.withLock { $0 } == [SIGWINCH] })
        loop.stop()
        thread.join()
    }

    /// Standard input through the loop into the 16550's receive FIFO, 16 bytes at a time: what
    /// does not fit waits until the guest has read the FIFO, and nothing is lost or reordered.
    @Test func consoleInputWaitsForTheGuestToDrainTheFIFO() throws {
        let loop = try MainLoop()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        let serial = Serial16550(output: { _ in })
        let text = Array("the quick brown fox jumps over the lazy dog, twice: the quick brown fox".utf8)
        var drained: [UInt8] = []
        try running(loop) {
            let input = try ConsoleInputBox(source: fds[0], serial: serial, loop: loop)
            defer { loop.perform { input.console.stop() } }
            _ = text.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            // The guest reads RBR whenever LSR says data is ready.
            for _ in 0..<4000 where drained.count < text.count {
                if serial.read(offset: 5, size: 1) & 1 != 0 {
                    drained.append(UInt8(truncatingIfNeeded: serial.read(offset: 0, size: 1)))
                } else {
                    usleep(500)
                }
            }
        }
        close(fds[0])
        #expect(drained == text)
    }
}

extension MainLoopTests {
    /// Once a burst longer than the FIFO has gone through, with standard input still open and
    /// nothing more in it, the loop goes on serving other work: it never sits in a read. (It
    /// did: a retry timer left over from the burst read the idle pipe and blocked the loop, and
    /// with it the API, so a Linux guest's shell could not be paused after a long command line.)
    @Test func consoleInputNeverBlocksTheLoop() throws {
        let loop = try MainLoop()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let serial = Serial16550(output: { _ in })
        let text = [UInt8](repeating: UInt8(ascii: "x"), count: 100)
        var drained = 0
        var answered = false
        try running(loop) {
            let input = try ConsoleInputBox(source: fds[0], serial: serial, loop: loop)
            _ = text.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            for _ in 0..<4000 where drained < text.count {
                if serial.read(offset: 5, size: 1) & 1 != 0 {
                    _ = serial.read(offset: 0, size: 1)
                    drained += 1
                } else {
                    usleep(500)
                }
            }
            usleep(50_000)   // ten retry periods: whatever the burst left scheduled has fired
            let ran = Mutex(false)
            loop.execute { ran.withLock { $0 = true } }
            answered = eventually { ran.withLock { $0 } }
            close(fds[1])    // end of input: a loop stuck in a read gets out, so the test ends either way
            loop.perform { input.console.stop() }
        }
        close(fds[0])
        #expect(drained == text.count)
        #expect(answered, "the loop did not run a task while standard input was open and idle")
    }
}

/// A console made on the calling thread and handed to the loop (the test owns the pipe).
final class ConsoleInputBox: Sendable {
    let console: ConsoleInput
    init(source: Int32, serial: Serial16550, loop: MainLoop) throws {
        console = try ConsoleInput(source: source, into: { serial.receive($0) }, on: loop)
    }
}

import Dispatch
import Synchronization
import Testing
@testable import Devices

/// What a UART sent to the host side: every transmitted byte and every INTR level, in order.
final class UARTRecorder: Sendable {
    private let bytes = Mutex<[UInt8]>([])
    private let levels = Mutex<[Bool]>([])

    func transmit(_ data: [UInt8]) { bytes.withLock { $0.append(contentsOf: data) } }
    func drive(_ level: Bool) { levels.withLock { $0.append(level) } }

    /// Bytes that left on the line so far.
    var output: [UInt8] { bytes.withLock { $0 } }
    /// Every level the INTR pin was driven to, in order (changes only, if the UART is right).
    var lineChanges: [Bool] { levels.withLock { $0 } }
}

/// PC16550D register offsets and bits, spelled out here so the tests do not borrow the
/// implementation's constants.
enum UART {
    static let rbrThr: UInt64 = 0, ier: UInt64 = 1, iirFcr: UInt64 = 2, lcr: UInt64 = 3
    static let mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7

    static let dlab: UInt64 = 0x80
    static let ierRxData: UInt64 = 0x01, ierTHRE: UInt64 = 0x02
    static let fcrEnable: UInt64 = 0x01, fcrClearRx: UInt64 = 0x02
    static let mcrDTR: UInt64 = 0x01, mcrRTS: UInt64 = 0x02, mcrOUT1: UInt64 = 0x04
    static let mcrOUT2: UInt64 = 0x08, mcrLoop: UInt64 = 0x10
    static let lsrDR: UInt64 = 0x01, lsrTHRE: UInt64 = 0x20, lsrTEMT: UInt64 = 0x40
    static let iirNone: UInt64 = 0x01, iirTHRE: UInt64 = 0x02, iirRxData: UInt64 = 0x04
    static let iirFIFOs: UInt64 = 0xC0
}

private func makeUART() -> (Serial16550, UARTRecorder) {
    let recorder = UARTRecorder()
    let uart = Serial16550(output: { recorder.transmit($0) }, interruptLine: { recorder.drive($0) })
    return (uart, recorder)
}

extension Serial16550 {
    func read(_ offset: UInt64) -> UInt64 { read(offset: offset, size: 1) }
    @discardableResult
    func write(_ offset: UInt64, _ value: UInt64) -> GuestRequest? { write(offset: offset, size: 1, value: value) }
    /// Low 4 bits of IIR: the interrupt identification proper.
    func interruptID() -> UInt64 { read(UART.iirFcr) & 0x0F }
}

@Suite("Serial16550: data path and registers")
struct SerialRegisterTests {
    @Test("THR writes go to output, in order, one byte each")
    func transmitGoesToOutput() {
        let (uart, recorder) = makeUART()
        for byte in "hi\n".utf8 { #expect(uart.write(UART.rbrThr, UInt64(byte)) == nil) }
        #expect(recorder.output == Array("hi\n".utf8))
    }

    @Test("a THR write keeps only the low 8 bits")
    func transmitTruncatesToByte() {
        let (uart, recorder) = makeUART()
        #expect(uart.write(offset: UART.rbrThr, size: 4, value: 0x1234_5641) == nil)
        #expect(recorder.output == [0x41])
    }

    @Test("DLAB maps offsets 0/1 to the divisor latch and back (PC16550D table II)")
    func divisorLatch() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, 0x05)
        uart.write(UART.lcr, UART.dlab | 0x03)
        #expect(uart.read(UART.lcr) == UART.dlab | 0x03)
        uart.write(UART.rbrThr, 0x01)   // DLL: 115200 baud
        uart.write(UART.ier, 0x00)      // DLM
        #expect(uart.read(UART.rbrThr) == 0x01)
        #expect(uart.read(UART.ier) == 0x00)
        uart.write(UART.rbrThr, 0x34)
        uart.write(UART.ier, 0x12)
        #expect(uart.read(UART.rbrThr) == 0x34)
        #expect(uart.read(UART.ier) == 0x12)
        #expect(recorder.output.isEmpty, "a DLL write is not a transmission")

        uart.write(UART.lcr, 0x03)       // DLAB off: RBR/THR and IER again
        #expect(uart.read(UART.ier) == 0x05, "IER kept its value while DLAB hid it")
        uart.write(UART.rbrThr, 0x41)
        #expect(recorder.output == [0x41])
        uart.write(UART.lcr, UART.dlab | 0x03)
        #expect(uart.read(UART.rbrThr) == 0x34, "the divisor survived the THR write")
        #expect(uart.read(UART.ier) == 0x12)
    }

    @Test("an RBR read under DLAB returns DLL and leaves the receive FIFO alone")
    func divisorReadDoesNotPop() {
        let (uart, _) = makeUART()
        uart.receive([0xAA])
        uart.write(UART.lcr, UART.dlab)
        uart.write(UART.rbrThr, 0x07)
        #expect(uart.read(UART.rbrThr) == 0x07)
        uart.write(UART.lcr, 0x03)
        #expect(uart.read(UART.rbrThr) == 0xAA)
    }

    @Test("LSR reads THRE|TEMT when idle, and adds DR while receive data is queued")
    func lineStatus() {
        let (uart, _) = makeUART()
        #expect(uart.read(UART.lsr) == UART.lsrTHRE | UART.lsrTEMT)
        uart.write(UART.rbrThr, 0x41)
        #expect(uart.read(UART.lsr) == 0x60, "transmission is instantaneous")
        uart.receive([1, 2])
        #expect(uart.read(UART.lsr) == 0x61)
        _ = uart.read(UART.rbrThr)
        #expect(uart.read(UART.lsr) == 0x61)
        _ = uart.read(UART.rbrThr)
        #expect(uart.read(UART.lsr) == 0x60)
    }

    @Test("RBR pops received bytes in arrival order, and reads 0 when empty")
    func receiveOrder() {
        let (uart, _) = makeUART()
        #expect(uart.receive([0x10, 0x20]) == 2)
        #expect(uart.receive([0x30]) == 1)
        #expect(uart.read(UART.rbrThr) == 0x10)
        #expect(uart.read(UART.rbrThr) == 0x20)
        #expect(uart.read(UART.rbrThr) == 0x30)
        #expect(uart.read(UART.lsr) & UART.lsrDR == 0)
        #expect(uart.read(UART.rbrThr) == 0)
    }

    @Test("receive accepts at most the 16-byte FIFO depth and reports how many it took",
          arguments: [(queued: 0, offered: 20, accepted: 16),
                      (queued: 0, offered: 16, accepted: 16),
                      (queued: 0, offered: 3, accepted: 3),
                      (queued: 10, offered: 10, accepted: 6),
                      (queued: 16, offered: 1, accepted: 0),
                      (queued: 5, offered: 0, accepted: 0)])
    func fifoDepth(queued: Int, offered: Int, accepted: Int) {
        let (uart, _) = makeUART()
        #expect(uart.receive((0..<queued).map { UInt8($0) }) == queued)
        let offeredBytes = (0..<offered).map { UInt8(0x80 + $0) }
        #expect(uart.receive(offeredBytes) == accepted)
        #expect(uart.receiveRoom == 16 - queued - accepted)
        var drained: [UInt8] = []
        while uart.read(UART.lsr) & UART.lsrDR != 0 { drained.append(UInt8(uart.read(UART.rbrThr))) }
        #expect(drained == (0..<queued).map { UInt8($0) } + offeredBytes.prefix(accepted))
    }

    /// PC16550D FCR1: "Writing a 1 to FCR1 clears all bytes in the RCVR FIFO". FCR0 stays set so
    /// that the write is not also a mode change.
    @Test("FCR bit 1 clears the receive FIFO", arguments: [UART.fcrEnable | UART.fcrClearRx, 0xC3])
    func fcrClearsReceiveFIFO(fcr: UInt64) {
        let (uart, _) = makeUART()
        uart.write(UART.iirFcr, UART.fcrEnable)
        uart.receive([1, 2, 3])
        uart.write(UART.iirFcr, fcr)
        #expect(uart.read(UART.lsr) & UART.lsrDR == 0)
        #expect(uart.receiveRoom == 16)
        #expect(uart.read(UART.rbrThr) == 0)
        uart.receive([9])
        #expect(uart.read(UART.rbrThr) == 9)
    }

    @Test("an FCR write without bit 1 that keeps FIFO mode keeps queued data")
    func fcrEnableKeepsData() {
        let (uart, _) = makeUART()
        uart.write(UART.iirFcr, UART.fcrEnable)
        uart.receive([7, 8])
        uart.write(UART.iirFcr, UART.fcrEnable)
        #expect(uart.read(UART.rbrThr) == 7)
        #expect(uart.read(UART.rbrThr) == 8)
    }

    /// PC16550D FCR0: "Resetting FCR0 will clear all bytes in both FIFOs. When changing from the
    /// FIFO Mode to the 16450 Mode and vice versa, data is automatically cleared from the FIFOs."
    @Test("clearing FCR bit 0 (FIFO mode -> 16450 mode) empties the receive FIFO")
    func leavingFIFOModeClearsReceiveFIFO() {
        let (uart, _) = makeUART()
        uart.write(UART.iirFcr, UART.fcrEnable)
        uart.receive([1, 2, 3])
        uart.write(UART.iirFcr, 0)
        #expect(uart.read(UART.lsr) & UART.lsrDR == 0)
        #expect(uart.receiveRoom == 16)
    }

    @Test("SCR is a plain read/write byte")
    func scratch() {
        let (uart, recorder) = makeUART()
        #expect(uart.read(UART.scr) == 0)
        for value: UInt64 in [0x5A, 0xA5, 0xFF, 0x00] {
            uart.write(UART.scr, value)
            #expect(uart.read(UART.scr) == value)
        }
        #expect(recorder.output.isEmpty)
    }

    @Test("LCR and MCR read back what was written")
    func controlRegistersReadBack() {
        let (uart, _) = makeUART()
        uart.write(UART.lcr, 0x1B)
        #expect(uart.read(UART.lcr) == 0x1B)
        uart.write(UART.mcr, 0x0B)
        #expect(uart.read(UART.mcr) == 0x0B)
    }

    @Test("writes to LSR and MSR are ignored", arguments: [UInt64(0x00), 0xFF, 0x1E])
    func statusRegistersReadOnly(value: UInt64) {
        let (uart, recorder) = makeUART()
        let lsr = uart.read(UART.lsr), msr = uart.read(UART.msr)
        uart.write(UART.lsr, value)
        uart.write(UART.msr, value)
        #expect(uart.read(UART.lsr) == lsr)
        #expect(uart.read(UART.msr) == msr)
        #expect(uart.read(UART.scr) == 0, "the write did not land in SCR")
        #expect(recorder.output.isEmpty)
        #expect(recorder.lineChanges.isEmpty)
    }

    @Test("no write ever asks the VM to stop")
    func neverStops() {
        let (uart, _) = makeUART()
        for offset in UInt64(0)..<8 { #expect(uart.write(offset, 0xFE) == nil) }
    }
}

@Suite("Serial16550: interrupts")
struct SerialInterruptTests {
    @Test("IIR reads 0x01 (none pending) at reset, even with data queued but IER clear")
    func nothingPending() {
        let (uart, recorder) = makeUART()
        #expect(uart.read(UART.iirFcr) == UART.iirNone)
        uart.receive([1])
        uart.write(UART.rbrThr, 0x41)
        #expect(uart.read(UART.iirFcr) == UART.iirNone)
        #expect(recorder.lineChanges.isEmpty)
    }

    @Test("received data with IER bit 0 set identifies as 0x04 and raises INTR until drained")
    func receiveInterrupt() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierRxData)
        #expect(uart.interruptID() == UART.iirNone)
        #expect(recorder.lineChanges.isEmpty)
        uart.receive([0x61, 0x62])
        #expect(recorder.lineChanges == [true])
        #expect(uart.interruptID() == UART.iirRxData)
        #expect(uart.interruptID() == UART.iirRxData, "reading IIR does not clear a receive interrupt")
        _ = uart.read(UART.rbrThr)
        #expect(recorder.lineChanges == [true], "still data queued: no level change")
        _ = uart.read(UART.rbrThr)
        #expect(recorder.lineChanges == [true, false])
        #expect(uart.interruptID() == UART.iirNone)
    }

    @Test("data queued before IER bit 0 is set raises INTR when it is set")
    func enablingWithDataQueued() {
        let (uart, recorder) = makeUART()
        uart.receive([1])
        #expect(recorder.lineChanges.isEmpty)
        uart.write(UART.ier, UART.ierRxData)
        #expect(recorder.lineChanges == [true])
        uart.write(UART.ier, 0)
        #expect(recorder.lineChanges == [true, false])
        #expect(uart.interruptID() == UART.iirNone)
    }

    @Test("FCR clearing the receive FIFO drops a receive interrupt")
    func clearingFIFODropsInterrupt() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierRxData)
        uart.receive([1, 2])
        uart.write(UART.iirFcr, UART.fcrEnable | UART.fcrClearRx)
        #expect(recorder.lineChanges == [true, false])
        #expect(uart.interruptID() == UART.iirNone)
    }

    @Test("enabling IER bit 1 raises THRE (0x02); an IIR read clears it; a THR write raises it again")
    func transmitterEmptyInterrupt() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierTHRE)
        #expect(recorder.lineChanges == [true])
        #expect(uart.interruptID() == UART.iirTHRE)
        #expect(recorder.lineChanges == [true, false], "the IIR read that reported THRE cleared it")
        #expect(uart.interruptID() == UART.iirNone)

        uart.write(UART.rbrThr, 0x41)
        #expect(recorder.lineChanges == [true, false, true])
        #expect(recorder.output == [0x41])
        #expect(uart.interruptID() == UART.iirTHRE)
        #expect(uart.interruptID() == UART.iirNone)
        #expect(recorder.lineChanges == [true, false, true, false])
    }

    @Test("re-writing IER with bit 1 already set does not re-raise THRE")
    func rewritingIERDoesNotReraise() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierTHRE)
        _ = uart.interruptID()
        uart.write(UART.ier, UART.ierTHRE)
        #expect(uart.interruptID() == UART.iirNone)
        #expect(recorder.lineChanges == [true, false])
    }

    @Test("receive data outranks THRE; THRE is reported once the data is gone")
    func priority() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierRxData | UART.ierTHRE)
        uart.receive([0x55])
        #expect(uart.interruptID() == UART.iirRxData)
        #expect(uart.interruptID() == UART.iirRxData, "reporting RX did not clear the pending THRE")
        _ = uart.read(UART.rbrThr)
        #expect(uart.interruptID() == UART.iirTHRE)
        #expect(uart.interruptID() == UART.iirNone)
        #expect(recorder.lineChanges == [true, false], "INTR stayed high from enable until the last source cleared")
    }

    @Test("IIR bits 7:6 read 11 while FIFOs are enabled by FCR bit 0, and 00 otherwise")
    func fifoEnabledBits() {
        let (uart, _) = makeUART()
        #expect(uart.read(UART.iirFcr) & 0xC0 == 0)
        uart.write(UART.iirFcr, UART.fcrEnable)
        #expect(uart.read(UART.iirFcr) == UART.iirFIFOs | UART.iirNone)
        uart.write(UART.ier, UART.ierRxData)
        uart.receive([1])
        #expect(uart.read(UART.iirFcr) == UART.iirFIFOs | UART.iirRxData)
        uart.write(UART.iirFcr, UART.fcrEnable | 0xC0)   // trigger level bits do not show in IIR
        #expect(uart.read(UART.iirFcr) == UART.iirFIFOs | UART.iirRxData)
        uart.write(UART.iirFcr, 0)
        #expect(uart.read(UART.iirFcr) & 0xC0 == 0)
    }

    @Test("MCR OUT2 gates INTR: pending interrupts reach the line only while OUT2 is set")
    func out2GatesLine() {
        let (uart, recorder) = makeUART()
        uart.write(UART.mcr, 0)
        uart.write(UART.ier, UART.ierRxData)
        uart.receive([1])
        #expect(recorder.lineChanges.isEmpty, "OUT2 clear: nothing on the line")
        #expect(uart.interruptID() == UART.iirRxData, "the interrupt is still pending inside the UART")
        uart.write(UART.mcr, UART.mcrOUT2)
        #expect(recorder.lineChanges == [true])
        uart.write(UART.mcr, UART.mcrOUT2 | UART.mcrDTR | UART.mcrRTS)
        #expect(recorder.lineChanges == [true], "no change, no call")
        uart.write(UART.mcr, UART.mcrDTR)
        #expect(recorder.lineChanges == [true, false])
        _ = uart.read(UART.rbrThr)
        #expect(recorder.lineChanges == [true, false], "already low")
    }

    @Test("INTR callbacks come only on level changes")
    func levelChangesOnly() {
        let (uart, recorder) = makeUART()
        uart.write(UART.ier, UART.ierRxData)
        for byte in UInt8(0)..<8 { uart.receive([byte]) }
        for _ in 0..<5 { _ = uart.read(UART.lsr); _ = uart.read(UART.iirFcr) }
        #expect(recorder.lineChanges == [true])
        for _ in 0..<8 { _ = uart.read(UART.rbrThr) }
        #expect(recorder.lineChanges == [true, false])
        _ = uart.read(UART.rbrThr)
        #expect(recorder.lineChanges == [true, false])
    }
}

/// `receive(_:)` runs on the console thread while the vCPU thread reads RBR. Each computes its
/// new INTR level under the lock but drives the line after unlocking, so the two calls can reach
/// the line in the opposite order. This test holds the receiving thread between "computed high"
/// and "drove high" (as a preemption there would), lets the vCPU side drain the FIFO (level low),
/// then lets the receiver go on: the line must end at the level the UART's state calls for.
@Suite("Serial16550: INTR across threads")
struct SerialThreadingTests {
    @Test("the last level driven matches the UART's state after racing receive and RBR read")
    func lineLevelSurvivesRace() {
        let recorder = UARTRecorder()
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let holdNextHigh = Mutex(true)
        let uart = Serial16550(output: { recorder.transmit($0) }, interruptLine: { level in
            if level && holdNextHigh.withLock({ hold in defer { hold = false }; return hold }) {
                entered.signal()
                _ = release.wait(timeout: .now() + 5)
            }
            recorder.drive(level)
        })
        uart.write(UART.ier, UART.ierRxData)

        let receiverDone = DispatchSemaphore(value: 0), readerDone = DispatchSemaphore(value: 0)
        DispatchQueue(label: "console").async { uart.receive([0x41]); receiverDone.signal() }
        #expect(entered.wait(timeout: .now() + 5) == .success, "the receiver never raised INTR")
        let read = Mutex<UInt64?>(nil)
        DispatchQueue(label: "vcpu").async { read.withLock { $0 = uart.read(UART.rbrThr) }; readerDone.signal() }
        // An implementation that drives the line under its lock blocks the reader here; give it
        // a moment either way, then let the receiver finish.
        let readerFinishedEarly = readerDone.wait(timeout: .now() + 0.5) == .success
        release.signal()
        #expect(receiverDone.wait(timeout: .now() + 5) == .success)
        if !readerFinishedEarly { #expect(readerDone.wait(timeout: .now() + 5) == .success) }

        #expect(read.withLock { $0 } == 0x41)
        #expect(uart.interruptID() == UART.iirNone, "nothing is pending inside the UART")
        #expect(recorder.lineChanges.last == false,
                "INTR left at \(String(describing: recorder.lineChanges.last)) after \(recorder.lineChanges)")
    }
}

@Suite("Serial16550: loopback")
struct SerialLoopbackTests {
    @Test("in loopback a THR write comes back on RBR and nothing reaches output")
    func echo() {
        let (uart, recorder) = makeUART()
        uart.write(UART.mcr, UART.mcrLoop | UART.mcrOUT2)
        uart.write(UART.rbrThr, 0xAE)
        uart.write(UART.rbrThr, 0x5A)
        #expect(recorder.output.isEmpty)
        #expect(uart.read(UART.lsr) == UART.lsrTHRE | UART.lsrTEMT | UART.lsrDR)
        #expect(uart.read(UART.rbrThr) == 0xAE)
        #expect(uart.read(UART.rbrThr) == 0x5A)
        #expect(uart.read(UART.lsr) & UART.lsrDR == 0)

        uart.write(UART.mcr, UART.mcrOUT2)
        uart.write(UART.rbrThr, 0x41)
        #expect(recorder.output == [0x41], "leaving loopback transmits again")
        #expect(uart.read(UART.lsr) & UART.lsrDR == 0)
    }

    @Test("a looped-back byte raises the receive interrupt")
    func echoRaisesReceiveInterrupt() {
        let (uart, recorder) = makeUART()
        uart.write(UART.mcr, UART.mcrLoop | UART.mcrOUT2)
        uart.write(UART.ier, UART.ierRxData)
        uart.write(UART.rbrThr, 0x42)
        #expect(uart.interruptID() == UART.iirRxData)
        #expect(recorder.lineChanges == [true])
        #expect(uart.read(UART.rbrThr) == 0x42)
        #expect(recorder.lineChanges == [true, false])
    }

    /// MCR low nibble -> MSR high nibble: RTS->CTS (4), DTR->DSR (5), OUT1->RI (6), OUT2->DCD (7).
    static let mirrorCases: [(mcr: UInt64, msr: UInt64)] = [
        (0x00, 0x00), (UART.mcrRTS, 0x10), (UART.mcrDTR, 0x20), (UART.mcrOUT1, 0x40), (UART.mcrOUT2, 0x80),
        (UART.mcrDTR | UART.mcrRTS, 0x30), (0x0F, 0xF0),
    ]

    @Test("in loopback MSR bits 7:4 mirror the MCR outputs", arguments: mirrorCases)
    func modemStatusMirrorsControl(mcr: UInt64, msr: UInt64) {
        let (uart, _) = makeUART()
        uart.write(UART.mcr, UART.mcrLoop | mcr)
        #expect(uart.read(UART.msr) & 0xF0 == msr)
    }
}

@Suite("device state for snapshots")
struct DeviceSavedStateTests {
    @Test func theUARTRoundTrips() {
        let uart = Serial16550(output: { _ in })
        _ = uart.write(offset: 3, size: 1, value: 0x80)    // DLAB
        _ = uart.write(offset: 0, size: 1, value: 0x01)    // divisor 1
        _ = uart.write(offset: 3, size: 1, value: 0x1B)    // 8E1, DLAB off
        _ = uart.write(offset: 1, size: 1, value: 0x01)    // receive interrupts
        _ = uart.write(offset: 7, size: 1, value: 0x42)    // scratch
        uart.receive(Array("abc".utf8))
        let saved = uart.savedState
        let copy = Serial16550(output: { _ in })
        copy.restore(registers: saved.registers, receiveFIFO: saved.receiveFIFO)
        #expect(copy.savedState.registers == saved.registers)
        #expect(copy.read(offset: 7, size: 1) == 0x42)
        #expect(copy.read(offset: 3, size: 1) == 0x1B)
        #expect(copy.read(offset: 0, size: 1) == UInt64(UInt8(ascii: "a")), "the FIFO came along")
        copy.restore(registers: [:], receiveFIFO: [UInt8](repeating: 1, count: 100))
        #expect(copy.savedState.receiveFIFO.count == Serial16550.fifoDepth, "cut to the FIFO's depth")
    }

    @Test func firmwareConfigKeepsItsPlace() {
        let config = FirmwareConfig(items: FirmwareConfig.items(cpus: 2, ramBytes: 1 << 20, commandLine: Array("hello".utf8)))
        _ = config.write(offset: 0, size: 2, value: 0x15)
        _ = config.read(offset: 1, size: 1)
        let saved = config.savedState
        #expect(saved.selector == 0x15 && saved.offset == 1)
        let copy = FirmwareConfig(items: FirmwareConfig.items(cpus: 2, ramBytes: 1 << 20, commandLine: Array("hello".utf8)))
        copy.restore(selector: saved.selector, offset: saved.offset)
        #expect(copy.read(offset: 1, size: 1) == UInt64(UInt8(ascii: "e")))
    }
}

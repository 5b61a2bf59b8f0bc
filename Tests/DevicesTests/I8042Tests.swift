import Dispatch
import Synchronization
import Testing
@testable import Devices

/// 8042 ports, bits and commands, spelled out here so the tests do not borrow the implementation's
/// constants. Offsets are relative to port 0x60, where the device is registered.
enum KBC {
    static let data: UInt64 = 0, command: UInt64 = 4

    // Status register.
    static let obf: UInt8 = 0x01, ibf: UInt8 = 0x02, sys: UInt8 = 0x04, cmdLast: UInt8 = 0x08
    static let keylockOpen: UInt8 = 0x10, auxData: UInt8 = 0x20, timeout: UInt8 = 0x40

    // Command byte.
    static let kbdInt: UInt8 = 0x01, auxInt: UInt8 = 0x02, ctrSys: UInt8 = 0x04
    static let kbdDisabled: UInt8 = 0x10, auxDisabled: UInt8 = 0x20, translate: UInt8 = 0x40

    // Controller commands.
    static let readCTR: UInt8 = 0x20, writeCTR: UInt8 = 0x60, selfTest: UInt8 = 0xAA
    static let kbdTest: UInt8 = 0xAB, kbdDisable: UInt8 = 0xAD, kbdEnable: UInt8 = 0xAE
    static let auxDisable: UInt8 = 0xA7, auxEnable: UInt8 = 0xA8, auxTest: UInt8 = 0xA9
    static let readInput: UInt8 = 0xC0, readOutput: UInt8 = 0xD0, writeOutput: UInt8 = 0xD1
    static let kbdLoop: UInt8 = 0xD2, auxLoop: UInt8 = 0xD3, auxSend: UInt8 = 0xD4, pulseReset: UInt8 = 0xFE

    // Keyboard.
    static let ack: UInt8 = 0xFA, resend: UInt8 = 0xFE, bat: UInt8 = 0xAA
}

/// Every level the IRQ 1 line was driven to, in order.
final class IRQRecorder: Sendable {
    private let levels = Mutex<[Bool]>([])
    func drive(_ level: Bool) { levels.withLock { $0.append(level) } }
    var changes: [Bool] { levels.withLock { $0 } }
    var isHigh: Bool { levels.withLock { $0.last ?? false } }
    func clear() { levels.withLock { $0.removeAll() } }
}

private func makeController() -> (I8042, IRQRecorder) {
    let recorder = IRQRecorder()
    return (I8042(keyboardInterruptLine: { recorder.drive($0) }), recorder)
}

extension I8042 {
    var status: UInt8 { UInt8(read(offset: KBC.command, size: 1)) }
    func readData() -> UInt8 { UInt8(read(offset: KBC.data, size: 1)) }
    @discardableResult
    func command(_ byte: UInt8) -> GuestRequest? { write(offset: KBC.command, size: 1, value: UInt64(byte)) }
    @discardableResult
    func writeData(_ byte: UInt8) -> GuestRequest? { write(offset: KBC.data, size: 1, value: UInt64(byte)) }

    /// Reads the output buffer for as long as the status register says it is full.
    func drain(limit: Int = 64) -> [UInt8] {
        var bytes: [UInt8] = []
        while status & KBC.obf != 0 && bytes.count < limit { bytes.append(readData()) }
        return bytes
    }
}

/// Linux's i8042 driver (drivers/input/serio/i8042.c, 6.12) reduced to its port accesses. A poll
/// that Linux would repeat (10000 times, 50 us apart) is allowed one status read here: the device
/// answers at once or the test fails, since each poll that runs out costs a guest 500 ms.
struct LinuxI8042 {
    enum Failure: Error, Equatable { case timeout(command: UInt8), auxError, noController }
    let device: I8042

    /// `i8042_flush`: reads while OBF is set; more than 16 bytes means "No controller found".
    @discardableResult
    func flush() throws(Failure) -> [UInt8] {
        var bytes: [UInt8] = []
        while device.status & KBC.obf != 0 {
            guard bytes.count < 16 else { throw .noController }
            bytes.append(device.readData())
        }
        return bytes
    }

    /// `__i8042_command`: IBF must be clear before each write; each result must be there at the
    /// first status read; the aux loopback's result must carry AUXDATA.
    func command(_ command: UInt8, _ parameters: [UInt8] = [], results: Int = 0) throws(Failure) -> [UInt8] {
        guard device.status & KBC.ibf == 0 else { throw .timeout(command: command) }
        device.command(command)
        for parameter in parameters {
            guard device.status & KBC.ibf == 0 else { throw .timeout(command: command) }
            device.writeData(parameter)
        }
        var bytes: [UInt8] = []
        for _ in 0..<results {
            let status = device.status
            guard status & KBC.obf != 0 else { throw .timeout(command: command) }
            if command == KBC.auxLoop && status & KBC.auxData == 0 { throw .auxError }
            bytes.append(device.readData())
        }
        return bytes
    }

    /// `i8042_controller_init`: two equal CTR reads, keyboard disabled and its interrupt off,
    /// translation kept if the firmware left it on; returns the CTR written and the keylock state.
    func controllerInit() throws(Failure) -> (ctr: UInt8, keylockActive: Bool) {
        let first = try command(KBC.readCTR, results: 1)[0]
        let second = try command(KBC.readCTR, results: 1)[0]
        #expect(first == second, "the CTR reads are stable")
        let ctr = (second | KBC.kbdDisabled) & ~KBC.kbdInt
        let keylockActive = device.status & KBC.keylockOpen == 0
        _ = try command(KBC.writeCTR, [ctr])
        try flush()
        return (ctr, keylockActive)
    }

    /// `i8042_check_aux` up to its first verdict: true when Linux would go on to use an AUX port.
    func checkAux(noloop: Bool = false) throws(Failure) -> Bool {
        try flush()
        var loopFailed = true
        if !noloop {
            do {
                loopFailed = try command(KBC.auxLoop, [0x5A], results: 1) != [0x5A]
            } catch .auxError {
                loopFailed = true
            }
        }
        if loopFailed {
            let test = try command(KBC.auxTest, results: 1)[0]
            if test != 0x00 && test != 0xFA && test != 0xFF { return false }
        }
        return true
    }
}

/// Reads the output buffer the way Linux's interrupt handler does: one byte per rising edge of
/// IRQ 1, for as long as the line stays raised after a read.
private func interruptBytes(_ device: I8042, _ irq: IRQRecorder, limit: Int = 64) -> [UInt8] {
    var bytes: [UInt8] = []
    while irq.isHigh && bytes.count < limit {
        #expect(device.status & KBC.obf != 0, "IRQ 1 is high with an empty output buffer")
        bytes.append(device.readData())
    }
    return bytes
}

/// Brings the controller to where Linux leaves it after probing: keyboard port enabled with its
/// interrupt, translation as `translate` says.
private func linuxReady(translate: Bool = true) -> (I8042, IRQRecorder) {
    let (kbc, irq) = makeController()
    let ctr = KBC.kbdInt | KBC.ctrSys | KBC.auxDisabled | (translate ? KBC.translate : 0)
    kbc.command(KBC.writeCTR)
    kbc.writeData(ctr)
    irq.clear()
    return (kbc, irq)
}

@Suite("I8042: controller commands")
struct I8042ControllerTests {
    @Test("at power-on the status reads idle: no data, input buffer empty, system flag, keylock open")
    func initialStatus() {
        let (kbc, irq) = makeController()
        #expect(kbc.status == KBC.sys | KBC.keylockOpen)
        #expect(kbc.drain().isEmpty)
        #expect(irq.changes.isEmpty)
    }

    @Test("the CMD/DATA bit follows the port of the last write")
    func commandDataBit() {
        let (kbc, _) = makeController()
        kbc.command(KBC.kbdEnable)
        #expect(kbc.status & KBC.cmdLast != 0)
        kbc.command(KBC.writeCTR)
        kbc.writeData(0x45)
        #expect(kbc.status & KBC.cmdLast == 0)
    }

    @Test("controller results: self-test 0x55, keyboard test 0x00, aux test 0x02, input port, CTR",
          arguments: [(command: KBC.selfTest, result: 0x55), (KBC.kbdTest, 0x00), (KBC.auxTest, 0x02),
                      (KBC.readInput, 0xA0), (KBC.readCTR, 0x65)] as [(command: UInt8, result: UInt8)])
    func controllerResult(command: UInt8, result: UInt8) throws {
        let (kbc, irq) = makeController()
        #expect(try LinuxI8042(device: kbc).command(command, results: 1) == [result])
        #expect(kbc.status & (KBC.obf | KBC.auxData) == 0, "one byte, then empty")
        #expect(irq.changes.isEmpty, "controller results raise no IRQ 1, although CTR bit 0 is set")
    }

    @Test("the initial CTR is 0x65: keyboard interrupt, system flag, aux disabled, translation")
    func initialCommandByte() throws {
        let (kbc, _) = makeController()
        let ctr = try LinuxI8042(device: kbc).command(KBC.readCTR, results: 1)[0]
        #expect(ctr == KBC.kbdInt | KBC.ctrSys | KBC.auxDisabled | KBC.translate)
    }

    @Test("CTR write then read gives the value back; CTR bit 2 sets the status system flag",
          arguments: [UInt8(0x00), 0x04, 0x45, 0x47, 0x61, 0x74, 0xFF])
    func commandByteRoundTrip(value: UInt8) throws {
        let (kbc, _) = makeController()
        let linux = LinuxI8042(device: kbc)
        _ = try linux.command(KBC.writeCTR, [value])
        #expect(try linux.command(KBC.readCTR, results: 1) == [value])
        #expect(kbc.status & KBC.sys == value & KBC.ctrSys)
    }

    @Test("controller RAM bytes 1-31 are read by 0x21-0x3F and written by 0x61-0x7F")
    func controllerRAM() throws {
        let (kbc, _) = makeController()
        let linux = LinuxI8042(device: kbc)
        for index in UInt8(1)...31 { _ = try linux.command(0x60 + index, [index ^ 0xA5]) }
        for index in UInt8(1)...31 { #expect(try linux.command(0x20 + index, results: 1) == [index ^ 0xA5]) }
        #expect(try linux.command(KBC.readCTR, results: 1) == [0x65], "byte 0 is still the CTR")
    }

    @Test("self-test sets the status system flag again")
    func selfTestSetsSystemFlag() throws {
        let (kbc, _) = makeController()
        let linux = LinuxI8042(device: kbc)
        _ = try linux.command(KBC.writeCTR, [0x00])
        #expect(kbc.status & KBC.sys == 0)
        #expect(try linux.command(KBC.selfTest, results: 1) == [0x55])
        #expect(kbc.status & KBC.sys != 0)
    }

    @Test("0xAD/0xAE and 0xA7/0xA8 set and clear CTR bits 4 and 5",
          arguments: [(command: KBC.kbdDisable, set: KBC.kbdDisabled, clear: 0),
                      (KBC.kbdEnable, 0, KBC.kbdDisabled),
                      (KBC.auxDisable, KBC.auxDisabled, 0),
                      (KBC.auxEnable, 0, KBC.auxDisabled)] as [(command: UInt8, set: UInt8, clear: UInt8)])
    func enableDisable(command: UInt8, set: UInt8, clear: UInt8) throws {
        for start in [UInt8(0x00), 0x30, 0x65] {
            let (kbc, _) = makeController()
            let linux = LinuxI8042(device: kbc)
            _ = try linux.command(KBC.writeCTR, [start])
            _ = try linux.command(command)
            #expect(try linux.command(KBC.readCTR, results: 1) == [(start | set) & ~clear])
        }
    }

    @Test("a command waiting for its parameter is abandoned by the next command")
    func newCommandAbandonsParameter() throws {
        let (kbc, _) = makeController()
        kbc.command(KBC.writeCTR)
        kbc.command(KBC.kbdTest)
        #expect(kbc.drain() == [0x00])
        kbc.writeData(0xEE)                       // now a byte for the keyboard (echo), not the CTR
        #expect(kbc.drain() == [0xEE])
        #expect(try LinuxI8042(device: kbc).command(KBC.readCTR, results: 1) == [0x65])
    }

    @Test("0xD2 puts a byte in the output buffer as keyboard data, untranslated, with IRQ 1")
    func keyboardLoopback() {
        let (kbc, irq) = linuxReady()
        kbc.command(KBC.kbdLoop)
        kbc.writeData(0x14)
        #expect(kbc.status & (KBC.obf | KBC.auxData) == KBC.obf)
        #expect(irq.changes == [true])
        #expect(kbc.readData() == 0x14, "0xD2 bytes bypass translation")
        #expect(irq.changes == [true, false])
    }

    @Test("0xD4 to the absent aux device answers 0xFE as aux data with the time-out bit, no IRQ")
    func auxSendHasNoDevice() {
        let (kbc, irq) = linuxReady()
        kbc.command(KBC.auxSend)
        kbc.writeData(0xF2)
        #expect(kbc.status & (KBC.obf | KBC.auxData | KBC.timeout) == KBC.obf | KBC.auxData | KBC.timeout)
        #expect(kbc.readData() == 0xFE)
        #expect(kbc.status & (KBC.obf | KBC.auxData | KBC.timeout) == 0)
        #expect(irq.changes.isEmpty)
    }

    @Test("the data port reads the last byte again when the buffer is empty")
    func emptyReadRepeatsLastByte() {
        let (kbc, _) = makeController()
        #expect(kbc.readData() == 0)
        kbc.command(KBC.selfTest)
        #expect(kbc.readData() == 0x55)
        #expect(kbc.readData() == 0x55)
        #expect(kbc.status & KBC.obf == 0)
    }

    @Test("results of commands never read are kept up to a bound: the output buffer and 16 more")
    func resultsAreBounded() throws {
        let (kbc, _) = makeController()
        for _ in 0..<1000 { kbc.command(KBC.readCTR) }
        #expect(kbc.drain(limit: 2000).count == 17)
    }

}

@Suite("I8042: as Linux probes it")
struct I8042LinuxProbeTests {
    @Test("i8042_controller_check and i8042_controller_init: stable CTR, no keylock, translation kept")
    func controllerInit() throws {
        let (kbc, irq) = makeController()
        let linux = LinuxI8042(device: kbc)
        #expect(try linux.flush().isEmpty)
        let (ctr, keylockActive) = try linux.controllerInit()
        #expect(ctr == 0x74, "0x65 with the keyboard disabled and its interrupt off")
        #expect(!keylockActive, "Linux would warn \"Keylock active\"")
        #expect(try linux.command(KBC.readCTR, results: 1) == [0x74])
        #expect(irq.changes.isEmpty)
    }

    @Test("i8042_check_aux: the loop test fails at once and 0xA9 reports a stuck line: no AUX port",
          arguments: [false, true])
    func checkAuxFindsNoPort(noloop: Bool) throws {
        let (kbc, irq) = makeController()
        let linux = LinuxI8042(device: kbc)
        _ = try linux.controllerInit()
        #expect(try linux.checkAux(noloop: noloop) == false)
        #expect(kbc.status & KBC.obf == 0, "nothing is left behind for the keyboard port to find")
        #expect(irq.changes.isEmpty)
    }

    @Test("the aux loopback answers 0xFE flagged as aux data, not the byte written")
    func auxLoopAnswer() throws {
        let (kbc, _) = makeController()
        kbc.command(KBC.auxLoop)
        kbc.writeData(0x5A)
        #expect(kbc.status & (KBC.obf | KBC.auxData) == KBC.obf | KBC.auxData)
        #expect(kbc.readData() == 0xFE)
    }

    @Test("atkbd_probe: 0xF2 answers ACK, 0xAB and the ID byte, one IRQ 1 edge per byte",
          arguments: [(translate: true, id: UInt8(0x41)), (false, 0x83)])
    func getID(translate: Bool, id: UInt8) {
        let (kbc, irq) = linuxReady(translate: translate)
        kbc.writeData(0xF2)
        #expect(irq.changes == [true], "the ACK raises IRQ 1")
        #expect(kbc.status & (KBC.obf | KBC.auxData) == KBC.obf)
        #expect(kbc.readData() == KBC.ack)
        #expect(irq.changes == [true, false, true], "the read drops the line, the next byte raises it")
        #expect(kbc.readData() == 0xAB)
        #expect(kbc.readData() == id)
        #expect(irq.changes == [true, false, true, false, true, false])
        #expect(kbc.status & KBC.obf == 0)
    }

    @Test("the whole probe: controller, aux, keyboard port, atkbd connect, then Ctrl-Alt-Del")
    func wholeProbe() throws {
        let (kbc, irq) = makeController()
        let linux = LinuxI8042(device: kbc)
        try linux.flush()
        var (ctr, _) = try linux.controllerInit()
        #expect(try linux.checkAux() == false)
        ctr = (ctr & ~KBC.kbdDisabled) | KBC.kbdInt                 // i8042_enable_kbd_port
        _ = try linux.command(KBC.writeCTR, [ctr])
        #expect(!irq.isHigh && kbc.status & KBC.obf == 0)

        // atkbd_connect: GET ID, disable, LEDs off, fastest repeat, enable. Every byte by interrupt.
        let exchanges: [(sent: [UInt8], answer: [UInt8])] = [
            ([0xF2], [KBC.ack, 0xAB, 0x41]), ([0xF5], [KBC.ack]), ([0xED], [KBC.ack]), ([0x00], [KBC.ack]),
            ([0xF3], [KBC.ack]), ([0x00], [KBC.ack]), ([0xF4], [KBC.ack]),
        ]
        for exchange in exchanges {
            for byte in exchange.sent { kbc.writeData(byte) }
            #expect(interruptBytes(kbc, irq) == exchange.answer, "answer to \(exchange.sent)")
        }
        kbc.sendCtrlAltDel()
        #expect(interruptBytes(kbc, irq) == [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])
        #expect(!irq.isHigh)
    }
}

@Suite("I8042: keyboard")
struct I8042KeyboardTests {
    @Test("keyboard commands and their answers (untranslated)",
          arguments: [(sent: [UInt8(0xFF)], answer: [KBC.ack, KBC.bat]),
                      ([0xF2], [KBC.ack, 0xAB, 0x83]),
                      ([0xF5], [KBC.ack]), ([0xF4], [KBC.ack]), ([0xF6], [KBC.ack]),
                      ([0xED, 0x07], [KBC.ack, KBC.ack]),
                      ([0xF3, 0x20], [KBC.ack, KBC.ack]),
                      ([0xF0, 0x00], [KBC.ack, KBC.ack, 0x02]),
                      ([0xF0, 0x02], [KBC.ack, KBC.ack]),
                      ([0xEE], [0xEE]),
                      ([0xED, 0xF2], [KBC.ack, KBC.ack, 0xAB, 0x83]),
                      ([0x00], [KBC.resend]), ([0x55], [KBC.resend]), ([0xE8], [KBC.resend]),
                      ([0xEA], [KBC.resend]), ([0xF8], [KBC.resend]), ([0xFA], [KBC.resend])])
    func commandAnswers(sent: [UInt8], answer: [UInt8]) {
        let (kbc, _) = linuxReady(translate: false)
        for byte in sent { kbc.writeData(byte) }
        #expect(kbc.drain() == answer)
    }

    @Test("with translation, the scan code set (2) reads as 0x41 and ACK/BAT pass unchanged")
    func translatedAnswers() {
        let (kbc, _) = linuxReady(translate: true)
        kbc.writeData(0xF0)
        kbc.writeData(0x00)
        #expect(kbc.drain() == [KBC.ack, KBC.ack, 0x41])
        kbc.writeData(0xFF)
        #expect(kbc.drain() == [KBC.ack, KBC.bat])
    }

    @Test("a keyboard reset drops the answers it has not sent yet")
    func resetClearsKeyboardBuffer() {
        let (kbc, _) = linuxReady(translate: false)
        kbc.writeData(0xF2)
        kbc.writeData(0xFF)
        #expect(kbc.drain() == [KBC.ack, KBC.ack, KBC.bat], "0xAB 0x83 were still in the keyboard")
    }

    @Test("0xED takes the LED byte; 0xF3 the typematic byte")
    func ledsAndTypematic() {
        let (kbc, _) = linuxReady()
        kbc.writeData(0xED)
        kbc.writeData(0x05)
        kbc.writeData(0xF3)
        kbc.writeData(0x7F)
        #expect(kbc.drain() == [KBC.ack, KBC.ack, KBC.ack, KBC.ack])
        #expect(kbc.keyboardLEDs == 0x05)
        #expect(kbc.keyboardTypematic == 0x7F)
        kbc.writeData(0xFF)
        #expect(kbc.keyboardLEDs == 0, "reset turns the LEDs off")
    }

    @Test("0xFE asks the keyboard to send its last byte again")
    func resend() {
        let (kbc, _) = linuxReady(translate: false)
        kbc.writeData(0xF2)
        #expect(kbc.drain() == [KBC.ack, 0xAB, 0x83])
        kbc.writeData(0xFE)
        #expect(kbc.drain() == [0x83])
    }

    @Test("Ctrl-Alt-Del in set 2 without translation, set 1 with it",
          arguments: [(translate: false, codes: [UInt8(0x14), 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14]),
                      (true, [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])])
    func ctrlAltDel(translate: Bool, codes: [UInt8]) {
        let (kbc, irq) = linuxReady(translate: translate)
        kbc.sendCtrlAltDel()
        #expect(irq.isHigh)
        #expect(interruptBytes(kbc, irq) == codes)
        #expect(irq.changes == Array(repeating: [true, false], count: codes.count).flatMap { $0 }, "one edge per byte")
    }

    @Test("a disabled keyboard interface holds the keys; controller results still come through")
    func disabledInterfaceHoldsBytes() throws {
        let (kbc, irq) = linuxReady()
        kbc.command(KBC.kbdDisable)
        kbc.sendCtrlAltDel()
        #expect(kbc.status & KBC.obf == 0)
        #expect(irq.changes.isEmpty)
        #expect(try LinuxI8042(device: kbc).command(KBC.readCTR, results: 1) == [0x75])
        kbc.command(KBC.kbdEnable)
        #expect(irq.changes == [true])
        #expect(interruptBytes(kbc, irq) == [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])
    }

    @Test("with CTR bit 0 clear keyboard bytes wait without IRQ 1; setting it raises the line")
    func interruptEnable() throws {
        let (kbc, irq) = linuxReady()
        _ = try LinuxI8042(device: kbc).command(KBC.writeCTR, [KBC.ctrSys | KBC.translate])
        kbc.writeData(0xEE)
        #expect(kbc.status & KBC.obf != 0)
        #expect(irq.changes.isEmpty)
        kbc.command(KBC.writeCTR)
        kbc.writeData(KBC.kbdInt | KBC.ctrSys | KBC.translate)
        #expect(irq.changes == [true])
        #expect(kbc.readData() == 0xEE)
        #expect(irq.changes == [true, false])
    }

    @Test("a keyboard disabled by 0xF5 drops keys; 0xF4 enables it again")
    func scanningDisabledDropsKeys() {
        let (kbc, irq) = linuxReady()
        kbc.writeData(0xF5)
        #expect(interruptBytes(kbc, irq) == [KBC.ack])
        kbc.sendCtrlAltDel()
        #expect(kbc.status & KBC.obf == 0)
        kbc.writeData(0xF4)
        #expect(interruptBytes(kbc, irq) == [KBC.ack])
        kbc.sendCtrlAltDel()
        #expect(interruptBytes(kbc, irq).count == 8)
    }

    @Test("keys that do not fit the keyboard's 16-byte buffer become one overrun code")
    func overrun() {
        let (kbc, _) = linuxReady(translate: false)
        kbc.command(KBC.kbdDisable)
        kbc.sendCtrlAltDel()
        kbc.sendCtrlAltDel()
        kbc.sendCtrlAltDel()
        kbc.command(KBC.kbdEnable)
        let bytes = kbc.drain()
        #expect(bytes.count == 12)
        #expect(Array(bytes.prefix(11)) == [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14])
        #expect(bytes.last == 0x00)
    }

    @Test("keys sent from another thread arrive whole while a vCPU thread reads", .timeLimit(.minutes(1)))
    func keysFromAnotherThread() async {
        let (kbc, irq) = linuxReady()
        let rounds = 200
        let reader = Task.detached {
            var bytes: [UInt8] = []
            while bytes.count < rounds * 8 {
                if kbc.status & KBC.obf != 0 { bytes.append(kbc.readData()) } else { await Task.yield() }
            }
            return bytes
        }
        for _ in 0..<rounds {
            kbc.sendCtrlAltDel()
            while kbc.keyboardPending > 5 { await Task.yield() }
        }
        let bytes = await reader.value
        let expected: [UInt8] = [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]
        #expect(bytes == Array(repeating: expected, count: rounds).flatMap { $0 })
        #expect(!irq.isHigh)
    }
}

@Suite("I8042: reset and output port")
struct I8042ResetTests {
    @Test("0xFE on the command port requests a reset")
    func pulseReset() {
        let (kbc, _) = makeController()
        #expect(kbc.command(KBC.pulseReset) == .reset(source: "i8042 reset (0xFE to port 0x64)"))
    }

    @Test("other commands on port 0x64 do not reset, pulses included",
          arguments: [UInt8(0x00), 0x20, 0x60, 0xAA, 0xAD, 0xD1, 0xF0, 0xF2, 0xFC, 0xFD, 0xFF])
    func otherCommands(command: UInt8) {
        #expect(makeController().0.command(command) == nil)
    }

    @Test("0xFE on the data port, or on offsets 1-3, does not reset", arguments: [UInt64(0), 1, 2, 3])
    func otherOffsets(offset: UInt64) {
        #expect(makeController().0.write(offset: offset, size: 1, value: 0xFE) == nil)
    }

    @Test("0xD1: bit 0 clear resets; Linux's A20 write (0xDF) does not, and 0xD0 reads it back",
          arguments: [(value: UInt8(0xDF), resets: false), (0x03, false), (0xFF, false),
                      (0xDE, true), (0xFE, true), (0x00, true)])
    func outputPortWrite(value: UInt8, resets: Bool) throws {
        let (kbc, _) = makeController()
        kbc.command(KBC.writeOutput)
        let request = kbc.writeData(value)
        if resets {
            guard case .reset = request else {
                Issue.record("0xD1 with 0x\(String(value, radix: 16)) did not reset: \(String(describing: request))")
                return
            }
        } else {
            #expect(request == nil)
            #expect(try LinuxI8042(device: kbc).command(KBC.readOutput, results: 1) == [value & ~0x30])
        }
    }

    @Test("0xD0 shows the IRQ 1 line in output port bit 4 while a keyboard byte waits")
    func outputPortShowsBufferFull() {
        let (kbc, _) = linuxReady()
        kbc.command(KBC.readOutput)
        #expect(kbc.readData() & 0x30 == 0)
        kbc.writeData(0xEE)
        kbc.command(KBC.readOutput)
        #expect(kbc.readData() == 0xEE)
        #expect(kbc.readData() & 0x30 == 0x10)
    }

    @Test("on the bus at 0x60..0x64: 0xFE to port 0x64 resets, status reads idle, 0x65 is not claimed")
    func onTheBus() throws {
        #expect(I8042.dataPort == 0x60)
        #expect(I8042.commandPort == 0x64)
        let bus = try Bus(.port, devices: [(base: I8042.dataPort, length: 5, device: I8042())])
        #expect(bus.read(0x64, size: 1) == UInt64(KBC.sys | KBC.keylockOpen))
        #expect(bus.write(0x64, size: 1, value: 0xFE) == .reset(source: "i8042 reset (0xFE to port 0x64)"))
        #expect(bus.read(0x64, size: 1) == UInt64(KBC.sys | KBC.keylockOpen | KBC.cmdLast))
        #expect(bus.write(0x60, size: 1, value: 0xFE) == nil)
        #expect(bus.read(0x64, size: 1) == UInt64(KBC.sys | KBC.keylockOpen), "resend with nothing sent yet sends nothing")
        #expect(bus.read(0x65, size: 1) == 0xFF, "port 0x65 is not claimed")
    }
}

@Suite("I8042: set 2 to set 1 translation")
struct I8042TranslationTests {
    @Test("known keys and bytes", arguments: [
        (set2: UInt8(0x00), set1: UInt8(0xFF)), (0x01, 0x43), (0x02, 0x41), (0x03, 0x3F), (0x05, 0x3B),
        (0x07, 0x58), (0x11, 0x38), (0x12, 0x2A), (0x14, 0x1D), (0x1C, 0x1E), (0x29, 0x39), (0x47, 0x60),
        (0x58, 0x3A), (0x59, 0x36), (0x5A, 0x1C), (0x5D, 0x2B), (0x66, 0x0E), (0x71, 0x53), (0x76, 0x01),
        (0x77, 0x45), (0x78, 0x57), (0x7E, 0x46), (0x7F, 0x54), (0x83, 0x41), (0x84, 0x54),
        (0xAA, 0xAA), (0xAB, 0xAB), (0xE0, 0xE0), (0xE1, 0xE1), (0xEE, 0xEE), (0xFA, 0xFA), (0xFE, 0xFE)])
    func knownCodes(set2: UInt8, set1: UInt8) {
        #expect(ScanCode.set1(fromSet2: set2) == set1)
    }

    @Test("codes 0x01-0x7F map one to one onto set 1's make codes 0x01-0x7F")
    func tableIsAPermutation() {
        let images = (UInt8(1)...0x7F).map { ScanCode.set1(fromSet2: $0) }
        #expect(Set(images) == Set(UInt8(1)...0x7F))
    }
}

@Suite("I8042: hostile guests")
struct I8042GarbageTests {
    @Test("200,000 pseudo-random accesses: no crash, resets only where the command set says, then a clean probe")
    func garbage() throws {
        let (kbc, _) = makeController()
        var x: UInt32 = 0x1234_5678
        func next() -> UInt32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
        var awaitingOutputPort = false
        for _ in 0..<200_000 {
            let r = next()
            let offset = UInt64(r % 5)
            let size = [1, 2, 4][Int(r >> 8) % 3]
            let value = UInt64(next())
            if r & 0x10_0000 != 0 {
                _ = kbc.read(offset: offset, size: size)
                continue
            }
            let byte = UInt8(truncatingIfNeeded: value)
            let request = kbc.write(offset: offset, size: size, value: value)
            let allowed: Bool
            switch offset {
            case 4: allowed = byte == 0xFE
            case 0: allowed = awaitingOutputPort && byte & 1 == 0
            default: allowed = false
            }
            if request != nil {
                guard allowed, case .reset = request else {
                    Issue.record("unexpected \(String(describing: request)) for 0x\(String(byte, radix: 16)) at offset \(offset)")
                    return
                }
            }
            if offset == 4 { awaitingOutputPort = byte == 0xD1 } else if offset == 0 { awaitingOutputPort = false }
        }
        // Afterwards Linux still finds a working controller and keyboard (after at most one flush's worth of leftovers).
        let linux = LinuxI8042(device: kbc)
        kbc.command(KBC.writeCTR)
        kbc.writeData(KBC.ctrSys | KBC.kbdDisabled | KBC.translate)
        _ = kbc.drain(limit: 100)
        #expect(try linux.command(KBC.selfTest, results: 1) == [0x55])
        _ = try linux.controllerInit()
        #expect(try linux.checkAux() == false)
    }

    @Test("every command followed by every parameter byte never traps and only resets as documented")
    func everyCommandEveryParameter() {
        for command in UInt8.min...UInt8.max {
            let (kbc, _) = makeController()
            for parameter in UInt8.min...UInt8.max {
                let first = kbc.command(command)
                let second = kbc.writeData(parameter)
                _ = kbc.drain()
                #expect((first != nil) == (command == 0xFE))
                if command == 0xD1 {
                    #expect((second != nil) == (parameter & 1 == 0))
                } else {
                    #expect(second == nil)
                }
            }
        }
    }

    @Test("16- and 32-bit accesses use the low byte")
    func wideAccesses() {
        let (kbc, _) = makeController()
        #expect(kbc.write(offset: KBC.command, size: 4, value: 0xFFFF_FFAA) == nil)
        #expect(kbc.read(offset: KBC.command, size: 2) & 0xFF01 == 0x01)
        #expect(kbc.read(offset: KBC.data, size: 4) == 0x55)
        #expect(kbc.write(offset: KBC.command, size: 2, value: 0x01FE) == .reset(source: "i8042 reset (0xFE to port 0x64)"))
    }
}

import Synchronization

/// An 8042 keyboard controller with an MF2 keyboard behind it, as the IBM PC/AT Technical
/// Reference ("Keyboard Controller") and the IBM PS/2 Hardware Interface Technical Reference
/// ("Keyboard and Auxiliary Device Controller", "Keyboard") describe them, and exactly as far as
/// Linux's i8042 and atkbd drivers (6.12) probe and drive them. Port 0x60 is the data port
/// (output buffer on read; a controller command's parameter or a byte for the keyboard on write),
/// port 0x64 the status register on read and the command register on write.
///
/// The controller has one output buffer, as the chip does; a small queue of controller results
/// and the keyboard's own 16-byte buffer stand behind it and refill it as soon as the guest reads
/// it. A keyboard byte in the output buffer drives IRQ 1 while command byte bit 0 is set; the line
/// drops when the guest reads the byte and rises again for the next one, so an edge-triggered
/// IRQ 1 sees one edge per byte. Controller results (command byte, self-test) raise no interrupt:
/// drivers poll for them.
///
/// There is no auxiliary (mouse) port: a microVM has no mouse, and Firecracker and Cloud
/// Hypervisor offer none either. Every aux operation fails at once the way a PS/2 controller
/// reports a failed aux transfer: a byte for the aux output buffer (0xD3) or the aux device (0xD4)
/// comes back as 0xFE flagged as aux data with the time-out bit, and the aux interface test (0xA9)
/// reports 0x02 (clock line stuck high). Linux's `i8042_check_aux` sees its loopback byte 0x5A
/// come back as 0xFE, runs 0xA9, and on 0x02 concludes that there is no AUX port, without one
/// poll running out. (Looping 0xD3 back faithfully would pass that test and send Linux on to a
/// 250 ms wait for an IRQ 12 that nothing raises.) Every command Linux sends is answered at once,
/// so none of its 500 ms polls runs out.
///
/// Only command 0xFE (pulse the reset line) and an output-port write (0xD1) with bit 0 clear reset
/// the machine. The chip would also pulse reset for the other even commands 0xF0-0xFC; Swiftlet
/// keeps 0xFE as the one pulse command that resets, the command operating systems use.
public final class I8042: BusDevice {
    public static let dataPort: UInt64 = 0x60
    public static let commandPort: UInt64 = 0x64
    /// The ISA interrupt of the keyboard's output-buffer-full line.
    public static let keyboardIRQ: UInt32 = 1
    /// Offsets in the 5-port range registered at `dataPort`.
    static let dataOffset: UInt64 = 0
    static let commandOffset: UInt64 = commandPort - dataPort

    /// Status register (read from port 0x64), PS/2 bit meanings.
    enum Status {
        static let outputFull: UInt8 = 0x01
        static let inputFull: UInt8 = 0x02          // never set: every write is taken at once
        static let systemFlag: UInt8 = 0x04
        static let lastWriteWasCommand: UInt8 = 0x08
        static let notInhibited: UInt8 = 0x10       // the keylock switch is open
        static let auxData: UInt8 = 0x20
        static let timeout: UInt8 = 0x40
    }

    /// Controller command byte (RAM byte 0), PS/2 bit meanings.
    enum CommandByte {
        static let keyboardInterrupt: UInt8 = 0x01
        static let auxInterrupt: UInt8 = 0x02
        static let systemFlag: UInt8 = 0x04
        static let keyboardDisabled: UInt8 = 0x10
        static let auxDisabled: UInt8 = 0x20
        static let translate: UInt8 = 0x40
    }

    /// The command byte a PC BIOS leaves after POST on a machine without a mouse: keyboard
    /// interrupt on (the BIOS reads keys through INT 09h), system flag set (the self-test passed),
    /// keyboard enabled, aux interface disabled (the BIOS found no mouse) and translation to scan
    /// code set 1 on, as every PC BIOS leaves it. Linux keeps translation when it finds it on.
    static let initialCommandByte: UInt8 = CommandByte.keyboardInterrupt | CommandByte.systemFlag
        | CommandByte.auxDisabled | CommandByte.translate

    /// Output port (0xD0/0xD1): bit 0 is the processor reset line (low resets), bit 1 gate A20,
    /// bits 6 and 7 the keyboard clock and data lines (released, high). Bits 4 and 5 read the
    /// output-buffer-full lines (IRQ 1, IRQ 12). A20 is always on in a KVM guest whatever bit 1 says.
    enum OutputPort {
        static let resetLine: UInt8 = 0x01
        static let initial: UInt8 = 0xC3
        static let keyboardBufferFull: UInt8 = 0x10
        static let auxBufferFull: UInt8 = 0x20
    }

    /// Input port (0xC0): keyboard not inhibited (bit 7), no manufacturing jumper (bit 5).
    static let inputPort: UInt8 = 0xA0
    /// Controller self-test (0xAA) passed.
    static let selfTestPassed: UInt8 = 0x55
    /// Keyboard interface test (0xAB): no error.
    static let interfaceTestPassed: UInt8 = 0x00
    /// Aux interface test (0xA9): clock line stuck high, the answer of a port with nothing wired.
    static let auxInterfaceAbsent: UInt8 = 0x02
    /// What the controller puts in the output buffer, as aux data with the time-out bit, for any
    /// byte meant for the (absent) aux port.
    static let auxNoResponse: UInt8 = 0xFE

    /// Results of controller commands that wait behind the output buffer; a guest that never
    /// reads loses the ones beyond.
    static let resultCapacity = 16

    /// Where a byte in the output buffer came from: the status register tells the guest.
    enum Source: Equatable { case controller, keyboard, aux }

    struct OutputByte: Equatable {
        var value: UInt8
        var source: Source
        var timeout = false
    }

    struct State {
        /// The controller's 32 bytes of RAM; byte 0 is the command byte.
        var ram = [UInt8](repeating: 0, count: 32)
        var systemFlag = true
        var lastWriteWasCommand = false
        var outputPort = OutputPort.initial
        /// A controller command that waits for its parameter on port 0x60.
        var awaitingParameter: UInt8?
        var output: OutputByte?
        /// What the output register last held: a read of an empty buffer returns it again.
        var lastOutput: UInt8 = 0
        /// Controller results queued behind the output buffer, at most `resultCapacity`.
        var results: [OutputByte] = []
        var keyboard = Keyboard()
        /// Translation saw a set 2 break prefix (0xF0): the next code gets bit 7.
        var breakPending = false
        var lineHigh = false

        init() { ram[0] = I8042.initialCommandByte }

        var commandByte: UInt8 {
            get { ram[0] }
            set { ram[0] = newValue }
        }
    }

    private let state = Mutex(State())
    private let keyboardInterruptLine: @Sendable (Bool) -> Void

    /// - Parameter keyboardInterruptLine: drives the keyboard's output-buffer-full line (the VMM
    ///   maps it to IRQ 1). Called with the device's lock held, so levels arrive in order.
    public init(keyboardInterruptLine: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.keyboardInterruptLine = keyboardInterruptLine
    }

    /// Registered at 0x60 with length 5: offset 0 is the data port, offset 4 the status/command
    /// port; offsets 1-3 read 0 and ignore writes. Wider accesses use the low byte.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            switch offset {
            case Self.dataOffset:
                let value = s.output?.value ?? s.lastOutput
                if s.output != nil {
                    s.lastOutput = value
                    s.output = nil
                    updateLine(&s)               // the line drops with the read...
                    Self.refill(&s)
                    updateLine(&s)               // ...and rises again for the next keyboard byte
                }
                return UInt64(value)
            case Self.commandOffset:
                return UInt64(Self.status(s))
            default:
                return 0
            }
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        let byte = UInt8(truncatingIfNeeded: value)
        return state.withLock { s in
            let request: GuestRequest?
            switch offset {
            case Self.dataOffset:
                s.lastWriteWasCommand = false
                request = Self.writeData(byte, &s)
            case Self.commandOffset:
                s.lastWriteWasCommand = true
                request = Self.command(byte, &s)
            default:
                return nil
            }
            Self.refill(&s)
            updateLine(&s)
            return request
        }
    }

    /// Presses and releases Ctrl, Alt and Delete as an MF2 keyboard reports them in scan code set
    /// 2 (Ctrl, Alt, Delete made; Delete, Alt, Ctrl broken), and raises IRQ 1 when the command
    /// byte allows. With translation on, the guest reads them in set 1: 1D 38 E0 53 E0 D3 B8 9D.
    /// A keyboard that the guest disabled (0xF5) drops the keys, as a real one does; a keyboard
    /// interface disabled in the command byte holds them until it is enabled.
    public func sendCtrlAltDel() {
        let keys: [UInt8] = [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14]
        state.withLock { s in
            s.keyboard.pressKeys(keys)
            Self.refill(&s)
            updateLine(&s)
        }
    }

    // MARK: Registers

    private static func status(_ s: State) -> UInt8 {
        var value = Status.notInhibited
        if let output = s.output {
            value |= Status.outputFull
            if output.source == .aux { value |= Status.auxData }
            if output.timeout { value |= Status.timeout }
        }
        if s.systemFlag { value |= Status.systemFlag }
        if s.lastWriteWasCommand { value |= Status.lastWriteWasCommand }
        return value
    }

    /// A write to port 0x60: the parameter of the pending controller command, or a byte for the
    /// keyboard.
    private static func writeData(_ byte: UInt8, _ s: inout State) -> GuestRequest? {
        guard let command = s.awaitingParameter else {
            s.keyboard.receive(byte)
            return nil
        }
        s.awaitingParameter = nil
        switch command {
        case 0x60:
            s.commandByte = byte
            s.systemFlag = byte & CommandByte.systemFlag != 0
        case 0x61...0x7F:
            s.ram[Int(command - 0x60)] = byte
        case 0xD1:
            s.outputPort = byte
            if byte & OutputPort.resetLine == 0 {
                return .reset(source: "i8042 reset (0xD1 output port write with bit 0 clear)")
            }
        case 0xD2:
            queueResult(&s, OutputByte(value: byte, source: .keyboard))
        case 0xD3, 0xD4:
            queueResult(&s, OutputByte(value: auxNoResponse, source: .aux, timeout: true))
        default:
            break
        }
        return nil
    }

    /// A write to port 0x64. A new command abandons one still waiting for its parameter.
    private static func command(_ command: UInt8, _ s: inout State) -> GuestRequest? {
        s.awaitingParameter = nil
        switch command {
        case 0x20...0x3F:                                   // read RAM byte (0x20: command byte)
            queueResult(&s, OutputByte(value: s.ram[Int(command - 0x20)], source: .controller))
        case 0x60...0x7F, 0xD1, 0xD2, 0xD3, 0xD4:           // take a parameter on port 0x60
            s.awaitingParameter = command
        case 0xA7:
            s.commandByte |= CommandByte.auxDisabled
        case 0xA8:
            s.commandByte &= ~CommandByte.auxDisabled
        case 0xA9:
            queueResult(&s, OutputByte(value: auxInterfaceAbsent, source: .controller))
        case 0xAA:
            s.systemFlag = true
            queueResult(&s, OutputByte(value: selfTestPassed, source: .controller))
        case 0xAB:
            queueResult(&s, OutputByte(value: interfaceTestPassed, source: .controller))
        case 0xAD:
            s.commandByte |= CommandByte.keyboardDisabled
        case 0xAE:
            s.commandByte &= ~CommandByte.keyboardDisabled
        case 0xC0:
            queueResult(&s, OutputByte(value: inputPort, source: .controller))
        case 0xD0:
            var port = s.outputPort & ~(OutputPort.keyboardBufferFull | OutputPort.auxBufferFull)
            switch s.output?.source {
            case .keyboard: port |= OutputPort.keyboardBufferFull
            case .aux: port |= OutputPort.auxBufferFull
            case .controller, nil: break
            }
            queueResult(&s, OutputByte(value: port, source: .controller))
        case 0xFE:
            return .reset(source: "i8042 reset (0xFE to port 0x64)")
        default:
            break                                           // unknown, or a pulse that resets nothing
        }
        return nil
    }

    private static func queueResult(_ s: inout State, _ byte: OutputByte) {
        if s.results.count < resultCapacity { s.results.append(byte) }
    }

    /// Moves the next byte into an empty output buffer: a controller result first, else a
    /// keyboard byte when the keyboard interface is enabled, translated to set 1 when command
    /// byte bit 6 says so (a set 2 break prefix 0xF0 is absorbed into bit 7 of the next code).
    private static func refill(_ s: inout State) {
        guard s.output == nil else { return }
        if !s.results.isEmpty {
            s.output = s.results.removeFirst()
            return
        }
        guard s.commandByte & CommandByte.keyboardDisabled == 0 else { return }
        while let code = s.keyboard.transmit() {
            guard s.commandByte & CommandByte.translate != 0 else {
                s.output = OutputByte(value: code, source: .keyboard)
                return
            }
            if code == 0xF0 {
                s.breakPending = true
                continue
            }
            let translated = ScanCode.set1(fromSet2: code) | (s.breakPending ? 0x80 : 0)
            s.breakPending = false
            s.output = OutputByte(value: translated, source: .keyboard)
            return
        }
    }

    /// IRQ 1 follows "a keyboard byte is in the output buffer and command byte bit 0 is set".
    /// Called with the lock held, so levels reach the interrupt controller in order.
    private func updateLine(_ s: inout State) {
        let high = s.output?.source == .keyboard && s.commandByte & CommandByte.keyboardInterrupt != 0
        guard high != s.lineHigh else { return }
        s.lineHigh = high
        keyboardInterruptLine(high)
    }

    // MARK: Test hooks

    /// The keyboard's LED state (bit 0 Scroll, bit 1 Num, bit 2 Caps Lock), as 0xED set it.
    var keyboardLEDs: UInt8 { state.withLock { $0.keyboard.leds } }
    /// The keyboard's typematic rate and delay, as 0xF3 set them.
    var keyboardTypematic: UInt8 { state.withLock { $0.keyboard.typematic } }
    /// Bytes the keyboard holds that have not reached the output buffer.
    var keyboardPending: Int { state.withLock { $0.keyboard.buffer.count } }
}

/// An MF2 keyboard's side of the link (IBM PS/2 Hardware Interface Technical Reference,
/// "Keyboard": commands from the system and the keyboard's answers). It speaks scan code set 2
/// only and holds what it sends in a 16-byte buffer until the controller takes it.
struct Keyboard {
    static let bufferSize = 16
    static let ack: UInt8 = 0xFA
    static let resend: UInt8 = 0xFE
    static let selfTestPassed: UInt8 = 0xAA
    static let echo: UInt8 = 0xEE
    /// The MF2 keyboard's identification, sent after the ACK of 0xF2.
    static let identification: [UInt8] = [0xAB, 0x83]
    static let scanCodeSet: UInt8 = 2
    /// Set 2's overrun code, sent in place of keys that do not fit.
    static let overrun: UInt8 = 0x00
    /// Power-on typematic setting: 10.9 characters per second after 500 ms.
    static let defaultTypematic: UInt8 = 0x2B

    private(set) var buffer: [UInt8] = []
    var scanning = true
    var leds: UInt8 = 0
    var typematic = defaultTypematic
    /// A command (0xED, 0xF0, 0xF3) that waits for its option byte.
    var awaitingOption: UInt8?
    /// The last byte sent, for the resend command.
    var lastSent: UInt8?

    /// The next byte for the controller, if any.
    mutating func transmit() -> UInt8? {
        guard !buffer.isEmpty else { return nil }
        let byte = buffer.removeFirst()
        lastSent = byte
        return byte
    }

    /// Answers a byte from the system. A command byte (0xED and above) where an option was
    /// expected ends the waiting command and runs as a command, as the keyboard does.
    mutating func receive(_ byte: UInt8) {
        if let command = awaitingOption, byte < 0xED {
            awaitingOption = nil
            switch command {
            case 0xED: leds = byte & 0x07
            case 0xF3: typematic = byte & 0x7F
            default: break                                  // 0xF0: set 2 stays the only set
            }
            send([Self.ack] + (command == 0xF0 && byte == 0 ? [Self.scanCodeSet] : []))
            return
        }
        awaitingOption = nil
        switch byte {
        case 0xFF:                                          // reset and self-test
            setDefaults()
            scanning = true
            leds = 0
            send([Self.ack, Self.selfTestPassed])
        case 0xFE:                                          // resend the last byte
            if let lastSent { send([lastSent]) }
        case 0xF6:                                          // set defaults, keep scanning
            setDefaults()
            send([Self.ack])
        case 0xF5:                                          // set defaults, stop scanning
            setDefaults()
            scanning = false
            send([Self.ack])
        case 0xF4:                                          // enable scanning
            buffer.removeAll()
            scanning = true
            send([Self.ack])
        case 0xF2:
            send([Self.ack] + Self.identification)
        case 0xED, 0xF0, 0xF3:                              // LEDs, scan code set, typematic
            awaitingOption = byte
            send([Self.ack])
        case 0xEE:
            send([Self.echo])
        default:
            send([Self.resend])
        }
    }

    /// Queues make and break codes if scanning is on; keys that do not fit become one overrun code.
    mutating func pressKeys(_ codes: [UInt8]) {
        guard scanning else { return }
        if buffer.count + codes.count <= Self.bufferSize {
            buffer += codes
        } else if buffer.count < Self.bufferSize && buffer.last != Self.overrun {
            buffer.append(Self.overrun)
        }
    }

    private mutating func setDefaults() {
        buffer.removeAll()
        typematic = Self.defaultTypematic
    }

    private mutating func send(_ bytes: [UInt8]) {
        buffer += bytes.prefix(Self.bufferSize - buffer.count)
    }
}

/// Scan code translation in the 8042 (IBM PC/AT Technical Reference, keyboard scan codes): with
/// command byte bit 6 set the controller turns the keyboard's set 2 codes into the set 1 codes of
/// the PC and XT keyboard, and folds a break prefix 0xF0 into bit 7 of the code after it.
enum ScanCode {
    /// Set 1 code for each set 2 code 0x00-0x7F. Set 2's overrun code 0x00 becomes set 1's 0xFF.
    static let set2ToSet1: [UInt8] = [
        0xFF, 0x43, 0x41, 0x3F, 0x3D, 0x3B, 0x3C, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3E, 0x0F, 0x29, 0x59,  // 0x00
        0x65, 0x38, 0x2A, 0x70, 0x1D, 0x10, 0x02, 0x5A, 0x66, 0x71, 0x2C, 0x1F, 0x1E, 0x11, 0x03, 0x5B,  // 0x10
        0x67, 0x2E, 0x2D, 0x20, 0x12, 0x05, 0x04, 0x5C, 0x68, 0x39, 0x2F, 0x21, 0x14, 0x13, 0x06, 0x5D,  // 0x20
        0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5E, 0x6A, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5F,  // 0x30
        0x6B, 0x33, 0x25, 0x17, 0x18, 0x0B, 0x0A, 0x60, 0x6C, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0C, 0x61,  // 0x40
        0x6D, 0x73, 0x28, 0x74, 0x1A, 0x0D, 0x62, 0x6E, 0x3A, 0x36, 0x1C, 0x1B, 0x75, 0x2B, 0x63, 0x76,  // 0x50
        0x55, 0x56, 0x77, 0x78, 0x79, 0x7A, 0x0E, 0x7B, 0x7C, 0x4F, 0x7D, 0x4B, 0x47, 0x7E, 0x7F, 0x6F,  // 0x60
        0x52, 0x53, 0x50, 0x4C, 0x4D, 0x48, 0x01, 0x45, 0x57, 0x4E, 0x51, 0x4A, 0x37, 0x49, 0x46, 0x54,  // 0x70
    ]

    /// The set 1 code the controller passes on for set 2 code `code`. Codes from 0x80 pass
    /// unchanged (prefixes E0/E1, keyboard answers FA, AA, EE, FE, the ID byte AB) except the two
    /// set 2 make codes above 0x7F: 0x83 (F7) and 0x84 (Alt+SysRq).
    static func set1(fromSet2 code: UInt8) -> UInt8 {
        switch code {
        case 0x00...0x7F: set2ToSet1[Int(code)]
        case 0x83: 0x41
        case 0x84: 0x54
        default: code
        }
    }
}

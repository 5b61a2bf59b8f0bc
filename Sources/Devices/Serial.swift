import Synchronization

/// A 16550A UART (National Semiconductor PC16550D data sheet): the register file, DLAB,
/// a 16-byte-deep receive FIFO, loopback, and interrupt identification. Transmission is
/// instantaneous: every byte written to THR goes straight to `output`, so THR and the shift
/// register always read empty. Input arrives through `receive(_:)` from any thread.
public final class Serial16550: BusDevice {
    public static let com1Port: UInt64 = 0x3F8
    public static let com1IRQ: UInt32 = 4
    public static let registerCount: UInt64 = 8
    public static let fifoDepth = 16

    // Register offsets.
    static let rbrThr: UInt64 = 0, ier: UInt64 = 1, iirFcr: UInt64 = 2, lcr: UInt64 = 3
    static let mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
    // Bits.
    static let ierRxData: UInt8 = 0x01, ierTxEmpty: UInt8 = 0x02, ierLineStatus: UInt8 = 0x04, ierModem: UInt8 = 0x08
    static let lcrDLAB: UInt8 = 0x80
    static let lsrDataReady: UInt8 = 0x01, lsrOverrun: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40
    static let mcrLoopback: UInt8 = 0x10
    static let iirNone: UInt8 = 0x01, iirLineStatus: UInt8 = 0x06, iirRxData: UInt8 = 0x04, iirTxEmpty: UInt8 = 0x02
    static let iirFIFOsEnabled: UInt8 = 0xC0
    static let fcrEnable: UInt8 = 0x01, fcrClearRx: UInt8 = 0x02

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0x03            // 8N1
        var mcr: UInt8 = 0x08            // OUT2
        var scr: UInt8 = 0
        var divisor: UInt16 = 12         // 9600 baud
        var fifoEnabled = false
        var overrun = false
        var txEmptyPending = false       // THRE interrupt latched, cleared by IIR read or THR write
        var rx: [UInt8] = []
        var lineHigh = false
    }

    private let state = Mutex(State())
    private let output: @Sendable ([UInt8]) -> Void
    private let interruptLine: @Sendable (Bool) -> Void

    /// - Parameters:
    ///   - output: receives every transmitted byte (not in loopback mode).
    ///   - interruptLine: drives the UART's INTR pin (the VMM maps it to IRQ 4).
    public init(output: @escaping @Sendable ([UInt8]) -> Void,
                interruptLine: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.output = output
        self.interruptLine = interruptLine
    }

    /// The UART's registers by name and its receive FIFO, for a snapshot.
    public var savedState: (registers: [String: UInt8], receiveFIFO: [UInt8]) {
        state.withLock { s in
            (["ier": s.ier, "lcr": s.lcr, "mcr": s.mcr, "scr": s.scr, "dll": UInt8(s.divisor & 0xFF), "dlm": UInt8(s.divisor >> 8),
              "fifo": s.fifoEnabled ? 1 : 0, "overrun": s.overrun ? 1 : 0, "thre-pending": s.txEmptyPending ? 1 : 0], s.rx)
        }
    }

    /// Puts back what `savedState` gave (names it does not know are ignored; the FIFO is cut to
    /// its depth), and drives the interrupt line to match.
    public func restore(registers: [String: UInt8], receiveFIFO: [UInt8]) {
        state.withLock { s in
            s = State()
            s.ier = registers["ier"] ?? s.ier
            s.lcr = registers["lcr"] ?? s.lcr
            s.mcr = registers["mcr"] ?? s.mcr
            s.scr = registers["scr"] ?? s.scr
            s.divisor = UInt16(registers["dll"] ?? 12) | UInt16(registers["dlm"] ?? 0) << 8
            s.fifoEnabled = registers["fifo"] == 1
            s.overrun = registers["overrun"] == 1
            s.txEmptyPending = registers["thre-pending"] == 1
            s.rx = Array(receiveFIFO.prefix(Self.fifoDepth))
            updateLine(&s)
        }
    }

    /// Queues input bytes as if they arrived on the line; returns how many fitted in the FIFO.
    @discardableResult
    public func receive(_ bytes: some Collection<UInt8>) -> Int {
        state.withLock { s in
            let room = max(0, Self.fifoDepth - s.rx.count)
            let taken = bytes.prefix(room)
            s.rx.append(contentsOf: taken)
            updateLine(&s)
            return taken.count
        }
    }

    /// Room left in the receive FIFO.
    public var receiveRoom: Int { state.withLock { Self.fifoDepth - $0.rx.count } }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            let value = Self.readRegister(offset, &s)
            updateLine(&s)
            return UInt64(value)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) -> GuestRequest? {
        let transmitted = state.withLock { s in
            let byte = Self.writeRegister(offset, UInt8(truncatingIfNeeded: value), &s)
            updateLine(&s)
            return byte
        }
        if let transmitted { output([transmitted]) }
        return nil
    }

    private static func readRegister(_ offset: UInt64, _ s: inout State) -> UInt8 {
        let dlab = s.lcr & lcrDLAB != 0
        switch offset {
        case rbrThr:
            if dlab { return UInt8(truncatingIfNeeded: s.divisor) }
            return s.rx.isEmpty ? 0 : s.rx.removeFirst()
        case ier:
            return dlab ? UInt8(truncatingIfNeeded: s.divisor >> 8) : s.ier
        case iirFcr:
            let id = interruptIdentification(s)
            if id == iirTxEmpty { s.txEmptyPending = false }
            return id | (s.fifoEnabled ? iirFIFOsEnabled : 0)
        case lcr: return s.lcr
        case mcr: return s.mcr
        case lsr:
            var value = lsrTHRE | lsrTEMT
            if !s.rx.isEmpty { value |= lsrDataReady }
            if s.overrun { value |= lsrOverrun; s.overrun = false }
            return value
        case msr:
            if s.mcr & mcrLoopback != 0 {
                // Loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
                let m = s.mcr
                return (m & 0x02) << 3 | (m & 0x01) << 5 | (m & 0x04) << 4 | (m & 0x08) << 4
            }
            return 0xB0                  // DCD, DSR, CTS: a terminal is attached
        default:
            return s.scr
        }
    }

    /// Returns a byte to transmit, if the write sent one.
    private static func writeRegister(_ offset: UInt64, _ value: UInt8, _ s: inout State) -> UInt8? {
        let dlab = s.lcr & lcrDLAB != 0
        switch offset {
        case rbrThr:
            if dlab { s.divisor = (s.divisor & 0xFF00) | UInt16(value); return nil }
            s.txEmptyPending = true      // the byte leaves at once; THR is empty again
            if s.mcr & mcrLoopback != 0 {
                if s.rx.count < fifoDepth { s.rx.append(value) } else { s.overrun = true }
                return nil
            }
            return value
        case ier:
            if dlab { s.divisor = (s.divisor & 0x00FF) | UInt16(value) << 8; return nil }
            let enablingTx = value & ierTxEmpty != 0 && s.ier & ierTxEmpty == 0
            s.ier = value & 0x0F
            if enablingTx { s.txEmptyPending = true }
            return nil
        case iirFcr:
            let enable = value & fcrEnable != 0
            if enable != s.fifoEnabled || value & fcrClearRx != 0 { s.rx.removeAll() }
            s.fifoEnabled = enable
            return nil
        case lcr: s.lcr = value; return nil
        case mcr: s.mcr = value & 0x1F; return nil
        case lsr, msr: return nil        // read-only
        default: s.scr = value; return nil
        }
    }

    /// IIR bits 3:0 for the highest-priority pending and enabled interrupt.
    private static func interruptIdentification(_ s: State) -> UInt8 {
        if s.ier & ierLineStatus != 0 && s.overrun { return iirLineStatus }
        if s.ier & ierRxData != 0 && !s.rx.isEmpty { return iirRxData }
        if s.ier & ierTxEmpty != 0 && s.txEmptyPending { return iirTxEmpty }
        return iirNone
    }

    /// Drives INTR when its level changes. Called with the lock held, so that the levels reach
    /// the interrupt controller in the order the register accesses produced them. OUT2 gates the
    /// line onto the ISA bus, as on a PC.
    private func updateLine(_ s: inout State) {
        let high = Self.interruptIdentification(s) != Self.iirNone && s.mcr & 0x08 != 0
        guard high != s.lineHigh else { return }
        s.lineHigh = high
        interruptLine(high)
    }
}

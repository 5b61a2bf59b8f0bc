import GuestMemory
import Testing
@testable import VMM

@Suite("Xen PV console ring")
struct XenConsoleRingTests {
    static func ring() throws -> (XenConsoleRing, GuestMemory) {
        let memory = try GuestMemory(regions: [(0, 0x10000)])
        return (XenConsoleRing(memory: memory, page: GuestAddress(0x2000)), memory)
    }

    func put(_ memory: GuestMemory, _ value: UInt32, _ offset: UInt64) throws { try memory.store(value, at: GuestAddress(0x2000 + offset)) }
    func get(_ memory: GuestMemory, _ offset: UInt64) throws -> UInt32 { try memory.load(at: GuestAddress(0x2000 + offset)) }

    @Test func outputIsDrainedAcrossTheWrap() throws {
        let (ring, memory) = try Self.ring()
        // The guest wrote "hello" starting 2 bytes before the end of the 2048-byte out ring.
        let start: UInt32 = 2046
        for (i, byte) in Array("hello".utf8).enumerated() {
            try memory.store(byte, at: GuestAddress(0x2000 + 1024 + UInt64((start + UInt32(i)) % 2048)))
        }
        try put(memory, start, 3080)
        try put(memory, start + 5, 3084)
        #expect(ring.drainOutput() == Array("hello".utf8))
        #expect(try get(memory, 3080) == start + 5, "out_cons caught up")
        #expect(ring.drainOutput().isEmpty)
    }

    @Test func inputFillsAsFarAsThereIsRoom() throws {
        let (ring, memory) = try Self.ring()
        try put(memory, 0, 3072)            // in_cons
        try put(memory, 1020, 3076)         // in_prod: 4 bytes of room
        #expect(ring.fillInput(Array("abcdef".utf8)) == 4)
        #expect(try get(memory, 3076) == 1024)
        #expect(try memory.read(at: GuestAddress(0x2000 + 1020), count: 4) == Array("abcd".utf8))
        try put(memory, 1024, 3072)         // the guest read it all
        #expect(ring.fillInput(Array("ef".utf8)) == 2)
        #expect(try memory.read(at: GuestAddress(0x2000), count: 2) == Array("ef".utf8), "wrapped to the start")
    }

    /// A hostile guest: indexes far apart. The back end takes at most a ring's worth, writes
    /// nothing outside the page, and refuses input into a ring that claims to be over-full.
    @Test func wildIndexesStayInsideThePage() throws {
        let (ring, memory) = try Self.ring()
        try memory.fill(0x55, at: GuestAddress(0x3000), count: 0x1000)   // the page after
        try put(memory, 7, 3080)
        try put(memory, 0xF000_0000, 3084)
        #expect(ring.drainOutput().count == 2048)
        try put(memory, 0, 3072)
        try put(memory, 0x8000_0000, 3076)
        #expect(ring.fillInput(Array("x".utf8)) == 0)
        #expect(try memory.read(at: GuestAddress(0x3000), count: 0x1000) == [UInt8](repeating: 0x55, count: 0x1000))
    }
}

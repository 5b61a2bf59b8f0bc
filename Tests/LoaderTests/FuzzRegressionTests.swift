import FoundationEssentials
import Testing
@testable import Loader

/// Inputs the fuzzers flagged, each now refused with a typed error.
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    /// A flat Multiboot binary whose address fields load nothing (load_end_addr == load_addr, no
    /// bss): it used to be accepted and "loaded" as zero bytes (Fuzz/run.sh elf, 2026-11-21).
    @Test func multibootThatLoadsNothing() throws {
        let bytes = try #require(Data(base64Encoded: "ArCtGwMAAQD7T1HkAAAQAAAAEAAAABAAAAAAAAAAALACJszM"))
        #expect(throws: LoaderError.self) { try KernelImage.parse(KernelFile(path: "empty-load", bytes: Array(bytes))) }
        do {
            _ = try KernelImage.parse(KernelFile(path: "empty-load", bytes: Array(bytes)))
        } catch {
            #expect(error.description.contains("nothing would be loaded"))
        }
    }
}

import FuzzTargets

/// `Fuzz/run.sh` builds this with libFuzzer; a normal build replays inputs (see `FuzzDriver`).
@main
enum FuzzSnapshot {
    static func main() { FuzzDriver.main(.snapshot) }
}

#if SWIFTLET_FUZZING
/// libFuzzer's entry point (see FuzzELF.swift).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzDriver.testOneInput(.snapshot, data, size)
}
#endif

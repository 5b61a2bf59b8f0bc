import FuzzTargets

/// `Fuzz/run.sh` builds this with libFuzzer; a normal build replays inputs (see `FuzzDriver`).
@main
enum FuzzVirtqueue {
    static func main() { FuzzDriver.main(.virtqueue) }
}

#if SWIFTLET_FUZZING
/// libFuzzer's entry point (see FuzzELF.swift).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzDriver.testOneInput(.virtqueue, data, size)
}
#endif

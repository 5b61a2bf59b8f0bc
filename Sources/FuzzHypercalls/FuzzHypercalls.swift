import FuzzTargets

/// `Fuzz/run.sh` builds this with libFuzzer; a normal build replays inputs (see `FuzzDriver`).
@main
enum FuzzHypercalls {
    static func main() { FuzzDriver.main(.hypercalls) }
}

#if SWIFTLET_FUZZING
/// libFuzzer's entry point. `main` above runs the fuzzer through `LLVMFuzzerRunDriver`; this
/// symbol is what libFuzzer's own `main` calls, and a linker that pulls that `main` out of
/// libclang_rt.fuzzer (gold, bfd) needs it defined (`FuzzDriver` explains which `main` wins).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzDriver.testOneInput(.hypercalls, data, size)
}
#endif

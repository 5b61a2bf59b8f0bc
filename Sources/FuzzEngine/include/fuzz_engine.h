// The one libFuzzer entry Swiftlet's fuzzers call (compiler-rt/lib/fuzzer/FuzzerInterface.h,
// "Using libFuzzer as a library"). Only a build with -sanitize=fuzzer links libclang_rt.fuzzer,
// which defines it; Swift code calls it only under `#if SWIFTLET_FUZZING`.
#ifndef SWIFTLET_FUZZ_ENGINE_H
#define SWIFTLET_FUZZ_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer's command-line driver (fuzzing, or replaying the files named in argv) with
/// `callback` as the function under test; returns the driver's exit status.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif

#!/usr/bin/env bash
# Builds Swiftlet's libFuzzer targets and runs each for a while (Fuzz/README.md).
#
#   Fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 seconds, every target
#
# Targets: elf xen-notes bzimage hypercalls api virtqueue snapshot. They run one after another, each on a work copy of
# its committed seeds (Fuzz/corpus/<target>), so that what the fuzzer adds never dirties the
# repository; the work corpus is kept and grows from run to run. Prints the executions of each
# target and the total. Exits 1 if any target crashed (or timed out, or ran out of memory), and
# leaves the reproducing inputs in $FUZZ_WORK/crashes/<target>/.
#
# Environment:
#   FUZZ_BUILD   scratch build folder (default .build-fuzz)
#   FUZZ_WORK    work corpora, crashes and logs (default $FUZZ_BUILD/work)
#   FUZZ_FLAGS   extra libFuzzer flags for every target (e.g. "-jobs=2 -workers=2", "-seed=1")
#   FUZZ_NO_BUILD=1  use the binaries already built
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=${1:-60}
shift || true
all=(elf xen-notes bzimage hypercalls api virtqueue snapshot)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

build=${FUZZ_BUILD:-.build-fuzz}
work=${FUZZ_WORK:-$build/work}

product() {
  case $1 in
    elf) echo FuzzELF ;;
    xen-notes) echo FuzzXenNotes ;;
    bzimage) echo FuzzBzImage ;;
    hypercalls) echo FuzzHypercalls ;;
    api) echo FuzzAPI ;;
    virtqueue) echo FuzzVirtqueue ;;
    snapshot) echo FuzzSnapshot ;;
    *) echo "Fuzz/run.sh: unknown target '$1' (targets: ${all[*]})" >&2; exit 2 ;;
  esac
}

# libFuzzer's -max_len for each target: FuzzTarget.maxLength in Sources/FuzzTargets/FuzzTarget.swift.
max_len() {
  case $1 in
    elf) echo 65536 ;;
    xen-notes) echo 4096 ;;
    bzimage|hypercalls) echo 8192 ;;
    api) echo 4096 ;;
    virtqueue|snapshot) echo 16384 ;;
  esac
}

for target in "${targets[@]}"; do product "$target" >/dev/null; done

# -sanitize=fuzzer instruments every Swift module for coverage and links libFuzzer; address adds
# ASan. -DSWIFTLET_FUZZING makes FuzzDriver.main call LLVMFuzzerRunDriver (FuzzDriver says why
# the executables keep their own main).
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  mkdir -p "$work/logs"
  start=$(date +%s)
  for target in "${targets[@]}"; do
    status=0
    swift build -c release --scratch-path "$build" --product "$(product "$target")" \
      -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSWIFTLET_FUZZING >"$work/logs/build.log" 2>&1 || status=$?
    # gold's warning about an ASan symbol is harmless; SwiftPM's progress lines are noise.
    grep -v -e '^\[' -e "Cannot export local symbol '__asan_extra_spill_area'" "$work/logs/build.log" || true
    [ "$status" -eq 0 ] || { echo "Fuzz/run.sh: build of $(product "$target") failed" >&2; exit 2; }
  done
  echo "fuzz build: $(( $(date +%s) - start )) s"
fi

# Swift's own crash handler would race libFuzzer's and can hang on a trap: leave crashes to libFuzzer.
export SWIFT_BACKTRACE=enable=no
# Stack traces with Swift names; no leak checks (the Swift runtime keeps metadata caches for good).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:symbolize=1}

total=0
failed=()
printf '\n%-12s %12s %8s  %s\n' target executions seconds result
for target in "${targets[@]}"; do
  binary="$build/release/$(product "$target")"
  corpus="$work/corpus/$target"
  crashes="$work/crashes/$target"
  log="$work/logs/$target.log"
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  cp -n Fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  marker="$work/logs/$target.start"
  touch "$marker"
  status=0
  # shellcheck disable=SC2086
  "$binary" "$corpus" -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" ${FUZZ_FLAGS:-} \
    >"$log" 2>&1 || status=$?
  runs=$(awk '/stat::number_of_executed_units:/ {n += $2} END {print n + 0}' "$log")
  total=$((total + runs))
  result=ok
  found=$(find "$crashes" -type f -newer "$marker" -printf '%f ' 2>/dev/null)
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    result="FAILED (exit $status): ${found}see $log"
    failed+=("$target")
  fi
  printf '%-12s %12d %8d  %s\n' "$target" "$runs" "$seconds" "$result"
done
printf '%-12s %12d\n' total "$total"

if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "crashes in: ${failed[*]}. Replay one with:  $build/release/<Product> $work/crashes/<target>/crash-..."
  echo "(or without libFuzzer: swift build --product <Product> && .build/debug/<Product> FILE)"
  exit 1
fi

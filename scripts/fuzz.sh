#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzz.cpp) with clang and ASan+UBSan
# into ${FUZZ_BUILD_DIR:-build-fuzz}, then runs each over its seed corpus
# (fuzz/corpus/<name>/, <name> without "_fuzz") for FUZZ_SECONDS (default
# 20). Fails on any crash, leak, timeout or sanitizer report; the input is
# left in build-fuzz/artifacts/<target>/. A crash found is fixed in the code
# and its input kept in the corpus as a regression seed.
#
#   scripts/fuzz.sh [TARGET...]     (default: every target)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$top/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
# libstdc++ 12's std::expected needs clang >= 16 (fuzz/CMakeLists.txt).
cc=${FUZZ_CC:-clang-16}
cxx=${FUZZ_CXX:-clang++-16}

cmake -S "$top" -B "$build" -DTF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build "$build" --target fuzz -j"$(nproc)"

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cd "$top/fuzz" && ls -1 -- *_fuzz.cpp | sed 's/\.cpp$//')
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for t in "${targets[@]}"; do
  bin=$(find "$build/fuzz" -maxdepth 1 -type f -name "$t" -perm -u+x | head -n1)
  if [[ -z "$bin" ]]; then
    echo "fuzz: no target $t in $build/fuzz" >&2
    status=1
    continue
  fi
  corpus=$top/fuzz/corpus/${t%_fuzz}
  [[ -d "$corpus" ]] || corpus=$top/fuzz/corpus/$t
  if [[ ! -d "$corpus" ]] || [[ -z "$(ls -A "$corpus")" ]]; then
    echo "fuzz: $t has no seed corpus (fuzz/corpus/${t%_fuzz}/)" >&2
    status=1
    continue
  fi
  # New inputs go to a scratch directory, never into the checked-in corpus.
  work=$build/corpus/$t
  artifacts=$build/artifacts/$t
  mkdir -p "$work" "$artifacts"
  log=$build/$t.log
  echo "=== fuzz $t: ${seconds}s over $(ls -1 "$corpus" | wc -l) seeds"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" "$corpus" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n1 || true)
    echo "fuzz: $t ok: ${execs:-?} executions in ${seconds}s, ${cov:-cov: ?}"
  else
    echo "fuzz: $t FAILED; input saved under $artifacts/, log $log" >&2
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 20 >&2 || true
    status=1
  fi
done
exit $status

#!/usr/bin/env bash
# Builds the unit tier with GCC's AddressSanitizer and UndefinedBehavior-
# Sanitizer into ${SANITIZE_BUILD_DIR:-build-asan} and runs it; any report
# fails the run.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${SANITIZE_BUILD_DIR:-$top/build-asan}
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# unit_tests depends on the trustfence binary its CLI tests run.
cmake --build "$build" -j"$(nproc)" --target unit_tests
cd "$build"
ctest -L '^unit$' --output-on-failure --timeout 600

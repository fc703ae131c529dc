#!/usr/bin/env bash
# The attestation and traffic scenarios of the benchmark, as root: scenarios
# 1 in place, 2 connection rate, 3 time to first byte, 4 bulk throughput
# (tf_bench_attest), with a report. A thin entry point for
# `scripts/bench.sh --only attest`; the results go to a temporary directory
# unless --out DIR is given.
#
#   scripts/bench-attest.sh [--smoke] [--reps N] [--out DIR] [--keep-logs DIR]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/bench.sh" --only attest "$@"

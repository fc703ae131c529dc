#!/usr/bin/env bash
# The datapath benchmarks, as root: per-packet cost of tf_egress/tf_ingress
# under BPF_PROG_TEST_RUN against an empty program (scenario 1), and the
# loopback connect rate attached vs detached, kernel memory per tracked
# connection and ALLOW-to-data delay of issue 2, with a report. A thin entry
# point for `scripts/bench.sh --only packet,datapath`; the results go to a
# temporary directory unless --out DIR is given.
#
#   scripts/bench-datapath.sh [--smoke] [--out DIR]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/bench.sh" --only packet,datapath "$@"

#!/usr/bin/env bash
# The attestation benchmark of issue 4, in one command (as root): sets the
# machine up (scripts/setup.sh: stunnel4, iproute2, ...), builds into
# ${BUILD_DIR:-build} (scripts/build.sh) and prints every figure next to its
# baseline and target. Figures, not timed tests: nothing here fails on a
# number, only on something that did not run.
#
#   scripts/bench-attest.sh            full run (about a minute)
#   scripts/bench-attest.sh --smoke    tiny samples, to check it works
#   scripts/bench-attest.sh -- ARGS    more options for tf_bench_attest
#                                      (--samples N, --cold-samples N,
#                                      --threads N, --seconds S, --keep-logs DIR)
#
# Figures: time to first byte of a new connection without agents, with a
# warm and with a cold attestation channel; connections per second with
# every connection attested, against no enforcement and a stunnel mTLS pair.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) args+=(--smoke) ;;
    -h | --help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

if [[ $EUID -ne 0 ]]; then
  echo "bench-attest: needs root (network namespaces, cgroups, the agents' BPF programs)" >&2
  exit 1
fi

bash "$root/scripts/setup.sh"
BUILD_DIR="$build" bash "$root/scripts/build.sh"

echo
echo "== trustfence attestation benchmark${args[*]:+ (${args[*]})} =="
echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(
  git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')," \
  "kernel $(uname -r), $(nproc) CPUs"
# Namespaces, cgroups, pins and files of a killed run are swept by the
# binary itself (the e2e support) once their pid is gone.
exec "$build/bench/attest/tf_bench_attest" "${args[@]}"

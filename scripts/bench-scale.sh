#!/usr/bin/env bash
# The scale and reload benchmarks of issue 7 (scenarios 5 and 6), in one
# command (as root): builds tf_bench_scale into ${BUILD_DIR:-build} and runs
# it. Figures, not timed tests: nothing here fails on a number, only on
# something that did not run.
#
#   scripts/bench-scale.sh --out DIR            full run (a few minutes)
#   scripts/bench-scale.sh --smoke --out DIR    small counts, well under a minute
#   scripts/bench-scale.sh --out DIR -- ARGS    more options for tf_bench_scale
#                                               (--steps 1000,10000,...,
#                                               --channels N, --few-channels N,
#                                               --peer-nodes N, --rate R,
#                                               --rate-seconds S, --reloads N)
#
# Writes DIR/scale.json (kernel memory per tracked connection, agent RSS
# and CPU from 1k to 100k connections with 100 and 1,000 peer channels) and
# DIR/reload.json (time to re-decide every live connection after a SIGHUP),
# and prints a summary.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

args=()
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) args+=(--smoke) ;;
    --out)
      [[ $# -ge 2 ]] || { echo "bench-scale: --out needs a directory" >&2; exit 2; }
      out="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    *) echo "bench-scale: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$out" ]]; then
  echo "bench-scale: --out DIR is required (where scale.json and reload.json go)" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"

if [[ $EUID -ne 0 ]]; then
  echo "bench-scale: needs root (network namespaces, cgroups, the agent's BPF programs)" >&2
  exit 1
fi

bash "$root/scripts/setup.sh"
echo "== building tf_bench_scale into $build =="
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${generator[@]}" >/dev/null
fi
cmake --build "$build" --target tf_bench_scale -j"$(nproc)"

echo
echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(
  git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')," \
  "kernel $(uname -r), $(nproc) CPUs"
# Namespaces, cgroups, pins and files of a killed run are swept by the
# binary itself (the e2e support) once their pid is gone.
mkdir -p "$out"
exec "$build/bench/scale/tf_bench_scale" --out "$out" "${args[@]}"

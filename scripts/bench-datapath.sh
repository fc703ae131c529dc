#!/usr/bin/env bash
# The datapath benchmarks of issue 2, in one command (as root): builds them
# into ${BUILD_DIR:-build} (the build the other scripts use) and prints
# every figure, each next to a baseline measured in the same run. Figures, not timed tests: nothing here fails on a number.
#
#   scripts/bench-datapath.sh           full runs (a few minutes)
#   scripts/bench-datapath.sh --smoke   seconds-long runs, to check it works
#
# Figures: per-packet cost of tf_egress/tf_ingress against an empty program
# (bench/tf_bench_packet_cost, when built); kernel memory per tracked
# connection; connect-request-response rate attached vs detached; delay from
# ALLOW to held data reaching the peer.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

smoke=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=(--smoke) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
conn_tools=(tf_bench_conn_memory tf_bench_crr_rate tf_bench_verdict_delay)

if [[ $EUID -ne 0 ]]; then
  echo "bench-datapath: needs root (it loads BPF programs, creates cgroups and pins)" >&2
  exit 1
fi

# The tools clean up after themselves, even on error or SIGINT/SIGTERM. A
# tool killed outright leaves "tf-bench-conn-<pid>-<n>" cgroups and pin
# directories: remove those whose <pid> is gone (links first, as
# Datapath::uninstall does, so the programs detach).
sweep_stale() {
  local cgroot dir name pid
  cgroot="$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)"
  for dir in /sys/fs/bpf/tf-bench-conn-* ${cgroot:+"$cgroot"/tf-bench-conn-*}; do
    [[ -d "$dir" ]] || continue
    name="${dir##*/}"
    pid="${name#tf-bench-conn-}"
    pid="${pid%%-*}"
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    kill -0 "$pid" 2>/dev/null && continue
    if [[ "$dir" == /sys/fs/bpf/* ]]; then
      rm -f "$dir"/*_link && rm -f "$dir"/* && rmdir "$dir" ||
        echo "bench-datapath: could not remove stale pins $dir" >&2
    else
      rmdir "$dir" 2>/dev/null || echo "bench-datapath: could not remove stale cgroup $dir" >&2
    fi
  done
}
trap sweep_stale EXIT
sweep_stale

echo "== building into $build =="
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$root" -B "$build" "${generator[@]}" >/dev/null
fi
cmake --build "$build" --target tf_bench_packet_cost "${conn_tools[@]}"

echo
echo "== trustfence datapath benchmarks${smoke:+ (smoke: short runs, rough figures)} =="
echo "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(
  git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')," \
  "kernel $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo

failed=()
run() {
  local name="$1"
  shift
  if ! "$@"; then
    failed+=("$name")
    echo "bench-datapath: $name failed" >&2
  fi
  echo
}

packet_cost="$build/bench/tf_bench_packet_cost"
packet_args=()
[[ ${#smoke[@]} -gt 0 ]] && packet_args=(--repeat 1000000 --rounds 3)
echo "== per-packet cost of tf_egress/tf_ingress (tf_bench_packet_cost) =="
run tf_bench_packet_cost "$packet_cost" "${packet_args[@]}"
for tool in "${conn_tools[@]}"; do
  run "$tool" "$build/bench/conn/$tool" "${smoke[@]}"
done

echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "bench-datapath: failed: ${failed[*]}" >&2
  exit 1
fi

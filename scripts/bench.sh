#!/usr/bin/env bash
# The benchmark (issue 7) in one command, as root: installs what is missing
# (scripts/setup.sh, then iperf3, haproxy, wrk, gnuplot-nox), builds the
# tools into ${BUILD_DIR:-build}, runs every scenario with its baseline and
# alternatives interleaved in the same run, and writes DIR/*.json, plots and
# DIR/REPORT.md (bench/report/report.py). Figures, not timed tests: nothing
# fails on a number; a scenario that does not run makes the exit code 1.
#
#   scripts/bench.sh                 full run into bench/results (~18 min on a busy
#                                    2-core machine, ~6 for --only packet,attest)
#   scripts/bench.sh --smoke         tiny counts (seconds each) into a temporary
#                                    directory: checks that everything runs
#   --out DIR                        write results there instead
#   --only LIST                      comma-separated parts: packet, attest, datapath,
#                                    tls, scale (default: all); not into bench/results
#   --reps N                         repetitions of each A/B scenario (default 5)
#   --keep-logs DIR                  keep the agents' logs and stats
#
# Parts: packet = scenario 1 under BPF_PROG_TEST_RUN (tf_bench_packet_cost);
# attest = scenarios 1 in place, 2 connection rate, 3 time to first byte,
# 4 bulk throughput, 7 HTTP keep-alive requests with wrk (tf_bench_attest);
# datapath = the loopback connect rate, kernel memory per connection and
# ALLOW-to-data delay of issue 2 (text logs); tls = X.509-SVID verification
# rate (text log); scale = scenarios 5 and 6 (scripts/bench-scale.sh, when
# present).
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
smoke=0
out=""
only=""
reps=""
keep_logs=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --only) only="${2:?--only needs a list}"; shift ;;
    --reps) reps="${2:?--reps needs a number}"; shift ;;
    --keep-logs) keep_logs="${2:?--keep-logs needs a directory}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

parts=(packet attest datapath tls scale)
if [[ -n "$only" ]]; then
  IFS=',' read -r -a parts <<<"$only"
  for p in "${parts[@]}"; do
    case "$p" in
      packet | attest | datapath | tls | scale) ;;
      *) echo "bench: --only: unknown part '$p' (packet, attest, datapath, tls, scale)" >&2; exit 2 ;;
    esac
  done
fi
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

# Only a full run of everything replaces the committed results.
if [[ -z "$out" ]]; then
  if [[ $smoke -eq 0 && -z "$only" ]]; then
    out="$root/bench/results"
  else
    out="$(mktemp -d /tmp/tf-bench.XXXXXX)"
  fi
fi

if [[ $EUID -ne 0 ]]; then
  echo "bench: needs root (network namespaces, cgroups, BPF programs, packages)" >&2
  exit 1
fi

bench_packages=(iperf3 haproxy wrk gnuplot-nox)
bash "$root/scripts/setup.sh"
missing=()
for p in "${bench_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$out/logs"
# Results of an earlier run in the same directory must not pass for this one's.
rm -f "$out"/*.json "$out"/*.svg "$out/REPORT.md" "$out"/logs/*.txt

# The tools clean up after themselves, even on error or SIGINT/SIGTERM; a
# tool killed outright leaves "tf-bench-conn-<pid>-<n>" cgroups and pins
# (the e2e ones, "tf-e2e-<pid>-...", are swept by tf_bench_attest itself):
# remove those whose <pid> is gone, links first so the programs detach.
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
        echo "bench: could not remove stale pins $dir" >&2
    else
      rmdir "$dir" 2>/dev/null || echo "bench: could not remove stale cgroup $dir" >&2
    fi
  done
}
trap sweep_stale EXIT
sweep_stale

targets=(trustfence)
wants packet && targets+=(tf_bench_packet_cost)
wants attest && targets+=(tf_bench_attest)
wants datapath && targets+=(tf_bench_crr_rate tf_bench_conn_memory tf_bench_verdict_delay)
wants tls && targets+=(tf_bench_verify_rate)
echo "== building ${targets[*]} into $build =="
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

started=$(date +%s)
failed=()
steps=()
# step NAME COMMAND...: runs it, its output on the terminal and in
# logs/NAME.txt; a failure is recorded and the run goes on.
step() {
  local name="$1" t0 rc=0
  shift
  echo
  echo "== $name: $* =="
  t0=$(date +%s)
  "$@" 2>&1 | tee "$out/logs/$name.txt" || rc=$?
  steps+=("{\"name\": \"$name\", \"seconds\": $(($(date +%s) - t0)), \"ok\": $([[ $rc -eq 0 ]] && echo true || echo false)}")
  if [[ $rc -ne 0 ]]; then
    failed+=("$name")
    echo "bench: $name failed (exit $rc)" >&2
  fi
}

smoke_flag=()
[[ $smoke -eq 1 ]] && smoke_flag=(--smoke)

if wants packet; then
  packet_args=(--json "$out/packet_cost.json")
  [[ $smoke -eq 1 ]] && packet_args+=(--repeat 1000000 --rounds 3)
  step packet_cost "$build/bench/tf_bench_packet_cost" "${packet_args[@]}"
fi
if wants attest; then
  attest_args=(--json-dir "$out" "${smoke_flag[@]}")
  [[ -n "$reps" ]] && attest_args+=(--reps "$reps")
  [[ -n "$keep_logs" ]] && attest_args+=(--keep-logs "$keep_logs")
  step attest "$build/bench/attest/tf_bench_attest" "${attest_args[@]}"
fi
if wants datapath; then
  for tool in crr_rate conn_memory verdict_delay; do
    step "$tool" "$build/bench/conn/tf_bench_$tool" "${smoke_flag[@]}"
  done
fi
if wants tls; then
  step verify_rate "$build/bench/tls/tf_bench_verify_rate" "${smoke_flag[@]}"
fi
scale_script="$root/scripts/bench-scale.sh"
if wants scale; then
  if [[ -f "$scale_script" ]]; then
    step scale env BUILD_DIR="$build" bash "$scale_script" "${smoke_flag[@]}" --out "$out"
  else
    echo "bench: $scale_script is not there: scenarios 5 and 6 not run"
  fi
fi

steps_json=$(IFS=','; echo "${steps[*]}")
failed_json=""
((${#failed[@]})) && failed_json=$(printf '"%s",' "${failed[@]}")
cat >"$out/run.json" <<EOF
{"smoke": $([[ $smoke -eq 1 ]] && echo true || echo false), "parts": "$(IFS=','; echo "${parts[*]}")",
 "command": "bash scripts/bench.sh$([[ $smoke -eq 1 ]] && echo ' --smoke')",
 "started": "$(date -u -d "@$started" +%Y-%m-%dT%H:%M:%SZ)", "seconds": $(($(date +%s) - started)),
 "scale_script": $([[ -f "$scale_script" ]] && echo true || echo false),
 "steps": [$steps_json], "failed": [${failed_json%,}]}
EOF

echo
echo "== report =="
if ! python3 "$root/bench/report/report.py" "$out"; then
  failed+=(report)
  echo "bench: the report failed" >&2
fi
echo "results: $out (REPORT.md), $(($(date +%s) - started)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "bench: failed: ${failed[*]}" >&2
  exit 1
fi

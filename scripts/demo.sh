#!/usr/bin/env bash
# The main job, for now: the agent attached to a demo cgroup, tracking every
# TCP connection a real client (curl, socat) makes to a real server (python3
# http.server), as the agent logs them and as `trustfence conns` lists them.
# No agent decides verdicts yet (attestation is the next step), so:
#  1. in audit mode connections stay pending and the datapath counts what
#     enforce mode would hold back;
#  2. the agent restarts in enforce mode (the datapath stays attached and its
#     maps survive): the exempted server answers, the other one never sees
#     the request: its payload is held while the connection is pending.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (it loads BPF programs)" >&2; exit 1; }
bash scripts/setup.sh
bash scripts/build.sh
tf=${BUILD_DIR:-$top/build}/agent/trustfence

cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[[ -n "$cg2" ]] || { echo "demo: no cgroup v2 mounted" >&2; exit 1; }
cgroup="$cg2/trustfence-demo"
pin_dir=/sys/fs/bpf/trustfence-demo
work=$(mktemp -d)
agent_pid=""
cleanup() {
  # Everything the demo started in its cgroup goes with it.
  [[ -f "$cgroup/cgroup.procs" ]] && xargs -r kill < "$cgroup/cgroup.procs" 2>/dev/null || true
  [[ -n "$agent_pid" ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  "$tf" agent --uninstall --pin-dir "$pin_dir" >/dev/null 2>&1 || true
  rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$cgroup"

cat > "$work/trustfence.conf" <<CONF
cgroup = $cgroup
pin-dir = $pin_dir
mode = audit
untracked-fallback = allow
CONF
echo "== agent config"; cat "$work/trustfence.conf"

started() { grep -c "datapath .* on cgroup" "$work/agent.log" || true; }
start_agent() {
  local before
  before=$(started)
  "$tf" agent --config "$work/trustfence.conf" >> "$work/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 50); do (($(started) > before)) && return; sleep 0.1; done
  cat "$work/agent.log"
  exit 1
}
start_agent

in_cgroup() { bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cgroup" "$@"; }
# In the background, $! must be the program itself, not a subshell.
spawn_in_cgroup() { (exec bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$cgroup" "$@") & }
port=18480 other_port=18481
spawn_in_cgroup python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1
spawn_in_cgroup python3 -m http.server "$other_port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1
for p in $port $other_port; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
sleep 0.3

echo; echo "== 1. audit: a long-lived socat connection and three curl requests, all in $cgroup"
spawn_in_cgroup socat -u "TCP:127.0.0.1:$port" - >/dev/null 2>&1
socat_pid=$!
for i in 1 2 3; do
  in_cgroup curl -s -o /dev/null -w "curl $i: HTTP %{http_code} in %{time_total}s\n" "http://127.0.0.1:$port/"
done
sleep 0.3
echo "-- trustfence conns (the open socat connection, both ends, pending)"
"$tf" conns --pin-dir "$pin_dir"
echo "-- trustfence stats"
"$tf" stats --pin-dir "$pin_dir"

echo; echo "== 2. enforce: restart the agent with port $port exempt"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
cat >> "$work/trustfence.conf" <<CONF
exempt = 127.0.0.1/32:$port
CONF
sed -i 's/^mode = audit/mode = enforce/' "$work/trustfence.conf"
start_agent
echo "-- the socat connection survived the restart (pinned maps):"
"$tf" conns --pin-dir "$pin_dir"
kill "$socat_pid" 2>/dev/null || true
in_cgroup curl -s -o /dev/null -w "curl to exempt port $port: HTTP %{http_code} in %{time_total}s\n" "http://127.0.0.1:$port/"
in_cgroup curl -s -o /dev/null --max-time 2 -w "curl to port $other_port: HTTP %{http_code} after %{time_total}s (request held: no verdict)\n" "http://127.0.0.1:$other_port/" || true
echo "-- trustfence stats"
"$tf" stats --pin-dir "$pin_dir"
echo; echo "== agent log"
cat "$work/agent.log"

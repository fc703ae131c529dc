#!/usr/bin/env bash
# The main job on one machine: three clusters (team-a.gke.local with alias
# team-b.eks.local, team-b.eks.local with alias team-a.gke.local,
# team-c.local with no alias), a spoofer and a node without an agent, each a
# network namespace with its own trustfence agent, CA and cgroup; real curl
# clients against real python3 http.server servers over IPv4 and IPv6; then
# each node's verdict table (`trustfence conns`). Sets up a fresh Debian 12
# machine first (as root).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (namespaces, cgroups, BPF)" >&2; exit 1; }
bash scripts/setup.sh
bash scripts/build.sh
build=${BUILD_DIR:-$top/build}
exec "$build/demo/tf_demo" "$build/agent/trustfence"

#!/usr/bin/env bash
# The CI stand-in for the Vagrant two-VM scenario (vagrant/Vagrantfile): runs
# vagrant/node.sh, the very script the VMs are provisioned with, for two nodes
# in two network namespaces joined by a veth pair (10.77.0.1/24 and
# 10.77.0.2/24, addresses only in namespaces made here), with a temporary
# directory as the synced folder both VMs share:
#
#   node 1  team-a.gke.local   alias team-b.eks.local, deny-id team-b's legacy/*
#   node 2  team-b.eks.local   alias team-a.gke.local, deny-id team-a's legacy/*
#
# Both nodes come up at once (each waits for the other's bundle), then each
# checks its allowed (web -> peer, payload intact) and denied (legacy -> peer,
# reset, id-denied) probes and verifies its inbound verdicts for the peer's.
# Any failed assertion fails the script; everything is cleaned up on exit.
# Also checks the Vagrantfile: `ruby -wc` when ruby is installed, `vagrant
# validate` when vagrant is (each skipped, saying so, when not). Leftovers of
# an earlier run that was killed are swept first.
#
# As root. Without root it skips (exit 0), unless CI=true (exit 1).
# The trustfence binary: $TRUSTFENCE, else ${BUILD_DIR:-build}/agent/trustfence
# (built if missing).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS

if [[ $(id -u) -ne 0 ]]; then
  if [[ "${CI:-}" == true ]]; then
    echo "vagrant-scenario-test: FAIL: needs root (netns, cgroups, BPF)" >&2
    exit 1
  fi
  echo "vagrant-scenario-test: SKIP: needs root (netns, cgroups, BPF)"
  exit 0
fi

if command -v ruby >/dev/null; then
  ruby -wc "$top/vagrant/Vagrantfile" >/dev/null
  echo "vagrant-scenario-test: Vagrantfile: Ruby syntax OK"
else
  echo "vagrant-scenario-test: ruby not installed: Vagrantfile syntax not checked"
fi
# Vagrant's own validation (option names, provider settings: libvirt's if the
# vagrant-libvirt plugin is there, else without provider settings). Not the NFS
# synced folder, whose check wants an NFS server on this host: rsync stands in.
if command -v vagrant >/dev/null; then
  validate_dir=$(mktemp -d /tmp/trustfence-vagrant-validate.XXXXXX)
  validate_flags=(-p)
  vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt && validate_flags=()
  (cd "$top/vagrant" && VAGRANT_DOTFILE_PATH=$validate_dir/dot VAGRANT_DEFAULT_PROVIDER=libvirt \
    TF_SHARED_TYPE=rsync VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate "${validate_flags[@]}") ||
    { rm -rf "$validate_dir"; echo "vagrant-scenario-test: FAIL: vagrant validate" >&2; exit 1; }
  rm -rf "$validate_dir"
else
  echo "vagrant-scenario-test: vagrant not installed: Vagrantfile not validated"
fi

build=${BUILD_DIR:-$top/build}
trustfence=${TRUSTFENCE:-$build/agent/trustfence}
if [[ ! -x "$trustfence" ]]; then
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" --target trustfence -j"$(nproc)"
fi
for tool in ip nsenter ss curl openssl python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "vagrant-scenario-test: FAIL: $tool is missing" >&2; exit 1; }
done

run=tfv$$
ns=("${run}a" "${run}b")
names=("$run-n1" "$run-n2")
tds=(team-a.gke.local team-b.eks.local)
addrs=(10.77.0.1 10.77.0.2)
tmp=$(mktemp -d "/tmp/trustfence-vagrant-test.$run.XXXXXX")
shared=$tmp/shared
status=1

node() {  # node INDEX STEP: vagrant/node.sh in node INDEX's network namespace
  local i=$1 step=$2 peer=$((1 - $1))
  nsenter --net="/run/netns/${ns[$i]}" bash "$top/vagrant/node.sh" "$step" \
    --name "${names[$i]}" --trust-domain "${tds[$i]}" --address "${addrs[$i]}" \
    --peer-name "${names[$peer]}" --peer-trust-domain "${tds[$peer]}" \
    --peer-address "${addrs[$peer]}" --shared "$shared" --state "$tmp/state-$i" \
    --trustfence "$trustfence" --wait 60
}

cleanup() {
  if ((status != 0)); then
    for i in 0 1; do
      if [[ -f "$tmp/state-$i/agent.log" ]]; then
        echo "--- ${names[$i]} agent log (last 40 lines but libbpf's)" >&2
        grep -v 'libbpf: ' "$tmp/state-$i/agent.log" | tail -n 40 >&2
      fi
    done
  fi
  for i in 0 1; do
    [[ -e "/run/netns/${ns[$i]}" ]] && node "$i" stop >/dev/null 2>&1
    ip netns del "${ns[$i]}" 2>/dev/null
  done
  rm -rf "$tmp"
  if ((status == 0)); then
    echo "vagrant-scenario-test: PASS in $((SECONDS - started))s"
  else
    echo "vagrant-scenario-test: FAIL after $((SECONDS - started))s" >&2
  fi
}
trap 'cleanup || true' EXIT

# What a run killed before its cleanup left (named tfv<pid>, that pid gone):
# its agents and servers (by their pid files), namespaces, pins, cgroups.
sweep_stale() {
  local path base pid pidfile victim cgroot
  cgroot=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  for path in /tmp/trustfence-vagrant-test.tfv* /run/netns/tfv* /sys/fs/bpf/trustfence-tfv* \
    "$cgroot"/trustfence-tfv*; do
    [[ -e "$path" ]] || continue
    base=${path##*/}
    base=${base#trustfence-}
    base=${base#vagrant-test.}
    [[ "$base" =~ ^tfv([0-9]+) ]] || continue
    pid=${BASH_REMATCH[1]}
    kill -0 "$pid" 2>/dev/null && continue
    case "$path" in
      /tmp/*)
        for pidfile in "$path"/state-*/agent.pid "$path"/state-*/server.pid; do
          [[ -f "$pidfile" ]] || continue
          victim=$(cat "$pidfile")
          if tr '\0' ' ' <"/proc/$victim/cmdline" 2>/dev/null | grep -qE 'trustfence|http.server'; then
            kill -KILL "$victim" 2>/dev/null || true
          fi
        done
        rm -rf "$path" ;;
      /run/netns/*) ip netns del "$base" 2>/dev/null || true ;;
      /sys/fs/bpf/*)
        "$trustfence" agent --uninstall --pin-dir "$path" >/dev/null 2>&1 || true
        rm -rf "$path" ;;
      *)  # the processes killed above may take a moment to leave
        for _ in $(seq 20); do
          rmdir "$path"/web "$path"/legacy "$path" 2>/dev/null || true
          [[ -d "$path" ]] || break
          sleep 0.1
        done ;;
    esac
  done
  return 0
}
sweep_stale

for i in 0 1; do
  ip netns add "${ns[$i]}"
  ip -n "${ns[$i]}" link set lo up
done
ip link add "${run}v0" netns "${ns[0]}" type veth peer name "${run}v1" netns "${ns[1]}"
for i in 0 1; do
  ip -n "${ns[$i]}" addr add "${addrs[$i]}/24" dev "${run}v$i"
  ip -n "${ns[$i]}" link set "${run}v$i" up
done
mkdir -p "$shared"

# Both at once, as `vagrant up` on a parallel provider: each waits for the other's bundle.
node 0 up >"$tmp/up-0.log" 2>&1 &
up0=$!
node 1 up >"$tmp/up-1.log" 2>&1 &
up1=$!
up_status=0
wait "$up0" || up_status=1
wait "$up1" || up_status=1
cat "$tmp/up-0.log" "$tmp/up-1.log"
((up_status == 0)) || exit 1

node 0 check
node 1 check   # also verifies node 1's inbound verdicts for node 0's probes
node 0 verify  # node 0's inbound verdicts for node 1's probes
status=0

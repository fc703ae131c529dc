#!/usr/bin/env bash
# One node of the two-cluster scenario, as a plain script: what each Vagrant VM
# is provisioned with, and what scripts/vagrant-scenario-test.sh runs in two
# network namespaces as the CI stand-in for the VMs.
#
# Each node is a "cluster" with its own trust domain and CA. The two clusters
# federate: each lists the other's trust domain as an alias. Each node has two
# workload cgroups under the cgroup its agent enforces:
#
#   web     spiffe://TD/ns/web/sa/web          serves python3 http.server on PORT
#   legacy  spiffe://TD/ns/legacy/sa/legacy
#
# and denies the peer cluster's legacy workloads (deny-id wins over the alias):
#
#   deny-id = spiffe://PEER_TD/ns/legacy/*
#
# so `check` expects, for curl to the peer's server:
#
#   from web     HTTP 200, payload SHA-256 intact; verdict allow, alias-domain
#   from legacy  a reset (not a timeout); verdict deny, id-denied (the peer's
#                agent denies us: we are its deny-id)
#
# Usage: vagrant/node.sh STEP OPTIONS
#   init    make this cluster's CA and the agent's SVID (openssl CLI), publish
#           the bundle into the shared directory (keeps an existing CA)
#   start   wait for the peer's bundle, write the agent config, start the agent
#           and the server, mark this node ready in the shared directory
#   up      init, then start
#   check   wait until the peer is ready, curl its server from both workload
#           cgroups and assert our verdicts (`trustfence conns --json`);
#           publish the probes, and verify the peer's, if it published any
#   verify  assert our inbound verdicts for the probes the peer published
#   stop    stop the agent and the server, uninstall the datapath, remove the
#           cgroups and the pin directory
#
# Options (every step takes the same set):
#   --name NAME               node name: names the cgroup, pin dir, shared subdir
#   --trust-domain TD         this cluster's trust domain
#   --address IP              this node's IPv4 address on the shared network
#   --peer-name NAME          the peer node's --name
#   --peer-trust-domain TD    the peer cluster's trust domain
#   --peer-address IP         the peer node's IPv4 address
#   --shared DIR              directory both nodes see (bundles, markers, probes)
#   --state DIR               this node's private directory (keys, config, logs)
#   --trustfence PATH         the trustfence binary
#   --port PORT               the workload server's port (default 8000)
#   --agent-port PORT         the agents' channel port (default 7400)
#   --wait SECONDS            how long to wait for the peer (default 900)
#
# Everything this script starts runs in the caller's network namespace.
set -euo pipefail

die() { echo "node.sh[${name:-?}]: FAIL: $*" >&2; exit 1; }
say() { echo "node.sh[${name:-?}]: $*"; }

step=${1:-}
case "$step" in
  "" | -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
shift
port=8000
agent_port=7400
wait_seconds=900
while (($#)); do
  [[ $# -ge 2 ]] || die "option $1 needs a value"
  case "$1" in
    --name) name=$2 ;;
    --trust-domain) td=$2 ;;
    --address) address=$2 ;;
    --peer-name) peer_name=$2 ;;
    --peer-trust-domain) peer_td=$2 ;;
    --peer-address) peer_address=$2 ;;
    --shared) shared=$2 ;;
    --state) state=$2 ;;
    --trustfence) trustfence=$2 ;;
    --port) port=$2 ;;
    --agent-port) agent_port=$2 ;;
    --wait) wait_seconds=$2 ;;
    *) die "unknown option $1" ;;
  esac
  shift 2
done
for option in name:name td:trust-domain address:address peer_name:peer-name \
  peer_td:peer-trust-domain peer_address:peer-address shared:shared state:state \
  trustfence:trustfence; do
  var=${option%%:*}
  [[ -n "${!var:-}" ]] || die "--${option#*:} is required (run $0 without arguments for help)"
done
for var in port agent_port wait_seconds; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "${var//_/-} must be a number"
done
state=$(realpath -m "$state")
shared=$(realpath -m "$shared")
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name must be [A-Za-z0-9_.-]+"
[[ "$name" != "$peer_name" ]] || die "--name and --peer-name must differ"

# Distinct per node, so that two agents coexist on one host.
cgroup2_mount() {
  local mount
  mount=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  [[ -n "$mount" ]] || die "no cgroup v2 hierarchy in /proc/mounts"
  printf '%b' "$mount"  # /proc/mounts escapes spaces as \040
}
cgroot=$(cgroup2_mount) || exit 1
cgroup=$cgroot/trustfence-$name
pin_dir=/sys/fs/bpf/trustfence-$name
api_socket=$state/api.sock
mine=$shared/$name
theirs=$shared/$peer_name
web_id=spiffe://$td/ns/web/sa/web
legacy_id=spiffe://$td/ns/legacy/sa/legacy
peer_web_id=spiffe://$peer_td/ns/web/sa/web
peer_legacy_id=spiffe://$peer_td/ns/legacy/sa/legacy

# Waits up to --wait seconds for a file the peer writes into the shared directory.
wait_for_peer_file() {
  local file=$1 what=$2 waited=0
  if [[ ! -f "$file" ]]; then
    say "waiting up to ${wait_seconds}s for $what ($file)"
    while [[ ! -f "$file" ]]; do
      ((waited < wait_seconds)) || die "no $what after ${wait_seconds}s ($file)"
      sleep 1
      waited=$((waited + 1))
    done
  fi
}

# Copy, then rename: the peer never reads half a file (also over NFS).
publish() {
  local source=$1 target=$2
  cp "$source" "$target.tmp.$$"
  mv -f "$target.tmp.$$" "$target"
}

# --- init ---------------------------------------------------------------------

make_ca() {
  cat >"$state/ca.cnf" <<EOF
[req]
prompt = no
distinguished_name = dn
x509_extensions = ext
[dn]
O = trustfence vagrant
CN = $td root CA
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
subjectAltName = URI:spiffe://$td
EOF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$state/ca.key" 2>/dev/null
  chmod 600 "$state/ca.key"
  openssl req -x509 -new -config "$state/ca.cnf" -key "$state/ca.key" -sha256 -days 365 \
    -out "$state/ca.pem"
}

# An X.509-SVID: one URI SAN, not a CA, digitalSignature only.
make_svid() {
  local id=$1 out=$2
  cat >"$state/leaf.cnf" <<EOF
[req]
prompt = no
distinguished_name = dn
[dn]
O = trustfence vagrant
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = URI:$id
EOF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key" 2>/dev/null
  chmod 600 "$out.key"
  openssl req -new -config "$state/leaf.cnf" -key "$out.key" -out "$out.csr"
  openssl x509 -req -in "$out.csr" -CA "$state/ca.pem" -CAkey "$state/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 30 -sha256 \
    -extfile "$state/leaf.cnf" -extensions ext -out "$out.pem" 2>/dev/null
  rm -f "$out.csr"
}

step_init() {
  mkdir -p "$state" "$mine"
  chmod 700 "$state"
  if [[ -f "$state/ca.key" && -f "$state/ca.pem" && "$(cat "$state/trust-domain" 2>/dev/null)" == "$td" ]]; then
    say "keeping the CA of $td in $state"
  else
    make_ca
    echo "$td" >"$state/trust-domain"
    say "made the CA of $td"
  fi
  make_svid "spiffe://$td/ns/trustfence/sa/agent" "$state/svid"
  # The payload the peer downloads and checks byte for byte.
  mkdir -p "$state/www"
  head -c 1048576 /dev/urandom >"$state/www/payload.bin"
  (cd "$state/www" && sha256sum payload.bin | cut -d' ' -f1) >"$state/payload.sha256"
  publish "$state/trust-domain" "$mine/trust-domain"
  publish "$state/payload.sha256" "$mine/payload.sha256"
  publish "$state/ca.pem" "$mine/bundle.pem"
  say "published the bundle of $td to $mine/bundle.pem"
}

# --- start --------------------------------------------------------------------

# Runs "$@" as a daemon in cgroup $1 (or ours if empty), output to $2, pid to $3.
# setsid + nohup: it must outlive a Vagrant provisioner's SSH session.
daemon() {
  local in_cgroup=$1 log=$2 pidfile=$3
  shift 3
  # shellcheck disable=SC2016
  setsid nohup sh -c '[ -z "$1" ] || echo $$ >"$1/cgroup.procs" || exit 1; shift; exec "$@"' \
    sh "$in_cgroup" "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# The process in $1 if it still runs and its command line contains $2.
our_process() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" && echo "$pid"
}

stop_process() {
  local pidfile=$1 pattern=$2 pid
  if pid=$(our_process "$pidfile" "$pattern"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

write_config() {
  cat >"$state/agent.conf" <<EOF
# $name: cluster $td, federated with $peer_td ($peer_name); written by vagrant/node.sh
cgroup = $cgroup
pin-dir = $pin_dir
api-socket = $api_socket
listen = 0.0.0.0:$agent_port
trust-domain = $td
trust-domain-alias = $peer_td
trust-bundle = $td:$state/ca.pem
trust-bundle = $peer_td:$state/bundle-$peer_td.pem
svid-cert = $state/svid.pem
svid-key = $state/svid.key
peer = $peer_address/32:$peer_address:$agent_port
workload-id = $cgroup/web:$web_id
workload-id = $cgroup/legacy:$legacy_id
deny-id = spiffe://$peer_td/ns/legacy/*
mode = enforce
peer-authentication = strict
log-level = debug
EOF
}

wait_for_agent() {
  for _ in $(seq 200); do
    if "$trustfence" stats --json --api-socket "$api_socket" 2>/dev/null | grep -q '"channels"'; then
      return
    fi
    our_process "$state/agent.pid" trustfence >/dev/null || break
    sleep 0.1
  done
  cat "$state/agent.log" >&2 || true
  die "the agent did not come up (log above)"
}

wait_for_listen() {
  for _ in $(seq 100); do
    [[ -n "$(ss -Hltn "sport = :$port")" ]] && return
    our_process "$state/server.pid" http.server >/dev/null || break
    sleep 0.1
  done
  cat "$state/server.log" >&2 || true
  die "the server did not listen on port $port"
}

step_start() {
  [[ -f "$state/svid.pem" ]] || die "run init first"
  [[ -x "$trustfence" ]] || die "no trustfence binary at $trustfence (build it: scripts/build.sh)"
  rm -f "$mine/ready"
  wait_for_peer_file "$theirs/bundle.pem" "the bundle of $peer_name"
  local published
  published=$(cat "$theirs/trust-domain")
  [[ "$published" == "$peer_td" ]] ||
    die "$peer_name publishes trust domain $published, expected --peer-trust-domain $peer_td"
  cp "$theirs/bundle.pem" "$state/bundle-$peer_td.pem"
  stop_process "$state/server.pid" http.server
  stop_process "$state/agent.pid" trustfence
  mkdir -p "$cgroup/web" "$cgroup/legacy"
  write_config
  # The SVID made with the openssl CLI must pass the agent's own X.509-SVID checks.
  "$trustfence" cert check --config "$state/agent.conf" --chain "$state/svid.pem" >/dev/null ||
    die "our SVID fails trustfence cert check: $("$trustfence" cert check --config "$state/agent.conf" --chain "$state/svid.pem" 2>&1)"
  # The agent runs outside the cgroup it enforces.
  daemon "" "$state/agent.log" "$state/agent.pid" "$trustfence" agent --config "$state/agent.conf"
  wait_for_agent
  daemon "$cgroup/web" "$state/server.log" "$state/server.pid" \
    python3 -m http.server "$port" --bind 0.0.0.0 --directory "$state/www"
  wait_for_listen
  # Names this agent's run: the peer's probes of an earlier one are stale.
  echo "$(date +%s%N)-$$" >"$state/instance"
  publish "$state/instance" "$mine/ready"
  say "agent (pid $(cat "$state/agent.pid")) enforces $cgroup; server on $address:$port in web"
}

# --- check and verify ---------------------------------------------------------

# Rows of `trustfence conns --json --closed` matching DIRECTION, LOCAL and
# REMOTE (ip:port or *), CGROUP (a cgroup id or *), none of whose cookies is
# in the comma-separated SKIP. `conn_row` prints the newest as "verdict reason
# peer_id local", or "missing"; `conn_cookies` prints all their cookies.
conn_query() {
  local what=$1 rows
  shift
  rows=$("$trustfence" conns --json --closed --api-socket "$api_socket" 2>/dev/null) || rows='[]'
  python3 -c '
import json, sys
what, direction, local, remote, cgroup, skip = sys.argv[1:7]
skip = set(skip.split(","))
rows = [r for r in json.load(sys.stdin)
        if r.get("direction") == direction
        and local in ("*", r.get("local"))
        and remote in ("*", r.get("remote"))
        and cgroup in ("*", str(r.get("cgroup_id")))
        and str(r.get("cookie")) not in skip]
if what == "cookies":
    print(",".join(str(r.get("cookie")) for r in rows))
elif not rows:
    print("missing")
else:
    r = rows[-1]  # oldest first
    print(r.get("verdict"), r.get("reason"), r.get("peer_id"), r.get("local"))
' "$what" "$@" <<<"$rows"
}
conn_row() { conn_query row "$@"; }
conn_cookies() { conn_query cookies "$@"; }

# Polls until the connection's verdict is no longer pending, then compares
# "verdict reason peer_id" with EXPECTED; sets matched_local.
expect_row() {
  local what=$1 direction=$2 local_end=$3 remote_end=$4 cgroup_id=$5 skip=$6 expected=$7
  local row=missing
  for _ in $(seq 50); do
    row=$(conn_row "$direction" "$local_end" "$remote_end" "$cgroup_id" "$skip")
    [[ "$row" == missing || "$row" == pending* ]] || break
    sleep 0.1
  done
  if [[ "${row% *}" != "$expected" ]]; then
    "$trustfence" conns --closed --api-socket "$api_socket" >&2 || true
    die "$what: $direction $local_end -> $remote_end: verdict '${row% *}', expected '$expected'"
  fi
  matched_local=${row##* }
  say "ok  $what: $direction ${matched_local} <-> $remote_end: ${row% *}"
}

# curl from workload cgroup $1 to the peer's server, body to $2; prints
# "HTTP_CODE LOCAL_IP:LOCAL_PORT SECONDS CURL_EXIT".
probe() {
  local workload=$1 out=$2
  # shellcheck disable=SC2016
  sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cgroup/$workload" \
    curl -sS --max-time 20 -o "$out" -w '%{http_code} %{local_ip}:%{local_port} %{time_total}' \
    "http://$peer_address:$port/payload.bin" 2>"$state/curl-$workload.err" && echo " 0" || echo " $?"
}

step_check() {
  our_process "$state/agent.pid" trustfence >/dev/null || die "our agent does not run (run start)"
  wait_for_peer_file "$theirs/ready" "$peer_name to be ready"
  local server=$peer_address:$port code local_end seconds exit_code web_cg legacy_cg skip
  web_cg=$(stat -c %i "$cgroup/web")
  legacy_cg=$(stat -c %i "$cgroup/legacy")

  skip=$(conn_cookies outbound "*" "$server" "$web_cg" "")
  read -r code local_end seconds exit_code <<<"$(probe web "$state/download.bin")"
  say "web    -> $server: curl exit $exit_code, HTTP $code, ${seconds}s"
  [[ "$exit_code" == 0 && "$code" == 200 ]] ||
    die "allowed: web -> $server: curl exit $exit_code, HTTP $code: $(cat "$state/curl-web.err")"
  [[ "$(sha256sum <"$state/download.bin" | cut -d' ' -f1)" == "$(cat "$theirs/payload.sha256")" ]] ||
    die "allowed: web -> $server: the payload's SHA-256 differs from what $peer_name published"
  say "ok  allowed: 1 MiB payload intact (SHA-256 matches $peer_name's)"
  expect_row allowed outbound "$local_end" "$server" "$web_cg" "$skip" \
    "allow alias-domain $peer_web_id"
  printf 'target %s\nallowed %s\n' "$(cat "$theirs/ready")" "$matched_local" >"$state/probes"

  # The denied socket is destroyed at once: curl sees a reset, or a failed
  # connect if that comes first (then it knows no local port: the row is the
  # legacy cgroup's new one).
  skip=$(conn_cookies outbound "*" "$server" "$legacy_cg" "")
  read -r code local_end seconds exit_code <<<"$(probe legacy "$state/denied.bin")"
  say "legacy -> $server: curl exit $exit_code, HTTP $code, ${seconds}s ($(cat "$state/curl-legacy.err"))"
  [[ "$exit_code" != 0 && "$code" != 200 ]] || die "denied: legacy -> $server got HTTP $code"
  [[ "$exit_code" != 28 ]] || die "denied: legacy -> $server timed out instead of being reset"
  [[ "$local_end" =~ :[1-9][0-9]*$ ]] || local_end="*"
  expect_row denied outbound "$local_end" "$server" "$legacy_cg" "$skip" \
    "deny id-denied $peer_web_id"
  printf 'denied %s\n' "$matched_local" >>"$state/probes"

  publish "$state/probes" "$mine/probes"
  if [[ "$(probes_target)" == "$(cat "$state/instance")" ]]; then
    step_verify
  else
    say "$peer_name has published no probes of this agent yet: run verify here after its check"
  fi
  say "PASS check"
}

# The agent run the peer's probes were made against.
probes_target() {
  sed -n 's/^target //p' "$theirs/probes" 2>/dev/null || true
}

step_verify() {
  wait_for_peer_file "$theirs/probes" "the probes of $peer_name"
  [[ "$(probes_target)" == "$(cat "$state/instance")" ]] ||
    die "the probes of $peer_name were made against an earlier run of our agent: run check there first"
  local kind client
  while read -r kind client; do
    case "$kind" in
      target) ;;
      allowed) expect_row "$peer_name's allowed" inbound "$address:$port" "$client" "*" "" \
        "allow alias-domain $peer_web_id" ;;
      denied) expect_row "$peer_name's denied" inbound "$address:$port" "$client" "*" "" \
        "deny id-denied $peer_legacy_id" ;;
      *) die "bad line in $theirs/probes: $kind $client" ;;
    esac
  done <"$theirs/probes"
  say "PASS verify"
}

# --- stop ---------------------------------------------------------------------

step_stop() {
  stop_process "$state/server.pid" http.server
  stop_process "$state/agent.pid" trustfence
  if [[ -d "$pin_dir" ]]; then
    "$trustfence" agent --uninstall --pin-dir "$pin_dir" >/dev/null 2>&1 || true
    rm -rf "$pin_dir"
  fi
  for dir in "$cgroup/web" "$cgroup/legacy" "$cgroup"; do
    [[ -d "$dir" ]] || continue
    # Only what this script placed there: the server and its curl clients.
    [[ ! -f "$dir/cgroup.kill" ]] || echo 1 >"$dir/cgroup.kill" 2>/dev/null || true
    for _ in $(seq 50); do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
    [[ ! -d "$dir" ]] || say "warning: could not remove $dir"
  done
  rm -f "$api_socket" "$api_socket.names" "$mine/ready"
  say "stopped"
}

case "$step" in
  init) step_init ;;
  start) step_start ;;
  up) step_init && step_start ;;
  check) step_check ;;
  verify) step_verify ;;
  stop) step_stop ;;
  *) die "unknown step $step (init, start, up, check, verify, stop)" ;;
esac

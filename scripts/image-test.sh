#!/usr/bin/env bash
# Builds the trustfence container image and proves it enforces, as root:
#   1. makes a Debian base image with debootstrap + podman import (no
#      registry needed; cached: skipped while the image exists);
#   2. builds deploy/container/Dockerfile on it (--pull=never);
#   3. checks deploy/systemd/trustfence.service with systemd-analyze verify
#      (scripts/check-systemd-unit.sh, with the image's binary);
#   4. runs the image as the DaemonSet does -- host network, the host's bpffs
#      and cgroup2 tree mounted, host PIDs, read-only root, capabilities BPF,
#      PERFMON, NET_ADMIN, SYS_ADMIN and SYS_PTRACE only -- enforcing a test cgroup of the host, and checks with
#      real TCP that a server allowed by policy is reached byte-exact (1 MiB,
#      SHA-256) and one denied by policy gets no data through, each with the
#      verdict and reason the agent reports in `trustfence conns --json`.
# Exits non-zero, naming the failed step, on any failure; cleans up its
# container, cgroups, pins and processes on exit. Idempotent.
#   IMAGE_TEST_DIR  work directory (default build-img)
#   TF_IMAGE        image to build and test (default localhost/trustfence:latest)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

work=${IMAGE_TEST_DIR:-$top/build-img}
image=${TF_IMAGE:-localhost/trustfence:latest}
base=localhost/debian:bookworm-minbase
container=tf-image-test-$$
pin_dir=/sys/fs/bpf/tf-image-test-$$
td="image-test.local"
# podman reads this instead of /etc/containers/containers.conf: runc, and
# ulimits this host accepts (see the file).
export CONTAINERS_CONF=$top/deploy/container/containers.conf

fail() {
  echo "image-test: FAIL: $*" >&2
  exit 1
}
step() { echo "=== image-test: $* ($(date -u +%T), ${SECONDS}s)"; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (podman, debootstrap, cgroups, bpffs)"

pids=()
cg=""
run=""
cleanup() {
  local status=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  if podman container exists "$container" 2>/dev/null; then
    if ((status != 0)); then
      echo "--- agent log (last 40 lines)" >&2
      podman logs --tail 40 "$container" >&2
    fi
    podman rm -f -t 5 "$container" >/dev/null
  fi
  podman rm -f "$container-cp" >/dev/null 2>&1
  if [[ -d $pin_dir ]]; then
    podman run --rm --pull=never --network host --cap-drop=all --cap-add=BPF,NET_ADMIN \
      --security-opt seccomp=unconfined -v /sys/fs/bpf:/sys/fs/bpf "$image" \
      agent --uninstall --pin-dir "$pin_dir" >/dev/null 2>&1 ||
      { echo "image-test: agent --uninstall failed, removing $pin_dir" >&2 && rm -rf "$pin_dir"; }
  fi
  if [[ -n $cg && -d $cg ]]; then
    for d in "$cg"/*/; do
      [[ -f $d/cgroup.procs ]] || continue
      xargs -r kill -9 <"$d/cgroup.procs" 2>/dev/null
    done
    sleep 0.2
    for d in "$cg"/*/; do rmdir "$d" 2>/dev/null; done
    rmdir "$cg" 2>/dev/null
  fi
  [[ -n $run ]] && rm -rf "$run"
  if ((status != 0)); then echo "image-test: FAILED after ${SECONDS}s" >&2; fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "packages"
bash scripts/setup.sh
mkdir -p "$work"

# --- 1. base image ------------------------------------------------------------
if podman image exists "$base"; then
  step "base image $base exists (cached)"
else
  step "base image: debootstrap --variant=minbase bookworm"
  rootfs=$work/debootstrap-rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
    >"$work/debootstrap.log" 2>&1 || fail "debootstrap failed, see $work/debootstrap.log"
  # The host's resolver and name must not end up in the image; apt's lists
  # and archives are dead weight.
  rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  # debootstrap lists only the release: add its updates and security
  # suites, so the image gets libssl3's (and the rest's) security fixes.
  cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null ||
    fail "podman import of the debootstrap tree failed"
  rm -rf "$rootfs"
fi

# --- 2. the image ---------------------------------------------------------------
step "build $image"
# The build stage is tagged too, so its layers are the cache of the next run
# and the ones a source change replaced can be removed (1.2 GB each).
build_image=${image%:*}-build:latest
previous=()
for i in "$build_image" "$image"; do
  previous+=("$(podman image inspect --format '{{.Id}}' "$i" 2>/dev/null || true)")
done
# Others may edit the tree during the build: both builds use one snapshot of
# what the Dockerfile copies, so the second finds the first's layers.
context=$work/context
rm -rf "$context"
mkdir -p "$context/deploy"
cp -a CMakeLists.txt cmake include bpf agent tests bench demo "$context/"
cp -a deploy/container "$context/deploy/"
for target in build final; do
  tag=$image
  args=()
  [[ $target == build ]] && tag=$build_image && args=(--target build)
  podman build --pull=never --network host --build-arg BASE_IMAGE="$base" "${args[@]}" \
    -f "$context/deploy/container/Dockerfile" -t "$tag" "$context" >"$work/podman-build-$target.log" 2>&1 ||
    { tail -30 "$work/podman-build-$target.log" >&2; fail "podman build ($target) failed, see $work/podman-build-$target.log"; }
done
for old in "${previous[@]}"; do
  [[ -n $old ]] || continue
  if ! podman image inspect --format '{{.RepoTags}}' "$old" | grep -q trustfence; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
done
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image $image: $((size / 1000000)) MB"
podman run --rm --pull=never --network none "$image" id check "spiffe://$td/ns/a/sa/b" >/dev/null ||
  fail "the image's trustfence does not run"
if podman run --rm --pull=never --network none --entrypoint sh "$image" -c \
  'command -v gcc || command -v clang || command -v cmake'; then
  fail "the runtime image contains a compiler"
fi

# --- 3. the systemd unit, with the image's binary -----------------------------
step "systemd unit: systemd-analyze verify"
podman create --name "$container-cp" "$image" >/dev/null
podman cp "$container-cp:/usr/local/bin/trustfence" "$work/trustfence" ||
  { podman rm "$container-cp" >/dev/null; fail "could not copy trustfence out of the image"; }
podman rm "$container-cp" >/dev/null
bash scripts/check-systemd-unit.sh "$work/trustfence" || fail "deploy/systemd/trustfence.service does not verify"

# --- 4. the image enforcing a host cgroup ---------------------------------------
step "enforcement: agent in the image, client and servers on the host"
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[[ -n $cg2 ]] || fail "no cgroup2 mount in /proc/mounts"
awk '$2 == "/sys/fs/bpf" && $3 == "bpf"' /proc/mounts | grep -q . ||
  fail "bpffs is not mounted at /sys/fs/bpf"

run=$(mktemp -d "$work/run.XXXXXX")
cg=$cg2/tf-image-test-$$
mkdir -p "$cg/client" "$cg/allowed" "$cg/denied"

# A CA of the test trust domain and the agent's X.509-SVID, minted now.
pki=$run/pki
mkdir -p "$pki" "$run/config" "$run/api" "$run/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/O=trustfence image test/CN=$td CA" -keyout "$pki/ca.key" -out "$pki/bundle.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectAltName=URI:spiffe://$td" 2>/dev/null || fail "minting the test CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/O=trustfence image test/CN=agent" -keyout "$pki/svid.key" -out "$pki/svid.csr" \
  2>/dev/null || fail "minting the agent key"
openssl x509 -req -in "$pki/svid.csr" -CA "$pki/bundle.pem" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 1 -out "$pki/svid.pem" -extfile <(printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=URI:spiffe://$td/ns/trustfence/sa/agent") 2>/dev/null ||
  fail "minting the agent SVID"
chmod 0400 "$pki"/*

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listen_port=$(free_port)
metrics_port=$(free_port)
allowed_port=$(free_port)
denied_port=$(free_port)

# One node, one agent: sockets of the same node are paired and decided by
# the agent's policy with the identities of their cgroups. The client keeps
# the agent's own ID; the two servers get workload IDs of the local domain,
# and a deny-id rule denies the second one.
host_cg=/host/sys/fs/cgroup/tf-image-test-$$
cat >"$run/config/trustfence.conf" <<EOF
cgroup = $host_cg
pin-dir = $pin_dir
mode = enforce
trust-domain = $td
trust-bundle = $td:/etc/trustfence/bundles/bundle.pem
svid-cert = /etc/trustfence/svid/svid.pem
svid-key = /etc/trustfence/svid/svid.key
workload-id = $host_cg/allowed:spiffe://$td/ns/shop/sa/allowed-server
workload-id = $host_cg/denied:spiffe://$td/ns/legacy/sa/denied-server
deny-id = spiffe://$td/ns/legacy/*
listen = 127.0.0.1:$listen_port
metrics = 127.0.0.1:$metrics_port
api-socket = /run/trustfence/api.sock
log-level = debug
EOF

# Servers and client: real processes of the host, each started inside its
# cgroup (it writes its own PID to cgroup.procs, then execs).
head -c $((1024 * 1024)) /dev/urandom >"$run/www/payload"
want=$(sha256sum <"$run/www/payload" | cut -d' ' -f1)
in_cgroup() {
  local dir=$1
  shift
  bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@"
}
for name in allowed denied; do
  port_var=${name}_port
  in_cgroup "$cg/$name" python3 -m http.server --bind 127.0.0.1 --directory "$run/www" \
    "${!port_var}" >"$run/$name-server.log" 2>&1 &
  pids+=($!)
done
# Wait for the listeners without connecting: a probe would add connections.
for name in allowed denied; do
  port_var=${name}_port
  for _ in $(seq 1 100); do
    [[ -n $(ss -Hltn "sport = :${!port_var}") ]] && break
    sleep 0.1
  done
  [[ -n $(ss -Hltn "sport = :${!port_var}") ]] || fail "the $name server is not listening"
done

fetch() {
  in_cgroup "$cg/client" curl -sS --max-time 10 -o "$run/$1.out" \
    -w '%{http_code}' "http://127.0.0.1:$2/payload" 2>"$run/$1.curl.err"
}
# Control: without the agent both servers answer the client byte-exact, so a
# failure below is the agent's doing.
for name in allowed denied; do
  port_var=${name}_port
  code=$(fetch "control-$name" "${!port_var}") ||
    fail "control fetch from the $name server failed: $(cat "$run/control-$name.curl.err")"
  [[ $code == 200 && $(sha256sum <"$run/control-$name.out" | cut -d' ' -f1) == "$want" ]] ||
    fail "control fetch from the $name server: HTTP $code or wrong bytes"
done
echo "control (no agent yet): both servers serve the client 1 MiB intact"

# The DaemonSet's privileges, mapped to podman (deploy/kubernetes/base/
# daemonset.yaml): hostNetwork -> --network host; hostPID -> --pid host;
# capabilities drop ALL, add BPF, PERFMON, NET_ADMIN, SYS_ADMIN, SYS_PTRACE
# (the last two for workloads' own network namespaces); allowPrivilegeEscalation false ->
# no-new-privileges; readOnlyRootFilesystem -> --read-only; seccomp
# Unconfined -> seccomp=unconfined (podman 4.3's default profile allows
# bpf(2) and perf_event_open(2) only with CAP_SYS_ADMIN, so it would need
# SYS_ADMIN instead -- with it the agent cannot load sock_ops); the host's bpffs, cgroup2 tree (read-only) and the API
# socket directory as hostPaths.
podman run -d --name "$container" --pull=never \
  --network host --pid host \
  --cap-drop=all --cap-add=BPF,PERFMON,NET_ADMIN,SYS_ADMIN,SYS_PTRACE \
  --security-opt no-new-privileges --security-opt seccomp=unconfined \
  --read-only --tmpfs /tmp \
  -v /sys/fs/bpf:/sys/fs/bpf \
  -v "$cg2":/host/sys/fs/cgroup:ro \
  -v "$run/api":/run/trustfence \
  -v "$run/config":/etc/trustfence/config:ro \
  -v "$pki":/etc/trustfence/svid:ro \
  -v "$pki":/etc/trustfence/bundles:ro \
  "$image" agent --config=/etc/trustfence/config/trustfence.conf >/dev/null ||
  fail "podman run of the agent failed"

ready=""
for _ in $(seq 1 150); do
  podman container inspect --format '{{.State.Running}}' "$container" 2>/dev/null | grep -q true ||
    fail "the agent exited: $(podman logs --tail 5 "$container" 2>&1)"
  if curl -fsS -o /dev/null "http://127.0.0.1:$metrics_port/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.2
done
[[ -n $ready ]] || fail "the agent did not become ready within 30s"
[[ -S $run/api/api.sock ]] || fail "no API socket on the hostPath ($run/api/api.sock)"
agent_pid=$(podman container inspect --format '{{.State.Pid}}' "$container")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$agent_pid/status")
# CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_PERFMON (38), CAP_BPF (39)
[[ $caps == 000000c000281000 ]] ||
  fail "agent's effective capabilities are $caps, expected BPF+PERFMON+NET_ADMIN+SYS_ADMIN+SYS_PTRACE only"
echo "agent ready, effective capabilities $caps"

code=$(fetch allowed "$allowed_port") || fail "allowed fetch failed: $(cat "$run/allowed.curl.err")"
[[ $code == 200 ]] || fail "allowed fetch answered HTTP $code"
got=$(sha256sum <"$run/allowed.out" | cut -d' ' -f1)
[[ $got == "$want" ]] || fail "allowed fetch: SHA-256 $got, sent $want"
echo "allowed: HTTP 200, 1 MiB, SHA-256 intact"

set +e
code=$(fetch denied "$denied_port")
curl_status=$?
set -e
((curl_status != 0)) || fail "denied fetch succeeded (HTTP $code)"
bytes=$(stat -c %s "$run/denied.out" 2>/dev/null || echo 0)
[[ $bytes -eq 0 ]] || fail "denied fetch received $bytes bytes"
if [[ $(grep -c 'GET /payload' "$run/denied-server.log") -ne 1 ]]; then
  fail "the denied server received the request (only the control's is expected in its log)"
fi
echo "denied: curl exit $curl_status ($(head -c 120 "$run/denied.curl.err")), 0 bytes, no request at the server"

# The verdicts, from the agent's API: inside the container, and from the
# host through the hostPath socket with the image's binary.
podman exec "$container" trustfence conns --json --closed >"$run/conns-exec.json" ||
  fail "trustfence conns (podman exec) failed"
"$work/trustfence" conns --json --closed --api-socket "$run/api/api.sock" >"$run/conns-host.json" ||
  fail "trustfence conns (host, via $run/api/api.sock) failed"
for view in exec host; do
  echo "--- trustfence conns --json --closed ($view)"
  python3 - "$run/conns-$view.json" "$allowed_port" "$denied_port" "$td" <<'EOF' || fail "verdicts do not match (see above)"
import json, sys
rows = json.load(open(sys.argv[1]))
rows = rows.get("connections", rows) if isinstance(rows, dict) else rows
allowed_port, denied_port, td = sys.argv[2], sys.argv[3], sys.argv[4]
client = f"spiffe://{td}/ns/trustfence/sa/agent"  # the client cgroup has no workload-id
ok = True
def check(r, verdict, reason, peer):
    global ok
    if (r["verdict"], r["reason"], r["peer_id"]) != (verdict, reason, peer):
        print(f"{r['direction']} {r['local']} -> {r['remote']}: {r['verdict']}/{r['reason']}/"
              f"{r['peer_id']}, expected {verdict}/{reason}/{peer}", file=sys.stderr)
        ok = False
    else:
        print(f"conns: {r['direction']:8} {r['local']} -> {r['remote']}: {verdict} ({reason}, {peer})")
for port, verdict, reason, server in [
        (allowed_port, "allow", "local-domain", f"spiffe://{td}/ns/shop/sa/allowed-server"),
        (denied_port, "deny", "id-denied", f"spiffe://{td}/ns/legacy/sa/denied-server")]:
    # Exactly one connection to each server: the client's.
    out = [r for r in rows if r["direction"] == "outbound" and r["remote"] == f"127.0.0.1:{port}"]
    if len(out) != 1:
        print(f"outbound to :{port}: {len(out)} rows, expected 1", file=sys.stderr); ok = False; continue
    check(out[0], verdict, reason, server)
    # The server's end of the same connection: it accepts the client's ID,
    # the client's agent side denies the denied one (either side's denial
    # denies; the client's socket is destroyed).
    inb = [r for r in rows if r["direction"] == "inbound" and r["local"] == out[0]["remote"]
           and r["remote"] == out[0]["local"]]
    if len(inb) != 1:
        print(f"inbound of {out[0]['local']} -> :{port}: {len(inb)} rows, expected 1", file=sys.stderr)
        ok = False; continue
    check(inb[0], "allow", "local-domain", client)
sys.exit(0 if ok else 1)
EOF
done

step "PASS (${SECONDS}s)"

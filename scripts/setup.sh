#!/usr/bin/env bash
# Installs what building and testing trustfence needs on Debian 12, as root.
# Idempotent: installs only the packages that are missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev
  libssl-dev libboost-program-options-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 curl socat python3 stunnel4 openssl clang-format kmod
  clang-16 libclang-rt-16-dev
  podman runc debootstrap containernetworking-plugins
  qemu-system-x86 busybox-static xz-utils
  ruby vagrant vagrant-libvirt
  iperf3 haproxy gnuplot-nox wrk
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the offline manifest check (scripts/validate-manifests.sh);
# a machine with another Node.js (NodeSource's bundles npm) keeps its own.
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Runs the bpf, kernel and e2e test tiers of a build inside Debian's own
# kernel (the current linux-image-amd64) under QEMU: KVM when /dev/kvm is
# usable, software emulation (TCG) otherwise. The VM sees the host's root
# read-only over virtio-9p under a throwaway overlay, so it runs the very
# binaries this build made; its serial console streams here and its exit
# status comes back through QEMU's isa-debug-exit device.
#
#   bash scripts/vm-test.sh [TIER...]        default: bpf kernel e2e
#
# Environment (all optional):
#   BUILD_DIR            build to test (default build/); built first unless TF_VM_NO_BUILD=1
#   TF_VM_ACCEL          auto (default), kvm or tcg
#   TF_VM_MEMORY         guest memory (default 4G); TF_VM_CPUS (default 2)
#   TF_VM_TEST_TIMEOUT   seconds per test (default 600 with KVM, 1200 under TCG)
#   TF_VM_TIMEOUT        seconds for the whole VM run (default 2400)
#   TF_TEST_SCALE        passed to the tests: fraction of the connection counts
#                        of the heavy churn tests (default 1 with KVM, 0.2 under TCG)
#   TF_TEST_SLOWDOWN     passed to the tests: factor on the e2e deadlines that model
#                        machine work (default 1 with KVM, 5 under TCG)
#   TF_VM_CTEST_ARGS     extra ctest arguments, e.g. "-R Churn"
#   TF_VM_COMMAND        a shell command to run in the VM instead of the tiers (debugging)
#   TF_VM_CPU_MODEL, TF_VM_KERNEL_ARGS  QEMU -cpu (default max) and extra kernel arguments
#
# The guest caches the host's files (9p cache=loose): do not rebuild the
# build directory while a VM runs from it.
#   TF_VM_CACHE          kernel cache (default ${XDG_CACHE_HOME:-/var/cache}/trustfence-vm)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${BUILD_DIR:-$top/build}")
tiers=${*:-bpf kernel e2e}
cache=${TF_VM_CACHE:-${XDG_CACHE_HOME:-/var/cache}/trustfence-vm}

# What the tiers need beyond the kernel image: the 9p root and its overlay,
# the entropy source, veth and bridge for the e2e topologies, and tcp_diag
# for SOCK_DESTROY (sockets of denied connections are destroyed).
modules=(virtio_pci 9pnet_virtio 9p overlay virtio_rng veth bridge inet_diag tcp_diag)

log() { echo "vm-test: $*" >&2; }
die() {
  log "$*"
  exit 1
}

bash "$top/scripts/setup.sh"
if [[ "${TF_VM_NO_BUILD:-0}" != 1 ]]; then
  BUILD_DIR=$build bash "$top/scripts/build.sh"
fi
[[ -f "$build/CTestTestfile.cmake" ]] || die "$build is not a configured build directory"

# The package linux-image-amd64 currently depends on, e.g. linux-image-6.1.0-28-amd64.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
pkg=$(kernel_package)
if [[ -z "$pkg" ]]; then
  apt-get update -q >/dev/null
  pkg=$(kernel_package)
fi
[[ -n "$pkg" ]] || die "apt-cache does not know linux-image-amd64's kernel package"
version=$(apt-cache show --no-all-versions "$pkg" | awk '$1 == "Version:" { print $2; exit }')
key=$(printf '%s\n' pvh "${modules[@]}" | md5sum | cut -c1-8)
kdir="$cache/${pkg}_${version}_$key"

# Decompressing the kernel under TCG takes a good part of the boot: keep the
# uncompressed ELF too when the kernel can boot from it (a PVH entry note,
# CONFIG_PVH), which QEMU loads directly.
extract_pvh_vmlinux() {
  local vmlinuz=$1 out=$2 offset
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
  [[ -n "$offset" ]] || return 0
  tail -c +$((offset + 1)) "$vmlinuz" | xz -dc --single-stream >"$out.tmp" 2>/dev/null || true
  # XEN_ELFNOTE_PHYS32_ENTRY (0x12): the PVH entry point.
  if readelf -n "$out.tmp" 2>/dev/null | grep -q 'Xen.*(0x00000012)'; then
    mv "$out.tmp" "$out"
  else
    rm -f "$out.tmp"
  fi
}

# Pulls vmlinuz and the modules above (with everything they depend on, in
# load order) out of the package, once per package version.
fetch_kernel() {
  local tmp deb ko name dep
  tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  log "downloading $pkg $version"
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >/dev/null)
  deb=$(ls "$tmp"/*.deb)
  dpkg-deb -x "$deb" "$tmp/root"
  local release=${pkg#linux-image-}
  local moddir="$tmp/root/lib/modules/$release"
  [[ -d "$moddir" ]] || die "$pkg has no /lib/modules/$release"
  declare -A path_of=()
  while IFS= read -r ko; do
    name=$(basename "$ko" .ko)
    path_of[${name//-/_}]=$ko
  done < <(find "$moddir/kernel" -name '*.ko')
  declare -A seen=()
  local order=()
  visit() {
    local mod=${1//-/_}
    [[ -n "${seen[$mod]:-}" ]] && return
    seen[$mod]=1
    if [[ -z "${path_of[$mod]:-}" ]]; then
      grep -q "/${mod//_/[-_]}\.ko$" "$moddir/modules.builtin" ||
        die "$pkg has no module $mod, and it is not built in"
      return
    fi
    local deps
    deps=$(modinfo -F depends "${path_of[$mod]}")
    for dep in ${deps//,/ }; do visit "$dep"; done
    order+=("$mod")
  }
  for name in "${modules[@]}"; do visit "$name"; done
  mkdir -p "$tmp/out/modules"
  cp "$tmp/root/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
  extract_pvh_vmlinux "$tmp/out/vmlinuz" "$tmp/out/vmlinux"
  cp "$tmp/root/boot/config-$release" "$tmp/out/config"
  for name in "${order[@]}"; do
    cp "${path_of[$name]}" "$tmp/out/modules/$name.ko"
    echo "$name.ko" >>"$tmp/out/modules/load-order"
  done
  rm -rf "$kdir"
  mv "$tmp/out" "$kdir"
}

mkdir -p "$cache"
(
  flock 9
  [[ -f "$kdir/vmlinuz" ]] || fetch_kernel
) 9>"$cache/.lock"
log "kernel $pkg $version ($(tr '\n' ' ' <"$kdir/modules/load-order"))"

kernel="$kdir/vmlinuz"
[[ -f "$kdir/vmlinux" ]] && kernel="$kdir/vmlinux"

work=$(mktemp -d "${TMPDIR:-/tmp}/trustfence-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The initramfs: static busybox, the init script, the modules, the run's settings.
busybox=$(command -v busybox) || die "busybox is missing (package busybox-static)"
if readelf -d "$busybox" 2>/dev/null | grep -q NEEDED; then
  die "$busybox is not static: install busybox-static"
fi
accel=${TF_VM_ACCEL:-auto}
if [[ "$accel" == auto ]]; then
  accel=tcg
  # A /dev/kvm without the CPU's virtualization extensions (some nested
  # setups) hangs the guest: it is not usable.
  [[ -r /dev/kvm && -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
fi
case "$accel" in
  kvm) accel_args=(-accel kvm -accel tcg) test_timeout=600 scale=1 slowdown=1 ;;
  tcg) accel_args=(-accel tcg) test_timeout=1200 scale=0.2 slowdown=5 ;;
  *) die "TF_VM_ACCEL must be auto, kvm or tcg, not $accel" ;;
esac

initrd="$work/initramfs"
mkdir -p "$initrd/bin"
cp "$busybox" "$initrd/bin/busybox"
cp "$top/scripts/vm/init" "$initrd/init"
chmod 0755 "$initrd/init"
cp -r "$kdir/modules" "$initrd/modules"
cp "$kdir/config" "$initrd/config"
{
  printf 'TF_VM_TOP=%q\n' "$top"
  printf 'TF_VM_BUILD=%q\n' "$build"
  printf 'TF_VM_TIERS=%q\n' "$tiers"
  printf 'TF_VM_TEST_TIMEOUT=%q\n' "${TF_VM_TEST_TIMEOUT:-$test_timeout}"
  printf 'TF_VM_CTEST_ARGS=%q\n' "${TF_VM_CTEST_ARGS:-}"
  printf 'TF_VM_COMMAND=%q\n' "${TF_VM_COMMAND:-}"
  printf 'TF_TEST_SCALE=%q\n' "${TF_TEST_SCALE:-$scale}"
  printf 'TF_TEST_SLOWDOWN=%q\n' "${TF_TEST_SLOWDOWN:-$slowdown}"
  printf 'CI=%q\n' "${CI:-}"
} >"$initrd/vm.env"
(cd "$initrd" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null | gzip -1 >"$work/initramfs.gz")

log "booting ($accel, ${TF_VM_CPUS:-2} vCPUs, ${TF_VM_MEMORY:-4G}), tiers: $tiers"
start=$SECONDS
set +e
timeout -k 10 "${TF_VM_TIMEOUT:-2400}" qemu-system-x86_64 \
  "${accel_args[@]}" -machine q35 -cpu "${TF_VM_CPU_MODEL:-max}" -smp "${TF_VM_CPUS:-2}" -m "${TF_VM_MEMORY:-4G}" \
  -nodefaults -display none -monitor none -serial stdio -no-reboot \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 ${TF_VM_KERNEL_ARGS:-quiet loglevel=4 mitigations=off} panic=-1 rdinit=/init random.trust_cpu=on tsc=reliable" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -device virtio-rng-pci \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  </dev/null
rc=$?
set -e
elapsed=$((SECONDS - start))
# isa-debug-exit: the guest wrote 0 (pass) or 1 (fail); QEMU exits (value << 1) | 1.
case $rc in
  1) log "passed in ${elapsed} s ($accel)" && exit 0 ;;
  3) die "tests failed in the VM (${elapsed} s, $accel)" ;;
  124) die "the VM did not finish within ${TF_VM_TIMEOUT:-2400} s" ;;
  *) die "the VM stopped without reporting a result (QEMU exit $rc after ${elapsed} s)" ;;
esac

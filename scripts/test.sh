#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds, and runs every test tier:
# unit, bpf, kernel and e2e (as root; CI=true makes a missing privilege a failure),
# the last three again inside Debian's kernel under QEMU, the container image and
# systemd unit, the Vagrant scenario in network namespaces,
# the unit tier again under ASan+UBSan, every libFuzzer target for a bounded
# time (FUZZ_SECONDS, default 15), the Kubernetes manifests against the API
# schema, the formatting check, and a smoke run of
# the benchmarks so they cannot rot.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
bash scripts/build.sh
build=${BUILD_DIR:-$top/build}

status=0
for tier in unit bpf kernel e2e; do
  count=$(cd "$build" && ctest -N -L "^${tier}\$" | sed -n 's/^Total Tests: //p')
  if [[ -z "$count" || "$count" -eq 0 ]]; then
    echo "test: tier '$tier' has no tests" >&2
    status=1
    continue
  fi
  echo "=== tier $tier: $count tests"
  (cd "$build" && ctest -L "^${tier}\$" --output-on-failure --timeout 600) || status=1
done

echo "=== bpf, kernel and e2e tiers again, in a VM on Debian's own kernel"
BUILD_DIR="$build" TF_VM_NO_BUILD=1 bash scripts/vm-test.sh || status=1

echo "=== container image (podman) and systemd unit"
bash scripts/image-test.sh || status=1

echo "=== Vagrant scenario: vagrant/node.sh for two nodes in network namespaces"
bash scripts/vagrant-scenario-test.sh || status=1

echo "=== unit tier under ASan+UBSan"
bash scripts/sanitize.sh || status=1

echo "=== fuzzing, ${FUZZ_SECONDS:-15}s per target"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz.sh || status=1

echo "=== Kubernetes manifests, offline against the API schema"
bash scripts/validate-manifests.sh || status=1
bash scripts/validate-manifests.sh --self-test || status=1

echo "=== clang-format"
bash scripts/format.sh --check || status=1

echo "=== benchmark smoke: every scenario of scripts/bench.sh with tiny counts"
bash scripts/bench.sh --smoke || status=1

exit $status

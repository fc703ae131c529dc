#!/usr/bin/env bash
# Runs inside the test VM (scripts/vm-test.sh), started by scripts/vm/init
# once the overlay root, cgroup v2 at /sys/fs/cgroup and bpffs are mounted:
# the ctest tiers TF_VM_TIERS of TF_VM_BUILD, each test bounded by
# TF_VM_TEST_TIMEOUT seconds. The exit status goes back to the host.
set -uo pipefail

echo "=== vm: Linux $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB"
echo "=== vm: cgroup v2 at $(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)," \
  "tests scaled by TF_TEST_SCALE=${TF_TEST_SCALE:-1}, deadlines by TF_TEST_SLOWDOWN=${TF_TEST_SLOWDOWN:-1}"

# For debugging in the VM: a command instead of the tiers.
if [[ -n "${TF_VM_COMMAND:-}" ]]; then
  bash -c "$TF_VM_COMMAND"
  exit $?
fi

status=0
for tier in $TF_VM_TIERS; do
  count=$(cd "$TF_VM_BUILD" && ctest -N -L "^${tier}\$" | sed -n 's/^Total Tests: //p')
  if [[ -z "$count" || "$count" -eq 0 ]]; then
    echo "vm: tier '$tier' has no tests" >&2
    status=1
    continue
  fi
  echo "=== vm: tier $tier: $count tests"
  start=$SECONDS
  (cd "$TF_VM_BUILD" && ctest -L "^${tier}\$" --output-on-failure --timeout "$TF_VM_TEST_TIMEOUT" --no-tests=error \
    ${TF_VM_CTEST_ARGS:-}) || status=1
  echo "=== vm: tier $tier took $((SECONDS - start)) s"
done
exit $status

#!/usr/bin/env bash
# Checks deploy/systemd/trustfence.service with `systemd-analyze verify`.
# verify also checks that ExecStart's binary exists and is executable, so
# the unit is verified unchanged in a private mount namespace where a tmpfs
# over /usr/local/bin holds the trustfence binary given (default: the one
# of ${BUILD_DIR:-build}); the host's /usr/local/bin is not touched. Any
# message about the unit fails the check. Root (unshare -m).
#   check-systemd-unit.sh [TRUSTFENCE_BINARY]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
unit=$top/deploy/systemd/trustfence.service
binary=${1:-${BUILD_DIR:-$top/build}/agent/trustfence}

fail() {
  echo "check-systemd-unit: FAIL: $*" >&2
  exit 1
}
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (apt-get install systemd)"
[[ -x $binary ]] || fail "no trustfence binary at $binary (build it, or pass its path)"
[[ $(id -u) -eq 0 ]] || fail "must run as root (private mount namespace)"
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[[ $exec_start == /usr/local/bin/trustfence ]] || fail "ExecStart is $exec_start, expected /usr/local/bin/trustfence"

# shellcheck disable=SC2016 # expanded by the inner shell
out=$(unshare -m --propagation private bash -c '
  set -e
  mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
  install -m 0755 "$1" /usr/local/bin/trustfence
  # The unit must be verified under its own name, from a directory of its own.
  dir=$(mktemp -d)
  cp "$2" "$dir/trustfence.service"
  if systemd-analyze verify --man=no "$dir/trustfence.service" 2>&1; then
    echo "verify-status=0"
  else
    echo "verify-status=$?"
  fi
  rm -rf "$dir"' _ "$binary" "$unit") || true
echo "$out" | grep -v '^verify-status=' || true
status=$(echo "$out" | sed -n 's/^verify-status=//p')
[[ $status == 0 ]] || fail "systemd-analyze verify exited ${status:-?}"
# verify prints warnings (unknown keys, bad values) yet exits 0 for many.
if echo "$out" | grep -q 'trustfence\.service'; then
  fail "systemd-analyze verify reported problems with the unit (above)"
fi
echo "check-systemd-unit: deploy/systemd/trustfence.service verifies (systemd $(systemd-analyze --version | sed -n '1s/systemd \([0-9]*\).*/\1/p'))"
# For the record: systemd's own rating of the sandboxing.
systemd-analyze security --offline=true --no-pager "$unit" 2>/dev/null | grep 'Overall exposure' || true

#!/usr/bin/env bash
# Formats every C/C++ source with the repository's .clang-format files
# (kernel style under bpf/, one C++ style elsewhere). --check only reports.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
# Kernel programs are kernel style wherever they live.
style_of() {
  case "$1" in
    bpf/* | *.bpf.c | *.bpf.h) echo "file:$top/bpf/.clang-format" ;;
    *) echo file ;;
  esac
}
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.c' '*.h' '*.cpp' '*.hpp')
bad=0
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue
  if [[ "${1:-}" == "--check" ]]; then
    clang-format --style="$(style_of "$f")" --dry-run -Werror "$f" >/dev/null 2>&1 ||
      { echo "not formatted: $f"; bad=1; }
  else
    clang-format --style="$(style_of "$f")" -i "$f"
  fi
done
exit $bad

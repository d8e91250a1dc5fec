#!/bin/bash
# tests/checks/check-format.sh — every tracked .c/.h file is formatted as the repository's .clang-format says
# (STYLE.md §3.7). Run `clang-format -i FILE` to fix what it reports.
#
# Exits 77 (meson's "skipped") when clang-format is not installed or the tree is not a git checkout, saying why.
#
# Usage: check-format.sh [SOURCE_ROOT]
set -u
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root" || exit 1

cf=${CLANG_FORMAT:-clang-format}
if ! command -v "$cf" >/dev/null 2>&1; then
    echo "check-format: SKIP: $cf is not installed (apt-get install clang-format)"
    exit 77
fi
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "check-format: SKIP: $root is not a git checkout, so there is no list of tracked files"
    exit 77
fi

mapfile -d '' files < <(git ls-files -z -- '*.c' '*.h')
existing=()
for f in "${files[@]}"; do
    [ -f "$f" ] && existing+=("$f")
done
if [ ${#existing[@]} -eq 0 ]; then
    echo "check-format: no tracked C files"
    exit 0
fi
bad=()
for f in "${existing[@]}"; do
    "$cf" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -ne 0 ]; then
    echo "check-format: ${#bad[@]} of ${#existing[@]} files differ from .clang-format ($("$cf" --version)):" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "see the changes with: $cf --dry-run FILE; fix with: $cf -i FILE" >&2
    exit 1
fi
echo "check-format: ${#existing[@]} files formatted"

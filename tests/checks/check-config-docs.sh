#!/bin/bash
# tests/checks/check-config-docs.sh — every key of the config table is documented (pgbouncer's etc/optscan.sh idea).
#
# Reads the key names out of conf/keys.c (one `K_<TYPE>(name, ...)` row per key) and fails when one is missing from
# doc/config.md (a `### name` section) or from the sample conf/warren.conf (a `# name = default` or `name = value`
# line), or when either document names a key the table does not have.
#
# Usage: check-config-docs.sh [SOURCE_ROOT]   (default: two levels above this script)
set -u
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
keys_c=$root/conf/keys.c
doc=$root/doc/config.md
sample=$root/conf/warren.conf

for f in "$keys_c" "$doc" "$sample"; do
    [ -r "$f" ] || { echo "check-config-docs: cannot read $f" >&2; exit 1; }
done

keys=$(grep -v '^#define' "$keys_c" | sed -n 's/^[[:space:]]*K_[A-Z]*(\([a-z0-9_]*\),.*/\1/p' | sort)
n=$(printf '%s\n' "$keys" | grep -c .)
if [ "$n" -lt 10 ]; then
    echo "check-config-docs: found only $n keys in $keys_c; has the row format changed?" >&2
    exit 1
fi

fail=0
for k in $keys; do
    if ! grep -q "^### $k\$" "$doc"; then
        echo "doc/config.md: no '### $k' section for key $k" >&2
        fail=1
    fi
    if ! grep -Eq "^(# )?$k = " "$sample"; then
        echo "conf/warren.conf: no '# $k = ...' line for key $k" >&2
        fail=1
    fi
done

# The other way round: documents must not describe keys that do not exist (renamed or removed ones).
for k in $(sed -n 's/^### \([a-z0-9_]*\)$/\1/p' "$doc"); do
    printf '%s\n' "$keys" | grep -qx "$k" || { echo "doc/config.md: '### $k' is not a key in conf/keys.c" >&2; fail=1; }
done
for k in $(sed -En 's/^(# )?([a-z0-9_]+) = .*/\2/p' "$sample"); do
    printf '%s\n' "$keys" | grep -qx "$k" || { echo "conf/warren.conf: '$k' is not a key in conf/keys.c" >&2; fail=1; }
done

[ $fail -eq 0 ] && echo "check-config-docs: $n keys documented in doc/config.md and conf/warren.conf"
exit $fail

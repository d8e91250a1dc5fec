#!/bin/bash
# tests/checks/check-layering.sh — the module boundaries of DESIGN.md / STYLE.md §3.1, as a grep over #include lines.
#
#   stomp/, conf/   libc only: no libevent, OpenSSL, zlib or rabbitmq-c, and no other module (conf/ stands alone;
#                   stomp/ does not know it rides on WebSocket)
#   ws/             libc, zlib (in ws/deflate.c only) and libcrypto: no libevent, no <openssl/ssl.h>, no rabbitmq-c,
#                   no stomp/ (ws/ does not know about STOMP)
#   nothing below bridge/ includes bridge/
#   <zlib.h> anywhere but ws/deflate.c, and rabbitmq-c (<amqp*.h>, <rabbitmq-c/...>) anywhere but
#   bridge/upstream-link.c (the connection threads; the loop side and the mailbox never see rabbitmq-c), are errors too.
#
# The static libraries enforce most of this at link time; this check also catches header-only leaks (a struct from
# <event2/...> in a ws/ header) and says which rule broke. Scans the working tree, so new files count before commit.
#
# Usage: check-layering.sh [SOURCE_ROOT]
set -u
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root" || exit 1
fail=0

# forbid DIR REGEX WHY: no file under DIR may have an #include line matching REGEX.
forbid() {
    local dir=$1 re=$2 why=$3 hits
    [ -d "$dir" ] || return 0
    hits=$(find "$dir" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z |
        xargs -0 -r grep -HnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)" || true)
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" | sed "s|\$|   <- $why|" >&2
        fail=1
    fi
}

libs='event2/|event\.h|openssl/|zlib\.h|amqp[a-z_]*\.h|rabbitmq-c/'
forbid stomp "$libs" "stomp/ is libc only"
forbid conf "$libs" "conf/ is libc only"
forbid ws 'event2/|event\.h|openssl/ssl\.h|openssl/tls1\.h|amqp[a-z_]*\.h|rabbitmq-c/' "ws/ may use libc, zlib and libcrypto only"

forbid stomp 'ws/|bridge/|conf/' "stomp/ includes no other module"
forbid conf 'ws/|stomp/|bridge/' "conf/ includes no other module"
forbid ws 'stomp/|bridge/|conf/' "ws/ includes no other module"

# zlib only in ws/deflate.c; rabbitmq-c only in bridge/upstream-link.c.
for dir in conf stomp ws bridge; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' f; do
        case "$f" in
        ws/deflate.c) ;;
        *)
            if grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*<zlib\.h>' "$f"; then
                echo "$f: includes <zlib.h>   <- only ws/deflate.c includes zlib.h" >&2
                fail=1
            fi
            ;;
        esac
        case "$f" in
        bridge/upstream-link.c) ;;
        *)
            if grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*<(amqp[a-z_]*\.h|rabbitmq-c/)' "$f"; then
                echo "$f: includes rabbitmq-c   <- only bridge/upstream-link.c (the connection threads) includes <amqp.h>" >&2
                fail=1
            fi
            ;;
        esac
    done < <(find "$dir" -type f \( -name '*.c' -o -name '*.h' \) -print0)
done

[ $fail -eq 0 ] && echo "check-layering: module boundaries hold"
exit $fail

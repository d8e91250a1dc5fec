/*
 * bridge/dest.h — STOMP destinations ↔ AMQP names, as pure functions (no libevent, no rabbitmq-c, no allocation).
 *
 * Web-STOMP's destination grammar (reference/webstomp-semantics.md §1a, RabbitMQ's rabbit_routing_parser):
 *     /exchange/X[/pattern]   exchange X, binding pattern / routing key (absent = "")
 *     /topic/K                the topic exchange (conf default_topic_exchange), key K
 *     /queue/Q                queue Q, declared by the session on first use
 *     /amq/queue/Q            existing queue Q, never declared
 *     /temp-queue/N           a per-session reply queue; valid only in a SEND's `reply-to`
 *     /reply-queue/R          existing queue R (everything after the prefix, '/' included)
 *     name                    no '/' at all: same as /queue/name
 * Each segment is percent-unescaped for "%2F" only (a raw '/' separates segments). Anything else is "Unknown destination";
 * a known prefix with an empty, extra or over-long (> 255 bytes, the AMQP shortstr limit) segment is "Invalid destination".
 *
 * The other direction rebuilds a MESSAGE's `destination` from the (exchange, routing key) a delivery carries, and the
 * rest of the file computes subscription queue names and queue.declare / basic.consume arguments from frame headers.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/upstream.h"
#include "stomp/frame.h"

#define DEST_NAME_MAX 255 /* AMQP shortstr: exchange, queue and routing key names */

enum dest_kind {
    DEST_EXCHANGE = 0,
    DEST_TOPIC = 1,
    DEST_QUEUE = 2,
    DEST_AMQ_QUEUE = 3,
    DEST_TEMP_QUEUE = 4,
    DEST_REPLY_QUEUE = 5,
};
/* RabbitMQ's name of the kind as it appears in "Invalid destination" bodies: "exchange", "topic", "queue", "amqqueue",
 * "temp_queue", "reply_queue"; "?" outside the enum. */
const char *dest_kind_str(enum dest_kind k);

/* A parsed destination. `name`: exchange (EXCHANGE), routing key (TOPIC), queue (QUEUE, AMQ_QUEUE, REPLY_QUEUE) or the
 * temp-queue id (TEMP_QUEUE). `pattern` is the EXCHANGE routing key / binding pattern ("" and has_pattern false when the
 * destination had no second segment). Both NUL-terminated and unescaped. */
struct dest {
    enum dest_kind kind;
    bool has_pattern;
    char name[DEST_NAME_MAX + 1];
    char pattern[DEST_NAME_MAX + 1];
};

/* Results (STYLE.md §3.4: positive = the peer's mistake, reported with a static reason). */
enum dest_result {
    DEST_OK = 0,
    DEST_E_UNKNOWN = 1, /* "Unknown destination": no known prefix */
    DEST_E_INVALID = 2, /* "Invalid destination": known prefix, bad segments (out->kind says which prefix) */
    DEST_E_HEADER = 3,  /* "Invalid header": a declaration/consume header value is not what it must be */
};

/*
 * Parses `s[0..len)` (need not be NUL-terminated). Returns 0 with *out filled, or DEST_E_UNKNOWN / DEST_E_INVALID with
 * *reason = "Unknown destination" / "Invalid destination" (the STOMP ERROR `message`); out->kind is set for
 * DEST_E_INVALID. Any kind is returned: whether it is acceptable (e.g. /temp-queue/ only in reply-to) is the caller's call.
 */
int dest_parse(const char *s, size_t len, struct dest *out, const char **reason);

/*
 * The ERROR body for a dest_parse() failure `err` on `s[0..len)`, as RabbitMQ words it (for DEST_E_INVALID the part after
 * the type is quoted: "'/bah/baz' is not a valid queue destination\n" for "/queue/bah/baz"), into buf (always NUL-terminated
 * when cap > 0, truncated if needed). `kind` is out->kind from the failed parse (used for DEST_E_INVALID).
 */
void dest_error_body(int err, enum dest_kind kind, const char *s, size_t len, char *buf, size_t cap);

/* true when s[0..len) starts with one of the six destination prefixes above. */
bool dest_has_known_prefix(const char *s, size_t len);

/* Largest dest_format() result, NUL included: "/exchange/" + two fully escaped names + "/". */
#define DEST_FORMAT_MAX (16 + 2 * 3 * DEST_NAME_MAX)

/*
 * MESSAGE `destination` for a delivery from (exchange, routing_key): "" → /queue/<rk>; `topic_exchange` → /topic/<rk>;
 * else /exchange/<x> plus /<rk> when rk is not empty. '/', '%', bytes below 32 and above 127 are percent-encoded ("%2F").
 * Writes at most cap bytes including the NUL; returns the length the full result needs (excluding the NUL), so a
 * result >= cap means truncation. Inputs longer than DEST_NAME_MAX are the caller's problem (AMQP never sends them).
 */
size_t dest_format(const char *exchange, const char *routing_key, const char *topic_exchange, char *out, size_t cap);

/* base64url without padding (RFC 4648 §5) of in[0..n) into out, which needs 4 * ceil(n / 3) + 1 bytes. Returns the length. */
size_t dest_base64url(const uint8_t *in, size_t n, char *out);

#define DEST_SUB_QUEUE_PREFIX "stomp-subscription-"

/*
 * Name of a durable topic/exchange subscription's queue: "stomp-subscription-" + base64url(md5(T)) where T is the Erlang
 * external term format of {Name, Id} (Name = the routing key / pattern, or the atom `undefined` for an exchange
 * destination without one), which is what RabbitMQ's STOMP plugin computes; a client moving from Web-STOMP to warren
 * finds its durable subscription queues again. Deterministic. `out` needs DEST_NAME_MAX + 1 bytes. Returns 0 or -EIO
 * when libcrypto fails.
 */
int dest_sub_queue_name_durable(const struct dest *d, const char *id, size_t id_len, char *out);

/* "stomp-subscription-" + base64url(rnd[0..16)): a non-durable subscription's queue. `out` needs DEST_NAME_MAX + 1 bytes. */
void dest_sub_queue_name_random(const uint8_t rnd[16], char *out);

/* STOMP boolean header: "true"/"True" → true, "false"/"False" → false, absent or anything else → `def`. */
bool dest_header_bool(const struct stomp_header *h, size_t n, const char *name, bool def);

/* true when `durable:true` or `persistent:true` (Web-STOMP's alias) is present. */
bool dest_header_durable(const struct stomp_header *h, size_t n);

/* Arguments for upstream_chan_declare_queue() / upstream_chan_consume(). Strings live in `arena`: do not copy the struct. */
#define DEST_MAX_ARGS    12
#define DEST_ARENA_BYTES 1536
struct dest_args {
    struct upstream_arg v[DEST_MAX_ARGS];
    size_t n;
    size_t arena_used;
    char arena[DEST_ARENA_BYTES];
};

/* How a queue is declared. */
struct dest_queue_opts {
    unsigned flags; /* UPSTREAM_Q_DURABLE / _EXCLUSIVE / _AUTO_DELETE; never UPSTREAM_Q_OWNED: a name from the client may
                     * be anyone's queue, so only the session that made the name up may own it (bridge/session-sub.c) */
    struct dest_args args;
};

/*
 * Declaration flags and x-arguments for the queue behind `kind` (DEST_QUEUE, or DEST_EXCHANGE/DEST_TOPIC for a
 * subscription queue), from a SEND or SUBSCRIBE frame's headers (§1b):
 *   /queue/: durable, non-auto-delete; `durable:false` (or `persistent:false`) → non-durable, auto-delete;
 *   exchange/topic subscriptions: non-durable, auto-delete; `durable:true` → durable, auto-delete;
 *   never exclusive by default (Web-STOMP's defaults; warren's AMQP connections are shared by sessions);
 *   then `auto-delete` and `exclusive` headers override; `x-queue-type` quorum/stream forces durable, non-exclusive,
 *   non-auto-delete. String args: x-dead-letter-exchange, x-dead-letter-routing-key, x-max-age, x-queue-type (≤ 255 bytes);
 *   integer args: x-expires, x-message-ttl, x-max-length, x-max-length-bytes, x-max-priority,
 *   x-stream-max-segment-size-bytes, x-stream-filter-size-bytes.
 * Returns 0, or DEST_E_HEADER with *reason ("Invalid header") and *bad = the offending header name (static).
 */
int dest_queue_opts_parse(enum dest_kind kind, const struct stomp_header *h, size_t n, struct dest_queue_opts *out,
                          const char **reason, const char **bad);

/*
 * basic.consume arguments from SUBSCRIBE headers: x-priority (int), x-stream-offset (first/last/next as strings,
 * offset=N and timestamp=T as integers), x-stream-filter (string), x-stream-match-unfiltered (bool).
 * Returns 0 or DEST_E_HEADER as above.
 */
int dest_consume_args_parse(const struct stomp_header *h, size_t n, struct dest_args *out, const char **reason, const char **bad);

/* Parses a whole decimal int64 (optional '-', 1..19 digits, nothing else). Returns 0 or -EINVAL. */
int dest_parse_int(const char *s, size_t len, int64_t *out);

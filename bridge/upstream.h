/*
 * bridge/upstream.h — warren's AMQP 0-9-1 side, as seen from the client loop.
 *
 * rabbitmq-c blocks in its login and its close, so those run on a thread of the connection's own (DESIGN.md invariant 1:
 * no client-serving loop ever waits on the broker); in between, the loop drives the connection itself without waiting:
 * rabbitmq-c is only its codec, and its socket is written and read without blocking. Sessions on the client loop talk to
 * it only through this asynchronous API: each call copies what it needs into a command, queues it to the connection and
 * returns at once. Results, deliveries and errors come back as callbacks run on the client loop's event_base (the one
 * given to upstream_new()), in the order the broker produced them for that channel. (The code is in two halves:
 * bridge/upstream.c, the loop's side, and bridge/upstream-link.c, the connection's; bridge/upstream-int.h draws the
 * line.)
 *
 * Sharing: sessions with the same (vhost, login, passcode) share AMQP connections, one channel per session, up to the
 * channel_max negotiated with the broker (and the configured cap), then another connection is opened. A channel never fails
 * for want of a channel number while another connection can be opened, even when many arrive before the first login tells
 * the broker's channel_max: they wait for it, then spread over as many connections as it takes. The first session of
 * a credential is authenticated by the broker itself (connection.open); a refused login fails that channel open, and every
 * session waiting on that connection, with UPSTREAM_ERR_ACCESS_REFUSED. A connection whose last channel has been released
 * (and closed at the broker) is closed gracefully idle_close_ms later, unless a channel of the same credential reuses it
 * first: credentials that change per session (OAuth 2 tokens as passcodes) do not leave a connection behind.
 *
 * Lifetime of what a session creates: because the AMQP connection outlives the session, the upstream deletes every queue the
 * session declared with UPSTREAM_Q_OWNED when the channel is released (exclusive/auto-delete subscription queues,
 * /temp-queue/ reply queues), exactly as if the session had had its own connection.
 *
 * Flow control: every channel is in publisher-confirm mode; a publish completes (on_done) when the broker confirmed it
 * (basic.ack), or fails with UPSTREAM_ERR_NACK. Deliveries are bounded by basic.qos set per consumer (upstream_chan_consume's
 * prefetch), so the client loop never receives more than the session's windows. connection.blocked/unblocked is reported
 * through on_blocked so sessions stop reading SEND frames while the broker blocks publishers; meanwhile the connection
 * holds their publishes instead of writing them, and it never waits on a full socket: a connection whose broker
 * reads nothing of it for write_timeout_ms is cut (UPSTREAM_ERR_CONNECTION for its channels).
 *
 * Caps: a channel that needs a new connection beyond max_connections (the whole process) or max_connections_per_credential
 * fails its open with UPSTREAM_ERR_LIMIT (from the loop, like every callback); nothing is sent to the broker for it.
 *
 * Threading contract: all upstream_* functions must be called on the client loop thread. Callbacks run on that thread too,
 * never from inside an upstream_* call (they are always deferred through the event loop), so a callback may call any
 * upstream_* function but upstream_free(), including upstream_chan_release() of its own channel. The loop is woken by
 * the connections' threads through an eventfd of its own: no evthread_use_pthreads() is needed for the upstream.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct upstream;
struct upstream_chan;

struct upstream_config {
    const char *const *brokers; /* "host:port", tried in order on (re)connect; copied */
    size_t n_brokers;
    unsigned heartbeat_s;        /* AMQP heartbeat; 0 = off */
    unsigned channel_max;        /* cap of channels per AMQP connection (further capped by the broker's) */
    unsigned frame_max_bytes;    /* AMQP frame_max asked for */
    unsigned connect_timeout_ms; /* TCP connect + login */
    unsigned reconnect_min_ms;   /* backoff after a broker connection failure (doubles up to max) */
    unsigned reconnect_max_ms;
    unsigned idle_close_ms;    /* close a connection this long after its last channel closed (none reopened); 0 = never */
    unsigned auth_reuse_ms;    /* new channels join a connection only during its login and this long after it */
    unsigned write_timeout_ms; /* a connection whose broker reads nothing of it this long is cut (the watchdog); 0 = none */
    unsigned max_connections;  /* AMQP connections of the whole process, over every upstream; 0 = no cap */
    unsigned max_connections_per_credential; /* AMQP connections of one (vhost, login, passcode) in this upstream; 0 = no cap */
    const char *product;                     /* client property "product", e.g. "warren" */
    const char *version;                     /* client property "version" */
};

/* Who a channel belongs to. Strings are copied. */
struct upstream_login {
    const char *vhost;
    const char *user;
    const char *pass;
    const char *conn_name; /* client property "connection_name" for new connections, may be NULL */
};

/* Error classes; `code` is the AMQP reply code when the broker sent one (404, 403, 406, 320, 530, ...), else 0. */
enum upstream_err {
    UPSTREAM_OK = 0,
    UPSTREAM_ERR_CHANNEL = 1,        /* broker closed the channel (code/name/text say why: not_found, precondition_failed...) */
    UPSTREAM_ERR_CONNECTION = 2,     /* AMQP connection lost or closed by the broker: every channel on it is dead */
    UPSTREAM_ERR_ACCESS_REFUSED = 3, /* login refused or vhost access denied at connection.open */
    UPSTREAM_ERR_UNREACHABLE = 4,    /* no broker could be reached */
    UPSTREAM_ERR_NACK = 5,           /* publish: broker answered basic.nack */
    UPSTREAM_ERR_NOMEM = 6,          /* out of memory; as on_closed: a delivery could not be allocated, so the connection
                                        was given up rather than leave it unacknowledged */
    UPSTREAM_ERR_CLOSED = 7,         /* operation on a channel that is already dead */
    UPSTREAM_ERR_LIMIT = 8,          /* channel open: a new AMQP connection was needed and max_connections (name
                                        "connection_limit") or max_connections_per_credential ("credential_connection_limit") is
                                        reached; nothing was sent to the broker */
};
const char *upstream_err_str(enum upstream_err e);

struct upstream_error {
    enum upstream_err kind;
    int code;         /* AMQP reply code or 0 */
    const char *name; /* short lower-case name for the STOMP `message` header: "not_found", "access_refused",
                         "precondition_failed", "connection_forced", "broker_unreachable", "nack", ... */
    const char *text; /* human detail for the ERROR body: the broker's reply text (e.g. "NOT_FOUND - no queue 'q' in vhost
                         '/'") or warren's own description. Valid only during the callback. */
};

/* One header of the AMQP `headers` table. Table values of type longstr/shortstr are passed as is, integer types as decimal
 * strings, booleans as "true"/"false"; other types (float, table, array, ...) are dropped on the way in. On publish, every
 * header is sent as a longstr. */
struct upstream_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Basic properties. NULL string = absent. */
struct upstream_props {
    const char *content_type;
    const char *content_encoding;
    const char *correlation_id;
    const char *reply_to;
    const char *expiration;
    const char *message_id;
    const char *type;
    const char *user_id;
    const char *app_id;
    int delivery_mode; /* 0 = absent, 1 transient, 2 persistent */
    int priority;      /* -1 = absent, else 0..255 */
    bool has_timestamp;
    uint64_t timestamp;
    const struct upstream_header *headers;
    size_t n_headers;
};

/* A delivery; everything borrowed for the duration of on_delivery. */
struct upstream_delivery {
    const char *consumer_tag;
    uint64_t delivery_tag; /* per channel, so per session */
    bool redelivered;
    const char *exchange;
    const char *routing_key;
    struct upstream_props props;
    const uint8_t *body;
    size_t body_len;
};

/* Queue argument for queue.declare (x-message-ttl, x-queue-type...) and consume arguments (x-priority, x-stream-offset). */
enum upstream_arg_type {
    UPSTREAM_ARG_STR = 0,
    UPSTREAM_ARG_INT = 1,
    UPSTREAM_ARG_BOOL = 2,
    UPSTREAM_ARG_TIMESTAMP = 3, /* AMQP field type 'T': seconds since the epoch, in num (>= 0) */
};
struct upstream_arg {
    const char *key;
    enum upstream_arg_type type;
    const char *str;
    int64_t num; /* INT value, BOOL as 0/1, TIMESTAMP in seconds */
};

/* Flags for upstream_chan_declare_queue(). */
enum {
    UPSTREAM_Q_DURABLE = 1 << 0,
    UPSTREAM_Q_EXCLUSIVE = 1 << 1,
    UPSTREAM_Q_AUTO_DELETE = 1 << 2,
    UPSTREAM_Q_PASSIVE = 1 << 3,
    UPSTREAM_Q_OWNED = 1 << 4,  /* delete this queue when the channel is released (not an AMQP flag) */
    UPSTREAM_Q_NOWAIT = 1 << 5, /* queue.declare nowait: on_done fires once sent, errors come as on_closed */
};

/*
 * Callbacks of one channel; `ud` is the session. All run on the client loop.
 * - on_open: the channel is usable (err == NULL) or could not be opened (err set; the channel is dead, release it).
 * - on_done: the operation queued with `op_tag` completed (err == NULL) or failed (err set: UPSTREAM_ERR_NACK for a
 *   publish; other kinds mean the channel died and on_closed follows). `queue` is the queue name for declare_queue
 *   (server-named queues included), NULL otherwise.
 * - on_delivery: a message for one of the channel's consumers.
 * - on_cancel: the broker cancelled a consumer (queue deleted, node down): basic.cancel from the broker.
 * - on_closed: the channel is dead (channel error, connection lost). Called at most once; no callback follows it, so an
 *   operation whose on_done has not run by then failed too. The session must still call upstream_chan_release().
 * - on_blocked: the broker blocked (true) or unblocked (false) publishing on this channel's connection.
 *
 * Out of memory on a connection thread never loses on_open (success or failure) or on_closed: what they report is
 * allocated with the channel, in upstream_chan_open(). An on_done, on_cancel or on_blocked may be lost then.
 */
struct upstream_chan_cb {
    void (*on_open)(void *ud, const struct upstream_error *err);
    void (*on_done)(void *ud, uint64_t op_tag, const struct upstream_error *err, const char *queue);
    void (*on_delivery)(void *ud, const struct upstream_delivery *d);
    void (*on_cancel)(void *ud, const char *consumer_tag);
    void (*on_closed)(void *ud, const struct upstream_error *err);
    void (*on_blocked)(void *ud, bool blocked);
};

/* Bytes of upstream_chan_broker() at most, NUL included. */
#define UPSTREAM_BROKER_MAX 64

/*
 * How the broker of the channel's connection names itself ("RabbitMQ/3.10.8": the product and version of its
 * connection.start), once on_open reported the channel open; "" before that or when the broker said neither.
 */
const char *upstream_chan_broker(const struct upstream_chan *ch);

/* The credential of the connection the channel was given to (vhost, user, password, connection name), pointing into the
 * upstream's copy, valid until the channel is released; false (and *out untouched) for a channel no connection took
 * (refused by a cap). Local fan-out keys its groups by it (bridge/fanout.h). */
bool upstream_chan_login(const struct upstream_chan *ch, struct upstream_login *out);

/* Starts the upstream (no connection is made until the first channel is opened). Returns 0 or -errno. */
int upstream_new(struct event_base *base, const struct upstream_config *cfg, struct upstream **out);

/* Closes every connection (on threads, joined within a deadline). No callbacks are run from or after this call. NULL is a no-op. */
void upstream_free(struct upstream *up);

/*
 * Opens a channel for a session: picks (or opens) a connection for `login` and queues channel.open. The handle is returned at
 * once; on_open reports the outcome. Returns 0 or -ENOMEM.
 */
int upstream_chan_open(struct upstream *up, const struct upstream_login *login, const struct upstream_chan_cb *cb, void *ud,
                       struct upstream_chan **out);

/*
 * Releases a channel: cancels its consumers, deletes its UPSTREAM_Q_OWNED queues, closes it. Unsettled deliveries are
 * requeued by the broker (channel close). No callback runs for this channel after this returns, and `ch` must not be used
 * again (a channel still waiting for its connection is freed at once). NULL is a no-op.
 */
void upstream_chan_release(struct upstream_chan *ch);

/*
 * Operations. They may be queued right after upstream_chan_open(), before on_open: they run in order once the channel is
 * open (and fail with the open's error otherwise: on_done(err) for each, after the failed on_open, until the release;
 * ack/nack have no completion). Each copies its arguments, queues the command and returns 0, or -ENOMEM, or
 * UPSTREAM_ERR_CLOSED (positive) when the channel is already dead. Completion, where it has one, is reported through
 * on_done(op_tag).
 */

/* queue.declare. `name` "" = server-named. `flags` UPSTREAM_Q_*. on_done gives the queue name. */
int upstream_chan_declare_queue(struct upstream_chan *ch, uint64_t op_tag, const char *name, unsigned flags,
                                const struct upstream_arg *args, size_t n_args);

/* queue.bind. */
int upstream_chan_bind(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *exchange, const char *routing_key);

/* queue.delete (if_unused = false, if_empty = false). */
int upstream_chan_delete_queue(struct upstream_chan *ch, uint64_t op_tag, const char *queue);

/*
 * basic.qos(prefetch, global=false) then basic.consume. `no_ack` true only for consumers that need no flow control (warren
 * uses manual acks with a prefetch window even for STOMP ack:auto, invariant 2). `prefetch` 0 = unlimited (avoid).
 */
int upstream_chan_consume(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *consumer_tag, unsigned prefetch,
                          bool no_ack, bool exclusive, const struct upstream_arg *args, size_t n_args);

/* basic.cancel. */
int upstream_chan_cancel(struct upstream_chan *ch, uint64_t op_tag, const char *consumer_tag);

/*
 * basic.publish (mandatory = false). Everything is copied. on_done(op_tag) fires when the broker confirmed it (or with
 * UPSTREAM_ERR_NACK). Publishing to a missing exchange closes the channel (on_closed, not_found).
 */
int upstream_chan_publish(struct upstream_chan *ch, uint64_t op_tag, const char *exchange, const char *routing_key,
                          const struct upstream_props *props, const uint8_t *body, size_t body_len);

/* basic.ack / basic.nack (fire and forget; an unknown tag closes the channel with precondition_failed). */
int upstream_chan_ack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple);
int upstream_chan_nack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple, bool requeue);

/* Figures for logs, tests and metrics. */
struct upstream_stats {
    unsigned connections; /* live AMQP connections (an idle one until its connection.close-ok) */
    unsigned threads;     /* AMQP connections not ended yet (what amqp_max_connections counts, for this upstream) */
    unsigned channels;    /* open channels over all connections */
    unsigned closing;     /* released channels not yet closed at the broker (their owned queues are deleted when 0) */
    uint64_t published;   /* messages published */
    uint64_t delivered;   /* deliveries handed to sessions */
};
void upstream_get_stats(const struct upstream *up, struct upstream_stats *out);

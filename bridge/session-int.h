/*
 * bridge/session-int.h — private to bridge/session*.c: the session object and the helpers its files share.
 *
 * session.c        lifecycle, input loop and command dispatch, output, CONNECT, DISCONNECT, heart-beats and timeouts,
 *                  the upstream callbacks;
 * session-ops.c    the upstream operation log (op tags → receipts), RECEIPT after confirms, flow pause;
 * session-error.c  every ERROR frame, from the table in session-errors.h;
 * session-sub.c    SUBSCRIBE, UNSUBSCRIBE, ACK/NACK, deliveries (MESSAGE) and consumer cancellation;
 * session-map.c    SEND: STOMP headers → AMQP properties, /queue/ declare cache, /temp-queue/ reply queues;
 *                  AMQP properties → MESSAGE headers;
 * session-tx.c     BEGIN/COMMIT/ABORT: transactional frames are checked and copied when they arrive, and replayed in
 *                  order at COMMIT.
 *
 * Receipts: every upstream operation gets an increasing op tag and a record in `ops` until on_done. A RECEIPT (and the
 * close after DISCONNECT) waits in `waiters` for every op issued before it to complete, so receipts follow the order of
 * the frames and a SEND's receipt means "confirmed by the broker".
 *
 * Budgets (DESIGN.md invariant 4): what a peer makes the session hold is counted and bounded before it is copied:
 * pending ops and receipts (max_pending_ops) and unconfirmed publishes (max_unconfirmed, max_unconfirmed_bytes) stop
 * reading from the client (flow pause, session-ops.c); buffered transactional frames (max_transactions,
 * max_transaction_frames, max_transaction_bytes) fail the session with an ERROR (session-tx.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bridge/dest.h"
#include "bridge/excl.h"
#include "bridge/fanout.h"
#include "bridge/list.h"
#include "bridge/session-errors.h"
#include "bridge/session.h"
#include "bridge/timer.h"
#include "bridge/upstream.h"
#include "stomp/frame.h"
#include "stomp/negotiate.h"

struct timer;

enum session_state {
    SESSION_ST_LOGIN = 0,         /* waiting for CONNECT/STOMP */
    SESSION_ST_CONNECTING = 1,    /* CONNECT seen, channel.open in flight; input is held */
    SESSION_ST_OPEN = 2,          /* CONNECTED sent */
    SESSION_ST_DISCONNECTING = 3, /* DISCONNECT seen: waiting for earlier work, then RECEIPT and close */
    SESSION_ST_CLOSED = 4,        /* io->close() called: nothing more is sent, input is ignored */
};
const char *session_state_str(enum session_state st);

enum session_ack {
    SESSION_ACK_AUTO = 0,
    SESSION_ACK_CLIENT = 1,
    SESSION_ACK_CLIENT_INDIVIDUAL = 2,
};

/* A growable list of delivery tags, ascending (the broker delivers in tag order). */
struct session_tags {
    uint64_t *v;
    size_t n, cap;
};
int session_tags_push(struct session_tags *t, uint64_t tag);
void session_tags_deinit(struct session_tags *t);

struct session_sub {
    struct list link;
    char *id;     /* subscription id (the destination for a STOMP 1.0 SUBSCRIBE without `id`) */
    char *dest;   /* the SUBSCRIBE destination as given */
    char *ctag;   /* AMQP consumer tag */
    bool has_id;  /* MESSAGE carries `subscription` */
    bool durable; /* durable exchange/topic subscription: UNSUBSCRIBE durable:true deletes the queue */
    bool temp;    /* the consumer of a /temp-queue/ reply queue */
    enum session_ack ack;
    char *queue; /* the AMQP queue consumed */
    /* client modes: delivered, not yet ACKed/NACKed; auto: delivered but held (client over its send buffer) */
    struct session_tags unacked;
    /* topic_fanout = local: a member of the worker's group for this binding (fan.g NULL: a consumer of its own) */
    struct fanout_member fan;
    struct session *owner; /* the session, for the group's callbacks */
    uint64_t fan_op;       /* the op the SUBSCRIBE's RECEIPT waits on until the group's consume-ok, or 0 */
};

/* The consumer tag of an UNSUBSCRIBEd subscription whose basic.cancel is not answered yet: its deliveries may still come
 * (and are given back), so no new consumer of the session may take the tag until then. */
struct session_retired {
    struct list link;
    uint64_t cancel_op; /* the op tag of its basic.cancel */
    char ctag[];
};

/* One upstream operation awaiting on_done. */
enum session_op_kind {
    SESSION_OP_PLAIN = 0,
    SESSION_OP_PUBLISH = 1,
};
struct session_op {
    struct list link;
    uint64_t tag;
    enum session_op_kind kind;
    size_t bytes;  /* PUBLISH: counted in unconfirmed_bytes (session_frame_bytes() of the SEND) */
    char *receipt; /* the frame's receipt, for the ERROR when the op fails (broker nack, out of memory) */
};

/* A RECEIPT (or the DISCONNECT close) waiting for every op up to `tag`. */
struct session_waiter {
    struct list link;
    uint64_t tag;
    char *receipt; /* NULL: no RECEIPT */
    bool close;    /* DISCONNECT: close once sent */
};

/* A frame copied out of the input buffer (a transactional SEND/ACK/NACK), one allocation. */
struct session_frame_copy {
    struct list link;
    struct stomp_frame f;
};

struct session_tx {
    struct list link;
    char *id;
    struct list frames; /* struct session_frame_copy, in order */
    size_t n;
    size_t bytes;      /* the copies' allocations, counted in txs.bytes */
    size_t send_bytes; /* session_frame_bytes() of its SENDs: what COMMIT adds to the unconfirmed bytes */
};

struct session_temp {
    struct list link;
    char *id; /* N of /temp-queue/N */
    char queue[DEST_NAME_MAX + 1];
};

/* Input (session.c): the bytes received and not yet parsed, the parser over them, deferred processing. */
struct session_input {
    struct stomp_parser parser;
    char *buf; /* held input only (a frame cut short, frames held back): given back when empty */
    size_t len, cap;
    bool processing;        /* inside process_input() (no re-entry) */
    uint64_t last_frame_ms; /* last complete frame, for idle_timeout_ms */
    struct timer *resume;   /* deferred input processing (after CONNECTED, after a pause ends, after the budget) */
    bool backlog;           /* process_input() stopped at SESSION_TURN_FRAMES: io->backlog(true) was said */
};

/* Output (session.c); frames are serialised into the loop's buffer (struct session_scratch). */
struct session_output {
    size_t too_big; /* the encoded size of the last frame refused with -EMSGSIZE */
};

/* Heart-beats and timeouts (session.c). */
struct session_timers {
    struct stomp_heartbeat hb;
    uint32_t send_ms, recv_ms; /* negotiated at CONNECT, applied at CONNECTED */
    struct timer *heartbeat;
    struct timer *login;
    struct timer *idle;     /* idle_timeout_ms: no frame (heart-beats aside) for that long → close */
    struct timer *throttle; /* the login's turn (bridge/throttle.h): then the channel is opened */
    uint64_t throttle_due;  /* when that turn comes (timer_now_ms()) */
};

/* A login held back by the throttle until its turn (session.c). */
struct session_login {
    char *user, *pass, *vhost;
};

/* Upstream operations, receipts and flow control (session-ops.c). */
struct session_oplog {
    uint64_t last_tag;
    struct list ops;          /* struct session_op, in tag order */
    struct list waiters;      /* struct session_waiter, in frame order */
    size_t n_ops, n_waiters;  /* lengths of ops and waiters: together at most about max_pending_ops */
    unsigned unconfirmed;     /* publishes awaiting the broker's confirm */
    size_t unconfirmed_bytes; /* their session_frame_bytes() */
    size_t wait_bytes;        /* a SEND or COMMIT deferred for want of max_unconfirmed_bytes room: its bytes, else 0 */
    bool fan_wait;            /* a SEND or COMMIT deferred until the session's fan-out groups are bound (fan_waiting) */
    bool blocked;             /* the broker blocks publishers on this channel's connection */
    bool read_paused;         /* io->pause_reading(true) is in force */
};

/* Subscriptions (session-sub.c). */
struct session_subs {
    struct list all; /* struct session_sub */
    size_t n;
    struct list retired;  /* struct session_retired: consumer tags still being cancelled, in cancel_op order */
    unsigned seq;         /* numbering of consumer tags that need a suffix to be unique in the session */
    size_t fan_waiting;   /* subscriptions waiting for their fan-out group's consume-ok (fan_op set) */
    struct timer *settle; /* deferred basic.ack of the ack:auto deliveries of one loop turn (session_subs_drain) */
};

/* SEND and MESSAGE mapping state (session-map.c). */
struct session_map {
    struct list temps; /* struct session_temp: /temp-queue/ reply queues */
    char **declared;   /* /queue/ names declared by this session */
    size_t n_declared;
    struct stomp_header *mhdrs; /* MESSAGE header scratch */
    size_t mhdrs_cap;
};

/* Open transactions (session-tx.c). */
struct session_txs {
    struct list all; /* struct session_tx */
    size_t n;
    size_t bytes; /* buffered by all of them: at most max_transaction_bytes */
};

struct session {
    struct session_env env;
    const struct conf *conf;
    struct session_io io;
    void *io_ud;
    enum session_state state;
    bool connected; /* CONNECTED was sent */
    enum stomp_version version;
    char peer[64];
    char id[48]; /* "session-<base64url>" */
    char *user;  /* login, for error texts (NULL before CONNECT: session_user()) */
    char *vhost; /* the vhost asked for (CONNECT `host`, else default_vhost), for error texts (session_vhost()) */
    struct upstream_chan *ch;
    struct session_login pending_login; /* CONNECT's credentials while the throttle holds it (all NULL otherwise) */

    struct session_input in;
    struct session_output out;
    struct session_timers tm;
    struct session_oplog ops;
    struct session_subs subs;
    struct session_map map;
    struct session_txs txs;
    struct excl_owner excl; /* the exclusive queues this session declared (bridge/excl.h) */
};

/*
 * The one result convention of the session's handlers and helpers (STYLE.md §3.4: 0 is OK, positive is an expected
 * outcome; a negative errno never escapes a handler: internal failures end the session through SESSION_FATAL, which
 * logs where they happened).
 */
enum session_rc {
    SESSION_OK = 0,     /* handled; the frame's RECEIPT, if it asked for one, is queued behind its work */
    SESSION_HELD = 1,   /* handled, no RECEIPT now (buffered in a transaction; CONNECT and DISCONNECT answer themselves) */
    SESSION_CLOSED = 2, /* the session failed: ERROR sent (or not possible) and io->close() called; stop */
    SESSION_DEFER = 3,  /* not handled, nothing done: no room for it now (max_unconfirmed_bytes); reading is paused and the
                         * frame stays in the input, to be parsed and dispatched again when reading resumes */
};

/* The CONNECT's login and vhost, "" before it. */
static inline const char *session_user(const struct session *s)
{
    return s->user ? s->user : "";
}
static inline const char *session_vhost(const struct session *s)
{
    return s->vhost ? s->vhost : "";
}

/* A header for a frame the session writes (`value` borrowed), of `len` bytes or, in session_hdr(), NUL-terminated. */
static inline struct stomp_header session_hdr_n(const char *name, const char *value, size_t len)
{
    return (struct stomp_header){.name = name, .name_len = strlen(name), .value = value, .value_len = len};
}
static inline struct stomp_header session_hdr(const char *name, const char *value)
{
    return session_hdr_n(name, value, strlen(value));
}

/* A frame handler. `replay` is true when COMMIT replays a buffered frame. */
typedef enum session_rc (*session_handler_fn)(struct session *s, const struct stomp_frame *f, bool replay);

/* An argument of an ERROR template (session-errors.h): bytes, not necessarily NUL-terminated. */
struct session_arg {
    const char *p;
    size_t n;
};
#define SARG(str)   ((struct session_arg){(str), strlen(str)})
#define SARG_HDR(h) ((struct session_arg){(h)->value, (h)->value_len})
/* `v` printed in decimal into buf. */
struct session_arg session_arg_int(char *buf, size_t cap, long long v);

/* session-error.c */
/* ERROR from row `e` with args[0..n) (n must be the row's n_args), `receipt-id` from `receipt` when set, `extra` as one more
 * header when set; then session_close(). Returns SESSION_CLOSED. */
enum session_rc session_error_frame(struct session *s, const struct session_arg *receipt, enum session_err e,
                                    const struct session_arg *args, size_t n, const struct stomp_header *extra);
/* The same with `receipt-id` from f's `receipt` header (f may be NULL). */
enum session_rc session_error(struct session *s, const struct stomp_frame *f, enum session_err e, const struct session_arg *args,
                              size_t n);
/* A broker-side failure of the session's upstream (its channel, or a fan-out group it is in): the ERROR its own channel's
 * on_open failure or on_closed would give, then close. */
void session_upstream_failed(struct session *s, const struct upstream_error *err);
enum session_rc session_fatal_at(struct session *s, const char *what, int err, const char *func, int line);
#define SESSION_FAIL0(s, f, id) session_error((s), (f), SESSION_ERR_##id, NULL, 0)
#define SESSION_FAIL(s, f, id, ...)                                                                                                \
    session_error((s), (f), SESSION_ERR_##id, (const struct session_arg[]){__VA_ARGS__},                                           \
                  sizeof((const struct session_arg[]){__VA_ARGS__}) / sizeof(struct session_arg))
/* An internal failure (`what`: a static description such as "out of memory"; SESSION_FATAL_RC adds the negative errno
 * that caused it): logged with its origin, then ERROR "Processing error" saying what, and close. */
#define SESSION_FATAL(s, what)         session_fatal_at((s), (what), 0, __func__, __LINE__)
#define SESSION_FATAL_RC(s, what, err) session_fatal_at((s), (what), (err), __func__, __LINE__)

/* session.c */
void session_log(struct session *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* One frame to the client. 0, -EPIPE (closed, or the transport refused), -EINVAL (not representable), -ENOMEM,
 * -EMSGSIZE (its encoding alone is over client_send_limit_bytes: never sendable; its size is in s->out.too_big). */
int session_send_frame(struct session *s, enum stomp_cmd cmd, const struct stomp_header *h, size_t n, const char *body,
                       size_t body_len);
void session_close(struct session *s, const char *reason);
/* Runs the handler of `f` (COMMIT replays buffered frames through it) and queues its RECEIPT. */
enum session_rc session_dispatch(struct session *s, const struct stomp_frame *f, bool replay);
/* Processes held input on the loop (after CONNECTED, after a pause ends). */
void session_input_resume(struct session *s);
char *session_strndup(const char *s, size_t n);
/* Cryptographic random bytes. 0 or -EIO. */
int session_random(uint8_t *buf, size_t n);
/* Makes timer *t (calling fn(s)) unless it exists: timers are made when first armed. 0, or -ENOMEM. */
int session_timer(struct session *s, struct timer **t, timer_fn fn);

/* session-ops.c */
void session_ops_init(struct session *s);
void session_ops_deinit(struct session *s);
/* Starts an op record; returns its tag, or 0 on ENOMEM (the session has failed). */
uint64_t session_op_begin(struct session *s, enum session_op_kind kind, const struct stomp_header *receipt);
/* The same for a publish of `bytes` (session_frame_bytes() of its SEND), counted in the unconfirmed bytes. */
uint64_t session_op_begin_publish(struct session *s, const struct stomp_header *receipt, size_t bytes);
/* What a frame's copy (in a transaction, or at the upstream as a publish) costs: its header names and values and body. */
size_t session_frame_bytes(const struct stomp_frame *f);
/* true when a publish (or a COMMIT's publishes) of `bytes` may start now: no fan-out group of the session is still being
 * set up (its queue would miss the SEND, which its own queue's bind, ahead on the channel, would not), and nothing awaits
 * a confirm, or the unconfirmed bytes stay within max_unconfirmed_bytes with it. Otherwise reading pauses until the
 * groups are live and confirms make room (the caller then returns SESSION_DEFER). */
bool session_unconfirmed_room(struct session *s, size_t bytes);
/* Checks the return of the upstream_* call made for `tag`: 0 → SESSION_OK; else drops the op and fails the session. */
enum session_rc session_op_check(struct session *s, uint64_t tag, int rc);
/* on_done of op `op_tag`: a nack fails the session (with the SEND's receipt-id); receipts due are sent. */
void session_ops_done(struct session *s, uint64_t op_tag, const struct upstream_error *err);
/* The receipt of the oldest pending op (the one an ERROR about the channel's death answers), or NULL. */
const char *session_ops_first_receipt(const struct session *s);
/* A RECEIPT for `receipt` (NULL: none) once every op issued so far has completed; `close` after it (DISCONNECT).
 * SESSION_OK (the session may be closed by now: DISCONNECT), or SESSION_CLOSED when out of memory. */
enum session_rc session_receipt_add(struct session *s, const struct stomp_header *receipt, bool close);
void session_ops_blocked(struct session *s, bool blocked);
/* Pauses or resumes reading from the client as CONNECTING, a blocked broker, max_unconfirmed, max_unconfirmed_bytes and
 * max_pending_ops say. */
void session_flow_update(struct session *s);

/* session-sub.c */
int session_subs_init(struct session *s);
void session_subs_deinit(struct session *s);
enum session_rc session_cmd_subscribe(struct session *s, const struct stomp_frame *f, bool replay);
enum session_rc session_cmd_unsubscribe(struct session *s, const struct stomp_frame *f, bool replay);
enum session_rc session_cmd_ack(struct session *s, const struct stomp_frame *f, bool replay);
/* What ACK/NACK `f` would fail with now, without settling anything: SESSION_OK, or SESSION_CLOSED after its ERROR. */
enum session_rc session_ack_check(struct session *s, const struct stomp_frame *f);
void session_sub_delivery(struct session *s, const struct upstream_delivery *d);
void session_sub_cancelled(struct session *s, const char *ctag);
void session_subs_drain(struct session *s);
/* Leaves every fan-out group the session's subscriptions are in (session end). Idempotent. */
void session_subs_detach(struct session *s);
/* SESSION_OK while the session may hold one more subscription (max_subscriptions, /temp-queue/ consumers included),
 * else ERROR `Too many subscriptions` (with f's receipt-id). */
enum session_rc session_sub_room(struct session *s, const struct stomp_frame *f);
/* SESSION_OK when no other session holds `queue` exclusively (bridge/excl.h), else ERROR resource_locked, as the broker
 * words it for another connection's exclusive queue (with f's receipt-id). */
enum session_rc session_excl_check(struct session *s, const struct stomp_frame *f, const char *queue);
/* Claims `queue`, which this session is about to declare exclusive: SESSION_OK, else ERROR (locked, too many). */
enum session_rc session_excl_claim(struct session *s, const struct stomp_frame *f, const char *queue);
/* Adds the consumer of a temp reply queue (already declared). */
enum session_rc session_sub_add_temp(struct session *s, const char *temp_id, const char *queue);

/* session-map.c */
void session_map_init(struct session *s);
void session_map_deinit(struct session *s);
enum session_rc session_cmd_send(struct session *s, const struct stomp_frame *f, bool replay);
/* What SEND `f` would fail with at the STOMP boundary (destination, headers, what AMQP can carry), without doing any of
 * it: SESSION_OK, or SESSION_CLOSED after its ERROR. */
enum session_rc session_send_check(struct session *s, const struct stomp_frame *f);
/* MESSAGE for delivery `d` on `sub`. 0, or non-zero when it was not sent (the caller gives the delivery back). */
int session_message_send(struct session *s, const struct session_sub *sub, const struct upstream_delivery *d, const char *msg_id);
/* Declares /queue/ `name` once per session (flags and args from f's headers; `nowait` for SEND). */
enum session_rc session_queue_ensure(struct session *s, const struct stomp_frame *f, const char *name, bool nowait);

/* session-tx.c */
void session_txs_init(struct session *s);
void session_txs_deinit(struct session *s);
enum session_rc session_cmd_begin(struct session *s, const struct stomp_frame *f, bool replay);
enum session_rc session_cmd_commit(struct session *s, const struct stomp_frame *f, bool replay);
enum session_rc session_cmd_abort(struct session *s, const struct stomp_frame *f, bool replay);
/* For SEND/ACK/NACK: SESSION_OK when `f` has no `transaction` header (handle it now), SESSION_HELD when it was checked
 * (session_send_check(), session_ack_check(), the transaction bounds) and buffered, SESSION_CLOSED when it failed. */
enum session_rc session_tx_capture(struct session *s, const struct stomp_frame *f, bool replay);

/*
 * bridge/conn.h — the transport: one accepted connection (TCP, or TLS through libevent_openssl), bytes in and bytes
 * out, a bound on its output, reading paused and resumed, a deadline, a graceful close (flush, FIN, linger) and an
 * immediate one. It knows nothing of HTTP, WebSocket or STOMP: those are front-ends on top of it (bridge/http.c,
 * bridge/wsconn.c), and the connection's owner (bridge/server.c, one per event loop) keeps the list of connections.
 *
 * Front-ends. A connection always has exactly one front-end, a `const struct conn_ops *` and its state `fe`, set with
 * conn_set_frontend(). It starts as whatever the listener chose (HTTP for the WebSocket port) and may be handed over
 * (HTTP → WebSocket after the 101 reply): a front-end that installs another one from inside its `input` callback has the
 * new front-end's `input` called at once with the bytes that are left. The old front-end's ops->free is not called on
 * a hand-over: it gives its state away (or has none) before installing the next one.
 *
 * Callback contract (the transport calls the front-end; pgbouncer's sbuf.h is the model):
 *   input     bytes are waiting in conn_input(), or reading was resumed. Consume what can be used, leave the rest (the
 *             callback comes again with more). Not called while reading is paused, after conn_discard_input(), or after
 *             conn_kill(). Called in CONN_CLOSING too (a WebSocket close handshake reads the peer's close frame).
 *   drain     the output fell to the mark of conn_set_drain_mark() (CONN_OPEN only). May be NULL.
 *   shutdown  the server is going away (CONN_OPEN only): say goodbye (WebSocket close 1001) and conn_close(), or
 *             conn_kill(). NULL means conn_kill().
 *   free      conn_free() is freeing the connection: free `fe` (and the session it carries). May be NULL.
 * Inside any callback a front-end may write, close, kill or hand over, but never conn_free() its own connection: every
 * end goes through conn_kill(), which only schedules the free for the next loop turn (STYLE.md §3.3).
 *
 * States: CONN_OPEN → CONN_CLOSING (conn_close(): output is flushed, then FIN is sent and the peer gets
 * CONN_CLOSE_LINGER_MS to send its own FIN; we never close() while the peer may still send, because unread input makes
 * the kernel answer with a RST that can destroy what we just sent) → CONN_DEAD (conn_kill(), or the peer's FIN, a socket
 * or TLS error, or the deadline: freed at the next loop turn).
 *
 * Output. conn_write() only queues; the transport writes once per connection per loop turn, after the turn's callbacks
 * (issue 9: TCP_NODELAY, and what one turn produced goes out in one writev(), or one SSL_write() up to a TLS record,
 * never one syscall per frame; what the socket does not take is written when it has room). Queued means queued: the
 * bytes staged for the end of the turn count in conn_pending() and conn_send_check() like those the socket refused, and
 * the order of bytes is the order of the calls. Data whose volume the peer controls by reading slowly goes through
 * conn_send_check() first: past client_send_limit_bytes the connection is closed as too slow (DESIGN.md invariant 2).
 *
 * Event loops. A connection belongs to one event_base and one owner and is only touched from that loop's thread; there
 * are no globals, so one server per loop (one loop per core) needs nothing more here. Budgets (issue 7): at most
 * CONN_READ_MAX bytes per read callback, at most conn_set_input_limit() bytes waiting (the front-end lowers it before
 * login), conn_yield_input() for a front-end that spent its work budget for the turn, the deadline for time.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <event2/util.h>

#include "bridge/list.h"
#include "bridge/session.h"
#include "conf/conf.h"

/* How long a closing connection waits for the peer's FIN after our last bytes are flushed. */
#define CONN_CLOSE_LINGER_MS 5000
/* Most bytes read from the socket per read callback (one read() of plain TCP; bufferevent_set_max_single_read() for TLS). */
#define CONN_READ_MAX 16384

struct conn;
struct evbuffer;
struct event_base;
struct upstream;

enum conn_state {
    CONN_OPEN = 0,    /* bytes flow both ways */
    CONN_CLOSING = 1, /* conn_close(): flushing our last bytes, then waiting for the peer's FIN (linger) */
    CONN_DEAD = 2,    /* conn_kill(): the free is scheduled; nothing is read or written any more */
};

const char *conn_state_str(enum conn_state st);

/* Expected outcomes (positive, STYLE.md §3.4). */
enum conn_error {
    CONN_E_TOO_SLOW = 1, /* conn_send_check(): the output would pass client_send_limit_bytes; the caller ends it */
};

/* The front-end of a connection (see the callback contract above). `fe` is what was given to conn_set_frontend(). */
struct conn_ops {
    const char *name; /* "http", "websocket" (logs) */
    void (*input)(struct conn *c, void *fe);
    void (*drain)(struct conn *c, void *fe);
    void (*shutdown)(struct conn *c, void *fe);
    void (*free)(struct conn *c, void *fe);
};

/*
 * One configuration and what is derived from it, shared by the connections accepted while it was current. The owner
 * holds a reference to its current one and each connection holds one from conn_new() to conn_free(), so a reload
 * (SIGHUP) never changes an open connection; the last reference frees it. One loop's thread only (no locking): it also
 * carries the loop's output flusher for its connections (the end-of-turn write, bridge/conn.c).
 */
struct conn_flusher;
struct conn_conf {
    struct conf conf;
    unsigned refs;
    struct conn_flusher *flusher; /* on the conn_conf_new() base */
    char server_header[64];       /* CONNECTED `server`: server_name/version */
    struct session_env env;       /* env.conf == &conf: what every session of these connections shares */
};

/* A deep copy of `conf` with one reference (the caller's), for sessions on `base` using `up`. Returns 0 or -ENOMEM. */
int conn_conf_new(const struct conf *conf, struct event_base *base, struct upstream *up, struct conn_conf **out);

/* Drops one reference; the last one frees the configuration. NULL is a no-op. */
void conn_conf_unref(struct conn_conf *cc);

/* What conn_new() takes over, and who owns the connection. */
struct conn_accept {
    struct event_base *base;
    struct conn_conf *cc; /* the connection takes a reference for its whole life */
    evutil_socket_t fd;
    SSL *ssl;         /* TLS listener: the handshake runs inside libevent_openssl; NULL for plain TCP */
    const char *peer; /* printable peer address ("1.2.3.4:5678"), copied; the prefix of this connection's log lines */
    /* Called by conn_free() before anything is freed, so the owner can take the connection off its list. */
    void (*gone)(void *owner, struct conn *c);
    void *owner;
    void *owner_tag; /* the owner's per-connection datum, kept for it (conn_owner_tag()) */
    /* When set and true where the connection is about to hand input over, reading is held (conn_hold_reading()). */
    const atomic_bool *hold;
};

/*
 * Takes over the accepted socket (and its SSL object) and starts reading; the caller then links conn_node() into its
 * list and installs the first front-end before returning to the loop. On failure the socket (and ssl) are closed and
 * freed and -ENOMEM is returned.
 */
int conn_new(const struct conn_accept *a, struct conn **out);

/*
 * Frees the connection at once: the owner's `gone`, then the front-end's ops->free, then the socket (without the TLS
 * close_notify exchange). For the owner (its shutdown) and the transport's own deferred free; never from inside a
 * callback of this connection. NULL is a no-op.
 */
void conn_free(struct conn *c);

/* The owner's list node (bridge/list.h), and the way back from it. */
struct list *conn_node(struct conn *c);
struct conn *conn_of_node(struct list *node);

/* Installs the front-end (see the hand-over rule above). */
void conn_set_frontend(struct conn *c, const struct conn_ops *ops, void *fe);

/* The server shuts down: ops->shutdown when CONN_OPEN; a closing connection goes on closing. Never frees. */
void conn_shutdown(struct conn *c);

/* conn_accept.owner_tag. */
void *conn_owner_tag(const struct conn *c);

enum conn_state conn_state(const struct conn *c);
const char *conn_peer(const struct conn *c);
bool conn_is_tls(const struct conn *c);
/* The configuration this connection was accepted with (valid until conn_free()). */
const struct conf *conn_config(const struct conn *c);
const struct session_env *conn_session_env(const struct conn *c);

/* ---- input ---- */

/* Bytes received and not consumed yet. The front-end drains what it used. */
struct evbuffer *conn_input(struct conn *c);

/* The socket is not read while more than `bytes` wait in conn_input() (0: no bound). */
void conn_set_input_limit(struct conn *c, size_t bytes);

/*
 * Stops (true) or resumes (false) reading, in CONN_OPEN only. Resuming calls ops->input at the next loop turn for the
 * bytes already buffered (never from inside this call). conn_close() resumes reading for good: the peer's goodbye and FIN
 * must be read.
 */
void conn_pause_reading(struct conn *c, bool paused);

/*
 * The process is over its memory budget (true) or back under it (false): reading is held, in CONN_OPEN only,
 * independently of conn_pause_reading() (both must be off for the socket to be read). A connection whose
 * conn_accept.hold is true when bytes arrive holds itself, with those bytes kept for later. Releasing calls ops->input
 * at the next loop turn for the bytes already buffered. conn_close() releases it (the peer's goodbye must be read).
 */
void conn_hold_reading(struct conn *c, bool held);

/*
 * A held connection reads nothing, so neither its peer's FIN nor a reset is seen: this asks the kernel (TCP_INFO) and
 * kills the connection when the peer is gone. The owner calls it for its held connections now and then. Never frees.
 */
void conn_held_check(struct conn *c);

/*
 * The front-end spent its work budget for this loop turn (issue 7: one client cannot hold the loop) with input left:
 * ops->input is called again at the next loop turn, after the loop has polled every other socket. Never a busy loop:
 * the callback comes once per call. Input keeps being read up to conn_set_input_limit() meanwhile.
 */
void conn_yield_input(struct conn *c);

/* true while ops->input may be called: not paused, not held, not discarding, not dead. A front-end's decode loop runs while so. */
bool conn_wants_input(const struct conn *c);

/* Nothing more from this peer will be used: what arrives from now on is read and dropped (so its FIN is still seen). */
void conn_discard_input(struct conn *c);

/* ---- output ---- */

/* Queues `len` bytes (CONN_OPEN or CONN_CLOSING; ignored once dead), written at the end of the loop turn with whatever
 * else this turn queued. Returns 0 or -ENOMEM. */
int conn_write(struct conn *c, const void *data, size_t len);

/* Queues the first `len` bytes of the file `fd`, which is taken over in every case (closed after use or on failure). */
int conn_write_file(struct conn *c, int fd, uint64_t len);

/* Bytes queued and not yet written to the socket (staged for the end of the turn, or refused by the socket so far). */
size_t conn_pending(const struct conn *c);

/* Bytes written to the socket so far: a front-end that noted conn_written() + conn_pending() after queueing something
 * knows it has left once conn_written() reaches that mark (wsconn's one pong in flight). */
uint64_t conn_written(const struct conn *c);

/*
 * Before queueing `len` more bytes of data the peer can make pile up by not reading: returns 0 when they fit within
 * client_send_limit_bytes, else logs and returns CONN_E_TOO_SLOW, and the caller must end the connection: a short
 * goodbye (a WebSocket close frame, well under a control frame's 125 bytes, goes past the limit) then conn_close(),
 * whose linger bounds how long the peer gets to read it, or conn_kill(). Nothing of the refused `len` is queued.
 */
int conn_send_check(struct conn *c, size_t len);

/* ops->drain is called after a write that left at most `bytes` queued (CONN_OPEN); a drain callback that queues more has
 * it written at the next loop turn. */
void conn_set_drain_mark(struct conn *c, size_t bytes);

/* ---- time and close ---- */

/*
 * Kills the connection `ms` from now unless called again; `ms` 0 cancels. When `why` is not NULL, the expiry is logged
 * as "<why> (<ms> ms); closing". conn_close() replaces the deadline with the linger.
 */
void conn_set_deadline(struct conn *c, uint64_t ms, const char *why);

/*
 * Graceful close, once what was written is the last thing to say: CONN_OPEN → CONN_CLOSING (see States). Reading goes on
 * (ops->input still sees the peer's bytes unless conn_discard_input()). A no-op unless CONN_OPEN.
 */
void conn_close(struct conn *c);

/* Ends the connection at the next loop turn, whatever it was doing; safe from any callback. */
void conn_kill(struct conn *c);

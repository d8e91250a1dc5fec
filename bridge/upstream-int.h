/*
 * bridge/upstream-int.h — private to bridge/upstream*.c: the two sides of the upstream and the mailbox between them.
 *
 *   upstream.c          the loop side, on the client loop's thread: channels as sessions see them (struct upstream_chan),
 *                       connections as the pool sees them (struct upstream_conn: credential, channel count, the channels
 *                       waiting for its login, idle timer), the sharing policy and every public upstream_* function.
 *                       It never calls rabbitmq-c and never blocks.
 *   upstream-link.c     the connection side: one struct upstream_link per AMQP connection, with its channels (struct
 *                       upstream_link_chan); socket, login, methods, frames, publishes, confirms. It runs on a thread
 *                       of its own where rabbitmq-c blocks (the login, the close), and in rounds on the loop in between
 *                       (upstream_link_round()). The only file of warren that includes <amqp.h>.
 *   upstream-mailbox.c  what crosses between the two: commands (loop -> one link) in that link's struct upstream_inbox,
 *                       results (every link -> the loop) in the upstream's struct upstream_outbox.
 *
 * The mailbox is the only thing both sides touch. Each box is a list under a mutex of its own, held only to link or
 * unlink items; the outbox has an eventfd that wakes the loop. Nothing else is locked, and no field of a struct of one
 * side is read or written by the other: the loop drives an adopted link only through the functions below, and hands it
 * to a thread (its close) only with pthread_create(). (The upstream_config is copied once by upstream_new() and only read after;
 * the reconnect backoff is shared by the links, not with the loop, under a lock of its own.)
 *
 * Ownership across the mailbox: a command belongs to the loop until it is pushed, then to the link, which frees it (the
 * embedded ones, OPEN, RELEASE and SHUTDOWN, live in the loop's structs and are never freed; the loop does not touch them
 * while queued). A result belongs to the link until pushed, then to the loop, which frees it after its callback. The
 * thread-side half of a channel (struct upstream_link_chan) is allocated by the loop in upstream_chan_open(), so that a
 * channel the thread sees can never fail for want of memory, and handed over in the OPEN command; from then on the link
 * owns and frees it, and the loop only names it in later commands, never dereferencing it. Results name the loop's
 * structs the same way: the link never dereferences a struct upstream_chan or struct upstream_conn.
 *
 * Terminal results are preallocated with what they end: each channel carries its open result, its end result (open
 * failed, or closed by the broker or the connection's loss) and its CHAN_DONE; each link its CONN_UP, CONN_DOWN and
 * CONN_EXIT. An out-of-memory on a connection thread may lose an on_done (the channel's end still says it failed) but
 * never the notification that ends a channel or a connection.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/list.h"
#include "bridge/upstream.h"

struct upstream_conn;
struct upstream_link;
struct upstream_link_chan;
struct upstream_outbox;

#define UPSTREAM_TEXT_MAX 256 /* error texts, with their NUL: longer broker reply texts are cut */

/* ---------------------------------------------------------------------------------------------------------------------
 * Commands (loop -> link)
 */

enum upstream_cmd_kind {
    UPSTREAM_CMD_OPEN = 0,      /* embedded in the channel; hands the link its struct upstream_link_chan */
    UPSTREAM_CMD_DECLARE = 1,   /* queue.declare */
    UPSTREAM_CMD_BIND = 2,      /* queue.bind */
    UPSTREAM_CMD_DELETE = 3,    /* queue.delete */
    UPSTREAM_CMD_CONSUME = 4,   /* basic.qos + basic.consume */
    UPSTREAM_CMD_CANCEL = 5,    /* basic.cancel */
    UPSTREAM_CMD_PUBLISH = 6,   /* basic.publish, settled by the broker's confirm */
    UPSTREAM_CMD_ACK = 7,       /* basic.ack (no completion) */
    UPSTREAM_CMD_NACK = 8,      /* basic.nack (no completion) */
    UPSTREAM_CMD_RELEASE = 9,   /* embedded in the channel: the last command naming it */
    UPSTREAM_CMD_SHUTDOWN = 10, /* embedded in the connection: no channel follows; exit once every channel is done */
};
const char *upstream_cmd_kind_str(enum upstream_cmd_kind k);

/* true for the commands whose completion is reported (on_done): every operation but ack/nack. */
bool upstream_cmd_has_completion(enum upstream_cmd_kind k);

/*
 * A command. `kind` tells which member of `u` is valid; OPEN, RELEASE and SHUTDOWN have none. Strings and arrays point
 * into the same allocation (upstream_cmd_dup()), so a queued command borrows nothing from the session.
 */
struct upstream_cmd {
    struct list link; /* in an inbox, a link channel's operation queue, or a waiting channel's held list */
    enum upstream_cmd_kind kind;
    bool embedded;                 /* lives in a loop struct: never freed */
    struct upstream_link_chan *ch; /* the channel it is for (NULL for SHUTDOWN) */
    uint64_t op_tag;               /* passed back in on_done */
    union {
        struct {
            const char *queue; /* "" = server-named */
            unsigned flags;    /* UPSTREAM_Q_* */
            const struct upstream_arg *args;
            size_t n_args;
        } declare;
        struct {
            const char *queue, *exchange, *routing_key;
        } bind;
        struct {
            const char *queue;
        } del;
        struct {
            const char *queue, *consumer_tag;
            unsigned prefetch;
            bool no_ack, exclusive;
            const struct upstream_arg *args;
            size_t n_args;
        } consume;
        struct {
            const char *consumer_tag;
        } cancel;
        struct {
            const char *exchange, *routing_key;
            struct upstream_props props;
            const uint8_t *body;
            size_t body_len;
        } publish;
        struct {
            uint64_t delivery_tag;
            bool multiple;
            bool requeue; /* NACK only */
        } ack;            /* ACK and NACK */
    } u;
};

/* A deep copy of `tmpl` (its `u` member for its kind: strings, arguments, properties, headers, body) in one allocation,
 * not embedded and not linked; NULL when out of memory. */
struct upstream_cmd *upstream_cmd_dup(const struct upstream_cmd *tmpl);

/* Frees a command made by upstream_cmd_dup(); an embedded one or NULL is left alone. `c` must not be linked. */
void upstream_cmd_free(struct upstream_cmd *c);

/* Disposes of an unlinked command no link will run (stopping, or left in an inbox at its end): an OPEN's channel half,
 * handed over with it, is freed too. */
void upstream_cmd_drop(struct upstream_cmd *c);

/* Unlinks and frees every command of `cmds` (embedded ones are only unlinked). */
void upstream_cmd_free_list(struct list *cmds);

/*
 * A link's inbox: the loop pushes, the link takes everything at once. `stopping` (upstream_free() asked the thread to
 * exit at once) and `login_fd` (the socket a blocking login runs on, which upstream_free() shuts down) are the two other
 * facts the loop and the thread share about a connection; the lock guards the three.
 */
struct upstream_inbox {
    pthread_mutex_t lock;
    struct list cmds;
    bool stopping;
    int login_fd;
    int sock_fd;                    /* the logged-in connection's socket, -1 before and after: what upstream_inbox_cut() cuts */
    bool cut;                       /* upstream_inbox_cut() shut sock_fd down */
    int wake_fd;                    /* eventfd written by upstream_inbox_stop(): cuts a login thread's backoff wait short */
    _Atomic uint64_t busy_since_ms; /* not under the lock: since when a thread is in a rabbitmq-c call that may block (0 = none) */
    _Atomic uint64_t full_since_ms; /* not under the lock: since when the link waits for room in the socket (0 = not) */
};

/* 0 or -errno (eventfd). upstream_inbox_deinit() is safe after a failed init, and drops commands still queued
 * (upstream_cmd_drop()). */
int upstream_inbox_init(struct upstream_inbox *ib);
void upstream_inbox_deinit(struct upstream_inbox *ib);

/* Loop side: queue one command, or every command of `cmds` in order. The loop runs the link's round for them (once it
 * adopted the link at CONN_UP, or at CONN_EXIT for a dead one); a thread whose login failed takes those queued by then. */
void upstream_inbox_push(struct upstream_inbox *ib, struct upstream_cmd *cmd);
void upstream_inbox_push_list(struct upstream_inbox *ib, struct list *cmds);

/* Loop side: make the link exit at once (upstream_free()), cutting a login that blocks on its socket. */
void upstream_inbox_stop(struct upstream_inbox *ib);

/* Link side: moves every queued command to the tail of `out`; returns `stopping`. */
bool upstream_inbox_take(struct upstream_inbox *ib, struct list *out);
bool upstream_inbox_stopping(struct upstream_inbox *ib);

/* Link side: publishes the socket a blocking login runs on (fd >= 0) or withdraws it (-1), before the socket is closed or
 * used for the open connection. Returns false when the loop already asked the link to stop. */
bool upstream_inbox_set_login_fd(struct upstream_inbox *ib, int fd);

/* Link side: publishes the logged-in connection's socket (fd >= 0) or withdraws it (-1) before it is closed. */
void upstream_inbox_set_sock_fd(struct upstream_inbox *ib, int fd);

/* Loop side: shuts the logged-in connection's socket down (SHUT_RDWR), so that a rabbitmq-c call blocked on it returns
 * with an error and the link fails that connection. Returns false when there was no socket to cut. */
bool upstream_inbox_cut(struct upstream_inbox *ib);

/* Link side: whether upstream_inbox_cut() cut the socket (for the error text). */
bool upstream_inbox_was_cut(struct upstream_inbox *ib);

/* Link side: resets the eventfd after poll() said it is readable. */
void upstream_inbox_drain(struct upstream_inbox *ib);

/* ---------------------------------------------------------------------------------------------------------------------
 * Results (links -> loop)
 */

enum upstream_res_kind {
    UPSTREAM_RES_CONN_UP = 0,   /* the login is done: u.up */
    UPSTREAM_RES_CONN_DOWN = 1, /* the connection died or never came up: give it no more channels */
    UPSTREAM_RES_CONN_EXIT = 2, /* the thread is exiting: join it, free the connection */
    UPSTREAM_RES_BLOCKED = 3,   /* connection.blocked / unblocked: u.blocked */
    UPSTREAM_RES_OPEN = 4,      /* channel open (err NULL) or open failed (err) */
    UPSTREAM_RES_DONE = 5,      /* an operation completed: u.done */
    UPSTREAM_RES_DELIVERY = 6,  /* u.delivery */
    UPSTREAM_RES_CANCEL = 7,    /* basic.cancel from the broker: u.consumer_tag */
    UPSTREAM_RES_CLOSED = 8,    /* the channel died (err) */
    UPSTREAM_RES_CHAN_DONE = 9, /* released and closed: the last result naming the channel, which the loop then frees */
};
const char *upstream_res_kind_str(enum upstream_res_kind k);

/* A result. Everything it points to (error text, strings, headers, body) is in the same allocation. */
struct upstream_res {
    struct list link; /* in the outbox, then in the loop's batch */
    enum upstream_res_kind kind;
    struct upstream_conn *conn; /* the loop's connection it comes from */
    struct upstream_chan *ch;   /* the loop's channel it is for; NULL for CONN_* and BLOCKED */
    bool has_err;               /* OPEN, DONE, CLOSED: `err` is valid */
    struct upstream_error err;
    union {
        struct {
            unsigned chan_max;
            char broker[UPSTREAM_BROKER_MAX]; /* "<product>/<version>" of its connection.start, "" if it said none */
        } up;                                 /* CONN_UP */
        bool blocked;                         /* BLOCKED */
        struct {
            uint64_t op_tag;
            const char *queue; /* declare: the queue name; else NULL */
        } done;
        struct upstream_delivery delivery;
        const char *consumer_tag; /* CANCEL */
    } u;
    char text[]; /* room for err.text (and a DONE's queue, a CANCEL's tag) */
};

/*
 * Link side: a zeroed result with `extra` bytes of room after it; NULL when out of memory (or while the test hook of
 * upstream_test_fail_alloc() is on). Such a result may be lost: only non-terminal results are made this way.
 */
struct upstream_res *upstream_res_new(struct upstream_outbox *ob, size_t extra);

/* A terminal result, allocated with what it ends (ignores the test hook); `text` reserves UPSTREAM_TEXT_MAX bytes. */
struct upstream_res *upstream_res_prealloc(enum upstream_res_kind kind, bool text);

/* Unlinks and frees every result of `res` (never run: upstream_free()). */
void upstream_res_free_list(struct list *res);

/* Sets r->err to *err (or has_err false for NULL), copying its text into the room of a preallocated result. */
void upstream_res_set_err(struct upstream_res *r, const struct upstream_error *err);

/* The results of every link of one upstream. The lock guards `res` and `signalled`. */
struct upstream_outbox {
    pthread_mutex_t lock;
    struct list res;
    bool signalled;          /* fd written since the loop last took the list: one write per batch */
    int fd;                  /* eventfd watched by the loop's event */
    atomic_bool fail_allocs; /* test hook: upstream_res_new() fails */
};

/* 0 or -errno (eventfd). upstream_outbox_deinit() is safe after a failed init, and frees results still queued. */
int upstream_outbox_init(struct upstream_outbox *ob);
void upstream_outbox_deinit(struct upstream_outbox *ob);

/* Link side: queue a result (ownership passes to the loop) and wake the loop. */
void upstream_outbox_push(struct upstream_outbox *ob, struct upstream_res *r);

/* Loop side: moves every queued result to the tail of `out`, in the order pushed, and resets the eventfd. */
void upstream_outbox_take(struct upstream_outbox *ob, struct list *out);

/* ---------------------------------------------------------------------------------------------------------------------
 * One-allocation deep copies: a fill function runs twice, first with base == NULL to measure, then to copy.
 */

struct upstream_bump {
    char *base;
    size_t off;
};

void *upstream_bump_take(struct upstream_bump *b, size_t n, size_t align);
/* A NUL-terminated copy of n bytes (NULL while measuring). */
const char *upstream_bump_mem(struct upstream_bump *b, const void *src, size_t n);
/* A copy of `s`, NULL for NULL. */
const char *upstream_bump_str(struct upstream_bump *b, const char *s);

/* ---------------------------------------------------------------------------------------------------------------------
 * The connection-thread side (upstream-link.c), as the loop drives it
 */

/* Reconnect backoff and the broker to try first, shared by the links of one upstream (not by the loop). */
struct upstream_backoff {
    pthread_mutex_t lock; /* guards the fields below */
    unsigned backoff_ms;
    uint64_t next_attempt_ms;
    size_t broker_next;
};
void upstream_backoff_init(struct upstream_backoff *b);
void upstream_backoff_deinit(struct upstream_backoff *b);

/* What a link is made of: everything but the login is borrowed and outlives the link. */
struct upstream_link_params {
    const struct upstream_config *cfg; /* the upstream's copy, read-only */
    struct upstream_backoff *backoff;
    struct upstream_inbox *inbox;       /* its commands */
    struct upstream_outbox *outbox;     /* its results */
    struct upstream_conn *owner;        /* stamped on its results */
    const struct upstream_login *login; /* copied */
};

/* Makes a link (with its preallocated connection results); the thread is started by the caller with upstream_link_main.
 * 0 or -ENOMEM. */
int upstream_link_new(const struct upstream_link_params *p, struct upstream_link **out);

/*
 * The login thread: TCP connect and login, the only blocking part of a connection's life. Logged in, it pushes CONN_UP
 * as its last act, and the loop drives the link from then on (upstream_link_adopt(), upstream_link_round()); the thread
 * is joined later (before the next one starts, or at the end), never waited for.
 * A login that fails makes the link dead: the thread pushes CONN_DOWN, fails the channels queued so far and ends with
 * CONN_EXIT (unless stopped through the inbox). After its last push it touches nothing of the link.
 */
void *upstream_link_main(void *link);

/* Loop side, after the login thread was joined (CONN_UP) or a dead link's thread exited (CONN_EXIT): the loop owns the
 * link from now on, and the results it makes go to `local`, a list of the loop's, instead of the outbox. */
void upstream_link_adopt(struct upstream_link *link, struct list *local);

/* The logged-in connection's socket (-1 when not open), and how often a round must run for the heartbeats (ms, 0 = no
 * heartbeats). */
int upstream_link_fd(const struct upstream_link *link);
unsigned upstream_link_tick_ms(const struct upstream_link *link);

/* What upstream_link_round() asks for. */
enum {
    UPSTREAM_LINK_MORE = 1,     /* frames or bytes are left (the read budget ran out): another round, after the others' turn */
    UPSTREAM_LINK_WANT_OUT = 2, /* the socket had no room for everything: a round when it is writable */
    UPSTREAM_LINK_FAILED = 4,   /* the connection failed: end it (upstream_link_end()) */
    UPSTREAM_LINK_DONE = 8,     /* SHUTDOWN came and no channel is left: close it (upstream_link_close_main()) */
};

/*
 * Loop side, for an adopted open link: one round of what the connection thread's loop did, without waiting: the queued
 * commands, the sweep (link_sweep()), what the socket holds (`readable`: the loop saw it readable; at most a read
 * budget of frames), the heartbeat, one send() of what the round queued (`writable`: the loop saw room). Never blocks.
 */
unsigned upstream_link_round(struct upstream_link *link, bool readable, bool writable);

/* Loop side: ends an adopted link at once, without connection.close: CONN_DOWN, every channel failed, CONN_EXIT (when
 * stopping: its channels and commands freed, nothing pushed). The socket is closed: its events must be gone. */
void upstream_link_end(struct upstream_link *link);

/* A thread for an adopted link that is DONE, or stopped by upstream_free(): closes the connection (connection.close,
 * close-ok, bounded by the watchdog and upstream_free()'s deadline), which may block, and ends like the login thread
 * (CONN_EXIT through the outbox unless stopping). */
void *upstream_link_close_main(void *link);

/* Loop side, for a dead link whose thread has exited (CONN_EXIT) with channels not yet released: runs the commands queued
 * for it (releases, operations that fail, a late open), which only push results. Returns true once no channel is left. */
bool upstream_link_run_dead(struct upstream_link *link);

/* Frees a link whose thread never started or has been joined. NULL is a no-op. */
void upstream_link_free(struct upstream_link *link);

/* Makes the thread-side half of a channel for the loop's `owner`, with its terminal results. 0 or -ENOMEM. */
int upstream_link_chan_new(struct upstream_chan *owner, struct upstream_link_chan **out);

/* Frees a thread-side channel no link took (its OPEN was never sent). NULL is a no-op. */
void upstream_link_chan_free(struct upstream_link_chan *ch);

/* ---------------------------------------------------------------------------------------------------------------------
 * The loop side (upstream.c): channel states, for logs and tests
 */

enum upstream_chan_state {
    UPSTREAM_CHAN_WAITING = 0,     /* its connection is not up: the open and the operations behind it are held here */
    UPSTREAM_CHAN_OPENING = 1,     /* channel.open sent to the link; on_open not run yet */
    UPSTREAM_CHAN_OPEN = 2,        /* on_open(NULL) ran: usable */
    UPSTREAM_CHAN_OPEN_FAILED = 3, /* on_open(err) ran: dead; on_done(err) of the operations queued behind may follow */
    UPSTREAM_CHAN_CLOSED = 4,      /* on_closed ran: dead, no callback follows */
    UPSTREAM_CHAN_RELEASED = 5,    /* upstream_chan_release() ran: no callback, freed at CHAN_DONE */
    UPSTREAM_CHAN_REFUSED = 6,     /* no connection may take it (a cap): its on_open(UPSTREAM_ERR_LIMIT) is queued */
};
const char *upstream_chan_state_str(enum upstream_chan_state st);

/* Tests: the state of a channel handle (not after it was released). */
enum upstream_chan_state upstream_chan_get_state(const struct upstream_chan *ch);

/* Tests: while `fail`, every result a connection thread allocates fails to (as if out of memory). Preallocated ones still
 * arrive. */
void upstream_test_fail_alloc(struct upstream *up, bool fail);

/*
 * bridge/upstream.c — the AMQP 0-9-1 side of warren (see bridge/upstream.h for the contract).
 *
 * This is the only file of warren that includes rabbitmq-c. rabbitmq-c is blocking and not thread-safe per connection, so
 * each AMQP connection is owned by one thread of its own ("connection thread") that does everything with its
 * amqp_connection_state_t: TCP connect, login, sending methods and content, reading and dispatching frames, heartbeats.
 *
 * Two queues link the client loop and the connection threads:
 * - commands (loop -> thread): one mutex-protected list per connection plus an eventfd the thread poll()s together with the
 *   AMQP socket. Every command names its channel; the thread keeps a FIFO of pending operations per channel and runs at
 *   most one synchronous method (queue.declare, bind, consume...) per channel at a time, so replies match requests in
 *   order (AMQP 0-9-1 §2.3.5.2: replies on a channel come in request order) while other channels go on.
 * - results (threads -> loop): one mutex-protected list for the whole upstream plus an eventfd watched by a libevent event
 *   of the client loop (no evthread machinery needed). The loop runs the callbacks in queue order, which is the broker's
 *   order for each channel.
 *
 * RPCs are asynchronous (amqp_send_method + a reply matched in the frame loop), never rabbitmq-c's synchronous calls:
 * those would queue other channels' frames inside rabbitmq-c and block this connection's other channels. Content
 * (basic.deliver + header + body frames) is assembled per channel here, because frames of different channels interleave.
 *
 * Channel handle lifetime, without a refcount: the loop owns the handle and frees it. The release command is the last
 * command that names a channel; the thread answers it, once the channel is closed at the broker, with a CHAN_DONE result,
 * the last result that names the channel. The loop frees the handle when it reads CHAN_DONE, so neither side can see a
 * freed handle. Results for a channel released (or dead) on the loop side are dropped there, which is what guarantees that
 * no callback runs after upstream_chan_release() or on_closed.
 *
 * A connection ends the same way: when it dies the thread reports CONN_DOWN, fails every channel, and keeps serving
 * release commands; the loop stops giving it channels and sends SHUTDOWN; the thread exits once every channel is done and
 * reports CONN_EXIT, on which the loop joins it and frees it.
 *
 * An idle connection ends through the same SHUTDOWN (amqp_idle_close_ms): when the loop reads the CHAN_DONE of a
 * connection's last channel it arms the connection's idle timer, and a channel opened on it meanwhile disarms it. The loop
 * alone decides, because the loop alone hands out channels: when the timer fires, it stops giving the connection channels
 * and sends SHUTDOWN in the same step, so no channel.open can follow the decision. The thread, which then has no channel,
 * exits, closing the still-open connection on its way out (connection.close, close-ok), and reports CONN_EXIT.
 *
 * Channels per connection: the loop never sends a connection more channel opens than it can take. How many that is, only
 * the login tells (the broker's channel_max, RabbitMQ's `channel_max` setting, may be lower than amqp_channel_max), so
 * while a connection is not up yet, the channels given to it wait on the loop side, each holding its channel.open and the
 * operations queued behind it, in order. At CONN_UP the loop sends the first `channel_max` of them and gives the rest to
 * another connection of the credential (opening one if needed), where they wait or go at once. New connections start
 * with the channel_max of the last login, so they are rarely given too many. A waiting channel that is released is freed
 * there and then: the thread never heard of it. If the connection never comes up, the waiting channels go to its thread
 * all the same, which fails them with the connection's error like any open it gets once dead.
 */
#include "bridge/upstream.h"

#include "bridge/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef WARREN_RABBITMQ_C_NEW_HEADERS
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#define UPSTREAM_READ_BUDGET     256    /* frames read per round before commands are looked at again */
#define UPSTREAM_DEFAULT_FRAME   131072 /* AMQP frame_max when the config says 0 */
#define UPSTREAM_CLOSE_TIMEOUT_S 2      /* connection.close at upstream_free() */

/* ---------------------------------------------------------------------------------------------------------------------
 * Types
 */

enum cmd_kind {
    CMD_OPEN = 0,
    CMD_DECLARE,
    CMD_BIND,
    CMD_DELETE,
    CMD_CONSUME,
    CMD_CANCEL,
    CMD_PUBLISH,
    CMD_ACK,
    CMD_NACK,
    CMD_RELEASE,  /* embedded in the channel: cannot fail to allocate */
    CMD_SHUTDOWN, /* embedded in the connection: no channel will follow; exit once every channel is done */
};

/* A command from the loop, deep-copied into one allocation (except the embedded ones). */
struct cmd {
    struct cmd *next;
    enum cmd_kind kind;
    bool embedded;
    struct upstream_chan *ch;
    uint64_t op_tag;
    const char *a, *b, *c; /* queue/exchange/routing key, or queue/consumer tag */
    unsigned flags;
    unsigned prefetch;
    bool no_ack, exclusive, multiple, requeue;
    uint64_t tag;
    const struct upstream_arg *args;
    size_t n_args;
    struct upstream_props props;
    const uint8_t *body;
    size_t body_len;
    int step; /* CMD_CONSUME: 0 waiting basic.qos-ok, 1 waiting basic.consume-ok */
};

enum res_kind {
    RES_CONN_UP = 0, /* num = channel cap */
    RES_CONN_DOWN,
    RES_CONN_EXIT,
    RES_BLOCKED, /* flag */
    RES_OPEN,
    RES_DONE, /* str = queue name */
    RES_DELIVERY,
    RES_CANCEL, /* str = consumer tag */
    RES_CLOSED,
    RES_CHAN_DONE,
};

/* A result for the loop, one allocation (a delivery includes its strings, headers and body). */
struct result {
    struct result *next;
    enum res_kind kind;
    struct conn *conn;
    struct upstream_chan *ch;
    uint64_t op_tag;
    bool has_err;
    struct upstream_error err;
    const char *str;
    bool flag;
    unsigned num;
    struct upstream_delivery d;
    uint8_t *body; /* writable alias of d.body while the body frames arrive */
};

enum chan_state {
    CH_NEW = 0,   /* waiting for the connection */
    CH_OPENING,   /* channel.open sent */
    CH_SELECTING, /* confirm.select sent */
    CH_OPEN,      /* usable */
    CH_CLOSING,   /* released: channel.close sent */
    CH_DEAD,      /* failed or closed by the broker; waiting for the release */
    CH_DONE,      /* released and closed; handed back to the loop */
};

struct confirm {
    struct confirm *next;
    uint64_t seq;
    uint64_t op_tag;
};

struct owned_queue {
    struct owned_queue *next;
    char name[];
};

/* A list of channels on the loop side: up->chans (sent to a thread) or conn->waiting (not yet). */
struct chan_list {
    struct upstream_chan *head, *tail;
};

struct upstream_chan {
    struct upstream *up;
    struct conn *conn;
    struct upstream_chan *next, *prev; /* loop: in up->chans, or in conn->waiting while `waiting` */
    struct upstream_chan_cb cb;
    void *ud;
    bool released, dead, opened; /* loop side */
    bool open_failed_seen;       /* loop side: on_open(err) ran, on_done(err) may still follow */
    bool waiting;                /* loop side: its connection is not up; open_cmd and the ops behind it are held here */
    struct cmd open_cmd;         /* embedded, like release_cmd; while waiting, the held operations follow it */
    struct cmd **held_tail;      /* while waiting: where the next held operation goes */
    struct cmd release_cmd;

    /* connection-thread side */
    struct upstream_chan *tnext; /* conn->tchans */
    enum chan_state st;
    bool open_failed;
    struct upstream_error fail_err;
    char fail_text[256];
    uint16_t id;
    struct cmd *ops, **ops_tail;
    struct cmd *rpc; /* the synchronous method waiting for its reply */
    uint64_t pub_seq;
    struct confirm *confirms, **confirms_tail;
    struct owned_queue *owned;
    bool asm_want_header; /* basic.deliver/return seen, header frame next */
    bool asm_discard;
    const amqp_basic_deliver_t *asm_deliver; /* in rabbitmq-c's channel pool, kept until the header frame */
    struct result *asm_res;
    uint64_t asm_left;
    size_t asm_got;
};

enum conn_state {
    CONN_CONNECTING = 0,
    CONN_OPEN,
    CONN_DEAD,
};

struct conn {
    struct upstream *up;
    struct conn *next; /* loop: up->conns */
    char *vhost, *user, *pass, *name;
    pthread_t thread;
    int wake_fd;
    struct cmd shutdown_cmd;

    pthread_mutex_t lock; /* guards cmds, stopping and login_fd */
    struct cmd *cmds, **cmds_tail;
    bool stopping;
    int login_fd; /* the socket while the login handshake blocks on it, else -1: upstream_free() shuts it down */

    /* loop side */
    unsigned n_chans;         /* channels given to this connection (waiting ones included) and not yet done */
    unsigned cap;             /* most channels it takes: its channel_max once up, a guess until then */
    struct chan_list waiting; /* given to it before it was up, in order; nothing of them sent yet */
    bool dead, live;          /* dead: the loop gives it no more channels */
    bool shutdown_sent;       /* shutdown_cmd queued (it is queued once at most) */
    struct event *idle_ev;    /* armed while n_chans == 0, if cfg.idle_close_ms */

    /* connection-thread side */
    enum conn_state st;
    amqp_connection_state_t amqp;
    struct upstream_chan **slots; /* by channel number, chan_max + 1 */
    unsigned chan_max;
    struct upstream_chan *tchans;
    bool shutdown;
    bool failed; /* a send failed: die at the top of the loop */
    struct upstream_error err;
    char err_text[256];
};

struct upstream {
    struct event_base *base;
    struct upstream_config cfg;
    char **brokers;
    int res_fd;
    struct event *res_ev;
    struct conn *conns;
    struct chan_list chans; /* every channel sent to a connection thread and not yet done */
    unsigned chan_cap;      /* channel_max of the last connection that came up, 0 = none yet */
    uint64_t published, delivered;
    unsigned channels;
    unsigned closing;

    pthread_mutex_t lock; /* guards the fields below */
    struct result *res, **res_tail;
    bool res_signalled;
    unsigned backoff_ms;
    uint64_t next_attempt_ms;
    size_t broker_next;
};

const char *upstream_err_str(enum upstream_err e)
{
    switch (e) {
    case UPSTREAM_OK:
        return "ok";
    case UPSTREAM_ERR_CHANNEL:
        return "channel closed by the broker";
    case UPSTREAM_ERR_CONNECTION:
        return "broker connection lost";
    case UPSTREAM_ERR_ACCESS_REFUSED:
        return "access refused";
    case UPSTREAM_ERR_UNREACHABLE:
        return "broker unreachable";
    case UPSTREAM_ERR_NACK:
        return "message refused by the broker";
    case UPSTREAM_ERR_NOMEM:
        return "out of memory";
    case UPSTREAM_ERR_CLOSED:
        return "channel closed";
    }
    return "unknown";
}

/* AMQP 0-9-1 reply codes (spec §1.4.2) to the lower-case names used in STOMP `message` headers. */
static const char *reply_code_name(int code)
{
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {311, "content_too_large"},   {312, "no_route"},         {313, "no_consumers"},   {320, "connection_forced"},
        {402, "invalid_path"},        {403, "access_refused"},   {404, "not_found"},      {405, "resource_locked"},
        {406, "precondition_failed"}, {501, "frame_error"},      {502, "syntax_error"},   {503, "command_invalid"},
        {504, "channel_error"},       {505, "unexpected_frame"}, {506, "resource_error"}, {530, "not_allowed"},
        {540, "not_implemented"},     {541, "internal_error"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].code == code)
            return names[i].name;
    return "amqp_error";
}

/* ---------------------------------------------------------------------------------------------------------------------
 * One-allocation deep copies: a fill function runs twice, first with base == NULL to measure, then to copy.
 */

struct bump {
    char *base;
    size_t off;
};

static void *bump_take(struct bump *b, size_t n, size_t align)
{
    b->off = (b->off + align - 1) & ~(align - 1);
    void *p = b->base ? b->base + b->off : NULL;
    b->off += n;
    return p;
}

static const char *bump_mem(struct bump *b, const void *src, size_t n)
{
    char *p = bump_take(b, n + 1, 1);
    if (p) {
        if (n)
            memcpy(p, src, n);
        p[n] = '\0';
    }
    return p;
}

static const char *bump_str(struct bump *b, const char *s)
{
    return s ? bump_mem(b, s, strlen(s)) : NULL;
}

static const char *bump_bytes(struct bump *b, amqp_bytes_t s)
{
    return bump_mem(b, s.bytes, s.len);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Commands (built on the loop, consumed on the connection thread)
 */

static void props_copy(struct bump *b, struct upstream_props *dst, const struct upstream_props *src)
{
    struct upstream_header *h;

    dst->content_type = bump_str(b, src->content_type);
    dst->content_encoding = bump_str(b, src->content_encoding);
    dst->correlation_id = bump_str(b, src->correlation_id);
    dst->reply_to = bump_str(b, src->reply_to);
    dst->expiration = bump_str(b, src->expiration);
    dst->message_id = bump_str(b, src->message_id);
    dst->type = bump_str(b, src->type);
    dst->user_id = bump_str(b, src->user_id);
    dst->app_id = bump_str(b, src->app_id);
    h = bump_take(b, src->n_headers * sizeof *h, alignof(struct upstream_header));
    for (size_t i = 0; i < src->n_headers; i++) {
        const char *name = bump_mem(b, src->headers[i].name, src->headers[i].name_len);
        const char *value = bump_mem(b, src->headers[i].value, src->headers[i].value_len);
        if (h)
            h[i] = (struct upstream_header){name, src->headers[i].name_len, value, src->headers[i].value_len};
    }
    dst->headers = src->n_headers ? h : NULL;
}

static void cmd_fill(struct bump *b, struct cmd *dst, const struct cmd *src)
{
    struct upstream_arg *args;

    *dst = *src;
    dst->a = bump_str(b, src->a);
    dst->b = bump_str(b, src->b);
    dst->c = bump_str(b, src->c);
    args = bump_take(b, src->n_args * sizeof *args, alignof(struct upstream_arg));
    for (size_t i = 0; i < src->n_args; i++) {
        const char *key = bump_str(b, src->args[i].key);
        const char *str = bump_str(b, src->args[i].str);
        if (args)
            args[i] = (struct upstream_arg){key, src->args[i].type, str, src->args[i].num};
    }
    dst->args = src->n_args ? args : NULL;
    props_copy(b, &dst->props, &src->props);
    dst->body = src->body_len ? (const uint8_t *)bump_mem(b, src->body, src->body_len) : NULL;
}

static struct cmd *cmd_dup(const struct cmd *src)
{
    struct cmd scratch;
    struct bump b = {NULL, sizeof(struct cmd)};
    struct cmd *c;

    cmd_fill(&b, &scratch, src);
    c = malloc(b.off);
    if (!c)
        return NULL;
    b = (struct bump){(char *)c, sizeof(struct cmd)};
    cmd_fill(&b, c, src);
    c->next = NULL;
    c->embedded = false;
    return c;
}

static void cmd_free(struct cmd *c)
{
    if (c && !c->embedded)
        free(c);
}

static void cmd_free_list(struct cmd *c)
{
    while (c) {
        struct cmd *next = c->next;
        cmd_free(c);
        c = next;
    }
}

/* Queues the commands from `first` to the one whose `next` is *tail (NULL) to the connection thread, and wakes it. */
static void conn_push_chain(struct conn *c, struct cmd *first, struct cmd **tail)
{
    uint64_t one = 1;

    pthread_mutex_lock(&c->lock);
    *c->cmds_tail = first;
    c->cmds_tail = tail;
    pthread_mutex_unlock(&c->lock);
    if (write(c->wake_fd, &one, sizeof one) == -1) {
        /* EAGAIN: the counter is saturated, the thread is awake anyway. */
    }
}

/* Queues one command to the connection thread and wakes it. */
static void conn_push(struct conn *c, struct cmd *cmd)
{
    cmd->next = NULL;
    conn_push_chain(c, cmd, &cmd->next);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Results (built on the connection thread, consumed on the loop)
 */

static void res_push(struct upstream *up, struct result *r)
{
    bool wake;
    uint64_t one = 1;

    r->next = NULL;
    pthread_mutex_lock(&up->lock);
    *up->res_tail = r;
    up->res_tail = &r->next;
    wake = !up->res_signalled;
    up->res_signalled = true;
    pthread_mutex_unlock(&up->lock);
    if (wake && write(up->res_fd, &one, sizeof one) == -1) {
        /* EAGAIN: already readable. */
    }
}

/*
 * Pushes a small result. Allocation failure here cannot be reported to anyone: it is retried a few times and otherwise
 * the result is lost (only the connection thread of a machine out of memory gets there).
 */
static void res_emit(struct conn *c, enum res_kind kind, struct upstream_chan *ch, uint64_t op_tag,
                     const struct upstream_error *err, const char *str)
{
    struct bump b = {NULL, sizeof(struct result)};
    struct result *r;

    if (err)
        bump_str(&b, err->text);
    bump_str(&b, str);
    r = calloc(1, b.off);
    if (!r)
        return;
    b = (struct bump){(char *)r, sizeof(struct result)};
    r->kind = kind;
    r->conn = c;
    r->ch = ch;
    r->op_tag = op_tag;
    if (err) {
        r->has_err = true;
        r->err = *err;
        r->err.text = bump_str(&b, err->text);
    }
    r->str = bump_str(&b, str);
    res_push(c->up, r);
}

static void res_emit_flag(struct conn *c, enum res_kind kind, bool flag, unsigned num)
{
    struct result *r = calloc(1, sizeof *r);

    if (!r)
        return;
    r->kind = kind;
    r->conn = c;
    r->flag = flag;
    r->num = num;
    res_push(c->up, r);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Conversions between rabbitmq-c and upstream.h types (connection thread)
 */

static amqp_bytes_t bytes_of(const char *s)
{
    return s ? amqp_cstring_bytes(s) : amqp_empty_bytes;
}

/* Builds a field table from upstream_args; *entries must be freed by the caller. */
static int args_to_table(const struct upstream_arg *args, size_t n, amqp_table_t *t)
{
    amqp_table_entry_t *e = NULL;

    if (n) {
        e = calloc(n, sizeof *e);
        if (!e)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        e[i].key = amqp_cstring_bytes(args[i].key);
        switch (args[i].type) {
        case UPSTREAM_ARG_STR:
            e[i].value.kind = AMQP_FIELD_KIND_UTF8;
            e[i].value.value.bytes = bytes_of(args[i].str);
            break;
        case UPSTREAM_ARG_INT:
            e[i].value.kind = AMQP_FIELD_KIND_I64;
            e[i].value.value.i64 = args[i].num;
            break;
        case UPSTREAM_ARG_BOOL:
            e[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
            e[i].value.value.boolean = args[i].num != 0;
            break;
        }
    }
    t->num_entries = (int)n;
    t->entries = e;
    return 0;
}

#define PROP_STR(field, flag)                                                                                                      \
    do {                                                                                                                           \
        if (src->field) {                                                                                                          \
            dst->_flags |= (flag);                                                                                                 \
            dst->field = amqp_cstring_bytes(src->field);                                                                           \
        }                                                                                                                          \
    } while (0)

/* upstream_props -> amqp_basic_properties_t; headers become longstr entries in *entries (caller frees). */
static int props_to_amqp(const struct upstream_props *src, amqp_basic_properties_t *dst, amqp_table_entry_t **entries)
{
    memset(dst, 0, sizeof *dst);
    *entries = NULL;
    PROP_STR(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG);
    PROP_STR(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG);
    PROP_STR(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG);
    PROP_STR(reply_to, AMQP_BASIC_REPLY_TO_FLAG);
    PROP_STR(expiration, AMQP_BASIC_EXPIRATION_FLAG);
    PROP_STR(message_id, AMQP_BASIC_MESSAGE_ID_FLAG);
    PROP_STR(type, AMQP_BASIC_TYPE_FLAG);
    PROP_STR(user_id, AMQP_BASIC_USER_ID_FLAG);
    PROP_STR(app_id, AMQP_BASIC_APP_ID_FLAG);
    if (src->delivery_mode > 0) {
        dst->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        dst->delivery_mode = (uint8_t)src->delivery_mode;
    }
    if (src->priority >= 0 && src->priority <= 255) {
        dst->_flags |= AMQP_BASIC_PRIORITY_FLAG;
        dst->priority = (uint8_t)src->priority;
    }
    if (src->has_timestamp) {
        dst->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
        dst->timestamp = src->timestamp;
    }
    if (src->n_headers) {
        amqp_table_entry_t *e = calloc(src->n_headers, sizeof *e);
        if (!e)
            return -ENOMEM;
        for (size_t i = 0; i < src->n_headers; i++) {
            e[i].key = (amqp_bytes_t){src->headers[i].name_len, (void *)src->headers[i].name};
            e[i].value.kind = AMQP_FIELD_KIND_UTF8;
            e[i].value.value.bytes = (amqp_bytes_t){src->headers[i].value_len, (void *)src->headers[i].value};
        }
        dst->_flags |= AMQP_BASIC_HEADERS_FLAG;
        dst->headers = (amqp_table_t){(int)src->n_headers, e};
        *entries = e;
    }
    return 0;
}

/* One table value as the text upstream.h promises, or false when the type is dropped. */
static bool field_to_text(const amqp_field_value_t *v, char *num, size_t num_size, const void **p, size_t *n)
{
    int len = -1;

    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        *p = v->value.bytes.bytes;
        *n = v->value.bytes.len;
        return true;
    case AMQP_FIELD_KIND_BOOLEAN:
        *p = v->value.boolean ? "true" : "false";
        *n = strlen(*p);
        return true;
    case AMQP_FIELD_KIND_I8:
        len = snprintf(num, num_size, "%d", v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        len = snprintf(num, num_size, "%u", v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        len = snprintf(num, num_size, "%d", v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        len = snprintf(num, num_size, "%u", v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        len = snprintf(num, num_size, "%" PRId32, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        len = snprintf(num, num_size, "%" PRIu32, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        len = snprintf(num, num_size, "%" PRId64, v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        len = snprintf(num, num_size, "%" PRIu64, v->value.u64);
        break;
    default:
        return false;
    }
    *p = num;
    *n = (size_t)len;
    return len >= 0;
}

#define PROP_IN(field, flag) dst->field = (p->_flags & (flag)) ? bump_bytes(b, p->field) : NULL

static void props_from_amqp(struct bump *b, struct upstream_props *dst, const amqp_basic_properties_t *p)
{
    struct upstream_header *h = NULL;
    size_t n = 0;

    PROP_IN(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG);
    PROP_IN(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG);
    PROP_IN(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG);
    PROP_IN(reply_to, AMQP_BASIC_REPLY_TO_FLAG);
    PROP_IN(expiration, AMQP_BASIC_EXPIRATION_FLAG);
    PROP_IN(message_id, AMQP_BASIC_MESSAGE_ID_FLAG);
    PROP_IN(type, AMQP_BASIC_TYPE_FLAG);
    PROP_IN(user_id, AMQP_BASIC_USER_ID_FLAG);
    PROP_IN(app_id, AMQP_BASIC_APP_ID_FLAG);
    dst->delivery_mode = (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) ? p->delivery_mode : 0;
    dst->priority = (p->_flags & AMQP_BASIC_PRIORITY_FLAG) ? p->priority : -1;
    dst->has_timestamp = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) != 0;
    dst->timestamp = dst->has_timestamp ? p->timestamp : 0;
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG && p->headers.num_entries > 0) {
        h = bump_take(b, (size_t)p->headers.num_entries * sizeof *h, alignof(struct upstream_header));
        for (int i = 0; i < p->headers.num_entries; i++) {
            const amqp_table_entry_t *e = &p->headers.entries[i];
            char num[32];
            const void *v;
            size_t vlen;
            if (!field_to_text(&e->value, num, sizeof num, &v, &vlen))
                continue;
            const char *name = bump_bytes(b, e->key);
            const char *value = bump_mem(b, v, vlen);
            if (h)
                h[n] = (struct upstream_header){name, e->key.len, value, vlen};
            n++;
        }
    }
    dst->headers = n ? h : NULL;
    dst->n_headers = n;
}

/* The delivery result: struct, strings, headers and room for the body in one allocation. */
static void delivery_fill(struct bump *b, struct result *r, const amqp_basic_deliver_t *m, const amqp_basic_properties_t *p,
                          size_t body_len)
{
    r->kind = RES_DELIVERY;
    r->d.consumer_tag = bump_bytes(b, m->consumer_tag);
    r->d.delivery_tag = m->delivery_tag;
    r->d.redelivered = m->redelivered != 0;
    r->d.exchange = bump_bytes(b, m->exchange);
    r->d.routing_key = bump_bytes(b, m->routing_key);
    props_from_amqp(b, &r->d.props, p);
    r->body = bump_take(b, body_len ? body_len : 1, 1);
    r->d.body = r->body;
    r->d.body_len = body_len;
}

static struct result *delivery_new(const amqp_basic_deliver_t *m, const amqp_basic_properties_t *p, uint64_t body_len)
{
    struct result scratch;
    struct bump b = {NULL, sizeof(struct result)};
    struct result *r;

    if (body_len > SIZE_MAX / 2)
        return NULL;
    memset(&scratch, 0, sizeof scratch);
    delivery_fill(&b, &scratch, m, p, (size_t)body_len);
    r = calloc(1, b.off);
    if (!r)
        return NULL;
    b = (struct bump){(char *)r, sizeof(struct result)};
    delivery_fill(&b, r, m, p, (size_t)body_len);
    return r;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Connection thread: channel state machine
 */

static void conn_set_err(struct conn *c, enum upstream_err kind, int code, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void conn_set_err(struct conn *c, enum upstream_err kind, int code, const char *name, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err_text, sizeof c->err_text, fmt, ap);
    va_end(ap);
    c->err = (struct upstream_error){kind, code, name, c->err_text};
}

/* Records a failed send; the thread loop tears the connection down before doing anything else. */
static void conn_send_failed(struct conn *c, int status)
{
    if (c->failed)
        return;
    c->failed = true;
    conn_set_err(c, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "broker connection lost: %s", amqp_error_string2(status));
}

static bool conn_send(struct conn *c, struct upstream_chan *ch, amqp_method_number_t id, void *method)
{
    int status = amqp_send_method(c->amqp, ch ? ch->id : 0, id, method);

    if (status != AMQP_STATUS_OK)
        conn_send_failed(c, status);
    return status == AMQP_STATUS_OK;
}

static bool op_has_completion(const struct cmd *op)
{
    return op->kind != CMD_ACK && op->kind != CMD_NACK;
}

static void chan_free_thread_state(struct upstream_chan *ch)
{
    cmd_free(ch->rpc);
    ch->rpc = NULL;
    cmd_free_list(ch->ops);
    ch->ops = NULL;
    ch->ops_tail = &ch->ops;
    while (ch->confirms) {
        struct confirm *next = ch->confirms->next;
        free(ch->confirms);
        ch->confirms = next;
    }
    ch->confirms_tail = &ch->confirms;
    while (ch->owned) {
        struct owned_queue *next = ch->owned->next;
        free(ch->owned);
        ch->owned = next;
    }
    free(ch->asm_res);
    ch->asm_res = NULL;
    ch->asm_want_header = false;
    ch->asm_left = 0;
}

static void chan_unslot(struct conn *c, struct upstream_chan *ch)
{
    if (ch->id && c->slots && c->slots[ch->id] == ch)
        c->slots[ch->id] = NULL;
    ch->id = 0;
}

/* Fails every pending operation with `err` (ack/nack have no completion to fail). */
static void chan_fail_ops(struct conn *c, struct upstream_chan *ch, const struct upstream_error *err)
{
    if (ch->rpc)
        res_emit(c, RES_DONE, ch, ch->rpc->op_tag, err, NULL);
    for (struct confirm *k = ch->confirms; k; k = k->next)
        res_emit(c, RES_DONE, ch, k->op_tag, err, NULL);
    for (struct cmd *op = ch->ops; op; op = op->next)
        if (op_has_completion(op))
            res_emit(c, RES_DONE, ch, op->op_tag, err, NULL);
}

/* The channel died (broker channel.close, connection lost, open refused): report it and wait for the release. */
static void chan_fail(struct conn *c, struct upstream_chan *ch, const struct upstream_error *err)
{
    bool was_open = ch->st == CH_OPEN;

    if (ch->st >= CH_CLOSING)
        return;
    /* A failed open comes first, then the failures of the operations queued behind it (and of those queued later, see
     * conn_on_cmd). A closed channel reports its pending operations first, because nothing follows on_closed. */
    ch->open_failed = !was_open;
    ch->fail_err = *err;
    snprintf(ch->fail_text, sizeof ch->fail_text, "%s", err->text ? err->text : "");
    ch->fail_err.text = ch->fail_text;
    if (!was_open)
        res_emit(c, RES_OPEN, ch, 0, err, NULL);
    chan_fail_ops(c, ch, err);
    if (was_open)
        res_emit(c, RES_CLOSED, ch, 0, err, NULL);
    chan_free_thread_state(ch);
    chan_unslot(c, ch);
    ch->st = CH_DEAD;
}

/* The channel is released and closed: hand it back to the loop, which frees it. */
static void chan_done(struct conn *c, struct upstream_chan *ch)
{
    struct upstream_chan **pp;

    chan_free_thread_state(ch);
    chan_unslot(c, ch);
    for (pp = &c->tchans; *pp; pp = &(*pp)->tnext) {
        if (*pp == ch) {
            *pp = ch->tnext;
            break;
        }
    }
    ch->st = CH_DONE;
    res_emit(c, RES_CHAN_DONE, ch, 0, NULL, NULL);
}

static void chan_start(struct conn *c, struct upstream_chan *ch)
{
    amqp_channel_open_t open = {amqp_empty_bytes};
    unsigned id;

    for (id = 1; id <= c->chan_max && c->slots[id]; id++)
        ;
    if (id > c->chan_max) {
        struct upstream_error err = {UPSTREAM_ERR_CHANNEL, 0, "channel_max",
                                     "no free channel on the broker connection (channel_max reached)"};
        chan_fail(c, ch, &err);
        return;
    }
    c->slots[id] = ch;
    ch->id = (uint16_t)id;
    ch->st = CH_OPENING;
    conn_send(c, ch, AMQP_CHANNEL_OPEN_METHOD, &open);
}

static void chan_release(struct conn *c, struct upstream_chan *ch)
{
    amqp_channel_close_t close = {AMQP_REPLY_SUCCESS, amqp_cstring_bytes("released"), 0, 0};

    if (ch->st == CH_NEW || ch->st == CH_DEAD || c->st != CONN_OPEN) {
        chan_done(c, ch);
        return;
    }
    /* Owned queues go first, nowait: queue.delete is idempotent in RabbitMQ, and channel.close right after it is
     * processed in order by the broker. */
    for (struct owned_queue *q = ch->owned; q && !c->failed; q = q->next) {
        amqp_queue_delete_t del = {0, amqp_cstring_bytes(q->name), 0, 0, 1};
        conn_send(c, ch, AMQP_QUEUE_DELETE_METHOD, &del);
    }
    chan_free_thread_state(ch);
    ch->st = CH_CLOSING;
    if (!c->failed)
        conn_send(c, ch, AMQP_CHANNEL_CLOSE_METHOD, &close);
}

static void op_publish(struct conn *c, struct upstream_chan *ch, struct cmd *op)
{
    amqp_basic_properties_t props;
    amqp_table_entry_t *entries;
    struct confirm *k = malloc(sizeof *k);
    int status;

    if (!k || props_to_amqp(&op->props, &props, &entries) < 0) {
        struct upstream_error err = {UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory"};
        free(k);
        res_emit(c, RES_DONE, ch, op->op_tag, &err, NULL);
        return;
    }
    status = amqp_basic_publish(c->amqp, ch->id, bytes_of(op->a), bytes_of(op->b), 0, 0, &props,
                                (amqp_bytes_t){op->body_len, (void *)op->body});
    free(entries);
    if (status != AMQP_STATUS_OK) {
        free(k);
        conn_send_failed(c, status);
        return;
    }
    /* Confirm sequence numbers count every basic.publish on the channel from 1 (RabbitMQ confirms extension). */
    *k = (struct confirm){NULL, ++ch->pub_seq, op->op_tag};
    *ch->confirms_tail = k;
    ch->confirms_tail = &k->next;
}

static void op_consume(struct conn *c, struct upstream_chan *ch, struct cmd *op, amqp_table_t *args)
{
    amqp_basic_qos_t qos = {0, (uint16_t)(op->prefetch > 65535 ? 65535 : op->prefetch), 0};
    amqp_basic_consume_t consume = {0, bytes_of(op->a), bytes_of(op->b), 0, op->no_ack, op->exclusive, 0, *args};

    /* Both are pipelined: the broker answers qos-ok then consume-ok, in order. */
    op->step = 0;
    if (conn_send(c, ch, AMQP_BASIC_QOS_METHOD, &qos))
        conn_send(c, ch, AMQP_BASIC_CONSUME_METHOD, &consume);
}

/* Sends a synchronous method; returns true when a reply is awaited (the op becomes ch->rpc). */
static bool op_send_rpc(struct conn *c, struct upstream_chan *ch, struct cmd *op)
{
    amqp_table_t args;

    if (args_to_table(op->args, op->n_args, &args) < 0) {
        struct upstream_error err = {UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory"};
        res_emit(c, RES_DONE, ch, op->op_tag, &err, NULL);
        return false;
    }
    if (op->kind == CMD_DECLARE) {
        unsigned f = op->flags;
        amqp_queue_declare_t m = {0,
                                  bytes_of(op->a),
                                  (f & UPSTREAM_Q_PASSIVE) != 0,
                                  (f & UPSTREAM_Q_DURABLE) != 0,
                                  (f & UPSTREAM_Q_EXCLUSIVE) != 0,
                                  (f & UPSTREAM_Q_AUTO_DELETE) != 0,
                                  (f & UPSTREAM_Q_NOWAIT) != 0,
                                  args};
        conn_send(c, ch, AMQP_QUEUE_DECLARE_METHOD, &m);
    } else if (op->kind == CMD_BIND) {
        amqp_queue_bind_t m = {0, bytes_of(op->a), bytes_of(op->b), bytes_of(op->c), 0, args};
        conn_send(c, ch, AMQP_QUEUE_BIND_METHOD, &m);
    } else if (op->kind == CMD_DELETE) {
        amqp_queue_delete_t m = {0, bytes_of(op->a), 0, 0, 0};
        conn_send(c, ch, AMQP_QUEUE_DELETE_METHOD, &m);
    } else if (op->kind == CMD_CONSUME) {
        op_consume(c, ch, op, &args);
    } else if (op->kind == CMD_CANCEL) {
        amqp_basic_cancel_t m = {bytes_of(op->b), 0};
        conn_send(c, ch, AMQP_BASIC_CANCEL_METHOD, &m);
    }
    free(args.entries);
    return true;
}

static void chan_add_owned(struct upstream_chan *ch, const char *name, size_t len)
{
    struct owned_queue *q = malloc(sizeof *q + len + 1);

    if (!q)
        return; /* the queue outlives the session; exclusive/auto-delete ones still go with the connection */
    memcpy(q->name, name, len);
    q->name[len] = '\0';
    q->next = ch->owned;
    ch->owned = q;
}

/* Runs the channel's queued operations in order until one awaits a reply. */
static void chan_pump(struct conn *c, struct upstream_chan *ch)
{
    while (ch->st == CH_OPEN && !ch->rpc && ch->ops && !c->failed) {
        struct cmd *op = ch->ops;
        ch->ops = op->next;
        if (!ch->ops)
            ch->ops_tail = &ch->ops;
        op->next = NULL;
        if (op->kind == CMD_PUBLISH) {
            op_publish(c, ch, op);
        } else if (op->kind == CMD_ACK) {
            int st = amqp_basic_ack(c->amqp, ch->id, op->tag, op->multiple);
            if (st != AMQP_STATUS_OK)
                conn_send_failed(c, st);
        } else if (op->kind == CMD_NACK) {
            int st = amqp_basic_nack(c->amqp, ch->id, op->tag, op->multiple, op->requeue);
            if (st != AMQP_STATUS_OK)
                conn_send_failed(c, st);
        } else if (op_send_rpc(c, ch, op)) {
            if (op->kind == CMD_DECLARE && (op->flags & UPSTREAM_Q_NOWAIT)) {
                if (op->flags & UPSTREAM_Q_OWNED)
                    chan_add_owned(ch, op->a, strlen(op->a));
                res_emit(c, RES_DONE, ch, op->op_tag, NULL, op->a);
            } else {
                ch->rpc = op;
                continue;
            }
        }
        cmd_free(op);
    }
}

/* A reply to ch->rpc (AMQP replies on a channel arrive in request order). */
static void chan_on_reply(struct conn *c, struct upstream_chan *ch, amqp_method_number_t id, void *decoded)
{
    struct cmd *op = ch->rpc;
    const char *queue = NULL;
    char *qbuf = NULL;

    if (!op)
        return;
    if (op->kind == CMD_CONSUME && op->step == 0 && id == AMQP_BASIC_QOS_OK_METHOD) {
        op->step = 1;
        return;
    }
    if (id == AMQP_QUEUE_DECLARE_OK_METHOD && op->kind == CMD_DECLARE) {
        const amqp_queue_declare_ok_t *ok = decoded;
        qbuf = malloc(ok->queue.len + 1);
        if (qbuf) {
            memcpy(qbuf, ok->queue.bytes, ok->queue.len);
            qbuf[ok->queue.len] = '\0';
            if (op->flags & UPSTREAM_Q_OWNED)
                chan_add_owned(ch, qbuf, ok->queue.len);
        }
        queue = qbuf ? qbuf : "";
    } else if (!((id == AMQP_QUEUE_BIND_OK_METHOD && op->kind == CMD_BIND) ||
                 (id == AMQP_QUEUE_DELETE_OK_METHOD && op->kind == CMD_DELETE) ||
                 (id == AMQP_BASIC_CONSUME_OK_METHOD && op->kind == CMD_CONSUME) ||
                 (id == AMQP_BASIC_CANCEL_OK_METHOD && op->kind == CMD_CANCEL))) {
        return; /* not the reply we wait for (a broker bug); keep waiting */
    }
    res_emit(c, RES_DONE, ch, op->op_tag, NULL, queue);
    free(qbuf);
    cmd_free(op);
    ch->rpc = NULL;
    chan_pump(c, ch);
}

/* basic.ack / basic.nack from the broker in confirm mode: settle one or all sequence numbers up to `tag`. */
static void chan_on_confirm(struct conn *c, struct upstream_chan *ch, uint64_t tag, bool multiple, bool nack)
{
    struct upstream_error err = {UPSTREAM_ERR_NACK, 0, "nack", "the broker refused the message (basic.nack)"};
    struct confirm **pp = &ch->confirms;

    while (*pp) {
        struct confirm *k = *pp;
        if (multiple ? k->seq <= tag : k->seq == tag) {
            res_emit(c, RES_DONE, ch, k->op_tag, nack ? &err : NULL, NULL);
            *pp = k->next;
            if (!k->next)
                ch->confirms_tail = pp;
            free(k);
            if (!multiple)
                break;
        } else if (k->seq > tag) {
            break;
        } else {
            pp = &k->next;
        }
    }
}

static void chan_on_close(struct conn *c, struct upstream_chan *ch, const amqp_channel_close_t *m)
{
    amqp_channel_close_ok_t ok = {0};
    char text[256];
    struct upstream_error err;

    snprintf(text, sizeof text, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    err = (struct upstream_error){UPSTREAM_ERR_CHANNEL, m->reply_code, reply_code_name(m->reply_code), text};
    conn_send(c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (ch->st == CH_CLOSING)
        chan_done(c, ch);
    else
        chan_fail(c, ch, &err);
}

static void chan_on_cancel(struct conn *c, struct upstream_chan *ch, const amqp_basic_cancel_t *m)
{
    char *tag = strndup(m->consumer_tag.bytes, m->consumer_tag.len);

    if (!m->nowait) {
        amqp_basic_cancel_ok_t ok = {m->consumer_tag};
        conn_send(c, ch, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
    }
    if (tag && ch->st == CH_OPEN)
        res_emit(c, RES_CANCEL, ch, 0, NULL, tag);
    free(tag);
}

static void chan_on_method(struct conn *c, struct upstream_chan *ch, amqp_method_number_t id, void *m)
{
    switch (id) {
    case AMQP_CHANNEL_OPEN_OK_METHOD:
        if (ch->st == CH_OPENING) {
            amqp_confirm_select_t select = {0};
            ch->st = CH_SELECTING;
            conn_send(c, ch, AMQP_CONFIRM_SELECT_METHOD, &select);
        }
        break;
    case AMQP_CONFIRM_SELECT_OK_METHOD:
        if (ch->st == CH_SELECTING) {
            ch->st = CH_OPEN;
            res_emit(c, RES_OPEN, ch, 0, NULL, NULL);
            chan_pump(c, ch);
        }
        break;
    case AMQP_CHANNEL_CLOSE_METHOD:
        chan_on_close(c, ch, m);
        break;
    case AMQP_CHANNEL_CLOSE_OK_METHOD:
        if (ch->st == CH_CLOSING)
            chan_done(c, ch);
        break;
    case AMQP_BASIC_ACK_METHOD:
        if (ch->st == CH_OPEN)
            chan_on_confirm(c, ch, ((amqp_basic_ack_t *)m)->delivery_tag, ((amqp_basic_ack_t *)m)->multiple, false);
        break;
    case AMQP_BASIC_NACK_METHOD:
        if (ch->st == CH_OPEN)
            chan_on_confirm(c, ch, ((amqp_basic_nack_t *)m)->delivery_tag, ((amqp_basic_nack_t *)m)->multiple, true);
        break;
    case AMQP_BASIC_DELIVER_METHOD:
    case AMQP_BASIC_RETURN_METHOD:
        ch->asm_want_header = true;
        ch->asm_discard = id == AMQP_BASIC_RETURN_METHOD || ch->st != CH_OPEN;
        ch->asm_deliver = id == AMQP_BASIC_DELIVER_METHOD ? m : NULL;
        break;
    case AMQP_BASIC_CANCEL_METHOD:
        chan_on_cancel(c, ch, m);
        break;
    default:
        if (ch->st == CH_OPEN)
            chan_on_reply(c, ch, id, m);
        break;
    }
}

static void chan_delivery_complete(struct conn *c, struct upstream_chan *ch)
{
    struct result *r = ch->asm_res;

    ch->asm_res = NULL;
    if (r) {
        r->conn = c;
        r->ch = ch;
        res_push(c->up, r);
    }
}

static void chan_on_header(struct conn *c, struct upstream_chan *ch, const amqp_frame_t *f)
{
    if (!ch->asm_want_header)
        return;
    ch->asm_want_header = false;
    ch->asm_left = f->payload.properties.body_size;
    ch->asm_got = 0;
    if (!ch->asm_discard) {
        ch->asm_res = delivery_new(ch->asm_deliver, f->payload.properties.decoded, ch->asm_left);
        if (!ch->asm_res) {
            /* Dropping it would leave an unacked delivery nobody knows about: give up the connection instead. */
            c->failed = true;
            conn_set_err(c, UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory for a %" PRIu64 "-byte delivery", ch->asm_left);
            return;
        }
    }
    ch->asm_deliver = NULL;
    if (ch->asm_left == 0)
        chan_delivery_complete(c, ch);
}

static void chan_on_body(struct conn *c, struct upstream_chan *ch, const amqp_frame_t *f)
{
    size_t n = f->payload.body_fragment.len;

    if (n > ch->asm_left)
        n = (size_t)ch->asm_left; /* more than announced: protocol error on the broker's side, ignore the excess */
    if (ch->asm_res)
        memcpy(ch->asm_res->body + ch->asm_got, f->payload.body_fragment.bytes, n);
    ch->asm_got += n;
    ch->asm_left -= n;
    if (ch->asm_left == 0)
        chan_delivery_complete(c, ch);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Connection thread: connection life
 */

/* The connection is gone (or never came up): every channel on it learns it, and the loop stops using it. */
static void conn_die(struct conn *c)
{
    struct upstream_chan *ch, *next;

    if (c->st == CONN_DEAD)
        return;
    c->st = CONN_DEAD;
    if (c->err.kind == UPSTREAM_OK)
        conn_set_err(c, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "broker connection lost");
    res_emit_flag(c, RES_CONN_DOWN, false, 0);
    for (ch = c->tchans; ch; ch = next) {
        next = ch->tnext;
        if (ch->st == CH_CLOSING)
            chan_done(c, ch);
        else
            chan_fail(c, ch, &c->err);
    }
    if (c->amqp) {
        amqp_destroy_connection(c->amqp);
        c->amqp = NULL;
    }
}

static void conn_on_method0(struct conn *c, amqp_method_number_t id, void *m)
{
    if (id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *close = m;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->amqp, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        conn_set_err(c, UPSTREAM_ERR_CONNECTION, close->reply_code, reply_code_name(close->reply_code), "%.*s",
                     (int)close->reply_text.len, (const char *)close->reply_text.bytes);
        c->failed = true;
    } else if (id == AMQP_CONNECTION_BLOCKED_METHOD || id == AMQP_CONNECTION_UNBLOCKED_METHOD) {
        res_emit_flag(c, RES_BLOCKED, id == AMQP_CONNECTION_BLOCKED_METHOD, 0);
    }
}

static void conn_on_frame(struct conn *c, const amqp_frame_t *f)
{
    struct upstream_chan *ch = NULL;

    if (f->channel == 0) {
        if (f->frame_type == AMQP_FRAME_METHOD)
            conn_on_method0(c, f->payload.method.id, f->payload.method.decoded);
        return;
    }
    if (f->channel <= c->chan_max)
        ch = c->slots[f->channel];
    if (ch && f->frame_type == AMQP_FRAME_METHOD)
        chan_on_method(c, ch, f->payload.method.id, f->payload.method.decoded);
    else if (ch && f->frame_type == AMQP_FRAME_HEADER)
        chan_on_header(c, ch, f);
    else if (ch && f->frame_type == AMQP_FRAME_BODY)
        chan_on_body(c, ch, f);
    /* The channel's pool holds basic.deliver until its header frame arrives. Look the channel up again: once done it
     * belongs to the loop, which may already have freed it. */
    ch = f->channel <= c->chan_max ? c->slots[f->channel] : NULL;
    if (!ch || !ch->asm_want_header)
        amqp_maybe_release_buffers_on_channel(c->amqp, f->channel);
}

/* Reads what is available without blocking (this also sends due heartbeats). Returns true when more may be pending. */
static bool conn_read(struct conn *c)
{
    struct timeval zero = {0, 0};

    for (int i = 0; i < UPSTREAM_READ_BUDGET; i++) {
        amqp_frame_t f;
        int status = amqp_simple_wait_frame_noblock(c->amqp, &f, &zero);
        if (status == AMQP_STATUS_TIMEOUT)
            return false;
        if (status != AMQP_STATUS_OK) {
            conn_send_failed(c, status);
            return false;
        }
        conn_on_frame(c, &f);
        if (c->failed)
            return false;
    }
    return true;
}

static void conn_drain_wake(struct conn *c)
{
    uint64_t n;

    if (read(c->wake_fd, &n, sizeof n) == -1) {
        /* EAGAIN: nothing to drain */
    }
}

/* Waits for a command, broker data or the heartbeat tick. */
static void conn_wait(struct conn *c, bool more)
{
    struct pollfd p[2] = {{c->wake_fd, POLLIN, 0}, {-1, POLLIN, 0}};
    int timeout = -1;

    if (c->st == CONN_OPEN) {
        int hb = amqp_get_heartbeat(c->amqp);
        p[1].fd = amqp_get_sockfd(c->amqp);
        /* rabbitmq-c only sends heartbeats from inside its read calls: wake at half the interval. */
        timeout = hb > 0 ? hb * 500 : -1;
        if (more || amqp_frames_enqueued(c->amqp) || amqp_data_in_buffer(c->amqp))
            timeout = 0;
    }
    if (poll(p, 2, timeout) > 0 && (p[0].revents & POLLIN))
        conn_drain_wake(c);
}

/* Waits until `deadline`, returning false if upstream_free() asked the thread to stop meanwhile. */
static bool conn_sleep_until(struct conn *c, uint64_t deadline)
{
    for (;;) {
        uint64_t now = clock_now_ms();
        bool stopping;
        pthread_mutex_lock(&c->lock);
        stopping = c->stopping;
        pthread_mutex_unlock(&c->lock);
        if (stopping)
            return false;
        if (now >= deadline)
            return true;
        struct pollfd p = {c->wake_fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) > 0)
            conn_drain_wake(c);
    }
}

/* Splits "host:port" ("[v6]:port" too); port 5672 when absent. */
static void broker_split(const char *broker, char *host, size_t host_size, int *port)
{
    const char *colon = strrchr(broker, ':');
    size_t len = strlen(broker);

    *port = 5672;
    if (colon && !strchr(colon, ']') && (broker[0] != '[' || colon[-1] == ']')) {
        *port = atoi(colon + 1);
        len = (size_t)(colon - broker);
    }
    if (len >= 2 && broker[0] == '[' && broker[len - 1] == ']') {
        broker++;
        len -= 2;
    }
    snprintf(host, host_size, "%.*s", (int)len, broker);
}

/* Maps a failed login reply to the error of every channel waiting on this connection. */
static int conn_login_failed(struct conn *c, amqp_rpc_reply_t reply, const char *broker)
{
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = reply.reply.decoded;
        bool refused = m->reply_code == 403 || m->reply_code == 530; /* bad login; vhost access (not_allowed) */
        conn_set_err(c, refused ? UPSTREAM_ERR_ACCESS_REFUSED : UPSTREAM_ERR_CONNECTION, m->reply_code,
                     refused ? "access_refused" : reply_code_name(m->reply_code), "%.*s", (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        return refused ? UPSTREAM_ERR_ACCESS_REFUSED : UPSTREAM_ERR_UNREACHABLE;
    }
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        (reply.library_error == AMQP_STATUS_CONNECTION_CLOSED || reply.library_error == AMQP_STATUS_SOCKET_ERROR)) {
        /* A broker without authentication_failure_close just drops the socket on a bad password. */
        conn_set_err(c, UPSTREAM_ERR_ACCESS_REFUSED, 403, "access_refused",
                     "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN");
        return UPSTREAM_ERR_ACCESS_REFUSED;
    }
    conn_set_err(c, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "login to %s failed: %s", broker,
                 reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(reply.library_error)
                                                                     : "unexpected reply");
    return UPSTREAM_ERR_UNREACHABLE;
}

static amqp_rpc_reply_t conn_login_send(struct conn *c)
{
    const struct upstream_config *cfg = &c->up->cfg;
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("authentication_failure_close"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("connection.blocked"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("consumer_cancel_notify"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("publisher_confirms"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t props[4] = {
        {amqp_cstring_bytes("capabilities"), {AMQP_FIELD_KIND_TABLE, {.table = {4, caps}}}},
        {amqp_cstring_bytes("product"), {AMQP_FIELD_KIND_UTF8, {.bytes = bytes_of(cfg->product ? cfg->product : "warren")}}},
        {amqp_cstring_bytes("version"), {AMQP_FIELD_KIND_UTF8, {.bytes = bytes_of(cfg->version ? cfg->version : "")}}},
        {amqp_cstring_bytes("connection_name"), {AMQP_FIELD_KIND_UTF8, {.bytes = bytes_of(c->name)}}},
    };
    amqp_table_t table = {c->name ? 4 : 3, props};
    int channel_max = cfg->channel_max && cfg->channel_max < 65535 ? (int)cfg->channel_max : 0;
    int frame_max = cfg->frame_max_bytes ? (int)cfg->frame_max_bytes : UPSTREAM_DEFAULT_FRAME;

    return amqp_login_with_properties(c->amqp, c->vhost, channel_max, frame_max, (int)cfg->heartbeat_s, &table,
                                      AMQP_SASL_METHOD_PLAIN, c->user, c->pass);
}

/*
 * Publishes the socket the blocking login runs on (fd >= 0), or withdraws it (-1) before the socket is closed or used for
 * the open connection, so that upstream_free() can cut a login to a broker that accepted TCP but never answers. Returns
 * false when upstream_free() already asked the thread to stop.
 */
static bool conn_set_login_fd(struct conn *c, int fd)
{
    bool stopping;

    pthread_mutex_lock(&c->lock);
    c->login_fd = fd;
    stopping = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return !stopping;
}

static bool conn_stopping(struct conn *c)
{
    bool stopping;

    pthread_mutex_lock(&c->lock);
    stopping = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return stopping;
}

/* One broker: TCP connect and login. Returns 0, UPSTREAM_ERR_UNREACHABLE (try the next one) or ..._ACCESS_REFUSED. */
static int conn_try_broker(struct conn *c, const char *broker)
{
    unsigned ms = c->up->cfg.connect_timeout_ms;
    struct timeval tv = clock_timeval(ms);
    char host[256];
    int port, status, r;
    amqp_socket_t *sock;
    amqp_rpc_reply_t reply;

    broker_split(broker, host, sizeof host, &port);
    c->amqp = amqp_new_connection();
    if (!c->amqp) {
        conn_set_err(c, UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory");
        return UPSTREAM_ERR_UNREACHABLE;
    }
    sock = amqp_tcp_socket_new(c->amqp);
    status = sock ? amqp_socket_open_noblock(sock, host, port, ms ? &tv : NULL) : AMQP_STATUS_NO_MEMORY;
    if (status != AMQP_STATUS_OK) {
        conn_set_err(c, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "cannot connect to %s: %s", broker,
                     amqp_error_string2(status));
        r = UPSTREAM_ERR_UNREACHABLE;
        goto fail;
    }
    if (ms)
        amqp_set_handshake_timeout(c->amqp, &tv);
    if (!conn_set_login_fd(c, amqp_get_sockfd(c->amqp))) {
        conn_set_err(c, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "warren is shutting down");
        r = UPSTREAM_ERR_UNREACHABLE;
        goto fail;
    }
    reply = conn_login_send(c);
    conn_set_login_fd(c, -1);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        r = conn_login_failed(c, reply, broker);
        goto fail;
    }
    return 0;
fail:
    amqp_destroy_connection(c->amqp);
    c->amqp = NULL;
    return r;
}

static void conn_backoff_failed(struct upstream *up)
{
    const struct upstream_config *cfg = &up->cfg;

    pthread_mutex_lock(&up->lock);
    up->backoff_ms = up->backoff_ms ? up->backoff_ms * 2 : cfg->reconnect_min_ms;
    if (up->backoff_ms > cfg->reconnect_max_ms)
        up->backoff_ms = cfg->reconnect_max_ms;
    up->next_attempt_ms = clock_now_ms() + up->backoff_ms;
    pthread_mutex_unlock(&up->lock);
}

/* Waits out the backoff, then tries each broker once, from the last good one. Returns 0 or an upstream_err. */
static int conn_connect(struct conn *c)
{
    struct upstream *up = c->up;
    uint64_t deadline;
    size_t start;
    int r = UPSTREAM_ERR_UNREACHABLE;

    pthread_mutex_lock(&up->lock);
    deadline = up->next_attempt_ms;
    start = up->broker_next;
    pthread_mutex_unlock(&up->lock);
    if (!conn_sleep_until(c, deadline)) {
        conn_set_err(c, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "warren is shutting down");
        return UPSTREAM_ERR_CONNECTION;
    }
    for (size_t i = 0; i < up->cfg.n_brokers && r == UPSTREAM_ERR_UNREACHABLE && !conn_stopping(c); i++) {
        size_t idx = (start + i) % up->cfg.n_brokers;
        r = conn_try_broker(c, up->brokers[idx]);
        if (r == 0) {
            pthread_mutex_lock(&up->lock);
            up->broker_next = idx;
            up->backoff_ms = 0;
            up->next_attempt_ms = 0;
            pthread_mutex_unlock(&up->lock);
        }
    }
    if (r == UPSTREAM_ERR_UNREACHABLE)
        conn_backoff_failed(up);
    return r;
}

static int conn_up(struct conn *c)
{
    unsigned negotiated = (unsigned)amqp_get_channel_max(c->amqp);
    unsigned cap = c->up->cfg.channel_max ? c->up->cfg.channel_max : 65535;

    if (negotiated == 0 || negotiated > 65535)
        negotiated = 65535;
    c->chan_max = cap < negotiated ? cap : negotiated;
    c->slots = calloc(c->chan_max + 1, sizeof *c->slots);
    if (!c->slots) {
        conn_set_err(c, UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory");
        return -ENOMEM;
    }
    c->st = CONN_OPEN;
    res_emit_flag(c, RES_CONN_UP, false, c->chan_max);
    return 0;
}

static void conn_on_cmd(struct conn *c, struct cmd *cmd)
{
    struct upstream_chan *ch = cmd->ch;

    switch (cmd->kind) {
    case CMD_SHUTDOWN:
        c->shutdown = true; /* dead, or idle: conn_main exits once no channel is left */
        return;
    case CMD_OPEN: /* embedded in the channel */
        ch->tnext = c->tchans;
        c->tchans = ch;
        if (c->st == CONN_OPEN)
            chan_start(c, ch);
        else
            chan_fail(c, ch, &c->err);
        return;
    case CMD_RELEASE:
        chan_release(c, ch);
        return;
    default:
        if (ch->st >= CH_CLOSING) {
            /* After a failed open every operation fails with its error; after on_closed the loop drops them anyway. */
            if (ch->st == CH_DEAD && ch->open_failed && op_has_completion(cmd))
                res_emit(c, RES_DONE, ch, cmd->op_tag, &ch->fail_err, NULL);
            cmd_free(cmd);
            return;
        }
        *ch->ops_tail = cmd;
        ch->ops_tail = &cmd->next;
        chan_pump(c, ch);
        return;
    }
}

/* Runs queued commands; returns true when upstream_free() asked the thread to stop. */
static bool conn_run_cmds(struct conn *c)
{
    struct cmd *list;
    bool stopping;

    pthread_mutex_lock(&c->lock);
    list = c->cmds;
    c->cmds = NULL;
    c->cmds_tail = &c->cmds;
    stopping = c->stopping;
    pthread_mutex_unlock(&c->lock);
    while (list) {
        struct cmd *next = list->next;
        list->next = NULL;
        if (stopping)
            cmd_free(list);
        else
            conn_on_cmd(c, list);
        list = next;
    }
    return stopping;
}

static void conn_finish(struct conn *c, bool stopping)
{
    if (c->st == CONN_OPEN) {
        struct timeval tv = {UPSTREAM_CLOSE_TIMEOUT_S, 0};
        amqp_set_rpc_timeout(c->amqp, &tv);
        amqp_connection_close(c->amqp, AMQP_REPLY_SUCCESS);
    }
    if (c->amqp)
        amqp_destroy_connection(c->amqp);
    c->amqp = NULL;
    for (struct upstream_chan *ch = c->tchans; ch; ch = ch->tnext)
        chan_free_thread_state(ch);
    free(c->slots);
    c->slots = NULL;
    if (!stopping)
        res_emit_flag(c, RES_CONN_EXIT, false, 0);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    bool stopping = false;

    if (conn_connect(c) != 0 || conn_up(c) != 0)
        conn_die(c);
    for (;;) {
        bool more = false;
        stopping = conn_run_cmds(c);
        if (c->failed && c->st == CONN_OPEN)
            conn_die(c);
        if (stopping || (c->shutdown && !c->tchans))
            break;
        if (c->st == CONN_OPEN) {
            more = conn_read(c);
            if (c->failed)
                continue;
        }
        conn_wait(c, more);
    }
    conn_finish(c, stopping);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Client loop side
 */

static void chan_list_append(struct chan_list *l, struct upstream_chan *ch)
{
    ch->next = NULL;
    ch->prev = l->tail;
    if (l->tail)
        l->tail->next = ch;
    else
        l->head = ch;
    l->tail = ch;
}

static void chan_list_remove(struct chan_list *l, struct upstream_chan *ch)
{
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        l->head = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    else
        l->tail = ch->prev;
    ch->next = ch->prev = NULL;
}

/* Frees a channel the connection thread never saw, with the operations it held. */
static void chan_free_waiting(struct upstream_chan *ch)
{
    cmd_free_list(ch->open_cmd.next);
    free(ch);
}

/* Sends a waiting channel's channel.open, and the operations queued behind it, to its connection's thread. */
static void chan_dispatch(struct upstream_chan *ch)
{
    ch->waiting = false;
    chan_list_append(&ch->up->chans, ch);
    conn_push_chain(ch->conn, &ch->open_cmd, ch->held_tail);
}

/* Gives `ch` to `c`: sent at once when `c` is up, else held in c->waiting until it is (see the top of the file). */
static void chan_attach(struct conn *c, struct upstream_chan *ch)
{
    ch->conn = c;
    c->n_chans++;
    if (c->idle_ev)
        evtimer_del(c->idle_ev); /* reused before its idle timer fired */
    if (c->live) {
        chan_dispatch(ch);
    } else {
        ch->waiting = true;
        chan_list_append(&c->waiting, ch);
    }
}

/*
 * The loop gives `c` no more channels, and its thread exits once every channel on it is done (closing the connection if it
 * is still open) and reports CONN_EXIT. For a connection that died (RES_CONN_DOWN) or stayed idle too long; the SHUTDOWN
 * command is embedded, so it is queued once even when both happen.
 */
static void conn_retire(struct conn *c)
{
    c->dead = true;
    if (c->idle_ev)
        evtimer_del(c->idle_ev);
    if (c->shutdown_sent)
        return;
    c->shutdown_sent = true;
    conn_push(c, &c->shutdown_cmd);
}

/* The idle timer fired: no channel was opened on the connection since its last one closed (upstream_chan_open disarms it). */
static void on_conn_idle(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (c->n_chans == 0 && !c->dead)
        conn_retire(c);
}

/* Arms the idle timer of a connection whose last channel is done. A failed evtimer_add keeps the connection open. */
static void conn_idle_arm(struct conn *c)
{
    unsigned ms = c->up->cfg.idle_close_ms;
    struct timeval tv = clock_timeval(ms);

    if (c->idle_ev && c->n_chans == 0 && !c->dead && evtimer_add(c->idle_ev, &tv) != 0) {
        /* nothing to do: the connection just stays, as with idle_close_ms = 0 */
    }
}

/* Frees a connection whose thread has been joined; its waiting channels too (only upstream_free() leaves some). */
static void conn_free(struct conn *c)
{
    if (!c)
        return;
    while (c->waiting.head) {
        struct upstream_chan *ch = c->waiting.head;
        chan_list_remove(&c->waiting, ch);
        chan_free_waiting(ch);
    }
    cmd_free_list(c->cmds);
    if (c->idle_ev)
        event_free(c->idle_ev);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    pthread_mutex_destroy(&c->lock);
    free(c->vhost);
    free(c->user);
    free(c->pass);
    free(c->name);
    free(c);
}

static int conn_new(struct upstream *up, const struct upstream_login *login, struct conn **out)
{
    struct conn *c = calloc(1, sizeof *c);
    int r;

    if (!c)
        return -ENOMEM;
    c->up = up;
    c->wake_fd = -1;
    c->login_fd = -1;
    c->cmds_tail = &c->cmds;
    c->shutdown_cmd = (struct cmd){.kind = CMD_SHUTDOWN, .embedded = true};
    c->cap = up->cfg.channel_max ? up->cfg.channel_max : 65535;
    if (up->chan_cap && up->chan_cap < c->cap)
        c->cap = up->chan_cap; /* the broker's channel_max as of the last login */
    pthread_mutex_init(&c->lock, NULL);
    c->vhost = strdup(login->vhost ? login->vhost : "/");
    c->user = strdup(login->user ? login->user : "");
    c->pass = strdup(login->pass ? login->pass : "");
    c->name = login->conn_name ? strdup(login->conn_name) : NULL;
    if (!c->vhost || !c->user || !c->pass || (login->conn_name && !c->name)) {
        r = -ENOMEM;
        goto fail;
    }
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd == -1) {
        r = -errno;
        goto fail;
    }
    if (up->cfg.idle_close_ms && !(c->idle_ev = evtimer_new(up->base, on_conn_idle, c))) {
        r = -ENOMEM;
        goto fail;
    }
    r = pthread_create(&c->thread, NULL, conn_main, c);
    if (r != 0) {
        r = -r;
        goto fail;
    }
    c->next = up->conns;
    up->conns = c;
    *out = c;
    return 0;
fail:
    conn_free(c);
    return r;
}

static bool conn_matches(const struct conn *c, const struct upstream_login *login)
{
    return strcmp(c->vhost, login->vhost ? login->vhost : "/") == 0 && strcmp(c->user, login->user ? login->user : "") == 0 &&
           strcmp(c->pass, login->pass ? login->pass : "") == 0;
}

static void conn_unlink(struct upstream *up, struct conn *c)
{
    for (struct conn **pp = &up->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            return;
        }
    }
}

/* A live connection of this credential with a free channel, or a new one. */
static int conn_pick(struct upstream *up, const struct upstream_login *login, struct conn **out)
{
    for (struct conn *c = up->conns; c; c = c->next) {
        if (!c->dead && c->n_chans < c->cap && conn_matches(c, login)) {
            *out = c;
            return 0;
        }
    }
    return conn_new(up, login, out);
}

/*
 * RES_CONN_UP: `cap` is the connection's channel_max (the broker's, capped by the config). The first `cap` waiting
 * channels go to the thread, the others to another connection of the credential. If none can be opened (out of memory or
 * threads), a channel goes to this thread anyway, which fails it as it finds no free channel number: on_open(err).
 */
static void conn_on_up(struct upstream *up, struct conn *c, unsigned cap)
{
    struct upstream_login login = {c->vhost, c->user, c->pass, c->name};
    struct chan_list rest = c->waiting;
    unsigned sent = 0;

    c->live = true;
    c->cap = cap;
    up->chan_cap = cap;
    c->waiting = (struct chan_list){NULL, NULL};
    while (rest.head && sent < cap) {
        struct upstream_chan *ch = rest.head;
        chan_list_remove(&rest, ch);
        chan_dispatch(ch);
        sent++;
    }
    while (rest.head) {
        struct upstream_chan *ch = rest.head;
        struct conn *to;
        chan_list_remove(&rest, ch);
        c->n_chans--;
        if (conn_pick(up, &login, &to) < 0)
            to = c;
        chan_attach(to, ch);
    }
}

/* RES_CONN_DOWN: the connection is dead. Its waiting channels (if it never came up) go to its thread, which fails them
 * with the connection's error, before the SHUTDOWN that conn_retire() queues after them. */
static void conn_on_down(struct conn *c)
{
    c->live = false;
    while (c->waiting.head) {
        struct upstream_chan *ch = c->waiting.head;
        chan_list_remove(&c->waiting, ch);
        chan_dispatch(ch);
    }
    conn_retire(c);
}

static void on_conn_result(struct upstream *up, struct result *r)
{
    struct conn *c = r->conn;

    switch (r->kind) {
    case RES_CONN_UP:
        conn_on_up(up, c, r->num);
        break;
    case RES_CONN_DOWN:
        conn_on_down(c);
        break;
    case RES_CONN_EXIT:
        pthread_join(c->thread, NULL);
        conn_unlink(up, c);
        conn_free(c);
        break;
    case RES_BLOCKED:
        for (struct upstream_chan *ch = up->chans.head; ch; ch = ch->next)
            if (ch->conn == c && ch->opened && !ch->released && !ch->dead && ch->cb.on_blocked)
                ch->cb.on_blocked(ch->ud, r->flag);
        break;
    default:
        break;
    }
}

static void on_chan_result(struct upstream *up, struct result *r)
{
    struct upstream_chan *ch = r->ch;
    const struct upstream_error *err = r->has_err ? &r->err : NULL;

    if (r->kind == RES_CHAN_DONE) {
        struct conn *c = ch->conn;
        c->n_chans--;
        up->closing--;
        chan_list_remove(&up->chans, ch);
        free(ch);
        conn_idle_arm(c);
        return;
    }
    if (ch->released || (ch->dead && !(ch->open_failed_seen && r->kind == RES_DONE)))
        return;
    switch (r->kind) {
    case RES_OPEN:
        ch->opened = !err;
        ch->dead = err != NULL;
        ch->open_failed_seen = err != NULL;
        up->channels += !err;
        if (ch->cb.on_open)
            ch->cb.on_open(ch->ud, err);
        break;
    case RES_DONE:
        if (ch->cb.on_done)
            ch->cb.on_done(ch->ud, r->op_tag, err, r->str);
        break;
    case RES_DELIVERY:
        up->delivered++;
        if (ch->cb.on_delivery)
            ch->cb.on_delivery(ch->ud, &r->d);
        break;
    case RES_CANCEL:
        if (ch->cb.on_cancel)
            ch->cb.on_cancel(ch->ud, r->str);
        break;
    case RES_CLOSED:
        ch->dead = true;
        up->channels--;
        if (ch->cb.on_closed)
            ch->cb.on_closed(ch->ud, err);
        break;
    default:
        break;
    }
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *up = arg;
    struct result *list;
    uint64_t n;

    if (read(fd, &n, sizeof n) == -1) {
        /* EAGAIN: a previous round took the results already */
    }
    pthread_mutex_lock(&up->lock);
    list = up->res;
    up->res = NULL;
    up->res_tail = &up->res;
    up->res_signalled = false;
    pthread_mutex_unlock(&up->lock);
    while (list) {
        struct result *next = list->next;
        if (list->ch)
            on_chan_result(up, list);
        else
            on_conn_result(up, list);
        free(list);
        list = next;
    }
}

int upstream_new(struct event_base *base, const struct upstream_config *cfg, struct upstream **out)
{
    struct upstream *up = calloc(1, sizeof *up);
    int r = -ENOMEM;

    if (!up)
        return -ENOMEM;
    if (cfg->n_brokers == 0) {
        free(up);
        return -EINVAL;
    }
    up->base = base;
    up->cfg = *cfg;
    up->res_fd = -1;
    up->res_tail = &up->res;
    pthread_mutex_init(&up->lock, NULL);
    up->brokers = calloc(cfg->n_brokers, sizeof *up->brokers);
    if (!up->brokers)
        goto fail;
    for (size_t i = 0; i < cfg->n_brokers; i++)
        if (!(up->brokers[i] = strdup(cfg->brokers[i])))
            goto fail;
    up->cfg.brokers = (const char *const *)up->brokers;
    up->cfg.product = cfg->product ? strdup(cfg->product) : NULL;
    up->cfg.version = cfg->version ? strdup(cfg->version) : NULL;
    if ((cfg->product && !up->cfg.product) || (cfg->version && !up->cfg.version))
        goto fail;
    up->res_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (up->res_fd == -1) {
        r = -errno;
        goto fail;
    }
    up->res_ev = event_new(base, up->res_fd, EV_READ | EV_PERSIST, on_results, up);
    if (!up->res_ev || event_add(up->res_ev, NULL) != 0)
        goto fail;
    *out = up;
    return 0;
fail:
    upstream_free(up);
    return r;
}

void upstream_free(struct upstream *up)
{
    if (!up)
        return;
    for (struct conn *c = up->conns; c; c = c->next) {
        uint64_t one = 1;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        if (c->login_fd >= 0)
            shutdown(c->login_fd, SHUT_RDWR); /* the thread withdraws it under the lock before closing it */
        pthread_mutex_unlock(&c->lock);
        if (write(c->wake_fd, &one, sizeof one) == -1) {
            /* saturated: awake anyway */
        }
    }
    while (up->conns) {
        struct conn *c = up->conns;
        up->conns = c->next;
        pthread_join(c->thread, NULL);
        conn_free(c);
    }
    while (up->res) {
        struct result *next = up->res->next;
        free(up->res);
        up->res = next;
    }
    while (up->chans.head) {
        struct upstream_chan *ch = up->chans.head;
        chan_list_remove(&up->chans, ch);
        free(ch);
    }
    if (up->res_ev)
        event_free(up->res_ev);
    if (up->res_fd >= 0)
        close(up->res_fd);
    for (size_t i = 0; up->brokers && i < up->cfg.n_brokers; i++)
        free(up->brokers[i]);
    free(up->brokers);
    free((char *)up->cfg.product);
    free((char *)up->cfg.version);
    pthread_mutex_destroy(&up->lock);
    free(up);
}

int upstream_chan_open(struct upstream *up, const struct upstream_login *login, const struct upstream_chan_cb *cb, void *ud,
                       struct upstream_chan **out)
{
    struct upstream_chan *ch = calloc(1, sizeof *ch);
    struct conn *c = NULL;
    int r;

    if (!ch)
        return -ENOMEM;
    r = conn_pick(up, login, &c);
    if (r < 0) {
        free(ch);
        return r;
    }
    ch->up = up;
    ch->cb = *cb;
    ch->ud = ud;
    ch->ops_tail = &ch->ops;
    ch->confirms_tail = &ch->confirms;
    ch->open_cmd = (struct cmd){.kind = CMD_OPEN, .embedded = true, .ch = ch};
    ch->held_tail = &ch->open_cmd.next;
    ch->release_cmd = (struct cmd){.kind = CMD_RELEASE, .embedded = true, .ch = ch};
    chan_attach(c, ch);
    *out = ch;
    return 0;
}

void upstream_chan_release(struct upstream_chan *ch)
{
    if (!ch || ch->released)
        return;
    if (ch->waiting) {
        struct conn *c = ch->conn;
        chan_list_remove(&c->waiting, ch);
        chan_free_waiting(ch);
        c->n_chans--;
        conn_idle_arm(c);
        return;
    }
    ch->released = true;
    ch->up->closing++;
    if (ch->opened && !ch->dead)
        ch->up->channels--;
    conn_push(ch->conn, &ch->release_cmd);
}

/* Copies an operation and queues it; see the header for the return values. */
static int chan_queue(struct upstream_chan *ch, const struct cmd *tmpl)
{
    struct cmd *cmd;

    if (!ch || ch->released || ch->dead)
        return UPSTREAM_ERR_CLOSED;
    cmd = cmd_dup(tmpl);
    if (!cmd)
        return -ENOMEM;
    cmd->ch = ch;
    if (ch->waiting) {
        *ch->held_tail = cmd;
        ch->held_tail = &cmd->next;
    } else {
        conn_push(ch->conn, cmd);
    }
    return 0;
}

int upstream_chan_declare_queue(struct upstream_chan *ch, uint64_t op_tag, const char *name, unsigned flags,
                                const struct upstream_arg *args, size_t n_args)
{
    struct cmd t = {.kind = CMD_DECLARE, .op_tag = op_tag, .a = name ? name : "", .flags = flags, .args = args, .n_args = n_args};
    return chan_queue(ch, &t);
}

int upstream_chan_bind(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *exchange, const char *routing_key)
{
    struct cmd t = {.kind = CMD_BIND, .op_tag = op_tag, .a = queue, .b = exchange, .c = routing_key};
    return chan_queue(ch, &t);
}

int upstream_chan_delete_queue(struct upstream_chan *ch, uint64_t op_tag, const char *queue)
{
    struct cmd t = {.kind = CMD_DELETE, .op_tag = op_tag, .a = queue};
    return chan_queue(ch, &t);
}

int upstream_chan_consume(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *consumer_tag, unsigned prefetch,
                          bool no_ack, bool exclusive, const struct upstream_arg *args, size_t n_args)
{
    struct cmd t = {.kind = CMD_CONSUME,
                    .op_tag = op_tag,
                    .a = queue,
                    .b = consumer_tag,
                    .prefetch = prefetch,
                    .no_ack = no_ack,
                    .exclusive = exclusive,
                    .args = args,
                    .n_args = n_args};
    return chan_queue(ch, &t);
}

int upstream_chan_cancel(struct upstream_chan *ch, uint64_t op_tag, const char *consumer_tag)
{
    struct cmd t = {.kind = CMD_CANCEL, .op_tag = op_tag, .b = consumer_tag};
    return chan_queue(ch, &t);
}

int upstream_chan_publish(struct upstream_chan *ch, uint64_t op_tag, const char *exchange, const char *routing_key,
                          const struct upstream_props *props, const uint8_t *body, size_t body_len)
{
    struct cmd t = {.kind = CMD_PUBLISH,
                    .op_tag = op_tag,
                    .a = exchange ? exchange : "",
                    .b = routing_key ? routing_key : "",
                    .body = body,
                    .body_len = body_len};
    int r;

    if (props)
        t.props = *props;
    else
        t.props.priority = -1;
    r = chan_queue(ch, &t);
    if (r == 0)
        ch->up->published++;
    return r;
}

int upstream_chan_ack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple)
{
    struct cmd t = {.kind = CMD_ACK, .tag = delivery_tag, .multiple = multiple};
    return chan_queue(ch, &t);
}

int upstream_chan_nack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple, bool requeue)
{
    struct cmd t = {.kind = CMD_NACK, .tag = delivery_tag, .multiple = multiple, .requeue = requeue};
    return chan_queue(ch, &t);
}

void upstream_get_stats(const struct upstream *up, struct upstream_stats *out)
{
    memset(out, 0, sizeof *out);
    for (const struct conn *c = up->conns; c; c = c->next)
        out->connections += c->live;
    out->channels = up->channels;
    out->closing = up->closing;
    out->published = up->published;
    out->delivered = up->delivered;
}

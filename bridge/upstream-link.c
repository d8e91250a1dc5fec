/*
 * bridge/upstream-link.c — the connection side of the upstream (see bridge/upstream-int.h for the layout): one link per
 * AMQP connection, the only code of warren that calls rabbitmq-c and the only file that includes <amqp.h>.
 *
 * rabbitmq-c is blocking and not thread-safe per connection, so each amqp_connection_state_t has one owner at a time: a
 * thread of its own for the TCP connect and the login (upstream_link_main(), which ends with CONN_UP), then the loop,
 * which runs the link in rounds that never wait (upstream_link_round(): commands, frames, heartbeats), then, for a
 * connection closed on purpose, a thread again for connection.close (upstream_link_close_main()). The link's state is a
 * struct upstream_link and, per channel, a struct upstream_link_chan; the loop's side (upstream.c) never reads either.
 * The link hears from it only through its inbox (commands) and speaks only through results: the outbox from a thread,
 * the loop's own list (link->local) once adopted.
 *
 * Every command names its channel; the link keeps a FIFO of pending operations per channel and runs at most one
 * synchronous method (queue.declare, bind, consume...) per channel at a time, so replies match requests in order (AMQP
 * 0-9-1 §2.3.5.2: replies on a channel come in request order) while other channels go on. RPCs are asynchronous
 * (the method queued, its reply matched in the frame loop), never rabbitmq-c's synchronous calls: those would queue other
 * channels' frames inside rabbitmq-c and block this connection's other channels. Content (basic.deliver + header + body
 * frames) is assembled per channel here, because frames of different channels interleave.
 *
 * A channel's thread-side half is handed over in its OPEN command and freed here when the channel is done: released by
 * the loop (RELEASE is the last command naming it) and closed at the broker, or released after it died. Its CHAN_DONE
 * result, preallocated, is the last result naming the channel. When the connection dies the link reports CONN_DOWN, fails
 * every channel and reports CONN_EXIT; the loop serves the releases still to come (upstream_link_run_dead()). After the
 * loop's SHUTDOWN of a live connection, the link ends once every channel is done (closing the connection, on a thread)
 * and reports CONN_EXIT.
 *
 * A failed send or read of the socket is the connection's: the link fails (link_failed()) and tears the connection down
 * at the end of the round (UPSTREAM_LINK_FAILED). An operation that cannot be encoded (a property longer than a shortstr, a table
 * bigger than frame_max: what one session sent) is that operation's and its channel's alone (op_failed()): the channel fails with a
 * channel-level error, is closed at the broker (chan_abort()) and the connection's other channels carry on. Nothing of
 * such an operation may reach the socket first: its frames are queued in link->out, which is sent only between
 * operations, and taken back when one of them fails to encode (op_publish()). The socket's I/O after the login is the
 * link's own ("The wire"): one send() per round for everything the round queued, one recv() when the loop saw the socket
 * readable, never a wait on a full socket.
 */
#include "bridge/upstream-int.h"

#include "bridge/clock.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifdef WARREN_RABBITMQ_C_NEW_HEADERS
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#define LINK_READ_BUDGET     256       /* frames read per round before commands are looked at again */
#define LINK_DEFAULT_FRAME   131072    /* AMQP frame_max when the config says 0 */
#define LINK_CLOSE_TIMEOUT_S 2         /* connection.close on the way out */
#define LINK_BODY_CHUNK      65536     /* most bytes of a body frame (any size up to frame_max is valid): see publish_body() */
#define LINK_SNDBUF          (1 << 20) /* SO_SNDBUF of the socket (see link_up()) */
#define LINK_POOL_MAX        8         /* clean channels kept open per connection for the next sessions */

/* ---------------------------------------------------------------------------------------------------------------------
 * Types
 */

enum link_state {
    LINK_CONNECTING = 0, /* connecting and logging in (blocking, cut by upstream_inbox_stop()) */
    LINK_OPEN = 1,
    LINK_DEAD = 2, /* lost, refused or unreachable: every channel fails; releases are still served */
};

enum link_chan_state {
    LCH_NEW = 0,       /* given to the link, no channel.open sent */
    LCH_OPENING = 1,   /* channel.open and confirm.select sent */
    LCH_SELECTING = 2, /* channel.open-ok came; confirm.select-ok is next */
    LCH_OPEN = 3,      /* usable */
    LCH_CLOSING = 4,   /* released: channel.close sent */
    LCH_DEAD = 5,      /* failed or closed by the broker; waiting for the release */
    LCH_ABORTING = 6,  /* failed here (an operation could not be encoded): reported, channel.close sent, the slot kept until
                          the broker's close-ok */
    LCH_POOLED = 7,    /* released clean and kept open at the broker for the next channel (see "The channel pool") */
};

/* A publish awaiting the broker's confirm. */
struct confirm {
    struct list link;
    uint64_t seq;
    uint64_t op_tag;
};

/* A queue deleted when the channel is released (UPSTREAM_Q_OWNED). */
struct owned_queue {
    struct list link;
    char name[];
};

struct upstream_link_chan {
    struct upstream_chan *owner; /* the loop's handle, stamped on results */
    struct list link;            /* in link->chans, from its OPEN to its CHAN_DONE */
    enum link_chan_state st;
    uint16_t id;
    bool open_failed;                  /* died before it was open: later operations fail with fail_err */
    bool released;                     /* LCH_ABORTING: the loop's RELEASE came; done at the close-ok */
    struct upstream_error fail_err;    /* why it died */
    char fail_text[UPSTREAM_TEXT_MAX]; /* fail_err.text */
    struct list ops;                   /* upstream_cmds waiting for the channel to be open and rpc to be answered */
    struct upstream_cmd *rpc;          /* the synchronous method waiting for its reply */
    bool rpc_qos_ok;                   /* rpc is a CONSUME whose basic.qos-ok came: basic.consume-ok is next */
    bool lost;                         /* a result of this open channel was lost (out of memory): abort it (link_sweep) */
    bool dirty;                        /* an operation left what a next session could observe: never pooled */
    uint64_t pub_seq;                  /* basic.publish count, for confirms */
    struct list confirms;              /* struct confirm, by seq */
    struct list owned;                 /* struct owned_queue, newest first */
    struct upstream_cmd *pub;          /* the publish whose body is being written (method and header sent), or NULL */
    size_t pub_off;                    /* bytes of its body written */
    bool release_wait;                 /* the loop's RELEASE came while a body was being written: released after it */
    struct {
        bool want_header;                    /* basic.deliver/return seen, header frame next */
        bool discard;                        /* basic.return, or a delivery for a channel no longer open */
        const amqp_basic_deliver_t *deliver; /* in rabbitmq-c's channel pool, kept until the header frame */
        struct upstream_res *res;            /* the delivery being filled */
        uint8_t *body;                       /* res's body, writable */
        uint64_t left;
        size_t got;
    } in;
    /* Terminal results, preallocated (see upstream-int.h); each is used once at most, and set to NULL when sent. */
    struct upstream_res *res_open; /* RES_OPEN, success */
    struct upstream_res *res_end;  /* RES_OPEN with an error, or RES_CLOSED */
    struct upstream_res *res_done; /* RES_CHAN_DONE */
};

struct upstream_link {
    const struct upstream_config *cfg;
    struct upstream_backoff *backoff;
    struct upstream_inbox *inbox;
    struct upstream_outbox *outbox;
    struct upstream_conn *owner;
    const char *vhost, *user, *pass, *name; /* copies, in the link's allocation; name may be NULL */
    enum link_state st;
    amqp_connection_state_t amqp;
    struct upstream_link_chan **slots; /* by channel number, chan_max + 1 */
    unsigned chan_max;
    struct list chans; /* every channel given to the link and not done, newest first */
    struct list pool;  /* LCH_POOLED channels, open at the broker, no loop handle: at most LINK_POOL_MAX */
    unsigned n_pool;
    bool shutdown;     /* SHUTDOWN came: exit once chans is empty */
    bool failed;       /* a send or read failed: die at the top of the loop */
    bool blocked;      /* connection.blocked is in effect: publishes are held in their channels' queues */
    bool blocked_sent; /* what the loop was last told (a BLOCKED result that failed to allocate is retried) */
    bool stalled;      /* a channel's queue stopped at a held publish or at a full socket: pump again (link_sweep) */
    bool want_out;     /* it stopped at a full socket: a round when it is writable */
    bool lost;         /* some channel is `lost` */
    uint8_t *scratch;  /* frame_max bytes: methods and a publish's content header are encoded here first */
    size_t scratch_len;
    /* The socket, once logged in, is read and written here, not by rabbitmq-c (see "The wire"). */
    uint8_t *out; /* frames to send: [out_off, out_len) */
    size_t out_off, out_len, out_cap;
    bool out_full; /* the last flush left bytes the socket had no room for: wait until it is writable */
    uint8_t *in;   /* bytes read: [in_off, in_len) not yet given to amqp_handle_input() */
    size_t in_off, in_len;
    bool readable;    /* the loop saw the socket readable, or the last recv filled the buffer: recv once more */
    uint64_t sent_ms; /* when bytes last went out (heartbeats) */
    uint64_t recv_ms; /* when bytes last came in (the broker's heartbeats) */
    struct upstream_error err;
    char err_text[UPSTREAM_TEXT_MAX];
    struct upstream_res *res_up, *res_down, *res_exit; /* preallocated */
    struct list *local; /* once the loop drives the link (upstream_link_adopt()): its results go here, not to the outbox */
};

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
 * Results
 */

/* Lays out a result's trailing data: measuring with r == NULL, then copying. */
static struct upstream_bump res_bump(struct upstream_res *r)
{
    return (struct upstream_bump){(char *)r, offsetof(struct upstream_res, text)};
}

static const char *bump_bytes(struct upstream_bump *b, amqp_bytes_t s)
{
    return upstream_bump_mem(b, s.bytes, s.len);
}

static void emit(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_res *r)
{
    r->conn = link->owner;
    r->ch = ch ? ch->owner : NULL;
    if (link->local)
        list_link_tail(link->local, &r->link); /* the loop's own list: no lock, no wake-up */
    else
        upstream_outbox_push(link->outbox, r);
}

/*
 * A result of an open channel could not be allocated: its session would wait for it forever (an operation never done, a
 * consumer cancelled unseen, a delivery unacknowledged), so the channel is aborted at the top of the next round
 * (link_sweep(), not here: callers may be walking the channel's lists). Its end (on_closed, preallocated) then tells the
 * session, and the broker requeues what it had delivered on it. A channel already failing needs nothing more.
 */
static void chan_lost(struct upstream_link *link, struct upstream_link_chan *ch)
{
    if (ch && ch->st == LCH_OPEN) {
        ch->lost = true;
        link->lost = true;
    }
}

/* An operation's completion. When out of memory the channel is given up (chan_lost()): the channel's end (on_closed, or
 * the failed on_open before it) tells the session that whatever did not complete failed. */
static void emit_done(struct upstream_link *link, struct upstream_link_chan *ch, uint64_t op_tag, const struct upstream_error *err,
                      const char *queue)
{
    struct upstream_bump b = res_bump(NULL);
    struct upstream_res *r;

    if (err)
        upstream_bump_str(&b, err->text);
    upstream_bump_str(&b, queue);
    r = upstream_res_new(link->outbox, b.off - offsetof(struct upstream_res, text));
    if (!r) {
        chan_lost(link, ch);
        return;
    }
    b = res_bump(r);
    r->kind = UPSTREAM_RES_DONE;
    r->u.done.op_tag = op_tag;
    if (err) {
        r->has_err = true;
        r->err = *err;
        r->err.text = upstream_bump_str(&b, err->text);
    }
    r->u.done.queue = upstream_bump_str(&b, queue);
    emit(link, ch, r);
}

static void emit_cancel(struct upstream_link *link, struct upstream_link_chan *ch, amqp_bytes_t tag)
{
    struct upstream_bump b = res_bump(NULL);
    struct upstream_res *r;

    bump_bytes(&b, tag);
    r = upstream_res_new(link->outbox, b.off - offsetof(struct upstream_res, text));
    if (!r) {
        chan_lost(link, ch);
        return;
    }
    b = res_bump(r);
    r->kind = UPSTREAM_RES_CANCEL;
    r->u.consumer_tag = bump_bytes(&b, tag);
    emit(link, ch, r);
}

/* Tells the loop whether the broker blocks publishers, when that changed since it was last told. A result that cannot be
 * allocated is retried at the next round (link_sweep()): an unblocked that is lost would pause its sessions for good. */
static void emit_blocked(struct upstream_link *link)
{
    struct upstream_res *r;

    if (link->blocked == link->blocked_sent || !(r = upstream_res_new(link->outbox, 0)))
        return;
    r->kind = UPSTREAM_RES_BLOCKED;
    r->u.blocked = link->blocked_sent = link->blocked;
    emit(link, NULL, r);
}

/* Sends one of the channel's preallocated results (*slot, used once). */
static void emit_terminal(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_res **slot,
                          enum upstream_res_kind kind, const struct upstream_error *err)
{
    struct upstream_res *r = *slot;

    assert(r);
    *slot = NULL;
    r->kind = kind;
    upstream_res_set_err(r, err);
    emit(link, ch, r);
}

/* Sends one of the link's preallocated results (*slot, used once). */
static void emit_conn(struct upstream_link *link, struct upstream_res **slot)
{
    struct upstream_res *r = *slot;

    assert(r);
    *slot = NULL;
    emit(link, NULL, r);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Conversions between rabbitmq-c and upstream.h types
 */

static amqp_bytes_t bytes_of(const char *s)
{
    return s ? amqp_cstring_bytes(s) : amqp_empty_bytes;
}

/* Builds a field table from upstream_args; t->entries must be freed by the caller. */
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
        case UPSTREAM_ARG_TIMESTAMP:
            e[i].value.kind = AMQP_FIELD_KIND_TIMESTAMP;
            e[i].value.value.u64 = (uint64_t)args[i].num;
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

static void props_from_amqp(struct upstream_bump *b, struct upstream_props *dst, const amqp_basic_properties_t *p)
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
        h = upstream_bump_take(b, (size_t)p->headers.num_entries * sizeof *h, alignof(struct upstream_header));
        for (int i = 0; i < p->headers.num_entries; i++) {
            const amqp_table_entry_t *e = &p->headers.entries[i];
            char num[32];
            const void *v;
            size_t vlen;
            if (!field_to_text(&e->value, num, sizeof num, &v, &vlen))
                continue;
            const char *name = bump_bytes(b, e->key);
            const char *value = upstream_bump_mem(b, v, vlen);
            if (h)
                h[n] = (struct upstream_header){name, e->key.len, value, vlen};
            n++;
        }
    }
    dst->headers = n ? h : NULL;
    dst->n_headers = n;
}

/* The delivery result: struct, strings, headers and room for the body in one allocation. Returns the body's room. */
static uint8_t *delivery_fill(struct upstream_bump *b, struct upstream_res *r, const amqp_basic_deliver_t *m,
                              const amqp_basic_properties_t *p, size_t body_len)
{
    struct upstream_delivery *d = &r->u.delivery;
    uint8_t *body;

    r->kind = UPSTREAM_RES_DELIVERY;
    d->consumer_tag = bump_bytes(b, m->consumer_tag);
    d->delivery_tag = m->delivery_tag;
    d->redelivered = m->redelivered != 0;
    d->exchange = bump_bytes(b, m->exchange);
    d->routing_key = bump_bytes(b, m->routing_key);
    props_from_amqp(b, &d->props, p);
    body = upstream_bump_take(b, body_len ? body_len : 1, 1);
    d->body = body;
    d->body_len = body_len;
    return body;
}

/* Starts assembling a delivery whose body is `body_len` bytes; false when out of memory. */
static bool delivery_start(struct upstream_link *link, struct upstream_link_chan *ch, const amqp_basic_properties_t *p,
                           uint64_t body_len)
{
    struct upstream_res scratch;
    struct upstream_bump b = res_bump(NULL);
    struct upstream_res *r;

    if (body_len > SIZE_MAX / 2)
        return false;
    memset(&scratch, 0, sizeof scratch);
    delivery_fill(&b, &scratch, ch->in.deliver, p, (size_t)body_len);
    r = upstream_res_new(link->outbox, b.off - offsetof(struct upstream_res, text));
    if (!r)
        return false;
    b = res_bump(r);
    ch->in.body = delivery_fill(&b, r, ch->in.deliver, p, (size_t)body_len);
    ch->in.res = r;
    return true;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Sending, and what a failure means
 */

static void link_set_err(struct upstream_link *link, enum upstream_err kind, int code, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void link_set_err(struct upstream_link *link, enum upstream_err kind, int code, const char *name, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(link->err_text, sizeof link->err_text, fmt, ap);
    va_end(ap);
    link->err = (struct upstream_error){kind, code, name, link->err_text};
}

/* A rabbitmq-c call failed on the socket: the link loop tears the connection down before doing anything else. */
static void link_failed(struct upstream_link *link, int status)
{
    if (link->failed)
        return;
    link->failed = true;
    if (upstream_inbox_was_cut(link->inbox))
        link_set_err(link, UPSTREAM_ERR_CONNECTION, 0, "connection_lost",
                     "broker connection lost: the broker read nothing of it for over %u ms (amqp_write_timeout_ms)",
                     link->cfg->write_timeout_ms);
    else
        link_set_err(link, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "broker connection lost: %s", amqp_error_string2(status));
}

/*
 * Whether `status` says that rabbitmq-c could not encode what it was given (checked before anything was written: a
 * method or a content header is encoded whole into the outbound buffer, then sent), as opposed to a socket, timer or
 * memory failure, after which the connection's state is unknown.
 */
static bool status_is_encoding(int status)
{
    switch (status) {
    case AMQP_STATUS_BAD_AMQP_DATA:     /* a shortstr over 255 bytes, a field it cannot encode */
    case AMQP_STATUS_TABLE_TOO_BIG:     /* a table (or the whole frame) over frame_max */
    case AMQP_STATUS_INVALID_PARAMETER: /* a value the call refuses */
    case AMQP_STATUS_UNKNOWN_CLASS:
    case AMQP_STATUS_UNKNOWN_METHOD:
    case AMQP_STATUS_UNSUPPORTED:
        return true;
    default:
        return false;
    }
}

static void chan_abort(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_error *err);

/*
 * The rabbitmq-c call that carries `op` on `ch` failed with `status`, or publish_encodable() refused it. An encoding
 * error is this operation's: it fails, and its channel with it (a channel-level error for its session; channel.close to
 * the broker), while the connection and its other channels carry on. Anything else is the socket's: the connection
 * fails. Either way the operation's on_done says so now (it is in none of the channel's lists any more).
 */
static void op_failed(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_cmd *op, int status)
{
    struct upstream_error err;
    char text[UPSTREAM_TEXT_MAX];

    if (!status_is_encoding(status)) {
        link_failed(link, status);
        if (upstream_cmd_has_completion(op->kind))
            emit_done(link, ch, op->op_tag, &link->err, NULL);
        return;
    }
    snprintf(text, sizeof text, "AMQP cannot carry this %s (%s); the channel was closed",
             op->kind == UPSTREAM_CMD_PUBLISH ? "message" : "operation", amqp_error_string2(status));
    err = (struct upstream_error){UPSTREAM_ERR_CHANNEL, 0, "frame_error", text};
    if (upstream_cmd_has_completion(op->kind))
        emit_done(link, ch, op->op_tag, &err, NULL);
    chan_abort(link, ch, &err);
}

/*
 * `op` could not be run for want of memory. Its on_done says so, and its channel fails with it (chan_abort()): on_done
 * with any error but a nack means the channel died, and the session waits for on_closed (bridge/upstream.h), which a
 * channel that carried on would never send.
 */
static void op_nomem(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_cmd *op)
{
    struct upstream_error err = {UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory"};

    emit_done(link, ch, op->op_tag, &err, NULL);
    chan_abort(link, ch, &err);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * The wire
 *
 * Once logged in, the link does the socket's I/O itself and uses rabbitmq-c only as the codec (amqp_encode_method(),
 * amqp_encode_properties(), amqp_handle_input()): rabbitmq-c's send path writes one frame per send() (a publish is three)
 * and waits for room without a deadline, its read path ends every round with a recv() that fails with EAGAIN and a
 * poll(). Here frames are appended to link->out as operations run and go out in one send() per round (link_flush(),
 * at the round's end, and on the way when link_out_big()), never waiting: what the socket has no room for stays in
 * link->out (out_full), operations that would add to it wait in their channel's queue (op_may_write()), and the loop
 * waits for the socket to be writable while it goes on reading (UPSTREAM_LINK_WANT_OUT). Reading is one recv() when the
 * loop saw the socket readable (again at once only after a recv that filled the buffer), whose bytes are decoded a frame at a time
 * by amqp_handle_input(). Heartbeats are the link's too (link_heartbeat()): one is queued when nothing went out for half the
 * interval, and a broker silent for two intervals fails the connection, as rabbitmq-c would. rabbitmq-c still owns the socket for
 * the login and for the connection.close on the way out (link_finish(), only with nothing of ours half-sent).
 */

#define LINK_OUT_FLUSH (64 * 1024)       /* link->out pending past this is sent on the way, not only at the end of a round */
#define LINK_OUT_MAX   (8 * 1024 * 1024) /* link->out may not grow past this (a broker that sends but does not read) */
#define LINK_IN_BUF    (64 * 1024)       /* bytes read per recv() */
#define FRAME_OVERHEAD 8                 /* type (1), channel (2), size (4) ... frame end (1) */

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p = put_u16(p, (uint16_t)(v >> 16));
    return put_u16(p, (uint16_t)v);
}

/* Room for `n` more bytes at the end of link->out; NULL (and the connection failed) past LINK_OUT_MAX or out of memory. */
static uint8_t *out_reserve(struct upstream_link *link, size_t n)
{
    size_t pending = link->out_len - link->out_off;

    if (link->out_off && link->out_len + n > link->out_cap) {
        memmove(link->out, link->out + link->out_off, pending);
        link->out_off = 0;
        link->out_len = pending;
    }
    if (link->out_len + n > link->out_cap) {
        size_t cap = link->out_cap ? link->out_cap : 16384;
        uint8_t *p;
        while (cap < link->out_len + n)
            cap *= 2;
        if (pending + n > LINK_OUT_MAX || !(p = realloc(link->out, cap))) {
            link_failed(link, pending + n > LINK_OUT_MAX ? AMQP_STATUS_SOCKET_ERROR : AMQP_STATUS_NO_MEMORY);
            return NULL;
        }
        link->out = p;
        link->out_cap = cap;
    }
    return link->out + link->out_len;
}

/* Appends a frame of `type` whose payload is `a` then `b` (either may be empty). */
static bool out_frame(struct upstream_link *link, uint8_t type, uint16_t channel, const void *a, size_t a_len, const void *b,
                      size_t b_len)
{
    uint8_t *p = out_reserve(link, a_len + b_len + FRAME_OVERHEAD);

    if (!p)
        return false;
    *p++ = type;
    p = put_u16(p, channel);
    p = put_u32(p, (uint32_t)(a_len + b_len));
    if (a_len)
        memcpy(p, a, a_len);
    if (b_len)
        memcpy(p + a_len, b, b_len);
    p[a_len + b_len] = AMQP_FRAME_END;
    link->out_len += a_len + b_len + FRAME_OVERHEAD;
    return true;
}

/* Appends a method frame. AMQP_STATUS_OK, or the encoding's status (nothing appended), or a socket/memory status (the
 * connection failed). */
static int out_method(struct upstream_link *link, uint16_t channel, amqp_method_number_t id, void *method)
{
    size_t room = link->scratch_len > FRAME_OVERHEAD + 4 ? link->scratch_len - FRAME_OVERHEAD - 4 : 0;
    int n = amqp_encode_method(id, method, (amqp_bytes_t){room, link->scratch + 4});

    if (n < 0)
        return n;
    put_u32(link->scratch, id);
    return out_frame(link, AMQP_FRAME_METHOD, channel, link->scratch, (size_t)n + 4, NULL, 0) ? AMQP_STATUS_OK
                                                                                              : AMQP_STATUS_SOCKET_ERROR;
}

/* Sends what link->out holds, as much as the socket takes now; the rest waits until it is writable (out_full). */
static void link_flush(struct upstream_link *link)
{
    int fd = link->amqp ? amqp_get_sockfd(link->amqp) : -1;

    while (link->out_off < link->out_len && !link->failed) {
        ssize_t n = send(fd, link->out + link->out_off, link->out_len - link->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            link->out_off += (size_t)n;
            link->sent_ms = clock_now_ms();
        } else if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            link->out_full = link->want_out = true;
            return;
        } else if (errno != EINTR) {
            link_failed(link, AMQP_STATUS_SOCKET_ERROR);
        }
    }
    link->out_off = link->out_len = 0;
    link->out_full = false;
}

/* Whether link->out holds enough to send on the way (between operations and body frames) instead of at the round's end. */
static void link_out_big(struct upstream_link *link)
{
    if (link->out_len - link->out_off >= LINK_OUT_FLUSH && !link->out_full)
        link_flush(link);
}

/* Queues a heartbeat when nothing went out for half the interval; fails the connection when nothing came in for two. */
static void link_heartbeat(struct upstream_link *link, uint64_t now)
{
    uint64_t hb_ms = (uint64_t)amqp_get_heartbeat(link->amqp) * 1000;

    if (!hb_ms)
        return;
    if (now - link->recv_ms >= 2 * hb_ms) {
        link_failed(link, AMQP_STATUS_HEARTBEAT_TIMEOUT);
        return;
    }
    if (now - link->sent_ms >= hb_ms / 2 && link->out_len == link->out_off)
        out_frame(link, AMQP_FRAME_HEARTBEAT, 0, NULL, 0, NULL, 0);
}

static bool link_send(struct upstream_link *link, struct upstream_link_chan *ch, amqp_method_number_t id, void *method)
{
    int status = out_method(link, ch ? ch->id : 0, id, method);

    if (status != AMQP_STATUS_OK)
        link_failed(link, status);
    return status == AMQP_STATUS_OK;
}

/* Sends a method that carries `op`. */
static bool op_send(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_cmd *op,
                    amqp_method_number_t id, void *method)
{
    int status = out_method(link, ch->id, id, method);

    if (status != AMQP_STATUS_OK)
        op_failed(link, ch, op, status);
    return status == AMQP_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Channels
 */

int upstream_link_chan_new(struct upstream_chan *owner, struct upstream_link_chan **out)
{
    struct upstream_link_chan *ch = calloc(1, sizeof *ch);

    if (!ch)
        return -ENOMEM;
    ch->owner = owner;
    list_init(&ch->ops);
    list_init(&ch->confirms);
    list_init(&ch->owned);
    ch->res_open = upstream_res_prealloc(UPSTREAM_RES_OPEN, false);
    ch->res_end = upstream_res_prealloc(UPSTREAM_RES_CLOSED, true);
    ch->res_done = upstream_res_prealloc(UPSTREAM_RES_CHAN_DONE, false);
    if (!ch->res_open || !ch->res_end || !ch->res_done) {
        upstream_link_chan_free(ch);
        return -ENOMEM;
    }
    *out = ch;
    return 0;
}

/* Frees what the channel holds while it lives: operations, confirms, owned queue names, a delivery being assembled. */
static void chan_free_state(struct upstream_link_chan *ch)
{
    struct confirm *k, *knext;
    struct owned_queue *q, *qnext;

    upstream_cmd_free(ch->rpc);
    ch->rpc = NULL;
    upstream_cmd_free(ch->pub);
    ch->pub = NULL;
    upstream_cmd_free_list(&ch->ops);
    LIST_FOR_EACH_ENTRY_SAFE (k, knext, &ch->confirms, link) {
        list_unlink(&k->link);
        free(k);
    }
    LIST_FOR_EACH_ENTRY_SAFE (q, qnext, &ch->owned, link) {
        list_unlink(&q->link);
        free(q);
    }
    free(ch->in.res);
    ch->in.res = NULL;
    ch->in.want_header = false;
    ch->in.left = 0;
}

void upstream_link_chan_free(struct upstream_link_chan *ch)
{
    if (!ch)
        return;
    chan_free_state(ch);
    free(ch->res_open);
    free(ch->res_end);
    free(ch->res_done);
    free(ch);
}

static void chan_unslot(struct upstream_link *link, struct upstream_link_chan *ch)
{
    if (ch->id && link->slots && link->slots[ch->id] == ch)
        link->slots[ch->id] = NULL;
    ch->id = 0;
}

/* Fails every pending operation with `err` (ack/nack have no completion to fail). */
static void chan_fail_ops(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_error *err)
{
    struct confirm *k;
    struct upstream_cmd *op;

    if (ch->rpc)
        emit_done(link, ch, ch->rpc->op_tag, err, NULL);
    LIST_FOR_EACH_ENTRY (k, &ch->confirms, link) {
        emit_done(link, ch, k->op_tag, err, NULL);
    }
    LIST_FOR_EACH_ENTRY (op, &ch->ops, link) {
        if (upstream_cmd_has_completion(op->kind))
            emit_done(link, ch, op->op_tag, err, NULL);
    }
}

/* Reports the death of `ch` to the loop (its open, its pending operations, its end) and drops what it held. */
static void chan_report_failure(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_error *err)
{
    bool was_open = ch->st == LCH_OPEN;

    /* A failed open comes first, then the failures of the operations queued behind it (and of those queued later, see
     * link_on_cmd). A closed channel reports its pending operations first, because nothing follows on_closed. */
    ch->open_failed = !was_open;
    ch->fail_err = *err;
    snprintf(ch->fail_text, sizeof ch->fail_text, "%s", err->text ? err->text : "");
    ch->fail_err.text = ch->fail_text;
    if (!was_open)
        emit_terminal(link, ch, &ch->res_end, UPSTREAM_RES_OPEN, err);
    chan_fail_ops(link, ch, err);
    if (was_open)
        emit_terminal(link, ch, &ch->res_end, UPSTREAM_RES_CLOSED, err);
}

static void chan_done(struct upstream_link *link, struct upstream_link_chan *ch);

/* The channel died (broker channel.close, connection lost, open refused): report it and wait for the release. */
static void chan_fail(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_error *err)
{
    if (ch->st >= LCH_CLOSING)
        return;
    chan_report_failure(link, ch, err);
    chan_free_state(ch);
    chan_unslot(link, ch);
    ch->st = LCH_DEAD;
    if (ch->release_wait) /* released while its body was being written: done now */
        chan_done(link, ch);
}

/* The channel is released and closed: its last result goes to the loop, which frees its handle; this half goes now. */
static void chan_done(struct upstream_link *link, struct upstream_link_chan *ch)
{
    chan_unslot(link, ch);
    list_unlink(&ch->link);
    emit_terminal(link, ch, &ch->res_done, UPSTREAM_RES_CHAN_DONE, NULL);
    upstream_link_chan_free(ch);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * The channel pool
 *
 * A session's CONNECT costs channel.open and confirm.select, its DISCONNECT channel.close: broker round trips and a
 * channel process created and torn down at the broker each time. So a released channel that carries nothing a next
 * session could observe is kept open (LCH_POOLED, at most LINK_POOL_MAX per connection, within channel_max: a pooled
 * channel keeps its number) and given to the next channel opened on the connection, which is then open at once. The
 * connection is one credential's (the loop never gives it another's session), so the broker checked that credential for
 * the channel as it would for a new one. Pooled is only a channel (chan_poolable()) whose every publish was confirmed
 * (a publish the broker refuses ends the channel before its confirm), with no operation pending or queued, that never
 * consumed, cancelled or acknowledged (consumers, basic.qos and deliveries are channel state), never declared a queue it
 * owns (deleted at the release) or sent anything nowait (whose failure would close the channel later): what it did was
 * publish and synchronous declare, bind and delete, all answered. What the broker may still say on such a channel is a
 * channel.close of its own, which drops it from the pool. The pool goes with the connection (its close closes them).
 */

/* Whether an operation leaves what a next session on the channel could observe (see above). */
static bool op_dirties(const struct upstream_cmd *op)
{
    switch (op->kind) {
    case UPSTREAM_CMD_PUBLISH:
    case UPSTREAM_CMD_BIND:
    case UPSTREAM_CMD_DELETE:
        return false;
    case UPSTREAM_CMD_DECLARE:
        return (op->u.declare.flags & (UPSTREAM_Q_NOWAIT | UPSTREAM_Q_OWNED)) != 0;
    default:
        return true;
    }
}

static bool chan_poolable(const struct upstream_link *link, const struct upstream_link_chan *ch)
{
    return ch->st == LCH_OPEN && !ch->dirty && !ch->lost && !ch->rpc && !ch->pub && list_is_empty(&ch->ops) &&
           list_is_empty(&ch->confirms) && list_is_empty(&ch->owned) && !ch->in.want_header && !ch->in.res &&
           link->n_pool < LINK_POOL_MAX && !link->shutdown && !link->failed;
}

/* The release of a poolable channel: its session is done with it (CHAN_DONE: the loop frees its handle), the channel
 * stays open at the broker, under its number, for the next one. */
static void chan_pool(struct upstream_link *link, struct upstream_link_chan *ch)
{
    list_unlink(&ch->link);
    emit_terminal(link, ch, &ch->res_done, UPSTREAM_RES_CHAN_DONE, NULL);
    ch->owner = NULL; /* freed by the loop from now on: nothing may name it */
    ch->st = LCH_POOLED;
    list_link_front(&link->pool, &ch->link);
    link->n_pool++;
}

/* Drops a pooled channel (the broker closed it, or the connection goes). */
static void pool_drop(struct upstream_link *link, struct upstream_link_chan *ch)
{
    chan_unslot(link, ch);
    list_unlink(&ch->link);
    link->n_pool--;
    upstream_link_chan_free(ch);
}

static void pool_clear(struct upstream_link *link)
{
    struct upstream_link_chan *ch, *next;

    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->pool, link) {
        pool_drop(link, ch);
    }
}

/* A new channel takes a pooled one's number and state at the broker (open, confirm mode, its publish count): open now. */
static bool chan_reuse(struct upstream_link *link, struct upstream_link_chan *ch)
{
    struct upstream_link_chan *old = list_first_entry(&link->pool, struct upstream_link_chan, link);

    if (!old)
        return false;
    ch->id = old->id;
    ch->pub_seq = old->pub_seq;
    link->slots[ch->id] = ch;
    old->id = 0;
    list_unlink(&old->link);
    link->n_pool--;
    upstream_link_chan_free(old);
    ch->st = LCH_OPEN;
    emit_terminal(link, ch, &ch->res_open, UPSTREAM_RES_OPEN, NULL);
    return true;
}

static void chan_start(struct upstream_link *link, struct upstream_link_chan *ch)
{
    amqp_channel_open_t open = {amqp_empty_bytes};
    unsigned id;

    if (chan_reuse(link, ch))
        return;
    for (id = 1; id <= link->chan_max && link->slots[id]; id++)
        ;
    if (id > link->chan_max) {
        struct upstream_error err = {UPSTREAM_ERR_CHANNEL, 0, "channel_max",
                                     "no free channel on the broker connection (channel_max reached)"};
        chan_fail(link, ch, &err);
        return;
    }
    link->slots[id] = ch;
    ch->id = (uint16_t)id;
    ch->st = LCH_OPENING;
    /* confirm.select goes with channel.open (the broker runs a channel's methods in order): one round trip, not two. */
    if (link_send(link, ch, AMQP_CHANNEL_OPEN_METHOD, &open))
        link_send(link, ch, AMQP_CONFIRM_SELECT_METHOD, &(amqp_confirm_select_t){0});
}

/*
 * The end of an open channel at the broker, for a release and an abort alike: the deletes of its owned queues (nowait:
 * queue.delete is idempotent in RabbitMQ, and the broker processes the channel.close right after them in order), then
 * channel.close with `why`; the channel goes to state `st` until the close-ok.
 */
static void chan_close_at_broker(struct upstream_link *link, struct upstream_link_chan *ch, const char *why,
                                 enum link_chan_state st)
{
    amqp_channel_close_t close = {AMQP_REPLY_SUCCESS, amqp_cstring_bytes(why), 0, 0};
    struct owned_queue *q;

    LIST_FOR_EACH_ENTRY (q, &ch->owned, link) {
        amqp_queue_delete_t del = {0, amqp_cstring_bytes(q->name), 0, 0, 1};
        if (link->failed)
            break;
        link_send(link, ch, AMQP_QUEUE_DELETE_METHOD, &del);
    }
    chan_free_state(ch);
    ch->st = st;
    if (!link->failed)
        link_send(link, ch, AMQP_CHANNEL_CLOSE_METHOD, &close);
}

static void chan_release(struct upstream_link *link, struct upstream_link_chan *ch)
{
    if (ch->st == LCH_ABORTING && link->st == LINK_OPEN) {
        ch->released = true; /* done at the broker's close-ok */
        return;
    }
    if (ch->pub && link->st == LINK_OPEN && !link->failed) {
        /* A content's frames must not be cut by a method on its channel (the broker would fail the connection, 505
         * UNEXPECTED_FRAME): the release waits for the body (publish_body()). */
        ch->release_wait = true;
        return;
    }
    if (ch->st == LCH_NEW || ch->st == LCH_DEAD || link->st != LINK_OPEN) { /* an ABORTING one here: the link is down */
        chan_done(link, ch);
        return;
    }
    if (chan_poolable(link, ch)) {
        chan_pool(link, ch);
        return;
    }
    chan_close_at_broker(link, ch, "released", LCH_CLOSING);
}

/*
 * An operation of the open channel `ch` could not be encoded (op_failed()): the channel fails alone. Its session hears
 * it as a channel error (on_closed, after the pending operations); the broker gets the deletes of the channel's owned
 * queues, then channel.close, exactly as at a release. The channel number stays taken until the broker's close-ok (the
 * broker still has the channel until then); deliveries meanwhile are discarded, and requeued by the broker at the close.
 */
static void chan_abort(struct upstream_link *link, struct upstream_link_chan *ch, const struct upstream_error *err)
{
    if (ch->st != LCH_OPEN)
        return;
    chan_report_failure(link, ch, err);
    chan_close_at_broker(link, ch, "warren: an operation could not be encoded", LCH_ABORTING);
}

/* The broker closed an aborted channel (close-ok, or its own channel.close crossing ours): its number is free again. */
static void chan_abort_finished(struct upstream_link *link, struct upstream_link_chan *ch)
{
    if (ch->released) {
        chan_done(link, ch);
        return;
    }
    chan_unslot(link, ch);
    ch->st = LCH_DEAD;
}

static void chan_add_owned(struct upstream_link_chan *ch, const char *name, size_t len)
{
    struct owned_queue *q = malloc(sizeof *q + len + 1);

    if (!q)
        return; /* the queue outlives the session; exclusive/auto-delete ones still go with the connection */
    memcpy(q->name, name, len);
    q->name[len] = '\0';
    list_link_front(&ch->owned, &q->link);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Operations
 */

/*
 * Whether this publish's strings can be encoded, checked before any of its frames is queued: rabbitmq-c refuses shortstr
 * fields over 255 bytes (exchange, routing key, properties) but silently truncates a table key's length to 8 bits, so the
 * keys are checked here. AMQP_STATUS_OK, or the encoding status.
 */
static int publish_encodable(const struct upstream_cmd *op)
{
    if (strlen(op->u.publish.exchange ? op->u.publish.exchange : "") > 255 ||
        strlen(op->u.publish.routing_key ? op->u.publish.routing_key : "") > 255)
        return AMQP_STATUS_BAD_AMQP_DATA;
    for (size_t i = 0; i < op->u.publish.props.n_headers; i++)
        if (op->u.publish.props.headers[i].name_len > 255)
            return AMQP_STATUS_BAD_AMQP_DATA;
    return AMQP_STATUS_OK;
}

/* Appends a content header frame: class, weight, body size (12 bytes), the properties (encoded in the scratch buffer,
 * which must hold it within frame_max). AMQP_STATUS_OK, an encoding status (nothing appended) or a socket/memory one. */
static int out_header(struct upstream_link *link, uint16_t channel, amqp_basic_properties_t *props, uint64_t body_size)
{
    size_t room = link->scratch_len > FRAME_OVERHEAD + 12 ? link->scratch_len - FRAME_OVERHEAD - 12 : 0;
    uint8_t *p = link->scratch;
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, props, (amqp_bytes_t){room, link->scratch + 12});

    if (n < 0)
        return n;
    p = put_u16(p, AMQP_BASIC_CLASS);
    p = put_u16(p, 0);
    p = put_u32(p, (uint32_t)(body_size >> 32));
    put_u32(p, (uint32_t)body_size);
    return out_frame(link, AMQP_FRAME_HEADER, channel, link->scratch, (size_t)n + 12, NULL, 0) ? AMQP_STATUS_OK
                                                                                               : AMQP_STATUS_SOCKET_ERROR;
}

/*
 * Queues the body of ch->pub, a frame at a time, while the socket takes what is queued; returns with the rest for later
 * when it does not (link_sweep() goes on once the socket is writable), so that the loop goes back to reading
 * (connection.blocked, deliveries, the inbox) instead of buffering a body the broker does not read. Frames of other
 * channels may come in between (AMQP 0-9-1 §4.2.6: only a channel's own frames must not be cut into its content). Body
 * frames are at most LINK_BODY_CHUNK bytes.
 */
static void publish_body(struct upstream_link *link, struct upstream_link_chan *ch)
{
    struct upstream_cmd *op = ch->pub;
    size_t max = (size_t)amqp_get_frame_max(link->amqp) - FRAME_OVERHEAD;

    if (max > LINK_BODY_CHUNK)
        max = LINK_BODY_CHUNK;
    while (ch->pub_off < op->u.publish.body_len) {
        size_t n = op->u.publish.body_len - ch->pub_off;
        if (link->out_full) {
            link->stalled = link->want_out = true;
            return;
        }
        if (n > max)
            n = max;
        if (!out_frame(link, AMQP_FRAME_BODY, ch->id, op->u.publish.body + ch->pub_off, n, NULL, 0))
            return; /* the connection failed; its confirm record fails with it (chan_fail_ops()) */
        ch->pub_off += n;
        link_out_big(link);
    }
    upstream_cmd_free(op);
    ch->pub = NULL;
    if (ch->release_wait) {
        ch->release_wait = false;
        chan_release(link, ch);
    }
}

/* Queues basic.publish and its content header, then as much of the body as the socket takes (publish_body()). Returns
 * true when the command went to ch->pub (publish_body() frees it), false when the caller frees it. An encoding failure
 * takes back what was queued of it (nothing was sent: link->out is only sent between operations). */
static bool op_publish(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op)
{
    amqp_basic_properties_t props;
    amqp_table_entry_t *entries;
    amqp_basic_publish_t m = {0, bytes_of(op->u.publish.exchange), bytes_of(op->u.publish.routing_key), 0, 0};
    struct confirm *k = malloc(sizeof *k);
    size_t mark = link->out_len - link->out_off;
    int status;

    if (!k || props_to_amqp(&op->u.publish.props, &props, &entries) < 0) {
        free(k);
        op_nomem(link, ch, op);
        return false;
    }
    status = publish_encodable(op);
    if (status == AMQP_STATUS_OK)
        status = out_method(link, ch->id, AMQP_BASIC_PUBLISH_METHOD, &m);
    if (status == AMQP_STATUS_OK)
        status = out_header(link, ch->id, &props, op->u.publish.body_len);
    free(entries);
    if (status != AMQP_STATUS_OK) {
        free(k);
        if (!link->failed)
            link->out_len = link->out_off + mark;
        op_failed(link, ch, op, status);
        return false;
    }
    /* Confirm sequence numbers count every basic.publish on the channel from 1 (RabbitMQ confirms extension). */
    *k = (struct confirm){.seq = ++ch->pub_seq, .op_tag = op->op_tag};
    list_link_tail(&ch->confirms, &k->link);
    ch->pub = op;
    ch->pub_off = 0;
    publish_body(link, ch); /* frees it once the body is queued */
    return true;
}

static void op_ack(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op)
{
    int status;

    if (op->kind == UPSTREAM_CMD_ACK) {
        amqp_basic_ack_t m = {op->u.ack.delivery_tag, op->u.ack.multiple};
        status = out_method(link, ch->id, AMQP_BASIC_ACK_METHOD, &m);
    } else {
        amqp_basic_nack_t m = {op->u.ack.delivery_tag, op->u.ack.multiple, op->u.ack.requeue};
        status = out_method(link, ch->id, AMQP_BASIC_NACK_METHOD, &m);
    }
    if (status != AMQP_STATUS_OK)
        op_failed(link, ch, op, status);
}

static bool op_consume(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op, amqp_table_t *args)
{
    unsigned prefetch = op->u.consume.prefetch;
    amqp_basic_qos_t qos = {0, (uint16_t)(prefetch > 65535 ? 65535 : prefetch), 0};
    amqp_basic_consume_t consume = {0,
                                    bytes_of(op->u.consume.queue),
                                    bytes_of(op->u.consume.consumer_tag),
                                    0,
                                    op->u.consume.no_ack,
                                    op->u.consume.exclusive,
                                    0,
                                    *args};

    /* Both are pipelined: the broker answers qos-ok then consume-ok, in order. */
    ch->rpc_qos_ok = false;
    return op_send(link, ch, op, AMQP_BASIC_QOS_METHOD, &qos) && op_send(link, ch, op, AMQP_BASIC_CONSUME_METHOD, &consume);
}

static bool op_declare(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op, amqp_table_t *args)
{
    unsigned f = op->u.declare.flags;
    amqp_queue_declare_t m = {0,
                              bytes_of(op->u.declare.queue),
                              (f & UPSTREAM_Q_PASSIVE) != 0,
                              (f & UPSTREAM_Q_DURABLE) != 0,
                              (f & UPSTREAM_Q_EXCLUSIVE) != 0,
                              (f & UPSTREAM_Q_AUTO_DELETE) != 0,
                              (f & UPSTREAM_Q_NOWAIT) != 0,
                              *args};

    return op_send(link, ch, op, AMQP_QUEUE_DECLARE_METHOD, &m);
}

/* Sends a synchronous method; returns true when it was sent (a reply is awaited unless it was nowait). When it was not,
 * its on_done has been sent (op_failed()). */
static bool op_send_rpc(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op)
{
    const struct upstream_arg *args = NULL;
    size_t n_args = 0;
    amqp_table_t table;
    bool sent = false;

    if (op->kind == UPSTREAM_CMD_DECLARE) {
        args = op->u.declare.args;
        n_args = op->u.declare.n_args;
    } else if (op->kind == UPSTREAM_CMD_CONSUME) {
        args = op->u.consume.args;
        n_args = op->u.consume.n_args;
    }
    if (args_to_table(args, n_args, &table) < 0) {
        op_nomem(link, ch, op);
        return false;
    }
    if (op->kind == UPSTREAM_CMD_DECLARE) {
        sent = op_declare(link, ch, op, &table);
    } else if (op->kind == UPSTREAM_CMD_BIND) {
        amqp_queue_bind_t m = {0,    bytes_of(op->u.bind.queue), bytes_of(op->u.bind.exchange), bytes_of(op->u.bind.routing_key), 0,
                               table};
        sent = op_send(link, ch, op, AMQP_QUEUE_BIND_METHOD, &m);
    } else if (op->kind == UPSTREAM_CMD_DELETE) {
        amqp_queue_delete_t m = {0, bytes_of(op->u.del.queue), 0, 0, 0};
        sent = op_send(link, ch, op, AMQP_QUEUE_DELETE_METHOD, &m);
    } else if (op->kind == UPSTREAM_CMD_CONSUME) {
        sent = op_consume(link, ch, op, &table);
    } else if (op->kind == UPSTREAM_CMD_CANCEL) {
        amqp_basic_cancel_t m = {bytes_of(op->u.cancel.consumer_tag), 0};
        sent = op_send(link, ch, op, AMQP_BASIC_CANCEL_METHOD, &m);
    }
    free(table.entries);
    return sent;
}

/* Runs one operation; returns true when it became ch->rpc (it awaits a reply) or ch->pub (its body is being written),
 * which then owns the command. */
static bool op_run(struct upstream_link *link, struct upstream_link_chan *ch, struct upstream_cmd *op)
{
    switch (op->kind) {
    case UPSTREAM_CMD_PUBLISH:
        return op_publish(link, ch, op);
    case UPSTREAM_CMD_ACK:
    case UPSTREAM_CMD_NACK:
        op_ack(link, ch, op);
        return false;
    default:
        break;
    }
    if (!op_send_rpc(link, ch, op))
        return false;
    if (op->kind == UPSTREAM_CMD_DECLARE && (op->u.declare.flags & UPSTREAM_Q_NOWAIT)) {
        if (op->u.declare.flags & UPSTREAM_Q_OWNED)
            chan_add_owned(ch, op->u.declare.queue, strlen(op->u.declare.queue));
        emit_done(link, ch, op->op_tag, NULL, op->u.declare.queue);
        return false;
    }
    ch->rpc = op;
    return true;
}

/*
 * Whether `op`, the next of its channel, may be written now. While the broker blocks publishers (connection.blocked) it
 * does not read the socket once it gets a publish, so publishes are held in their channel's queue, with what follows
 * them there (a channel's operations keep their order), until connection.unblocked; the other channels, and the
 * operations ahead of the first publish, go on. Nothing is written into a full socket either: the link waits for room
 * (UPSTREAM_LINK_WANT_OUT) while it goes on reading. Either way the stop is remembered (stalled) and link_sweep() pumps again.
 */
static bool op_may_write(struct upstream_link *link, const struct upstream_cmd *op)
{
    if (link->blocked && op->kind == UPSTREAM_CMD_PUBLISH) {
        link->stalled = true;
        return false;
    }
    if (link->out_full) {
        link->stalled = link->want_out = true;
        return false;
    }
    return true;
}

/* Runs the channel's queued operations in order until one awaits a reply, or may not be written now. */
static void chan_pump(struct upstream_link *link, struct upstream_link_chan *ch)
{
    struct upstream_cmd *op;

    if (ch->pub && !link->failed)
        publish_body(link, ch); /* may release the channel (release_wait): it is then no longer LCH_OPEN */
    while (ch->st == LCH_OPEN && !ch->rpc && !ch->pub && !link->failed &&
           (op = list_first_entry(&ch->ops, struct upstream_cmd, link)) && op_may_write(link, op)) {
        list_unlink(&op->link);
        if (!op_run(link, ch, op))
            upstream_cmd_free(op);
        link_out_big(link);
    }
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Frames from the broker
 */

/* Whether `id` is the reply ch->rpc waits for. */
static bool rpc_is_reply(const struct upstream_cmd *op, amqp_method_number_t id)
{
    switch (op->kind) {
    case UPSTREAM_CMD_DECLARE:
        return id == AMQP_QUEUE_DECLARE_OK_METHOD;
    case UPSTREAM_CMD_BIND:
        return id == AMQP_QUEUE_BIND_OK_METHOD;
    case UPSTREAM_CMD_DELETE:
        return id == AMQP_QUEUE_DELETE_OK_METHOD;
    case UPSTREAM_CMD_CONSUME:
        return id == AMQP_BASIC_CONSUME_OK_METHOD;
    case UPSTREAM_CMD_CANCEL:
        return id == AMQP_BASIC_CANCEL_OK_METHOD;
    default:
        return false;
    }
}

/* A reply to ch->rpc (AMQP replies on a channel arrive in request order). */
static void chan_on_reply(struct upstream_link *link, struct upstream_link_chan *ch, amqp_method_number_t id, void *decoded)
{
    struct upstream_cmd *op = ch->rpc;
    const char *queue = NULL;
    char *qbuf = NULL;

    if (!op)
        return;
    if (op->kind == UPSTREAM_CMD_CONSUME && !ch->rpc_qos_ok && id == AMQP_BASIC_QOS_OK_METHOD) {
        ch->rpc_qos_ok = true;
        return;
    }
    if (!rpc_is_reply(op, id))
        return; /* not the reply we wait for (a broker bug); keep waiting */
    if (id == AMQP_QUEUE_DECLARE_OK_METHOD) {
        const amqp_queue_declare_ok_t *ok = decoded;
        qbuf = malloc(ok->queue.len + 1);
        if (qbuf) {
            memcpy(qbuf, ok->queue.bytes, ok->queue.len);
            qbuf[ok->queue.len] = '\0';
            if (op->u.declare.flags & UPSTREAM_Q_OWNED)
                chan_add_owned(ch, qbuf, ok->queue.len);
        }
        queue = qbuf ? qbuf : "";
    }
    emit_done(link, ch, op->op_tag, NULL, queue);
    free(qbuf);
    upstream_cmd_free(op);
    ch->rpc = NULL;
    chan_pump(link, ch);
}

/* basic.ack / basic.nack from the broker in confirm mode: settle one or all sequence numbers up to `tag`. */
static void chan_on_confirm(struct upstream_link *link, struct upstream_link_chan *ch, uint64_t tag, bool multiple, bool nack)
{
    struct upstream_error err = {UPSTREAM_ERR_NACK, 0, "nack", "the broker refused the message (basic.nack)"};
    struct confirm *k, *next;

    LIST_FOR_EACH_ENTRY_SAFE (k, next, &ch->confirms, link) {
        if (k->seq > tag)
            break;
        if (!multiple && k->seq != tag)
            continue;
        emit_done(link, ch, k->op_tag, nack ? &err : NULL, NULL);
        list_unlink(&k->link);
        free(k);
        if (!multiple)
            break;
    }
}

static void chan_on_close(struct upstream_link *link, struct upstream_link_chan *ch, const amqp_channel_close_t *m)
{
    amqp_channel_close_ok_t ok = {0};
    char text[UPSTREAM_TEXT_MAX];
    struct upstream_error err;

    snprintf(text, sizeof text, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    err = (struct upstream_error){UPSTREAM_ERR_CHANNEL, m->reply_code, reply_code_name(m->reply_code), text};
    link_send(link, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (ch->st == LCH_CLOSING)
        chan_done(link, ch);
    else if (ch->st == LCH_ABORTING)
        chan_abort_finished(link, ch);
    else
        chan_fail(link, ch, &err);
}

static void chan_on_cancel(struct upstream_link *link, struct upstream_link_chan *ch, const amqp_basic_cancel_t *m)
{
    if (!m->nowait) {
        amqp_basic_cancel_ok_t ok = {m->consumer_tag};
        link_send(link, ch, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
    }
    if (ch->st == LCH_OPEN)
        emit_cancel(link, ch, m->consumer_tag);
}

/* channel.open-ok, then confirm.select-ok (both sent at once, chan_start()): the channel is usable. */
static void chan_on_opened(struct upstream_link *link, struct upstream_link_chan *ch, amqp_method_number_t id)
{
    if (id == AMQP_CHANNEL_OPEN_OK_METHOD && ch->st == LCH_OPENING) {
        ch->st = LCH_SELECTING;
    } else if (id == AMQP_CONFIRM_SELECT_OK_METHOD && ch->st == LCH_SELECTING) {
        ch->st = LCH_OPEN;
        emit_terminal(link, ch, &ch->res_open, UPSTREAM_RES_OPEN, NULL);
        chan_pump(link, ch);
    }
}

/* May free `ch` (chan_done): nothing may touch it after. */
static void chan_on_method(struct upstream_link *link, struct upstream_link_chan *ch, amqp_method_number_t id, void *m)
{
    if (ch->st == LCH_POOLED) { /* no session: only the broker's own close matters */
        if (id == AMQP_CHANNEL_CLOSE_METHOD) {
            link_send(link, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &(amqp_channel_close_ok_t){0});
            pool_drop(link, ch);
        }
        return;
    }
    switch (id) {
    case AMQP_CHANNEL_OPEN_OK_METHOD:
    case AMQP_CONFIRM_SELECT_OK_METHOD:
        chan_on_opened(link, ch, id);
        break;
    case AMQP_CHANNEL_CLOSE_METHOD:
        chan_on_close(link, ch, m);
        break;
    case AMQP_CHANNEL_CLOSE_OK_METHOD:
        if (ch->st == LCH_CLOSING)
            chan_done(link, ch);
        else if (ch->st == LCH_ABORTING)
            chan_abort_finished(link, ch);
        break;
    case AMQP_BASIC_ACK_METHOD:
        if (ch->st == LCH_OPEN)
            chan_on_confirm(link, ch, ((amqp_basic_ack_t *)m)->delivery_tag, ((amqp_basic_ack_t *)m)->multiple, false);
        break;
    case AMQP_BASIC_NACK_METHOD:
        if (ch->st == LCH_OPEN)
            chan_on_confirm(link, ch, ((amqp_basic_nack_t *)m)->delivery_tag, ((amqp_basic_nack_t *)m)->multiple, true);
        break;
    case AMQP_BASIC_DELIVER_METHOD:
    case AMQP_BASIC_RETURN_METHOD:
        ch->in.want_header = true;
        ch->in.discard = id == AMQP_BASIC_RETURN_METHOD || ch->st != LCH_OPEN;
        ch->in.deliver = id == AMQP_BASIC_DELIVER_METHOD ? m : NULL;
        break;
    case AMQP_BASIC_CANCEL_METHOD:
        chan_on_cancel(link, ch, m);
        break;
    default:
        if (ch->st == LCH_OPEN)
            chan_on_reply(link, ch, id, m);
        break;
    }
}

static void chan_delivery_complete(struct upstream_link *link, struct upstream_link_chan *ch)
{
    struct upstream_res *r = ch->in.res;

    ch->in.res = NULL;
    ch->in.body = NULL;
    if (r)
        emit(link, ch, r);
}

static void chan_on_header(struct upstream_link *link, struct upstream_link_chan *ch, const amqp_frame_t *f)
{
    if (!ch->in.want_header)
        return;
    ch->in.want_header = false;
    ch->in.left = f->payload.properties.body_size;
    ch->in.got = 0;
    if (!ch->in.discard && !delivery_start(link, ch, f->payload.properties.decoded, ch->in.left)) {
        /* Dropping it would leave an unacked delivery nobody knows about: its channel is given up instead (the broker
         * requeues it at the channel's close); its body frames are read and discarded meanwhile. */
        ch->in.discard = true;
        chan_lost(link, ch);
    }
    ch->in.deliver = NULL;
    if (ch->in.left == 0)
        chan_delivery_complete(link, ch);
}

static void chan_on_body(struct upstream_link *link, struct upstream_link_chan *ch, const amqp_frame_t *f)
{
    size_t n = f->payload.body_fragment.len;

    if (n > ch->in.left)
        n = (size_t)ch->in.left; /* more than announced: protocol error on the broker's side, ignore the excess */
    if (ch->in.res)
        memcpy(ch->in.body + ch->in.got, f->payload.body_fragment.bytes, n);
    ch->in.got += n;
    ch->in.left -= n;
    if (ch->in.left == 0)
        chan_delivery_complete(link, ch);
}

static void link_on_method0(struct upstream_link *link, amqp_method_number_t id, void *m)
{
    if (id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *close = m;
        amqp_connection_close_ok_t ok = {0};
        out_method(link, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        link_flush(link);
        link_set_err(link, UPSTREAM_ERR_CONNECTION, close->reply_code, reply_code_name(close->reply_code), "%.*s",
                     (int)close->reply_text.len, (const char *)close->reply_text.bytes);
        link->failed = true;
    } else if (id == AMQP_CONNECTION_BLOCKED_METHOD || id == AMQP_CONNECTION_UNBLOCKED_METHOD) {
        link->blocked = id == AMQP_CONNECTION_BLOCKED_METHOD;
        link->stalled = link->stalled || !link->blocked; /* unblocked: the held publishes go (link_sweep()) */
        emit_blocked(link);
    }
}

static struct upstream_link_chan *link_chan_at(struct upstream_link *link, amqp_channel_t id)
{
    return id <= link->chan_max ? link->slots[id] : NULL;
}

static void link_on_frame(struct upstream_link *link, const amqp_frame_t *f)
{
    struct upstream_link_chan *ch;

    if (f->channel == 0) {
        if (f->frame_type == AMQP_FRAME_METHOD)
            link_on_method0(link, f->payload.method.id, f->payload.method.decoded);
        return;
    }
    ch = link_chan_at(link, f->channel);
    if (ch && f->frame_type == AMQP_FRAME_METHOD)
        chan_on_method(link, ch, f->payload.method.id, f->payload.method.decoded);
    else if (ch && f->frame_type == AMQP_FRAME_HEADER)
        chan_on_header(link, ch, f);
    else if (ch && f->frame_type == AMQP_FRAME_BODY)
        chan_on_body(link, ch, f);
    /* The channel's pool holds basic.deliver until its header frame arrives. Look the channel up again: once done it is
     * freed (chan_done). */
    ch = link_chan_at(link, f->channel);
    if (!ch || !ch->in.want_header)
        amqp_maybe_release_buffers_on_channel(link->amqp, f->channel);
}

/* Decodes what link->in holds, up to `budget` frames; false when the connection failed. */
static bool link_decode(struct upstream_link *link, int *budget)
{
    while (link->in_off<link->in_len && * budget> 0) {
        amqp_frame_t f;
        int n = amqp_handle_input(link->amqp, (amqp_bytes_t){link->in_len - link->in_off, link->in + link->in_off}, &f);
        if (n < 0) {
            link_failed(link, n);
            return false;
        }
        link->in_off += (size_t)n;
        if (f.frame_type == 0)
            continue; /* more bytes needed (amqp_handle_input() keeps the part it has), or a frame it ignores */
        if (f.frame_type == AMQP_FRAME_HEARTBEAT) {
            amqp_maybe_release_buffers_on_channel(link->amqp, 0);
            continue;
        }
        link_on_frame(link, &f);
        if (link->failed)
            return false;
        (*budget)--;
    }
    return true;
}

/* Reads and handles what is available without blocking: what link->in still holds, then one recv() if the loop saw
 * the socket readable (or the last one filled the buffer). Returns true when more may be pending (the frame budget ran out). */
static bool link_read(struct upstream_link *link)
{
    int budget = LINK_READ_BUDGET;

    for (;;) {
        if (!link_decode(link, &budget))
            return false;
        if (budget == 0)
            return true;
        if (!link->readable)
            return false;
        link->readable = false;
        ssize_t n = recv(amqp_get_sockfd(link->amqp), link->in, LINK_IN_BUF, MSG_DONTWAIT);
        if (n == 0) {
            link_failed(link, AMQP_STATUS_CONNECTION_CLOSED);
            return false;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                link_failed(link, AMQP_STATUS_SOCKET_ERROR);
            return false;
        }
        link->in_off = 0;
        link->in_len = (size_t)n;
        link->recv_ms = clock_now_ms();
        link->readable = n == LINK_IN_BUF; /* a full buffer: the socket may hold more */
    }
}

/* After the login: what rabbitmq-c read past it (a frame queued, bytes in its buffer: connection.blocked may follow
 * connection.open-ok at once) is handled before the link reads the socket itself. A frame it read only in part stays in
 * amqp_handle_input()'s state, which link_read() goes on feeding. */
static void link_take_over(struct upstream_link *link)
{
    struct timeval zero = {0, 0};

    while (!link->failed && (amqp_frames_enqueued(link->amqp) || amqp_data_in_buffer(link->amqp))) {
        amqp_frame_t f;
        int status = amqp_simple_wait_frame_noblock(link->amqp, &f, &zero);
        if (status == AMQP_STATUS_TIMEOUT)
            break;
        if (status != AMQP_STATUS_OK) {
            link_failed(link, status);
            break;
        }
        link_on_frame(link, &f);
    }
    link->sent_ms = link->recv_ms = clock_now_ms();
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Connection life
 */

/* The connection is gone (or never came up): every channel on it learns it, and the loop stops using it. */
static void link_die(struct upstream_link *link)
{
    struct upstream_link_chan *ch, *next;

    if (link->st == LINK_DEAD)
        return;
    link->st = LINK_DEAD;
    if (link->err.kind == UPSTREAM_OK)
        link_set_err(link, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "broker connection lost");
    emit_conn(link, &link->res_down);
    pool_clear(link);
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->chans, link) {
        if (ch->st == LCH_CLOSING)
            chan_done(link, ch);
        else if (ch->st == LCH_ABORTING) /* already reported */
            chan_abort_finished(link, ch);
        else
            chan_fail(link, ch, &link->err);
    }
    if (link->amqp) {
        upstream_inbox_set_sock_fd(link->inbox, -1);
        amqp_destroy_connection(link->amqp);
        link->amqp = NULL;
    }
    link->out_off = link->out_len = link->in_off = link->in_len = 0;
    link->out_full = link->want_out = link->readable = false;
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
static int link_login_failed(struct upstream_link *link, amqp_rpc_reply_t reply, const char *broker)
{
    if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = reply.reply.decoded;
        bool refused = m->reply_code == 403 || m->reply_code == 530; /* bad login; vhost access (not_allowed) */
        link_set_err(link, refused ? UPSTREAM_ERR_ACCESS_REFUSED : UPSTREAM_ERR_CONNECTION, m->reply_code,
                     refused ? "access_refused" : reply_code_name(m->reply_code), "%.*s", (int)m->reply_text.len,
                     (const char *)m->reply_text.bytes);
        return refused ? UPSTREAM_ERR_ACCESS_REFUSED : UPSTREAM_ERR_UNREACHABLE;
    }
    /* Anything else, a socket closed or failing during the login included, is the connection's failure, not a refusal:
     * warren asks for authentication_failure_close, so a broker that refuses a login says so with connection.close (403)
     * before it closes. The next broker is tried, and the reconnect backoff applies. */
    link_set_err(link, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "login to %s failed: %s", broker,
                 reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(reply.library_error)
                                                                     : "unexpected reply");
    return UPSTREAM_ERR_UNREACHABLE;
}

static amqp_rpc_reply_t link_login_send(struct upstream_link *link)
{
    const struct upstream_config *cfg = link->cfg;
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
        {amqp_cstring_bytes("connection_name"), {AMQP_FIELD_KIND_UTF8, {.bytes = bytes_of(link->name)}}},
    };
    amqp_table_t table = {link->name ? 4 : 3, props};
    int channel_max = cfg->channel_max && cfg->channel_max < 65535 ? (int)cfg->channel_max : 0;
    int frame_max = cfg->frame_max_bytes ? (int)cfg->frame_max_bytes : LINK_DEFAULT_FRAME;

    return amqp_login_with_properties(link->amqp, link->vhost, channel_max, frame_max, (int)cfg->heartbeat_s, &table,
                                      AMQP_SASL_METHOD_PLAIN, link->user, link->pass);
}

/* One broker: TCP connect and login. Returns 0, UPSTREAM_ERR_UNREACHABLE (try the next one) or ..._ACCESS_REFUSED. */
static int link_try_broker(struct upstream_link *link, const char *broker)
{
    unsigned ms = link->cfg->connect_timeout_ms;
    struct timeval tv = clock_timeval(ms);
    char host[256];
    int port, status, r;
    amqp_socket_t *sock;
    amqp_rpc_reply_t reply;

    broker_split(broker, host, sizeof host, &port);
    link->amqp = amqp_new_connection();
    if (!link->amqp) {
        link_set_err(link, UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory");
        return UPSTREAM_ERR_UNREACHABLE;
    }
    sock = amqp_tcp_socket_new(link->amqp);
    status = sock ? amqp_socket_open_noblock(sock, host, port, ms ? &tv : NULL) : AMQP_STATUS_NO_MEMORY;
    if (status != AMQP_STATUS_OK) {
        link_set_err(link, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "cannot connect to %s: %s", broker,
                     amqp_error_string2(status));
        r = UPSTREAM_ERR_UNREACHABLE;
        goto fail;
    }
    if (ms)
        amqp_set_handshake_timeout(link->amqp, &tv);
    if (!upstream_inbox_set_login_fd(link->inbox, amqp_get_sockfd(link->amqp))) {
        link_set_err(link, UPSTREAM_ERR_UNREACHABLE, 0, "broker_unreachable", "warren is shutting down");
        r = UPSTREAM_ERR_UNREACHABLE;
        goto fail;
    }
    reply = link_login_send(link);
    upstream_inbox_set_login_fd(link->inbox, -1);
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        r = link_login_failed(link, reply, broker);
        goto fail;
    }
    return 0;
fail:
    amqp_destroy_connection(link->amqp);
    link->amqp = NULL;
    return r;
}

void upstream_backoff_init(struct upstream_backoff *b)
{
    pthread_mutex_init(&b->lock, NULL);
    b->backoff_ms = 0;
    b->next_attempt_ms = 0;
    b->broker_next = 0;
}

void upstream_backoff_deinit(struct upstream_backoff *b)
{
    pthread_mutex_destroy(&b->lock);
}

static void backoff_failed(struct upstream_backoff *b, const struct upstream_config *cfg)
{
    pthread_mutex_lock(&b->lock);
    b->backoff_ms = b->backoff_ms ? b->backoff_ms * 2 : cfg->reconnect_min_ms;
    if (b->backoff_ms > cfg->reconnect_max_ms)
        b->backoff_ms = cfg->reconnect_max_ms;
    b->next_attempt_ms = clock_now_ms() + b->backoff_ms;
    pthread_mutex_unlock(&b->lock);
}

static void backoff_succeeded(struct upstream_backoff *b, size_t broker)
{
    pthread_mutex_lock(&b->lock);
    b->broker_next = broker;
    b->backoff_ms = 0;
    b->next_attempt_ms = 0;
    pthread_mutex_unlock(&b->lock);
}

/* Waits until `deadline`, returning false if upstream_free() asked the thread to stop meanwhile. */
static bool link_sleep_until(struct upstream_link *link, uint64_t deadline)
{
    for (;;) {
        uint64_t now = clock_now_ms();
        if (upstream_inbox_stopping(link->inbox))
            return false;
        if (now >= deadline)
            return true;
        struct pollfd p = {link->inbox->wake_fd, POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now)) > 0)
            upstream_inbox_drain(link->inbox);
    }
}

/* Waits out the backoff, then tries each broker once, from the last good one. Returns 0 or an upstream_err. */
static int link_connect(struct upstream_link *link)
{
    const struct upstream_config *cfg = link->cfg;
    uint64_t deadline;
    size_t start;
    int r = UPSTREAM_ERR_UNREACHABLE;

    pthread_mutex_lock(&link->backoff->lock);
    deadline = link->backoff->next_attempt_ms;
    start = link->backoff->broker_next;
    pthread_mutex_unlock(&link->backoff->lock);
    if (!link_sleep_until(link, deadline)) {
        link_set_err(link, UPSTREAM_ERR_CONNECTION, 0, "connection_lost", "warren is shutting down");
        return UPSTREAM_ERR_CONNECTION;
    }
    for (size_t i = 0; i < cfg->n_brokers && r == UPSTREAM_ERR_UNREACHABLE && !upstream_inbox_stopping(link->inbox); i++) {
        size_t idx = (start + i) % cfg->n_brokers;
        r = link_try_broker(link, cfg->brokers[idx]);
        if (r == 0)
            backoff_succeeded(link->backoff, idx);
    }
    if (r == UPSTREAM_ERR_UNREACHABLE)
        backoff_failed(link->backoff, cfg);
    return r;
}

/* A longstr field of a table, or NULL. */
static const amqp_bytes_t *table_str(const amqp_table_t *t, const char *key)
{
    for (int i = 0; t && i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            return &e->value.value.bytes;
    }
    return NULL;
}

/* "<product>/<version>" from connection.start's server-properties, printable bytes only; "" when it has no product. */
static void broker_name(const amqp_table_t *props, char *out, size_t cap)
{
    const amqp_bytes_t *p = table_str(props, "product"), *v = table_str(props, "version");
    size_t o = 0;
    out[0] = '\0';
    if (!p)
        return;
    const amqp_bytes_t *parts[2] = {p, v};
    for (int k = 0; k < 2 && parts[k]; k++) {
        if (k == 1 && o + 1 < cap)
            out[o++] = '/';
        for (size_t i = 0; i < parts[k]->len && o + 1 < cap; i++) {
            unsigned char c = ((const unsigned char *)parts[k]->bytes)[i];
            out[o++] = c > 0x20 && c < 0x7f ? (char)c : '_';
        }
    }
    out[o] = '\0';
}
/* Logged in: the channel numbers it may use, and CONN_UP with how many. */
static int link_up(struct upstream_link *link)
{
    unsigned negotiated = (unsigned)amqp_get_channel_max(link->amqp);
    unsigned cap = link->cfg->channel_max ? link->cfg->channel_max : 65535;

    if (negotiated == 0 || negotiated > 65535)
        negotiated = 65535;
    link->chan_max = cap < negotiated ? cap : negotiated;
    link->slots = calloc(link->chan_max + 1, sizeof *link->slots);
    link->scratch_len = (size_t)amqp_get_frame_max(link->amqp);
    link->scratch = malloc(link->scratch_len ? link->scratch_len : 1);
    link->in = malloc(LINK_IN_BUF);
    if (!link->slots || !link->scratch || !link->in) {
        link_set_err(link, UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory");
        return -ENOMEM;
    }
    link->st = LINK_OPEN;
    /* A fixed send buffer (no autotuning), big enough that a round's frames go out in one send(); if it fails, the
     * default buffer (link->out keeps what does not fit). */
    (void)setsockopt(amqp_get_sockfd(link->amqp), SOL_SOCKET, SO_SNDBUF, &(int){LINK_SNDBUF}, sizeof(int));
    link_take_over(link);
    upstream_inbox_set_sock_fd(link->inbox, amqp_get_sockfd(link->amqp));
    link->res_up->u.up.chan_max = link->chan_max;
    broker_name(amqp_get_server_properties(link->amqp), link->res_up->u.up.broker, sizeof(link->res_up->u.up.broker));
    return 0;
}

/* Runs one command from the loop. */
static void link_on_cmd(struct upstream_link *link, struct upstream_cmd *cmd)
{
    struct upstream_link_chan *ch = cmd->ch;

    switch (cmd->kind) {
    case UPSTREAM_CMD_SHUTDOWN:
        link->shutdown = true; /* dead, or idle: upstream_link_main exits once no channel is left */
        return;
    case UPSTREAM_CMD_OPEN: /* embedded in the loop's channel; `ch` is ours from now on */
        list_link_front(&link->chans, &ch->link);
        if (link->st == LINK_OPEN)
            chan_start(link, ch);
        else
            chan_fail(link, ch, &link->err);
        return;
    case UPSTREAM_CMD_RELEASE: /* embedded in the loop's channel, which may be freed once chan_done() sent CHAN_DONE */
        chan_release(link, ch);
        return;
    default:
        if (ch->st >= LCH_CLOSING) {
            /* After a failed open every operation fails with its error; after on_closed the loop drops them anyway. */
            if (ch->st == LCH_DEAD && ch->open_failed && upstream_cmd_has_completion(cmd->kind))
                emit_done(link, ch, cmd->op_tag, &ch->fail_err, NULL);
            upstream_cmd_free(cmd);
            return;
        }
        ch->dirty = ch->dirty || op_dirties(cmd);
        list_link_tail(&ch->ops, &cmd->link);
        chan_pump(link, ch);
        return;
    }
}

/* Runs queued commands; returns true when upstream_free() asked the thread to stop. Each command is unlinked before it
 * runs: a RELEASE may be freed by the loop as soon as it has run. */
static bool link_run_cmds(struct upstream_link *link)
{
    struct list cmds = LIST_INIT(cmds);
    struct upstream_cmd *cmd;
    bool stopping = upstream_inbox_take(link->inbox, &cmds);

    while ((cmd = list_first_entry(&cmds, struct upstream_cmd, link))) {
        list_unlink(&cmd->link);
        if (stopping)
            upstream_cmd_drop(cmd);
        else
            link_on_cmd(link, cmd);
    }
    return stopping;
}

/* The watchdog's view (upstream.c): since when the link waits for room in a socket the broker does not read. Not while
 * blocked: a blocked broker does not read until it unblocks, which is not a dead one. */
static void link_note_room(struct upstream_link *link)
{
    if (!link->want_out || link->blocked)
        atomic_store(&link->inbox->full_since_ms, 0);
    else if (atomic_load(&link->inbox->full_since_ms) == 0)
        atomic_store(&link->inbox->full_since_ms, clock_now_ms());
}

/*
 * The work a round leaves for the next: tell the loop about a change of connection.blocked it could not be told of,
 * abort the channels that lost a result (chan_lost()), and pump the queues that stopped at a held publish or at a full
 * socket (op_may_write()), which stop again at once when that still holds.
 */
static void link_sweep(struct upstream_link *link)
{
    struct upstream_link_chan *ch, *next;
    struct upstream_error err = {UPSTREAM_ERR_NOMEM, 0, "internal_error", "out of memory for a result of this channel"};
    bool lost = link->lost, stalled = link->stalled;

    if (link->st != LINK_OPEN)
        return;
    emit_blocked(link);
    link->lost = link->stalled = link->want_out = false;
    if (link->out_full)
        link_flush(link); /* room since (writable), or not: then want_out again */
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->chans, link) {
        if (lost && ch->lost && ch->pub) {
            link->lost = true; /* not inside a content (see chan_release()): after its body */
        } else if (lost && ch->lost) {
            ch->lost = false;
            chan_abort(link, ch, &err);
        }
        if (stalled && !link->failed)
            chan_pump(link, ch);
    }
}

/*
 * On the way out: closes a connection still open (bounded: the watchdog, or upstream_free()'s deadline, cuts a close the
 * broker does not read), frees the channels left when stopping, reports CONN_EXIT. A dead link may leave with channels
 * not yet released: they stay in the link, which the loop then serves itself (upstream_link_run_dead()). After that push
 * the loop may free the link at any time.
 */
static void link_finish(struct upstream_link *link, bool stopping)
{
    struct upstream_link_chan *ch, *next;

    atomic_store(&link->inbox->busy_since_ms, clock_now_ms());
    atomic_store(&link->inbox->full_since_ms, 0); /* a round that saw room last may not have said so: busy_since counts now */
    if (link->st == LINK_OPEN && !link->failed)
        link_flush(link);
    if (link->st == LINK_OPEN && !link->failed && link->out_off == link->out_len) {
        /* rabbitmq-c has the socket back: the bytes read and not decoded go to its decoder first, so that it goes on
         * at a frame boundary. */
        struct timeval tv = {LINK_CLOSE_TIMEOUT_S, 0};
        while (link->in_off < link->in_len) {
            amqp_frame_t f;
            int n = amqp_handle_input(link->amqp, (amqp_bytes_t){link->in_len - link->in_off, link->in + link->in_off}, &f);
            if (n <= 0)
                break;
            link->in_off += (size_t)n;
        }
        amqp_set_rpc_timeout(link->amqp, &tv);
        amqp_connection_close(link->amqp, AMQP_REPLY_SUCCESS);
    }
    if (link->amqp) {
        upstream_inbox_set_sock_fd(link->inbox, -1);
        amqp_destroy_connection(link->amqp);
    }
    link->amqp = NULL;
    link->st = LINK_DEAD;
    pool_clear(link);
    if (stopping) {
        LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->chans, link) {
            list_unlink(&ch->link);
            upstream_link_chan_free(ch);
        }
    }
    free(link->slots);
    link->slots = NULL;
    free(link->scratch);
    link->scratch = NULL;
    free(link->out);
    link->out = NULL;
    link->out_off = link->out_len = link->out_cap = 0;
    free(link->in);
    link->in = NULL;
    link->in_off = link->in_len = 0;
    atomic_store(&link->inbox->busy_since_ms, 0);
    if (!stopping)
        emit_conn(link, &link->res_exit);
}

bool upstream_link_run_dead(struct upstream_link *link)
{
    assert(link->st == LINK_DEAD);
    link_run_cmds(link);
    return list_is_empty(&link->chans);
}

void *upstream_link_main(void *arg)
{
    struct upstream_link *link = arg;

    pthread_setname_np(pthread_self(), "warren-amqp"); /* top -H, perf, warren-bench's server_threads= */
    if (link_connect(link) != 0 || link_up(link) != 0) {
        /* Dead before it was up: the commands queued meanwhile fail (or are dropped when stopping), later ones are the
         * loop's (upstream_link_run_dead()). */
        link_die(link);
        link_finish(link, link_run_cmds(link));
        return NULL;
    }
    emit_conn(link, &link->res_up); /* the thread's last act: from CONN_UP on, the loop drives the link */
    return NULL;
}

void upstream_link_adopt(struct upstream_link *link, struct list *local)
{
    link->local = local;
}

int upstream_link_fd(const struct upstream_link *link)
{
    return link->st == LINK_OPEN ? amqp_get_sockfd(link->amqp) : -1;
}

unsigned upstream_link_tick_ms(const struct upstream_link *link)
{
    int hb = link->st == LINK_OPEN ? amqp_get_heartbeat(link->amqp) : 0;

    return hb > 0 ? (unsigned)hb * 250 : 0; /* heartbeats are due at half the interval (link_heartbeat()): a quarter */
}

unsigned upstream_link_round(struct upstream_link *link, bool readable, bool writable)
{
    unsigned want = 0;

    assert(link->local && link->st == LINK_OPEN);
    if (writable)
        atomic_store(&link->inbox->full_since_ms, 0);
    link->readable = link->readable || readable;
    link_run_cmds(link); /* never `stopping` here: upstream_free() drives no round after it stopped the links */
    link_sweep(link);
    if (link->failed)
        return UPSTREAM_LINK_FAILED;
    if (link->shutdown && list_is_empty(&link->chans))
        return UPSTREAM_LINK_DONE;
    if (link_read(link))
        want |= UPSTREAM_LINK_MORE;
    if (!link->failed)
        link_heartbeat(link, clock_now_ms());
    if (!link->failed && link->out_off < link->out_len)
        link_flush(link);
    if (link->failed)
        return UPSTREAM_LINK_FAILED;
    link_note_room(link);
    if (link->readable || link->in_off < link->in_len)
        want |= UPSTREAM_LINK_MORE;
    return want | (link->want_out ? UPSTREAM_LINK_WANT_OUT : 0);
}

void upstream_link_end(struct upstream_link *link)
{
    bool stopping = upstream_inbox_stopping(link->inbox);

    link_failed(link, AMQP_STATUS_SOCKET_ERROR); /* no-op when it failed already: no connection.close is tried */
    if (stopping)
        link_run_cmds(link); /* drops them */
    else
        link_die(link);
    link_finish(link, stopping);
}

void *upstream_link_close_main(void *arg)
{
    struct upstream_link *link = arg;

    pthread_setname_np(pthread_self(), "warren-amqp");
    link->local = NULL; /* the thread's results go through the outbox again */
    link_finish(link, link_run_cmds(link));
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Making and freeing a link (on the loop, before its thread starts and after it was joined)
 */

static void link_fill(struct upstream_bump *b, struct upstream_link *link, const struct upstream_login *login)
{
    link->vhost = upstream_bump_str(b, login->vhost ? login->vhost : "/");
    link->user = upstream_bump_str(b, login->user ? login->user : "");
    link->pass = upstream_bump_str(b, login->pass ? login->pass : "");
    link->name = upstream_bump_str(b, login->conn_name);
}

int upstream_link_new(const struct upstream_link_params *p, struct upstream_link **out)
{
    struct upstream_link scratch;
    struct upstream_bump b = {NULL, sizeof(struct upstream_link)};
    struct upstream_link *link;

    link_fill(&b, &scratch, p->login);
    link = calloc(1, b.off);
    if (!link)
        return -ENOMEM;
    b = (struct upstream_bump){(char *)link, sizeof(struct upstream_link)};
    link_fill(&b, link, p->login);
    link->cfg = p->cfg;
    link->backoff = p->backoff;
    link->inbox = p->inbox;
    link->outbox = p->outbox;
    link->owner = p->owner;
    list_init(&link->chans);
    list_init(&link->pool);
    link->res_up = upstream_res_prealloc(UPSTREAM_RES_CONN_UP, false);
    link->res_down = upstream_res_prealloc(UPSTREAM_RES_CONN_DOWN, false);
    link->res_exit = upstream_res_prealloc(UPSTREAM_RES_CONN_EXIT, false);
    if (!link->res_up || !link->res_down || !link->res_exit) {
        upstream_link_free(link);
        return -ENOMEM;
    }
    *out = link;
    return 0;
}

void upstream_link_free(struct upstream_link *link)
{
    struct upstream_link_chan *ch, *next;

    if (!link)
        return;
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->chans, link) {
        list_unlink(&ch->link);
        upstream_link_chan_free(ch);
    }
    LIST_FOR_EACH_ENTRY_SAFE (ch, next, &link->pool, link) {
        list_unlink(&ch->link);
        upstream_link_chan_free(ch);
    }
    if (link->amqp)
        amqp_destroy_connection(link->amqp);
    free(link->slots);
    free(link->scratch);
    free(link->out);
    free(link->in);
    free(link->res_up);
    free(link->res_down);
    free(link->res_exit);
    free(link);
}

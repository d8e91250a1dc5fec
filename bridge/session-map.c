/*
 * bridge/session-map.c — SEND and MESSAGE: STOMP headers ↔ AMQP basic properties and headers table
 * (reference/webstomp-semantics.md §1d), the per-session /queue/ declare cache, and /temp-queue/ reply queues.
 *
 * SEND: content-type, content-encoding, correlation-id, reply-to, expiration, type, user-id, app-id map to the
 * same-named properties; persistent:true → delivery_mode 2; priority and timestamp are integers; amqp-message-id →
 * message_id; `message-id` itself is refused; `destination` is not copied; every other header (receipt, transaction,
 * content-length included, as Web-STOMP does) goes into the headers table. A publish is confirmed by the broker before
 * its RECEIPT goes out (publisher confirms, op log in session.c). What AMQP cannot carry is refused here, with ERROR
 * `Invalid header` to this session only (send_fits_amqp()): a property over 255 bytes (a shortstr), a header name over
 * 255 bytes (a table key is a shortstr too), properties and headers that do not fit in one content-header frame of
 * amqp_frame_max_bytes. The connection thread refuses them too (a smaller frame_max negotiated with the broker), but
 * only as a channel error.
 *
 * MESSAGE: subscription, destination (rebuilt from exchange and routing key), message-id, redelivered, ack (1.2, client
 * modes), then the properties mapped back and the AMQP headers. Headers the client's version cannot carry (e.g. a LF in
 * 1.0) are dropped rather than corrupting the frame. So are AMQP headers named like one of warren's (any publisher may
 * set `subscription` or `ack` in the table, a STOMP SEND included): warren's come first and are the only ones, so a
 * client that keeps the last occurrence of a header is not misled either (STOMP 1.2 "Repeated Header Entries").
 */
#include "bridge/session-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/log.h"
#include "conf/conf.h"

#define MAX_DECLARED_CACHE 1024 /* past it, /queue/ SENDs re-declare (idempotent) rather than grow the cache */

/* Headers that map to properties (or are consumed) and therefore stay out of the AMQP headers table. */
static const char *const prop_headers[] = {
    "destination", "content-type", "content-encoding", "correlation-id",  "reply-to", "expiration", "type",
    "user-id",     "app-id",       "persistent",       "amqp-message-id", "priority", "timestamp",
};

static bool same_name(const struct stomp_header *h, const char *name, size_t len)
{
    return h->name_len == len && memcmp(h->name, name, len) == 0;
}

/* Whether h's name is one of names[0..n). */
static bool name_in(const char *const *names, size_t n, const struct stomp_header *h)
{
    for (size_t i = 0; i < n; i++)
        if (same_name(h, names[i], strlen(names[i])))
            return true;
    return false;
}

static bool is_prop_header(const struct stomp_header *h)
{
    return name_in(prop_headers, sizeof(prop_headers) / sizeof(prop_headers[0]), h);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* /queue/ declare cache and /temp-queue/                                                                              */

static bool declared(struct session *s, const char *name)
{
    for (size_t i = 0; i < s->map.n_declared; i++)
        if (strcmp(s->map.declared[i], name) == 0)
            return true;
    return false;
}

enum session_rc session_queue_ensure(struct session *s, const struct stomp_frame *f, const char *name, bool nowait)
{
    struct dest_queue_opts o;
    const char *reason = NULL, *bad = "";
    if (declared(s, name))
        return SESSION_OK;
    if (dest_queue_opts_parse(DEST_QUEUE, f->headers, f->n_headers, &o, &reason, &bad) != 0)
        return SESSION_FAIL(s, f, HEADER_VALUE, SARG(reason), SARG(bad));
    if (session_excl_check(s, f, name) != SESSION_OK)
        return SESSION_CLOSED;
    if (o.flags & UPSTREAM_Q_EXCLUSIVE) { /* this session's from now on (session_excl_claim(), bridge/excl.h) */
        if (session_excl_claim(s, f, name) != SESSION_OK)
            return SESSION_CLOSED;
        o.flags |= UPSTREAM_Q_OWNED;
    }
    uint64_t tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    unsigned flags = o.flags | (nowait ? UPSTREAM_Q_NOWAIT : 0u);
    if (!tag || session_op_check(s, tag, upstream_chan_declare_queue(s->ch, tag, name, flags, o.args.v, o.args.n)) != 0)
        return SESSION_CLOSED;
    if (s->map.n_declared < MAX_DECLARED_CACHE) {
        char **v = realloc(s->map.declared, (s->map.n_declared + 1) * sizeof(*v));
        if (v) {
            s->map.declared = v;
            if ((v[s->map.n_declared] = strdup(name)))
                s->map.n_declared++;
        }
    }
    return SESSION_OK;
}

/* The real queue behind /temp-queue/<id>: declared (exclusive, auto-delete, owned) and consumed on first use. */
static const char *temp_queue(struct session *s, const struct stomp_frame *f, const char *id, size_t id_len)
{
    struct session_temp *t;
    LIST_FOR_EACH_ENTRY (t, &s->map.temps, link)
        if (strlen(t->id) == id_len && memcmp(t->id, id, id_len) == 0)
            return t->queue;
    if (session_sub_room(s, f) != SESSION_OK) /* each one is a queue and a consumer at the broker */
        return NULL;
    t = calloc(1, sizeof(*t));
    uint8_t rnd[16];
    if (!t || !(t->id = session_strndup(id, id_len)) || session_random(rnd, sizeof(rnd)) != 0) {
        if (t)
            free(t->id);
        free(t);
        (void)SESSION_FATAL(s, "out of memory");
        return NULL;
    }
    memcpy(t->queue, "stomp.gen-", 10);
    dest_base64url(rnd, sizeof(rnd), t->queue + 10);
    list_link_front(&s->map.temps, &t->link);
    if (session_excl_claim(s, f, t->queue) != SESSION_OK) /* its name travels in reply-to: no other session may take it */
        return NULL;
    unsigned flags = UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_AUTO_DELETE | UPSTREAM_Q_OWNED;
    uint64_t tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    if (!tag || session_op_check(s, tag, upstream_chan_declare_queue(s->ch, tag, t->queue, flags, NULL, 0)) != 0)
        return NULL;
    if (session_sub_add_temp(s, t->id, t->queue) != 0)
        return NULL;
    return t->queue;
}

void session_map_init(struct session *s)
{
    list_init(&s->map.temps);
}

void session_map_deinit(struct session *s)
{
    for (size_t i = 0; i < s->map.n_declared; i++)
        free(s->map.declared[i]);
    free(s->map.declared);
    s->map.declared = NULL;
    s->map.n_declared = 0;
    struct session_temp *t, *tmp;
    LIST_FOR_EACH_ENTRY_SAFE (t, tmp, &s->map.temps, link) {
        list_unlink(&t->link);
        free(t->id);
        free(t);
    }
    free(s->map.mhdrs);
    s->map.mhdrs = NULL;
    s->map.mhdrs_cap = 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* SEND                                                                                                                */

/* Everything a publish borrows: NUL-terminated copies of the property strings and the headers table. */
struct send_ctx {
    struct upstream_props props;
    struct upstream_header *table;
    char *arena;
    size_t used, cap;
    char reply_to[DEST_NAME_MAX + 16];
};

static const char *arena_dup(struct send_ctx *c, const struct stomp_header *h)
{
    if (!h)
        return NULL;
    char *p = c->arena + c->used; /* sized in send_ctx_init: every value fits */
    memcpy(p, h->value, h->value_len);
    p[h->value_len] = '\0';
    c->used += h->value_len + 1;
    return p;
}

static int send_ctx_init(struct send_ctx *c, const struct stomp_frame *f)
{
    size_t need = 1;
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < f->n_headers; i++)
        need += f->headers[i].value_len + 1;
    c->arena = malloc(need);
    c->table = calloc(f->n_headers ? f->n_headers : 1, sizeof(*c->table));
    c->cap = need;
    c->props.priority = -1;
    return c->arena && c->table ? 0 : -ENOMEM;
}

static void send_ctx_deinit(struct send_ctx *c)
{
    free(c->arena);
    free(c->table);
}

static bool seen_before(const struct stomp_frame *f, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (f->headers[j].name_len == f->headers[i].name_len &&
            memcmp(f->headers[j].name, f->headers[i].name, f->headers[i].name_len) == 0)
            return true;
    return false;
}

static void map_table(struct send_ctx *c, const struct stomp_frame *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n_headers; i++) {
        const struct stomp_header *h = &f->headers[i];
        if (is_prop_header(h) || seen_before(f, i))
            continue;
        c->table[n++] = (struct upstream_header){h->name, h->name_len, h->value, h->value_len};
    }
    c->props.headers = c->table;
    c->props.n_headers = n;
}

/* reply-to: /temp-queue/N becomes the name of the session's real reply queue, which AMQP repliers publish to as is (through
 * the default exchange); a STOMP replier sees it as /reply-queue/<name> (put_props). `dry` (session_send_check()): no
 * queue is made, a name of the same length stands in for it. */
static enum session_rc map_reply_to(struct session *s, struct send_ctx *c, const struct stomp_frame *f, bool dry)
{
    const struct stomp_header *h = stomp_frame_header(f, "reply-to");
    struct dest d;
    if (!h)
        return SESSION_OK;
    if (dest_parse(h->value, h->value_len, &d, NULL) == 0 && d.kind == DEST_TEMP_QUEUE) {
        const char *q = dry ? "stomp.gen-0123456789abcdefghijkl" : temp_queue(s, f, d.name, strlen(d.name));
        if (!q)
            return SESSION_CLOSED;
        snprintf(c->reply_to, sizeof(c->reply_to), "%s", q);
        c->props.reply_to = c->reply_to;
        return SESSION_OK;
    }
    c->props.reply_to = arena_dup(c, h);
    return SESSION_OK;
}

static enum session_rc map_props(struct session *s, struct send_ctx *c, const struct stomp_frame *f, bool dry)
{
    struct upstream_props *p = &c->props;
    const struct stomp_header *h;
    int64_t v;
    p->content_type = arena_dup(c, stomp_frame_header(f, "content-type"));
    p->content_encoding = arena_dup(c, stomp_frame_header(f, "content-encoding"));
    p->correlation_id = arena_dup(c, stomp_frame_header(f, "correlation-id"));
    p->expiration = arena_dup(c, stomp_frame_header(f, "expiration"));
    p->message_id = arena_dup(c, stomp_frame_header(f, "amqp-message-id"));
    p->type = arena_dup(c, stomp_frame_header(f, "type"));
    p->user_id = arena_dup(c, stomp_frame_header(f, "user-id"));
    p->app_id = arena_dup(c, stomp_frame_header(f, "app-id"));
    if (stomp_header_value_is(stomp_frame_header(f, "persistent"), "true"))
        p->delivery_mode = 2;
    if ((h = stomp_frame_header(f, "priority"))) {
        if (dest_parse_int(h->value, h->value_len, &v) != 0 || v < 0 || v > 255)
            return SESSION_FAIL(s, f, BAD_PRIORITY, SARG_HDR(h));
        p->priority = (int)v;
    }
    if ((h = stomp_frame_header(f, "timestamp"))) {
        if (dest_parse_int(h->value, h->value_len, &v) != 0 || v < 0)
            return SESSION_FAIL(s, f, BAD_TIMESTAMP, SARG_HDR(h));
        p->has_timestamp = true;
        p->timestamp = (uint64_t)v;
    }
    map_table(c, f);
    return map_reply_to(s, c, f, dry);
}

/*
 * What AMQP can carry (0-9-1 §4.2.5.3, §4.2.6): every property is a shortstr (at most 255 bytes), and so is every key of
 * the headers table; the content header (class, weight, body size, flags, properties: warren sends every header as a
 * longstr, 1 + 4 + n bytes after its key) must fit in one frame of frame_max bytes, 8 of them for the frame itself.
 */
#define AMQP_SHORTSTR_MAX 255

static enum session_rc send_fits_amqp(struct session *s, const struct stomp_frame *f, const struct upstream_props *p)
{
    const struct {
        const char *header, *value;
    } strs[] = {
        {"content-type", p->content_type},
        {"content-encoding", p->content_encoding},
        {"correlation-id", p->correlation_id},
        {"reply-to", p->reply_to},
        {"expiration", p->expiration},
        {"amqp-message-id", p->message_id},
        {"type", p->type},
        {"user-id", p->user_id},
        {"app-id", p->app_id},
    };
    char max[24], got[24];
    uint64_t size = 12 + 2 + 1 + 1 + 8 + 4; /* class, weight, body size; flags; delivery mode, priority, timestamp; table */
    (void)session_arg_int(max, sizeof(max), AMQP_SHORTSTR_MAX);
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        size_t n = strs[i].value ? strlen(strs[i].value) : 0;
        if (n > AMQP_SHORTSTR_MAX)
            return SESSION_FAIL(s, f, HEADER_TOO_LONG, SARG(strs[i].header), SARG(max));
        size += strs[i].value ? 1 + n : 0;
    }
    for (size_t i = 0; i < p->n_headers; i++) {
        const struct upstream_header *h = &p->headers[i];
        if (h->name_len > AMQP_SHORTSTR_MAX)
            return SESSION_FAIL(s, f, HEADER_TOO_LONG, ((struct session_arg){h->name, h->name_len}), SARG(max));
        size += 1 + (uint64_t)h->name_len + 1 + 4 + h->value_len;
    }
    if (size + 8 > s->conf->amqp_frame_max_bytes)
        return SESSION_FAIL(s, f, HEADERS_TOO_BIG, session_arg_int(got, sizeof(got), (long long)size),
                            session_arg_int(max, sizeof(max), (long long)s->conf->amqp_frame_max_bytes - 8));
    return SESSION_OK;
}

/* Exchange and routing key for a SEND destination (declaring a /queue/ on first use). */
static enum session_rc send_route(struct session *s, const struct stomp_frame *f, const struct dest *d, const char **x,
                                  const char **key)
{
    switch (d->kind) {
    case DEST_EXCHANGE:
        *x = d->name;
        *key = d->pattern;
        return SESSION_OK;
    case DEST_TOPIC:
        *x = s->conf->default_topic_exchange;
        *key = d->name;
        return SESSION_OK;
    case DEST_QUEUE:
        *x = "";
        *key = d->name;
        return session_queue_ensure(s, f, d->name, true);
    case DEST_AMQ_QUEUE:
    case DEST_REPLY_QUEUE:
        *x = "";
        *key = d->name;
        return SESSION_OK;
    case DEST_TEMP_QUEUE: /* refused by send_check() */
        break;
    }
    return SESSION_FATAL(s, "no route for this destination kind");
}

static enum session_rc send_check(struct session *s, const struct stomp_frame *f, struct dest *d)
{
    const struct stomp_header *dh = stomp_frame_header(f, "destination");
    const char *reason = NULL;
    char body[1024];
    if (!dh)
        return SESSION_FAIL0(s, f, SEND_NO_DEST);
    if (stomp_frame_header(f, "message-id"))
        return SESSION_FAIL0(s, f, SEND_MESSAGE_ID);
    int r = dest_parse(dh->value, dh->value_len, d, &reason);
    if (r == 0 && d->kind == DEST_TEMP_QUEUE)
        return SESSION_FAIL(s, f, DEST_FOR, SARG_HDR(dh), SARG("SEND"));
    if (r == 0)
        return SESSION_OK;
    dest_error_body(r, d->kind, dh->value, dh->value_len, body, sizeof(body));
    return SESSION_FAIL(s, f, DEST, SARG(reason), SARG(body));
}

/* The checks of a SEND up to its route: destination, properties, what AMQP can carry; *c is initialised (deinit it).
 * `dry`: make no /temp-queue/ (session_send_check()). */
static enum session_rc send_prepare(struct session *s, const struct stomp_frame *f, struct dest *d, struct send_ctx *c, bool dry)
{
    if (send_ctx_init(c, f) != 0)
        return SESSION_FATAL(s, "out of memory");
    if (send_check(s, f, d) != SESSION_OK || map_props(s, c, f, dry) != SESSION_OK || send_fits_amqp(s, f, &c->props) != SESSION_OK)
        return SESSION_CLOSED;
    return SESSION_OK;
}

enum session_rc session_send_check(struct session *s, const struct stomp_frame *f)
{
    struct dest d;
    struct send_ctx c;
    struct dest_queue_opts o;
    const char *reason = NULL, *bad = "";
    enum session_rc r = send_prepare(s, f, &d, &c, true);
    send_ctx_deinit(&c);
    if (r == SESSION_OK && d.kind == DEST_QUEUE && !declared(s, d.name) &&
        dest_queue_opts_parse(DEST_QUEUE, f->headers, f->n_headers, &o, &reason, &bad) != 0) /* as session_queue_ensure() */
        return SESSION_FAIL(s, f, HEADER_VALUE, SARG(reason), SARG(bad));
    return r;
}

enum session_rc session_cmd_send(struct session *s, const struct stomp_frame *f, bool replay)
{
    struct dest d;
    struct send_ctx c;
    const char *x = NULL, *key = NULL;
    size_t bytes = session_frame_bytes(f);
    enum session_rc r = session_tx_capture(s, f, replay);
    if (r != SESSION_OK)
        return r;
    if (!replay && !session_unconfirmed_room(s, bytes)) /* before anything is copied: the frame waits in the input */
        return SESSION_DEFER;
    r = send_prepare(s, f, &d, &c, false);
    if (r == SESSION_OK)
        r = send_route(s, f, &d, &x, &key);
    if (r == SESSION_OK) {
        uint64_t tag = session_op_begin_publish(s, stomp_frame_header(f, "receipt"), bytes);
        r = !tag ? SESSION_CLOSED
                 : session_op_check(s, tag,
                                    upstream_chan_publish(s->ch, tag, x, key, &c.props, (const uint8_t *)f->body, f->body_len));
    }
    send_ctx_deinit(&c);
    return r;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* MESSAGE                                                                                                             */

struct msg_ctx {
    struct session *s;
    struct stomp_header *h;
    size_t n, cap;
    char dest[DEST_FORMAT_MAX];
    char reply_to[DEST_NAME_MAX + 16];
    char prio[16];
    char ts[24];
};

static void put(struct msg_ctx *m, const char *name, const char *value, size_t len)
{
    if (!value || m->n == m->cap)
        return;
    struct stomp_header h = {.name = name, .name_len = strlen(name), .value = value, .value_len = len};
    if (stomp_header_check(&h, STOMP_CMD_MESSAGE, m->s->version, NULL) == 0)
        m->h[m->n++] = h;
}

static void put_str(struct msg_ctx *m, const char *name, const char *value)
{
    if (value)
        put(m, name, value, strlen(value));
}

static int msg_ctx_init(struct msg_ctx *m, struct session *s, size_t n_custom)
{
    size_t cap = 24 + n_custom;
    m->s = s;
    if (s->map.mhdrs_cap < cap) {
        struct stomp_header *h = realloc(s->map.mhdrs, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        s->map.mhdrs = h;
        s->map.mhdrs_cap = cap;
    }
    m->h = s->map.mhdrs;
    m->n = 0;
    m->cap = s->map.mhdrs_cap;
    return 0;
}

/* Headers only warren sets on MESSAGE, whether or not this one carries them (1.0 has no `ack`, a 1.0 subscription may have
 * no id). */
static const char *const own_headers[] = {"subscription", "destination", "message-id", "redelivered", "ack"};

/* Whether AMQP header `h` would repeat one of warren's: a reserved name, or one of the first n_own headers of m. */
static bool is_own_header(const struct msg_ctx *m, size_t n_own, const struct stomp_header *h)
{
    if (name_in(own_headers, sizeof(own_headers) / sizeof(own_headers[0]), h))
        return true;
    for (size_t i = 0; i < n_own; i++)
        if (same_name(h, m->h[i].name, m->h[i].name_len))
            return true;
    return false;
}

static void put_props(struct msg_ctx *m, const struct upstream_props *p)
{
    put_str(m, "content-type", p->content_type);
    put_str(m, "content-encoding", p->content_encoding);
    put_str(m, "correlation-id", p->correlation_id);
    if (p->reply_to) {
        size_t l = strlen(p->reply_to);
        if (dest_has_known_prefix(p->reply_to, l))
            put(m, "reply-to", p->reply_to, l);
        else if (snprintf(m->reply_to, sizeof(m->reply_to), "/reply-queue/%s", p->reply_to) < (int)sizeof(m->reply_to))
            put_str(m, "reply-to", m->reply_to);
    }
    put_str(m, "expiration", p->expiration);
    put_str(m, "amqp-message-id", p->message_id);
    put_str(m, "type", p->type);
    put_str(m, "user-id", p->user_id);
    put_str(m, "app-id", p->app_id);
    if (p->delivery_mode == 2)
        put_str(m, "persistent", "true");
    if (p->priority >= 0) {
        snprintf(m->prio, sizeof(m->prio), "%d", p->priority);
        put_str(m, "priority", m->prio);
    }
    if (p->has_timestamp) {
        snprintf(m->ts, sizeof(m->ts), "%" PRIu64, p->timestamp);
        put_str(m, "timestamp", m->ts);
    }
    size_t n_own = m->n;
    for (size_t i = 0; i < p->n_headers; i++) {
        const struct upstream_header *x = &p->headers[i];
        struct stomp_header h = {.name = x->name, .name_len = x->name_len, .value = x->value, .value_len = x->value_len};
        if (is_own_header(m, n_own, &h))
            continue;
        if (m->n < m->cap && stomp_header_check(&h, STOMP_CMD_MESSAGE, m->s->version, NULL) == 0)
            m->h[m->n++] = h;
    }
}

int session_message_send(struct session *s, const struct session_sub *sub, const struct upstream_delivery *d, const char *msg_id)
{
    struct msg_ctx m;
    if (msg_ctx_init(&m, s, d->props.n_headers) != 0)
        return SESSION_FATAL(s, "out of memory");
    if (sub->has_id)
        put_str(&m, "subscription", sub->id);
    dest_format(d->exchange ? d->exchange : "", d->routing_key ? d->routing_key : "", s->conf->default_topic_exchange, m.dest,
                sizeof(m.dest));
    put_str(&m, "destination", m.dest);
    put_str(&m, "message-id", msg_id);
    put_str(&m, "redelivered", d->redelivered ? "true" : "false");
    if (s->version == STOMP_V1_2 && sub->ack != SESSION_ACK_AUTO)
        put_str(&m, "ack", msg_id);
    put_props(&m, &d->props);
    return session_send_frame(s, STOMP_CMD_MESSAGE, m.h, m.n, (const char *)d->body, d->body_len);
}

/*
 * bridge/session-sub.c — SUBSCRIBE, UNSUBSCRIBE, ACK/NACK, deliveries and broker-side cancellation.
 *
 * Every subscription consumes with manual AMQP acks and a per-consumer prefetch window, whatever its STOMP ack mode
 * (DESIGN.md invariant 2). For ack:auto the session acks a delivery itself once the MESSAGE is queued to the client: the
 * tags of one loop turn are held and settled together at its end (one basic.ack multiple=true when exact), unless the
 * client's send queue is above client_send_buffer_bytes: then they stay held until session_on_drain(), so a slow client
 * stops the broker after `prefetch` messages instead of growing our memory.
 *
 * Delivery tags are per channel and so shared by every subscription of the session. STOMP's ack:client is cumulative
 * within ITS subscription only (STOMP 1.2 "SUBSCRIBE ack Header"), so each subscription keeps its own list of unsettled
 * tags; an ACK settles that subscription's tags up to the acked one, with one multiple=true basic.ack when no other
 * subscription holds an older tag, one basic.ack per tag otherwise.
 *
 * Consumer tags are unique in the session for as long as a delivery may name them: "T_<id>" as Web-STOMP names them
 * (so message-ids read "T_<id>@@<session>@@<tag>"; "Q_<destination>" for a SUBSCRIBE without `id`), with a "#<n>" suffix when that
 * tag is taken, by a live subscription or by one UNSUBSCRIBEd whose basic.cancel-ok has not come (AMQP 0-9-1: deliveries for a
 * consumer may arrive until then). A delivery whose tag names no live subscription is given back (basic.nack, requeue), so an
 * UNSUBSCRIBE then SUBSCRIBE with the same id never takes the old consumer's in-flight messages for the new one.
 */
#include "bridge/session-int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/log.h"
#include "bridge/timer.h"
#include "conf/conf.h"

int session_tags_push(struct session_tags *t, uint64_t tag)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        uint64_t *v = realloc(t->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = tag;
    return 0;
}

void session_tags_deinit(struct session_tags *t)
{
    free(t->v);
    *t = (struct session_tags){0};
}

static void sub_free(struct session_sub *sub)
{
    if (!sub)
        return;
    free(sub->id);
    free(sub->dest);
    free(sub->ctag);
    free(sub->queue);
    session_tags_deinit(&sub->unacked);
    fanout_detach(&sub->fan); /* a solo is counted in its key's group until it goes */
    free(sub);
}

static struct session_sub *sub_find(struct session *s, const char *id, size_t len)
{
    struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link)
        if (strlen(sub->id) == len && memcmp(sub->id, id, len) == 0)
            return sub;
    return NULL;
}

static struct session_sub *sub_find_ctag(struct session *s, const char *ctag)
{
    struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link)
        if (strcmp(sub->ctag, ctag) == 0)
            return sub;
    return NULL;
}

static void sub_link(struct session *s, struct session_sub *sub)
{
    list_link_front(&s->subs.all, &sub->link);
    s->subs.n++;
}

static void sub_unlink(struct session *s, struct session_sub *sub)
{
    if (list_is_linked(&sub->link)) {
        list_unlink(&sub->link);
        s->subs.n--;
    }
}

/* Forgets the retired tags whose basic.cancel completed: no delivery names them any more. One walk over both lists, which
 * are in tag order (retired entries are appended as their cancels are issued): a SUBSCRIBE/UNSUBSCRIBE flood with
 * max_pending_ops operations pending costs each frame that many steps, not that many squared. */
static void retired_prune(struct session *s)
{
    struct session_retired *r, *tmp;
    const struct list *o = s->ops.ops.next;
    LIST_FOR_EACH_ENTRY_SAFE (r, tmp, &s->subs.retired, link) {
        while (o != &s->ops.ops && list_entry(o, const struct session_op, link)->tag < r->cancel_op)
            o = o->next;
        if (o == &s->ops.ops || list_entry(o, const struct session_op, link)->tag != r->cancel_op) {
            list_unlink(&r->link);
            free(r);
        }
    }
}

static bool ctag_taken(struct session *s, const char *ctag)
{
    const struct session_retired *r;
    if (sub_find_ctag(s, ctag))
        return true;
    LIST_FOR_EACH_ENTRY (r, &s->subs.retired, link)
        if (strcmp(r->ctag, ctag) == 0)
            return true;
    return false;
}

/*
 * A consumer tag for subscription `id` that no delivery still to come can name (see the top of the file): "T_<id>", or
 * "Q_<destination>" for a subscription without an `id` header (`has_id` false, `id` is then the destination), as
 * Web-STOMP names them.
 */
static void ctag_choose(struct session *s, bool has_id, const char *id, size_t id_len, char *out, size_t cap)
{
    char base[208]; /* "T_" + an id of 200 bytes at most, so that the suffix always fits */
    char p = has_id ? 'T' : 'Q';
    if (id_len <= 200)
        snprintf(base, sizeof(base), "%c_%.*s", p, (int)id_len, id);
    else
        snprintf(base, sizeof(base), "%c_#%u", p, ++s->subs.seq);
    retired_prune(s);
    snprintf(out, cap, "%s", base);
    while (ctag_taken(s, out))
        snprintf(out, cap, "%s#%u", base, ++s->subs.seq);
}

static struct session_sub *sub_new(struct session *s, bool has_id, const char *id, size_t id_len, const char *dest, size_t dest_len)
{
    struct session_sub *sub = calloc(1, sizeof(*sub));
    char ctag[DEST_NAME_MAX + 1];
    if (!sub)
        return NULL;
    sub->has_id = has_id;
    ctag_choose(s, has_id, id, id_len, ctag, sizeof(ctag));
    sub->id = session_strndup(id, id_len);
    sub->dest = session_strndup(dest, dest_len);
    sub->ctag = strdup(ctag);
    if (!sub->id || !sub->dest || !sub->ctag) {
        sub_free(sub);
        return NULL;
    }
    return sub;
}

static int parse_ack_mode(const struct stomp_header *h, enum session_ack *out)
{
    if (!h || stomp_header_value_is(h, "auto"))
        *out = SESSION_ACK_AUTO;
    else if (stomp_header_value_is(h, "client"))
        *out = SESSION_ACK_CLIENT;
    else if (stomp_header_value_is(h, "client-individual"))
        *out = SESSION_ACK_CLIENT_INDIVIDUAL;
    else
        return -1;
    return 0;
}

static int parse_prefetch(struct session *s, const struct stomp_header *h, unsigned *out)
{
    int64_t v = s->conf->default_prefetch_count;
    if (h && dest_parse_int(h->value, h->value_len, &v) != 0)
        return -1;
    if (v <= 0 || v > s->conf->max_prefetch_count)
        v = s->conf->max_prefetch_count;
    *out = (unsigned)v;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Exclusive queues (bridge/excl.h)                                                                                    */

enum session_rc session_excl_check(struct session *s, const struct stomp_frame *f, const char *queue)
{
    if (!excl_locked(&s->excl, session_vhost(s), session_user(s), queue))
        return SESSION_OK;
    session_log(s, LOG_WARN, "queue '%s' is held exclusively by another session of '%s': refused", queue, session_user(s));
    return SESSION_FAIL(s, f, RESOURCE_LOCKED, SARG(queue), SARG(session_vhost(s)));
}

enum session_rc session_excl_claim(struct session *s, const struct stomp_frame *f, const char *queue)
{
    char num[24];
    int r = excl_claim(&s->excl, session_vhost(s), session_user(s), queue);
    if (r == 0)
        return SESSION_OK;
    if (r == EXCL_LOCKED)
        return session_excl_check(s, f, queue);
    if (r == EXCL_FULL)
        return SESSION_FAIL(s, f, EXCL_TOO_MANY, session_arg_int(num, sizeof(num), EXCL_MAX_PER_OWNER));
    return SESSION_FATAL_RC(s, "cannot record an exclusive queue", r);
}

static enum session_rc fail_dest(struct session *s, const struct stomp_frame *f, int err, enum dest_kind kind,
                                 const struct stomp_header *dh, const char *reason)
{
    char body[1024];
    dest_error_body(err, kind, dh->value, dh->value_len, body, sizeof(body));
    return SESSION_FAIL(s, f, DEST, SARG(reason), SARG(body));
}

/* sub->queue = a copy of q (its own length, not DEST_NAME_MAX); 0 or -ENOMEM. */
static int sub_set_queue(struct session_sub *sub, const char *q)
{
    free(sub->queue);
    sub->queue = strdup(q);
    return sub->queue ? 0 : -ENOMEM;
}

/* Declares and binds the queue of an /exchange/ or /topic/ subscription; fills sub->queue. */
static enum session_rc setup_exchange_queue(struct session *s, const struct stomp_frame *f, const struct dest *d,
                                            struct session_sub *sub)
{
    struct dest_queue_opts o;
    const char *reason = NULL, *bad = "";
    const struct stomp_header *qn = stomp_frame_header(f, "x-queue-name");
    if (dest_queue_opts_parse(d->kind, f->headers, f->n_headers, &o, &reason, &bad) != 0)
        return SESSION_FAIL(s, f, HEADER_VALUE, SARG(reason), SARG(bad));
    if (qn && (qn->value_len == 0 || qn->value_len > DEST_NAME_MAX))
        return SESSION_FAIL(s, f, INVALID_HEADER, SARG("x-queue-name"));
    char q[DEST_NAME_MAX + 1];
    if (qn) {
        memcpy(q, qn->value, qn->value_len);
        q[qn->value_len] = '\0';
    } else if (sub->durable) {
        if (dest_sub_queue_name_durable(d, sub->id, strlen(sub->id), q) != 0)
            return SESSION_FATAL(s, "cannot compute the subscription queue name");
    } else {
        uint8_t rnd[16];
        if (session_random(rnd, sizeof(rnd)) != 0)
            return SESSION_FATAL(s, "no randomness");
        dest_sub_queue_name_random(rnd, q);
        o.flags |= UPSTREAM_Q_OWNED; /* a name only this session knows: deleted with its channel (issue 7) */
    }
    if (sub_set_queue(sub, q) != 0)
        return SESSION_FATAL(s, "out of memory");
    if (session_excl_check(s, f, sub->queue) != SESSION_OK)
        return SESSION_CLOSED;
    if (o.flags & UPSTREAM_Q_EXCLUSIVE) {
        /* Declared exclusive, it is exclusive to the shared connection (an existing queue that is not would fail the
         * declare with resource_locked): it is this session's, locked to the others and deleted with its channel. */
        if (session_excl_claim(s, f, sub->queue) != SESSION_OK)
            return SESSION_CLOSED;
        o.flags |= UPSTREAM_Q_OWNED;
    }
    uint64_t tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    if (!tag || session_op_check(s, tag, upstream_chan_declare_queue(s->ch, tag, sub->queue, o.flags, o.args.v, o.args.n)))
        return SESSION_CLOSED;
    const char *x = d->kind == DEST_EXCHANGE ? d->name : s->conf->default_topic_exchange;
    const char *key = d->kind == DEST_EXCHANGE ? d->pattern : d->name;
    tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    if (!tag || session_op_check(s, tag, upstream_chan_bind(s->ch, tag, sub->queue, x, key)))
        return SESSION_CLOSED;
    return SESSION_OK;
}

static enum session_rc setup_queue(struct session *s, const struct stomp_frame *f, const struct dest *d, struct session_sub *sub)
{
    if (sub_set_queue(sub, d->name) != 0)
        return SESSION_FATAL(s, "out of memory");
    switch (d->kind) {
    case DEST_QUEUE:
        if (session_excl_check(s, f, d->name) != SESSION_OK)
            return SESSION_CLOSED;
        return session_queue_ensure(s, f, d->name, false);
    case DEST_AMQ_QUEUE:
    case DEST_REPLY_QUEUE:
        return session_excl_check(s, f, d->name);
    case DEST_EXCHANGE:
    case DEST_TOPIC:
        return setup_exchange_queue(s, f, d, sub);
    case DEST_TEMP_QUEUE: /* refused by subscribe_check() */
        break;
    }
    return SESSION_FATAL(s, "no queue for this destination kind");
}

static enum session_rc consume(struct session *s, const struct stomp_frame *f, struct session_sub *sub, unsigned prefetch)
{
    struct dest_args a;
    const char *reason = NULL, *bad = "";
    if (f && dest_consume_args_parse(f->headers, f->n_headers, &a, &reason, &bad) != 0)
        return SESSION_FAIL(s, f, HEADER_VALUE, SARG(reason), SARG(bad));
    if (!f)
        a.n = 0;
    uint64_t tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    if (!tag)
        return SESSION_CLOSED;
    return session_op_check(s, tag, upstream_chan_consume(s->ch, tag, sub->queue, sub->ctag, prefetch, false, false, a.v, a.n));
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Local fan-out (topic_fanout = local, bridge/fanout.h)                                                               */

static struct session_sub *member_sub(struct fanout_member *m)
{
    return m->ud;
}

static void m_ready(struct fanout_member *m)
{
    struct session_sub *sub = member_sub(m);
    uint64_t tag = sub->fan_op;
    sub->fan_op = 0;
    if (tag) {
        sub->owner->subs.fan_waiting--;
        session_ops_done(sub->owner, tag, NULL); /* the SUBSCRIBE's RECEIPT may go, and a SEND held behind it */
    }
}

static void too_big_error(struct session *s, const struct session_sub *sub, const struct upstream_delivery *d, const char *msg_id);

static int m_deliver(struct fanout_member *m, const struct upstream_delivery *d)
{
    struct session_sub *sub = member_sub(m);
    struct session *s = sub->owner;
    char msg_id[DEST_NAME_MAX + 96];
    if (s->state == SESSION_ST_CLOSED)
        return -EPIPE;
    snprintf(msg_id, sizeof(msg_id), "%s@@%s@@%" PRIu64, sub->ctag, s->id, d->delivery_tag);
    int r = session_message_send(s, sub, d, msg_id);
    if (r == -EMSGSIZE)
        too_big_error(s, sub, d, msg_id);
    return r;
}

static void m_failed(struct fanout_member *m, const struct upstream_error *err)
{
    struct session_sub *sub = member_sub(m);
    session_upstream_failed(sub->owner, err);
}

static void sub_cancelled_error(struct session *s, struct session_sub *sub);

static void m_cancelled(struct fanout_member *m)
{
    struct session_sub *sub = member_sub(m);
    sub_cancelled_error(sub->owner, sub);
}

static bool client_has_room(struct session *s);

static bool m_has_room(struct fanout_member *m)
{
    struct session *s = member_sub(m)->owner;
    return s->state != SESSION_ST_CLOSED && client_has_room(s);
}

static const struct fanout_member_ops member_ops = {
    .ready = m_ready,
    .deliver = m_deliver,
    .failed = m_failed,
    .cancelled = m_cancelled,
    .has_room = m_has_room,
};

/* A growable byte string: the group key. */
struct keybuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void key_put(struct keybuf *k, const void *p, size_t n)
{
    if (k->oom)
        return;
    if (k->n + n + 1 > k->cap) {
        size_t cap = (k->n + n + 1) * 2;
        char *q = realloc(k->p, cap);
        if (!q) {
            k->oom = true;
            return;
        }
        k->p = q;
        k->cap = cap;
    }
    memcpy(k->p + k->n, p, n);
    k->n += n;
    k->p[k->n++] = '\0'; /* every field ends with a NUL, so no two lists of fields make the same key */
}

static void key_str(struct keybuf *k, const char *str)
{
    key_put(k, str, strlen(str));
}

/* Everything that decides what the broker delivers to the subscription's queue, and on whose permissions. */
static void key_build(struct keybuf *k, const struct upstream_login *lg, const char *x, const char *rk,
                      const struct dest_queue_opts *o, unsigned prefetch)
{
    char num[32];
    key_str(k, lg->vhost);
    key_str(k, lg->user);
    key_str(k, lg->pass);
    key_str(k, x);
    key_str(k, rk);
    snprintf(num, sizeof(num), "%u:%u", o->flags, prefetch); /* the shared consumer's window is theirs */
    key_str(k, num);
    for (size_t i = 0; i < o->args.n; i++) {
        const struct upstream_arg *a = &o->args.v[i];
        key_str(k, a->key);
        snprintf(num, sizeof(num), "%d:%lld", (int)a->type, (long long)a->num);
        key_str(k, num);
        key_str(k, a->type == UPSTREAM_ARG_STR && a->str ? a->str : "");
    }
}

/*
 * Whether SUBSCRIBE `f` may join a fan-out group: topic_fanout = local, an /exchange/ or /topic/ binding, ack:auto, no
 * durable name, no x-queue-name, not exclusive, no consume arguments, and the broker's checks of a login may be reused
 * at all (amqp_auth_reuse_ms > 0: a member joins without the broker checking its permissions). Fills *o with its
 * declare options. What does not parse goes the usual way, which gives the ERROR.
 */
static bool shareable(struct session *s, const struct stomp_frame *f, const struct dest *d, const struct session_sub *sub,
                      struct dest_queue_opts *o)
{
    struct dest_args ca;
    const char *reason = NULL, *bad = "";
    if (s->conf->topic_fanout != CONF_TOPIC_FANOUT_LOCAL || !s->env.fanout || s->conf->amqp_auth_reuse_ms <= 0)
        return false;
    if ((d->kind != DEST_EXCHANGE && d->kind != DEST_TOPIC) || sub->ack != SESSION_ACK_AUTO || sub->durable)
        return false;
    if (stomp_frame_header(f, "x-queue-name"))
        return false;
    if (dest_queue_opts_parse(d->kind, f->headers, f->n_headers, o, &reason, &bad) != 0 || (o->flags & UPSTREAM_Q_EXCLUSIVE))
        return false;
    return dest_consume_args_parse(f->headers, f->n_headers, &ca, &reason, &bad) == 0 && ca.n == 0;
}

/* Joins (or creates) the worker's group for the binding; the RECEIPT waits for the group's consume-ok. *solo: the
 * group only counts it (one of the first topic_fanout_from - 1), and the caller subscribes it the usual way. */
static enum session_rc subscribe_shared(struct session *s, const struct dest *d, struct session_sub *sub,
                                        const struct dest_queue_opts *o, unsigned prefetch, bool *solo)
{
    const char *x = d->kind == DEST_EXCHANGE ? d->name : s->conf->default_topic_exchange;
    const char *rk = d->kind == DEST_EXCHANGE ? d->pattern : d->name;
    struct upstream_login lg;
    struct keybuf k = {0};
    *solo = true;
    if (!upstream_chan_login(s->ch, &lg))
        return SESSION_OK; /* no connection took the session's channel: its own consumer says why */
    key_build(&k, &lg, x, rk, o, prefetch);
    if (k.oom) {
        free(k.p);
        return SESSION_FATAL(s, "out of memory");
    }
    struct fanout_spec sp = {
        .key = k.p,
        .key_len = k.n,
        .login = {.vhost = lg.vhost, .user = lg.user, .pass = lg.pass, .conn_name = s->peer},
        .exchange = x,
        .routing_key = rk,
        .flags = o->flags,
        .args = o->args.v,
        .n_args = o->args.n,
        .prefetch = prefetch,
        .from = (unsigned)s->conf->topic_fanout_from,
        .fresh_ms = (unsigned)s->conf->amqp_auth_reuse_ms,
    };
    enum fanout_joined how = FANOUT_SOLO;
    sub->owner = s;
    sub->fan.ops = &member_ops;
    sub->fan.ud = sub;
    int r = fanout_attach(s->env.fanout, &sp, &sub->fan, &how);
    free(k.p);
    if (r != 0)
        return SESSION_FATAL_RC(s, "cannot join a fan-out group", r);
    *solo = how == FANOUT_SOLO;
    if (*solo)
        return SESSION_OK;
    if (how == FANOUT_WAITING && !(sub->fan_op = session_op_begin(s, SESSION_OP_PLAIN, NULL))) {
        fanout_detach(&sub->fan);
        return SESSION_CLOSED;
    }
    if (sub->fan_op)
        s->subs.fan_waiting++;
    return SESSION_OK;
}

/* Leaves the group `sub` is in, completing the op its SUBSCRIBE's RECEIPT waits on. */
static void sub_leave(struct session *s, struct session_sub *sub)
{
    uint64_t tag = sub->fan_op;
    sub->fan_op = 0;
    fanout_detach(&sub->fan);
    if (tag) {
        s->subs.fan_waiting--;
        if (s->state != SESSION_ST_CLOSED)
            session_ops_done(s, tag, NULL);
    }
}

void session_subs_detach(struct session *s)
{
    struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link) {
        sub->fan_op = 0;
        fanout_detach(&sub->fan);
    }
    s->subs.fan_waiting = 0;
}

enum session_rc session_sub_room(struct session *s, const struct stomp_frame *f)
{
    char num[24];
    if (s->subs.n < (size_t)s->conf->max_subscriptions)
        return SESSION_OK;
    return SESSION_FAIL(s, f, SUB_TOO_MANY, session_arg_int(num, sizeof(num), s->conf->max_subscriptions));
}

/* Validates SUBSCRIBE's headers; fills *d, *ack, *prefetch. */
static enum session_rc subscribe_check(struct session *s, const struct stomp_frame *f, const struct stomp_header *dh,
                                       const char *id, size_t id_len, struct dest *d, enum session_ack *ack, unsigned *prefetch)
{
    const char *reason = NULL;
    if (sub_find(s, id, id_len)) { /* named by its consumer tag, as RabbitMQ does */
        char tag[208];
        int n =
            snprintf(tag, sizeof(tag), "%s%.*s", stomp_frame_header(f, "id") ? "T_" : "Q_", (int)(id_len > 200 ? 200 : id_len), id);
        return SESSION_FAIL(s, f, SUB_DUPLICATE, ((struct session_arg){tag, (size_t)n}));
    }
    if (session_sub_room(s, f) != SESSION_OK)
        return SESSION_CLOSED;
    int r = dest_parse(dh->value, dh->value_len, d, &reason);
    if (r != 0)
        return fail_dest(s, f, r, d->kind, dh, reason);
    if (d->kind == DEST_TEMP_QUEUE)
        return SESSION_FAIL(s, f, DEST_FOR, SARG_HDR(dh), SARG("SUBSCRIBE"));
    if (parse_ack_mode(stomp_frame_header(f, "ack"), ack) != 0)
        return SESSION_FAIL(s, f, INVALID_HEADER, SARG("ack"));
    if (parse_prefetch(s, stomp_frame_header(f, "prefetch-count"), prefetch) != 0)
        return SESSION_FAIL(s, f, INVALID_HEADER, SARG("prefetch-count"));
    bool durable = (d->kind == DEST_EXCHANGE || d->kind == DEST_TOPIC) && dest_header_durable(f->headers, f->n_headers);
    if (durable && !stomp_frame_header(f, "id"))
        return SESSION_FAIL0(s, f, SUB_DURABLE_NO_ID);
    return SESSION_OK;
}

enum session_rc session_cmd_subscribe(struct session *s, const struct stomp_frame *f, bool replay)
{
    const struct stomp_header *dh = stomp_frame_header(f, "destination");
    const struct stomp_header *ih = stomp_frame_header(f, "id");
    struct dest d;
    enum session_ack ack = SESSION_ACK_AUTO;
    unsigned prefetch = 0;
    if (!dh)
        return SESSION_FAIL0(s, f, SUB_NO_DEST);
    /* Without `id` (required from 1.1 on, but RabbitMQ takes it in every version) the destination names the
     * subscription, for UNSUBSCRIBE and the Q_ consumer tag; MESSAGE then has no `subscription` header. */
    const struct stomp_header *idh = ih ? ih : dh;
    if (subscribe_check(s, f, dh, idh->value, idh->value_len, &d, &ack, &prefetch) != 0)
        return SESSION_CLOSED;
    struct session_sub *sub = sub_new(s, ih != NULL, idh->value, idh->value_len, dh->value, dh->value_len);
    if (!sub)
        return SESSION_FATAL(s, "out of memory");
    sub->ack = ack;
    sub->durable = (d.kind == DEST_EXCHANGE || d.kind == DEST_TOPIC) && dest_header_durable(f->headers, f->n_headers);
    struct dest_queue_opts o;
    bool solo = true;
    if (shareable(s, f, &d, sub, &o) && subscribe_shared(s, &d, sub, &o, prefetch, &solo) != SESSION_OK) {
        sub_free(sub);
        return SESSION_CLOSED;
    }
    if (solo && (setup_queue(s, f, &d, sub) != 0 || consume(s, f, sub, prefetch) != 0)) {
        sub_free(sub);
        return SESSION_CLOSED;
    }
    sub_link(s, sub);
    return SESSION_OK;
}

enum session_rc session_sub_add_temp(struct session *s, const char *temp_id, const char *queue)
{
    char id[DEST_NAME_MAX + 32];
    int n = snprintf(id, sizeof(id), "/temp-queue/%s", temp_id);
    struct session_sub *sub = sub_new(s, true, id, (size_t)n, id, (size_t)n);
    if (!sub)
        return SESSION_FATAL(s, "out of memory");
    sub->temp = true;
    sub->ack = SESSION_ACK_AUTO;
    if (sub_set_queue(sub, queue) != 0) {
        sub_free(sub);
        return SESSION_FATAL(s, "out of memory");
    }
    if (consume(s, NULL, sub, (unsigned)s->conf->default_prefetch_count) != 0) {
        sub_free(sub);
        return SESSION_CLOSED;
    }
    sub_link(s, sub);
    return SESSION_OK;
}

/* Settles everything `sub` still holds: auto-mode tags were delivered (ack), client-mode ones were not acked (requeue). */
static enum session_rc sub_settle_all(struct session *s, struct session_sub *sub)
{
    for (size_t i = 0; i < sub->unacked.n; i++) {
        uint64_t t = sub->unacked.v[i];
        int rc = sub->ack == SESSION_ACK_AUTO ? upstream_chan_ack(s->ch, t, false) : upstream_chan_nack(s->ch, t, false, true);
        if (rc != 0)
            return SESSION_FAIL(s, NULL, BROKER_LOST, SARG("the AMQP channel is closed"));
    }
    sub->unacked.n = 0;
    return SESSION_OK;
}

enum session_rc session_cmd_unsubscribe(struct session *s, const struct stomp_frame *f, bool replay)
{
    const struct stomp_header *h = stomp_frame_header(f, "id");
    const char *by = h ? "id" : "destination";
    if (!h)
        h = stomp_frame_header(f, "destination");
    if (!h)
        return SESSION_FAIL0(s, f, UNSUB_NO_ID);
    static const char temp[] = "/temp-queue/";
    if (h->value_len >= sizeof(temp) - 1 && memcmp(h->value, temp, sizeof(temp) - 1) == 0)
        return SESSION_FAIL0(s, f, UNSUB_TEMP);
    struct session_sub *sub = sub_find(s, h->value, h->value_len);
    if (!sub)
        return SESSION_FAIL(s, f, UNSUB_NOT_FOUND, SARG(by), SARG_HDR(h));
    if (sub->fan.g) { /* no consumer of its own: nothing to cancel, nothing more comes to it once out of the group */
        sub_leave(s, sub);
        sub_unlink(s, sub);
        sub_free(sub);
        return s->state == SESSION_ST_CLOSED ? SESSION_CLOSED : SESSION_OK;
    }
    size_t ctag_len = strlen(sub->ctag);
    struct session_retired *retired = malloc(sizeof(*retired) + ctag_len + 1);
    if (!retired)
        return SESSION_FATAL(s, "out of memory");
    uint64_t tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
    if (!tag || session_op_check(s, tag, upstream_chan_cancel(s->ch, tag, sub->ctag)) != 0) {
        free(retired);
        return SESSION_CLOSED;
    }
    retired_prune(s);
    retired->cancel_op = tag;
    memcpy(retired->ctag, sub->ctag, ctag_len + 1);
    list_link_tail(&s->subs.retired, &retired->link); /* in cancel_op order (retired_prune) */
    if (sub->durable && dest_header_durable(f->headers, f->n_headers)) {
        if (session_excl_check(s, f, sub->queue) != SESSION_OK)
            return SESSION_CLOSED;
        tag = session_op_begin(s, SESSION_OP_PLAIN, NULL);
        if (!tag || session_op_check(s, tag, upstream_chan_delete_queue(s->ch, tag, sub->queue)) != 0)
            return SESSION_CLOSED;
    }
    enum session_rc r = sub_settle_all(s, sub);
    sub_unlink(s, sub);
    sub_free(sub);
    return r;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* ACK / NACK                                                                                                          */

/* Delivery tag of a message-id "T_<id>@@<session>@@<tag>" issued by this session. */
static int parse_msg_id(struct session *s, const struct stomp_header *h, uint64_t *tag)
{
    size_t sl = strlen(s->id);
    const char *v = h->value;
    size_t len = h->value_len, i = len;
    while (i >= 2 && !(v[i - 1] == '@' && v[i - 2] == '@'))
        i--;
    if (i < 2 + sl + 2 || memcmp(v + i - 2 - sl, s->id, sl) != 0 || memcmp(v + i - 4 - sl, "@@", 2) != 0)
        return -1;
    int64_t t;
    if (dest_parse_int(v + i, len - i, &t) != 0 || t <= 0)
        return -1;
    *tag = (uint64_t)t;
    return 0;
}

static struct session_sub *find_tag(struct session *s, uint64_t tag, size_t *idx)
{
    struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link) {
        if (sub->ack == SESSION_ACK_AUTO)
            continue;
        for (size_t i = 0; i < sub->unacked.n; i++) {
            if (sub->unacked.v[i] == tag) {
                *idx = i;
                return sub;
            }
        }
    }
    return NULL;
}

/* true when no subscription other than `self` holds a tag below `tag`: basic.ack multiple=true is then exact. */
static bool multiple_safe(struct session *s, const struct session_sub *self, uint64_t tag)
{
    const struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link)
        if (sub != self && sub->unacked.n > 0 && sub->unacked.v[0] < tag)
            return false;
    return true;
}

static enum session_rc settle(struct session *s, uint64_t tag, bool multiple, bool nack, bool requeue)
{
    int rc = nack ? upstream_chan_nack(s->ch, tag, multiple, requeue) : upstream_chan_ack(s->ch, tag, multiple);
    if (rc != 0)
        return SESSION_FAIL(s, NULL, BROKER_LOST, SARG("the AMQP channel is closed"));
    return SESSION_OK;
}

static enum session_rc settle_range(struct session *s, struct session_sub *sub, size_t idx, bool nack, bool requeue)
{
    size_t from = sub->ack == SESSION_ACK_CLIENT ? 0 : idx;
    uint64_t tag = sub->unacked.v[idx];
    if (from == 0 && idx > 0 && multiple_safe(s, sub, tag)) {
        if (settle(s, tag, true, nack, requeue) != 0)
            return SESSION_CLOSED;
    } else {
        for (size_t i = from; i <= idx; i++)
            if (settle(s, sub->unacked.v[i], false, nack, requeue) != 0)
                return SESSION_CLOSED;
    }
    memmove(sub->unacked.v + from, sub->unacked.v + idx + 1, (sub->unacked.n - idx - 1) * sizeof(uint64_t));
    sub->unacked.n -= idx + 1 - from;
    return SESSION_OK;
}

/* The subscription holding the message f acknowledges, and its index there; fails the session when there is none. */
static enum session_rc ack_find(struct session *s, const struct stomp_frame *f, struct session_sub **sub, size_t *idx)
{
    const char *hname = s->version == STOMP_V1_2 ? "id" : "message-id";
    const struct stomp_header *h = stomp_frame_header(f, hname);
    uint64_t tag = 0;
    if (!h)
        return SESSION_FAIL(s, f, ACK_NO_ID, SARG(stomp_cmd_str(f->cmd)), SARG(hname));
    if (parse_msg_id(s, h, &tag) != 0)
        return SESSION_FAIL(s, f, ACK_INVALID, SARG(stomp_cmd_str(f->cmd)), SARG(hname));
    char num[24];
    if (!(*sub = find_tag(s, tag, idx)))
        return SESSION_FAIL(s, f, ACK_NOT_FOUND, session_arg_int(num, sizeof(num), (long long)tag));
    return SESSION_OK;
}

enum session_rc session_ack_check(struct session *s, const struct stomp_frame *f)
{
    struct session_sub *sub = NULL;
    size_t idx = 0;
    return ack_find(s, f, &sub, &idx);
}

enum session_rc session_cmd_ack(struct session *s, const struct stomp_frame *f, bool replay)
{
    enum session_rc r = session_tx_capture(s, f, replay);
    struct session_sub *sub = NULL;
    size_t idx = 0;
    if (r != SESSION_OK)
        return r;
    if (ack_find(s, f, &sub, &idx) != SESSION_OK)
        return SESSION_CLOSED;
    bool requeue = dest_header_bool(f->headers, f->n_headers, "requeue", s->conf->default_nack_requeue);
    return settle_range(s, sub, idx, f->cmd == STOMP_CMD_NACK, requeue);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Deliveries                                                                                                          */

static bool client_has_room(struct session *s)
{
    return s->io.pending(s->io_ud) < s->conf->client_send_buffer_bytes;
}

/*
 * A delivery whose MESSAGE alone is over client_send_limit_bytes can never reach this client: sent, the transport would
 * close it as too slow with nothing queued, the broker would requeue the message, and the next consumer would die of it
 * too. So it is rejected at the broker (basic.nack requeue=false, basic.reject's meaning: a dead-letter exchange gets
 * it) before this session fails with an ERROR naming it; the session's ack:auto deliveries already queued to the client
 * are acked first, as they would have been at the end of the turn. The reject is queued on the channel ahead of its
 * release, so the broker settles the message before it requeues the session's other unsettled deliveries, which go to
 * the next consumer.
 */
static void reject_too_big(struct session *s, const struct session_sub *sub, const struct upstream_delivery *d, const char *msg_id)
{
    struct session_sub *other;
    LIST_FOR_EACH_ENTRY (other, &s->subs.all, link)
        if (other->ack == SESSION_ACK_AUTO && sub_settle_all(s, other) != SESSION_OK)
            return;
    if (settle(s, d->delivery_tag, false, true, false) != SESSION_OK)
        return;
    too_big_error(s, sub, d, msg_id);
}

/* The ERROR for a delivery too big for this client (a fan-out group rejects it itself when no member could take it). */
static void too_big_error(struct session *s, const struct session_sub *sub, const struct upstream_delivery *d, const char *msg_id)
{
    char dest[DEST_FORMAT_MAX], size[24], limit[24];
    size_t too_big = s->out.too_big;
    dest_format(d->exchange ? d->exchange : "", d->routing_key ? d->routing_key : "", s->conf->default_topic_exchange, dest,
                sizeof(dest));
    session_log(s, LOG_WARN, "message '%s' from '%s' is %zu bytes as a STOMP MESSAGE, over client_send_limit_bytes %zu: rejected",
                msg_id, dest, too_big, s->conf->client_send_limit_bytes);
    struct stomp_header h = session_hdr("subscription", sub->id);
    (void)session_error_frame(
        s, NULL, SESSION_ERR_MESSAGE_TOO_BIG,
        (const struct session_arg[]){SARG(msg_id), SARG(dest), session_arg_int(size, sizeof(size), (long long)too_big),
                                     session_arg_int(limit, sizeof(limit), (long long)s->conf->client_send_limit_bytes)},
        4, sub->has_id ? &h : NULL);
}

static void settle_later(void *arg);

void session_sub_delivery(struct session *s, const struct upstream_delivery *d)
{
    if (s->state == SESSION_ST_CLOSED || !s->ch)
        return;
    struct session_sub *sub = sub_find_ctag(s, d->consumer_tag);
    if (sub && sub->fan.g) /* a fan-out member has no consumer on this channel */
        sub = NULL;
    if (!sub) { /* a consumer UNSUBSCRIBEd, its basic.cancel not answered yet: give it back */
        (void)settle(s, d->delivery_tag, false, true, true);
        return;
    }
    char msg_id[DEST_NAME_MAX + 96];
    snprintf(msg_id, sizeof(msg_id), "%s@@%s@@%" PRIu64, sub->ctag, s->id, d->delivery_tag);
    int r = session_message_send(s, sub, d, msg_id);
    if (r == -EMSGSIZE) {
        reject_too_big(s, sub, d, msg_id);
        return;
    }
    if (r != 0) { /* never settle what the client did not get */
        if (s->state != SESSION_ST_CLOSED)
            (void)settle(s, d->delivery_tag, false, true, true);
        return;
    }
    if (session_tags_push(&sub->unacked, d->delivery_tag) != 0) {
        (void)SESSION_FATAL(s, "out of memory");
        return;
    }
    /* ack:auto: settled at the end of this loop turn, all the turn's deliveries with one basic.ack when possible */
    if (sub->ack == SESSION_ACK_AUTO && client_has_room(s)) {
        if (session_timer(s, &s->subs.settle, settle_later) != 0) {
            (void)SESSION_FATAL(s, "out of memory");
            return;
        }
        timer_arm(s->subs.settle, 0);
    }
}

/* Highest tag held by ack:auto subscriptions, and whether a client-mode subscription holds an older one. */
static uint64_t auto_held_max(struct session *s, bool *client_older)
{
    uint64_t max = 0, client_min = UINT64_MAX;
    const struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link) {
        if (sub->unacked.n == 0)
            continue;
        if (sub->ack == SESSION_ACK_AUTO && sub->unacked.v[sub->unacked.n - 1] > max)
            max = sub->unacked.v[sub->unacked.n - 1];
        else if (sub->ack != SESSION_ACK_AUTO && sub->unacked.v[0] < client_min)
            client_min = sub->unacked.v[0];
    }
    *client_older = client_min < max;
    return max;
}

/*
 * Settles the ack:auto deliveries held while the client has room: one basic.ack multiple=true for all of them when no
 * client-mode subscription holds an older tag (the usual case, and one ack per burst instead of one per message, which
 * is broker CPU), one basic.ack per tag otherwise.
 */
void session_subs_drain(struct session *s)
{
    if (s->state == SESSION_ST_CLOSED || !s->ch || !client_has_room(s))
        return;
    struct session_sub *fs;
    LIST_FOR_EACH_ENTRY (fs, &s->subs.all, link)
        fanout_kick(&fs->fan); /* a group whose members were all over their send buffer may settle now */
    bool client_older = false;
    uint64_t max = auto_held_max(s, &client_older);
    if (max == 0)
        return;
    if (!client_older && settle(s, max, true, false, false) != 0)
        return;
    struct session_sub *sub;
    LIST_FOR_EACH_ENTRY (sub, &s->subs.all, link) {
        if (s->state == SESSION_ST_CLOSED)
            return;
        if (sub->ack != SESSION_ACK_AUTO)
            continue;
        if (!client_older)
            sub->unacked.n = 0;
        else if (sub_settle_all(s, sub) != 0)
            return;
    }
}

void session_sub_cancelled(struct session *s, const char *ctag)
{
    struct session_sub *sub = sub_find_ctag(s, ctag);
    if (!sub || sub->fan.g || s->state == SESSION_ST_CLOSED)
        return;
    sub_cancelled_error(s, sub);
}

static void sub_cancelled_error(struct session *s, struct session_sub *sub)
{
    if (s->state == SESSION_ST_CLOSED)
        return;
    struct stomp_header h = session_hdr("subscription", sub->id);
    session_log(s, LOG_INFO, "broker cancelled subscription '%s'", sub->id);
    (void)session_error_frame(s, NULL, SESSION_ERR_SUB_CANCELLED, NULL, 0, &h);
}

static void settle_later(void *arg)
{
    session_on_drain(arg);
}

int session_subs_init(struct session *s)
{
    list_init(&s->subs.all);
    list_init(&s->subs.retired);
    s->subs.settle = NULL; /* made at the first ack:auto delivery (session_timer()) */
    return 0;
}

void session_subs_deinit(struct session *s)
{
    struct session_sub *sub, *tmp;
    session_subs_detach(s);
    LIST_FOR_EACH_ENTRY_SAFE (sub, tmp, &s->subs.all, link) {
        list_unlink(&sub->link);
        sub_free(sub);
    }
    s->subs.n = 0;
    struct session_retired *r, *rtmp;
    LIST_FOR_EACH_ENTRY_SAFE (r, rtmp, &s->subs.retired, link) {
        list_unlink(&r->link);
        free(r);
    }
    timer_free(s->subs.settle);
    s->subs.settle = NULL;
}

/*
 * bridge/fanout.c — the groups of local fan-out (bridge/fanout.h): a hash table of groups per worker, each one AMQP
 * channel with one queue and one consumer whose deliveries go to every member.
 *
 * Iterating members while their callbacks run: a member's deliver() or failed() may close its session, which detaches
 * every subscription of that session, possibly several members of this group, the next one to visit included. A
 * delivery walk keeps its next node in the group (`cursor`), which fanout_detach() moves on when it unlinks that node;
 * a failure takes members off the front one at a time. `busy` keeps a group whose last member left during a walk
 * alive until the walk ends.
 */
#include "bridge/fanout.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "bridge/clock.h"
#include "bridge/dest.h"
#include "bridge/hash.h"
#include "bridge/timer.h"

#define FANOUT_BUCKETS_MIN 64
#define FANOUT_CTAG        "stomp-fanout"
#define FANOUT_Q_PREFIX    "stomp-fanout-"

enum fanout_state {
    FANOUT_ST_IDLE = 0,  /* no channel: only subscriptions of their own are counted (`solos`) */
    FANOUT_ST_SETUP = 1, /* declare, bind, consume in flight: members wait */
    FANOUT_ST_READY = 2, /* consume-ok came: deliveries flow */
};

struct fanout_group {
    struct list link; /* in its bucket; unlinked once dead */
    struct fanout *fo;
    uint32_t hash;
    size_t key_len;
    enum fanout_state state;
    struct upstream_chan *ch;
    struct list members; /* struct fanout_member, sharing the channel */
    size_t n;
    struct list solos; /* struct fanout_member, with a queue and consumer of their own (fanout_spec.from) */
    size_t n_solo;
    uint64_t born_ms;    /* when the channel was opened: a group older than fanout_spec.fresh_ms takes no new member */
    struct list *cursor; /* the next member of the delivery walk in progress, or NULL */
    unsigned busy;       /* walks in progress */
    uint64_t consume_op;
    uint64_t max_tag, acked; /* highest tag delivered, highest settled */
    struct timer *settle;
    char queue[sizeof(FANOUT_Q_PREFIX) + 32];
    char key[]; /* key_len bytes */
};

struct fanout {
    struct event_base *base;
    struct upstream *up;
    uint32_t seed;
    struct list *buckets;
    size_t nb, n;
};

static void group_destroy(struct fanout_group *g);

/* ------------------------------------------------------------------------------------------------------------------ */
/* The table                                                                                                           */

static struct list *bucket(struct fanout *fo, uint32_t hash)
{
    return &fo->buckets[hash & (fo->nb - 1)];
}

static struct fanout_group *table_find(struct fanout *fo, const void *key, size_t len, uint32_t hash)
{
    struct fanout_group *g;
    LIST_FOR_EACH_ENTRY (g, bucket(fo, hash), link)
        if (g->hash == hash && g->key_len == len && memcmp(g->key, key, len) == 0)
            return g;
    return NULL;
}

/* Doubles the buckets when the table is twice as full as it has buckets; a failed allocation keeps the old ones. */
static void table_grow(struct fanout *fo)
{
    if (fo->n < 2 * fo->nb)
        return;
    size_t nb = fo->nb * 2;
    struct list *b = malloc(nb * sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < nb; i++)
        list_init(&b[i]);
    for (size_t i = 0; i < fo->nb; i++) {
        while (!list_is_empty(&fo->buckets[i])) {
            struct fanout_group *g = list_entry(fo->buckets[i].next, struct fanout_group, link);
            list_unlink(&g->link);
            list_link_tail(&b[g->hash & (nb - 1)], &g->link);
        }
    }
    free(fo->buckets);
    fo->buckets = b;
    fo->nb = nb;
}

static void table_remove(struct fanout_group *g)
{
    if (list_is_linked(&g->link)) {
        list_unlink(&g->link);
        g->fo->n--;
    }
}

int fanout_new(struct event_base *base, struct upstream *up, struct fanout **out)
{
    struct fanout *fo = calloc(1, sizeof(*fo));
    if (!fo)
        return -ENOMEM;
    fo->base = base;
    fo->up = up;
    fo->seed = hash_seed_new();
    fo->nb = FANOUT_BUCKETS_MIN;
    fo->buckets = malloc(fo->nb * sizeof(*fo->buckets));
    if (!fo->buckets) {
        free(fo);
        return -ENOMEM;
    }
    for (size_t i = 0; i < fo->nb; i++)
        list_init(&fo->buckets[i]);
    *out = fo;
    return 0;
}

void fanout_free(struct fanout *fo)
{
    if (!fo)
        return;
    for (size_t i = 0; i < fo->nb; i++) {
        while (!list_is_empty(&fo->buckets[i])) {
            struct fanout_group *g = list_entry(fo->buckets[i].next, struct fanout_group, link);
            struct list *lists[] = {&g->members, &g->solos};
            for (size_t j = 0; j < 2; j++) {
                while (!list_is_empty(lists[j])) {
                    struct fanout_member *m = list_entry(lists[j]->next, struct fanout_member, link);
                    list_unlink(&m->link);
                    m->g = m->counted = NULL;
                }
            }
            g->n = g->n_solo = 0;
            group_destroy(g);
        }
    }
    free(fo->buckets);
    free(fo);
}

size_t fanout_groups(const struct fanout *fo)
{
    return fo ? fo->n : 0;
}

size_t fanout_members(const struct fanout_member *m)
{
    return m->g ? m->g->n : 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* A group                                                                                                             */

/* Settles what was delivered (the members got it, or left). */
static void group_ack(struct fanout_group *g)
{
    if (g->ch && g->max_tag > g->acked) {
        (void)upstream_chan_ack(g->ch, g->max_tag, true); /* a dead channel reports itself through on_closed */
        g->acked = g->max_tag;
    }
}

/* The channel released (consumer cancelled, owned queue deleted): no member is left. The settle timer goes with it. */
static void group_idle(struct fanout_group *g)
{
    group_ack(g);
    upstream_chan_release(g->ch);
    g->ch = NULL;
    timer_free(g->settle);
    g->settle = NULL;
    g->state = FANOUT_ST_IDLE;
    g->max_tag = g->acked = 0;
}

/* Out of the table, channel released, freed. Members and solos are all gone. */
static void group_destroy(struct fanout_group *g)
{
    table_remove(g);
    group_idle(g);
    free(g);
}

/* After a member or a solo left, or a walk ended: with no member left the channel goes, with nobody left the group. */
static void group_check(struct fanout_group *g)
{
    if (g->busy || g->n)
        return;
    if (g->n_solo)
        group_idle(g);
    else
        group_destroy(g);
}

static void group_unbusy(struct fanout_group *g)
{
    g->busy--;
    group_check(g);
}

static void member_unlink(struct fanout_group *g, struct fanout_member *m)
{
    if (g->cursor == &m->link)
        g->cursor = m->link.next;
    list_unlink(&m->link);
    m->g = NULL;
    g->n--;
}

/* A broker-side failure: every member gets it, as its own channel's would (`cancel`: the consumer was cancelled). The
 * group goes idle (its solos stay counted), and the next subscriber to share opens a fresh channel. */
static void group_fail(struct fanout_group *g, const struct upstream_error *err, bool cancel)
{
    if (g->state == FANOUT_ST_IDLE)
        return;
    upstream_chan_release(g->ch); /* first, so that group_idle() acks nothing on a dead channel; no callback after it */
    g->ch = NULL;
    group_idle(g);
    g->busy++;
    while (!list_is_empty(&g->members)) {
        struct fanout_member *m = list_entry(g->members.next, struct fanout_member, link);
        member_unlink(g, m);
        if (cancel)
            m->ops->cancelled(m);
        else
            m->ops->failed(m, err);
    }
    group_unbusy(g);
}

static void group_ready(struct fanout_group *g)
{
    g->state = FANOUT_ST_READY;
    g->busy++;
    struct list *node = g->members.next;
    while (node != &g->members) {
        g->cursor = node->next;
        struct fanout_member *m = list_entry(node, struct fanout_member, link);
        m->ops->ready(m);
        node = g->cursor;
    }
    g->cursor = NULL;
    group_unbusy(g);
}

static bool any_room(struct fanout_group *g)
{
    struct fanout_member *m;
    if (g->n == 0)
        return true;
    LIST_FOR_EACH_ENTRY (m, &g->members, link)
        if (m->ops->has_room(m))
            return true;
    return false;
}

static void on_settle(void *arg)
{
    struct fanout_group *g = arg;
    if (g->state == FANOUT_ST_READY && any_room(g))
        group_ack(g);
}

static void group_deliver(struct fanout_group *g, const struct upstream_delivery *d)
{
    size_t sent = 0, too_big = 0;
    g->busy++;
    struct list *node = g->members.next;
    while (node != &g->members) {
        g->cursor = node->next;
        struct fanout_member *m = list_entry(node, struct fanout_member, link);
        int r = m->ops->deliver(m, d);
        sent += r == 0;
        too_big += r == -EMSGSIZE;
        node = g->cursor;
    }
    g->cursor = NULL;
    if (sent == 0 && too_big > 0 && g->ch) {
        /* Nobody can ever take it: rejected (a dead-letter exchange gets it), as a session's own consumer does; what
         * was delivered before it is settled first, so the multiple ack never names the rejected tag. */
        group_ack(g);
        (void)upstream_chan_nack(g->ch, d->delivery_tag, false, false);
        g->acked = d->delivery_tag;
        g->max_tag = d->delivery_tag;
    } else {
        g->max_tag = d->delivery_tag;
        timer_arm(g->settle, 0); /* the turn's deliveries are settled together */
    }
    group_unbusy(g);
}

/* The channel's callbacks; `ud` is the group. */
static void g_on_open(void *ud, const struct upstream_error *err)
{
    if (err)
        group_fail(ud, err, false);
}

static void g_on_done(void *ud, uint64_t op_tag, const struct upstream_error *err, const char *queue)
{
    struct fanout_group *g = ud;
    (void)queue;
    if (err)
        group_fail(g, err, false);
    else if (op_tag == g->consume_op && g->state == FANOUT_ST_SETUP)
        group_ready(g);
}

static void g_on_delivery(void *ud, const struct upstream_delivery *d)
{
    struct fanout_group *g = ud;
    if (g->state == FANOUT_ST_READY)
        group_deliver(g, d);
}

static void g_on_cancel(void *ud, const char *consumer_tag)
{
    (void)consumer_tag;
    group_fail(ud, NULL, true);
}

static void g_on_closed(void *ud, const struct upstream_error *err)
{
    group_fail(ud, err, false);
}

static void g_on_blocked(void *ud, bool blocked)
{
    (void)ud;
    (void)blocked; /* the group publishes nothing */
}

static const struct upstream_chan_cb group_cb = {
    .on_open = g_on_open,
    .on_done = g_on_done,
    .on_delivery = g_on_delivery,
    .on_cancel = g_on_cancel,
    .on_closed = g_on_closed,
    .on_blocked = g_on_blocked,
};

/* Queues declare, bind and consume on the group's fresh channel. 0, or the first call's error. */
static int group_setup(struct fanout_group *g, const struct fanout_spec *sp)
{
    uint8_t rnd[16];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -EIO;
    memcpy(g->queue, FANOUT_Q_PREFIX, sizeof(FANOUT_Q_PREFIX));
    dest_base64url(rnd, sizeof(rnd), g->queue + strlen(FANOUT_Q_PREFIX));
    int r = upstream_chan_declare_queue(g->ch, 1, g->queue, sp->flags | UPSTREAM_Q_OWNED, sp->args, sp->n_args);
    if (r == 0)
        r = upstream_chan_bind(g->ch, 2, g->queue, sp->exchange, sp->routing_key);
    g->consume_op = 3;
    if (r == 0)
        r = upstream_chan_consume(g->ch, g->consume_op, g->queue, FANOUT_CTAG, sp->prefetch, false, false, NULL, 0);
    return r;
}

/* A group of its key, idle (no channel yet), in the table. */
static int group_new(struct fanout *fo, const struct fanout_spec *sp, uint32_t hash, struct fanout_group **out)
{
    struct fanout_group *g = calloc(1, sizeof(*g) + sp->key_len);
    if (!g)
        return -ENOMEM;
    g->fo = fo;
    g->hash = hash;
    list_init(&g->members);
    list_init(&g->solos);
    memcpy(g->key, sp->key, sp->key_len);
    g->key_len = sp->key_len;
    list_link_tail(bucket(fo, hash), &g->link);
    fo->n++;
    table_grow(fo);
    *out = g;
    return 0;
}

/* Opens the group's channel and queues declare, bind and consume on it. 0, or the first call's error (still idle). */
static int group_start(struct fanout_group *g, const struct fanout_spec *sp)
{
    int r = -ENOMEM;
    if ((g->settle = timer_new(g->fo->base, on_settle, g)))
        r = upstream_chan_open(g->fo->up, &sp->login, &group_cb, g, &g->ch);
    if (r == 0)
        r = group_setup(g, sp);
    if (r != 0) {
        group_idle(g);
        return r;
    }
    g->state = FANOUT_ST_SETUP;
    g->born_ms = clock_now_ms();
    return 0;
}

static void solo_link(struct fanout_group *g, struct fanout_member *m)
{
    list_link_tail(&g->solos, &m->link);
    m->counted = g;
    g->n_solo++;
}

int fanout_attach(struct fanout *fo, const struct fanout_spec *sp, struct fanout_member *m, enum fanout_joined *how)
{
    uint32_t hash = hash_seeded(fo->seed, sp->key, sp->key_len);
    struct fanout_group *g = table_find(fo, sp->key, sp->key_len, hash);
    int r;
    if (g && g->state != FANOUT_ST_IDLE && sp->fresh_ms && clock_now_ms() - g->born_ms >= sp->fresh_ms) {
        table_remove(g); /* its permissions were checked too long ago: it keeps its members, new ones get a fresh group */
        g = NULL;
    }
    if (!g && (r = group_new(fo, sp, hash, &g)) != 0)
        return r;
    if (g->state == FANOUT_ST_IDLE && (g->n_solo + 1 < sp->from || group_start(g, sp) != 0)) {
        solo_link(g, m);
        *how = FANOUT_SOLO;
        return 0;
    }
    list_link_tail(&g->members, &m->link);
    m->g = g;
    g->n++;
    *how = g->state == FANOUT_ST_READY ? FANOUT_READY : FANOUT_WAITING;
    return 0;
}

void fanout_detach(struct fanout_member *m)
{
    struct fanout_group *g = m->counted ? m->counted : m->g;
    if (!g)
        return;
    if (m->counted) {
        list_unlink(&m->link);
        m->counted = NULL;
        g->n_solo--;
    } else {
        member_unlink(g, m);
    }
    group_check(g);
}

void fanout_kick(struct fanout_member *m)
{
    struct fanout_group *g = m->g;
    if (g && g->max_tag > g->acked)
        timer_arm(g->settle, 0);
}

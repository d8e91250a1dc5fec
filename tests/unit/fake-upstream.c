/*
 * tests/unit/fake-upstream.c — bridge/upstream.h recorded, with results delivered by the test (fake-upstream.h).
 */
#include "fake-upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fake_cmd_kind_str(enum fake_cmd_kind k)
{
    static const char *const names[] = {"open",   "declare", "bind", "delete", "consume",
                                        "cancel", "publish", "ack",  "nack",   "release"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

/* A violation of the upstream contract by the code under test: abort, so that tests and the fuzzer both see it. */
static void contract(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fake-upstream: contract violated: %s\n", what);
        abort();
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void cmd_clear(struct fake_cmd *c)
{
    free(c->a);
    free(c->b);
    free(c->c);
    free(c->reply_to);
}

struct upstream *fake_upstream_new(void)
{
    struct upstream *up = calloc(1, sizeof(*up));
    if (up)
        up->next_dtag = 1;
    return up;
}

void fake_upstream_free(struct upstream *up)
{
    if (!up)
        return;
    for (size_t i = 0; i < up->n_cmds; i++)
        cmd_clear(&up->cmds[i]);
    free(up->cmds);
    while (up->chans) {
        struct upstream_chan *ch = up->chans;
        up->chans = ch->next_all;
        free(ch->vhost);
        free(ch->user);
        free(ch->pass);
        free(ch);
    }
    free(up);
}

/* Appends a command; NULL when it cannot (the caller then reports -ENOMEM, as the real upstream would). */
static struct fake_cmd *record(struct upstream *up, enum fake_cmd_kind kind, struct upstream_chan *ch, uint64_t op_tag)
{
    if (up->max_cmds && up->n_cmds >= up->max_cmds) {
        cmd_clear(&up->cmds[0]);
        memmove(up->cmds, up->cmds + 1, (up->n_cmds - 1) * sizeof(*up->cmds));
        up->n_cmds--;
    }
    if (up->n_cmds == up->cap_cmds) {
        size_t cap = up->cap_cmds ? up->cap_cmds * 2 : 16;
        struct fake_cmd *n = realloc(up->cmds, cap * sizeof(*n));
        if (!n)
            return NULL;
        up->cmds = n;
        up->cap_cmds = cap;
    }
    struct fake_cmd *c = &up->cmds[up->n_cmds++];
    *c = (struct fake_cmd){.kind = kind, .ch = ch, .op_tag = op_tag};
    return c;
}

/* The common head of every operation: the contract, the injected failure, a dead channel. 0 = go on. */
const char *upstream_chan_broker(const struct upstream_chan *ch)
{
    return ch && ch->open ? "RabbitMQ/0.0.0" : "";
}

bool upstream_chan_login(const struct upstream_chan *ch, struct upstream_login *out)
{
    if (!ch || !ch->user)
        return false;
    *out = (struct upstream_login){.vhost = ch->vhost, .user = ch->user, .pass = ch->pass};
    return true;
}

static int op_gate(struct upstream_chan *ch)
{
    contract(ch != NULL, "operation on a NULL channel");
    contract(!ch->released, "operation on a released channel");
    int r = ch->up->fail_next;
    if (r) {
        ch->up->fail_next = 0;
        return r;
    }
    return ch->dead ? UPSTREAM_ERR_CLOSED : 0;
}

int upstream_chan_open(struct upstream *up, const struct upstream_login *login, const struct upstream_chan_cb *cb, void *ud,
                       struct upstream_chan **out)
{
    if (up->fail_open)
        return -ENOMEM;
    struct upstream_chan *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return -ENOMEM;
    *ch = (struct upstream_chan){.next_all = up->chans, .up = up, .cb = *cb, .ud = ud, .next_dtag = 1};
    ch->vhost = strdup(login->vhost ? login->vhost : "/");
    ch->user = strdup(login->user ? login->user : "");
    ch->pass = strdup(login->pass ? login->pass : "");
    up->chans = ch;
    struct fake_cmd *c = record(up, FAKE_OPEN, ch, 0);
    if (c) {
        c->a = dup_or_null(login->user);
        c->b = dup_or_null(login->vhost);
    }
    *out = ch;
    return 0;
}

void upstream_chan_release(struct upstream_chan *ch)
{
    if (!ch)
        return;
    contract(!ch->released, "channel released twice");
    ch->released = true;
    (void)record(ch->up, FAKE_RELEASE, ch, 0);
}

static int recorded(struct fake_cmd *c)
{
    return c ? 0 : -ENOMEM;
}

int upstream_chan_declare_queue(struct upstream_chan *ch, uint64_t op_tag, const char *name, unsigned flags,
                                const struct upstream_arg *args, size_t n_args)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_DECLARE, ch, op_tag);
    if (c) {
        c->a = strdup(name);
        c->flags = flags;
        c->n_args = n_args;
    }
    return recorded(c);
}

int upstream_chan_bind(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *exchange, const char *routing_key)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_BIND, ch, op_tag);
    if (c) {
        c->a = strdup(queue);
        c->b = strdup(exchange);
        c->c = strdup(routing_key);
    }
    return recorded(c);
}

int upstream_chan_delete_queue(struct upstream_chan *ch, uint64_t op_tag, const char *queue)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_DELETE, ch, op_tag);
    if (c)
        c->a = strdup(queue);
    return recorded(c);
}

int upstream_chan_consume(struct upstream_chan *ch, uint64_t op_tag, const char *queue, const char *consumer_tag, unsigned prefetch,
                          bool no_ack, bool exclusive, const struct upstream_arg *args, size_t n_args)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_CONSUME, ch, op_tag);
    if (c) {
        c->a = strdup(queue);
        c->b = strdup(consumer_tag);
        c->flags = prefetch;
        c->no_ack = no_ack;
        c->n_args = n_args;
    }
    return recorded(c);
}

int upstream_chan_cancel(struct upstream_chan *ch, uint64_t op_tag, const char *consumer_tag)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_CANCEL, ch, op_tag);
    if (c)
        c->a = strdup(consumer_tag);
    return recorded(c);
}

int upstream_chan_publish(struct upstream_chan *ch, uint64_t op_tag, const char *exchange, const char *routing_key,
                          const struct upstream_props *props, const uint8_t *body, size_t body_len)
{
    int r = op_gate(ch);
    if (r)
        return r;
    struct fake_cmd *c = record(ch->up, FAKE_PUBLISH, ch, op_tag);
    if (c) {
        c->a = strdup(exchange);
        c->b = strdup(routing_key);
        c->c = malloc(body_len + 1);
        if (c->c) {
            memcpy(c->c, body, body_len);
            c->c[body_len] = '\0';
        }
        c->body_len = body_len;
        c->n_headers = props ? props->n_headers : 0;
        c->reply_to = props ? dup_or_null(props->reply_to) : NULL;
    }
    return recorded(c);
}

static int settle(struct upstream_chan *ch, enum fake_cmd_kind kind, uint64_t tag, bool multiple, bool requeue)
{
    int r = op_gate(ch);
    if (r)
        return r;
    contract(tag > 0 && tag < ch->next_dtag, "ack/nack of a delivery tag never delivered");
    struct fake_cmd *c = record(ch->up, kind, ch, 0);
    if (c) {
        c->dtag = tag;
        c->multiple = multiple;
        c->requeue = requeue;
    }
    return recorded(c);
}

int upstream_chan_ack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple)
{
    return settle(ch, FAKE_ACK, delivery_tag, multiple, false);
}

int upstream_chan_nack(struct upstream_chan *ch, uint64_t delivery_tag, bool multiple, bool requeue)
{
    return settle(ch, FAKE_NACK, delivery_tag, multiple, requeue);
}

void upstream_get_stats(const struct upstream *up, struct upstream_stats *out)
{
    *out = (struct upstream_stats){0};
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* The test's side                                                                                                     */

long fake_find(const struct upstream *up, enum fake_cmd_kind kind, size_t from)
{
    for (size_t i = from; i < up->n_cmds; i++)
        if (up->cmds[i].kind == kind)
            return (long)i;
    return -1;
}

size_t fake_count(const struct upstream *up, enum fake_cmd_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < up->n_cmds; i++)
        n += up->cmds[i].kind == kind;
    return n;
}

struct upstream_chan *fake_last_chan(const struct upstream *up)
{
    return up->chans;
}

void fake_open(struct upstream_chan *ch, const struct upstream_error *err)
{
    if (ch->released || ch->dead || ch->open)
        return;
    if (err)
        ch->dead = true;
    else
        ch->open = true;
    ch->cb.on_open(ch->ud, err);
}

static bool has_completion(enum fake_cmd_kind k)
{
    return k >= FAKE_DECLARE && k <= FAKE_PUBLISH;
}

void fake_done(struct upstream *up, size_t i, const struct upstream_error *err)
{
    struct fake_cmd *c = &up->cmds[i];
    if (!has_completion(c->kind) || c->completed || c->ch->released || c->ch->dead)
        return;
    c->completed = true;
    char gen[32];
    const char *queue = NULL;
    if (c->kind == FAKE_DECLARE) {
        snprintf(gen, sizeof(gen), "amq.gen-%zu", i);
        queue = c->a[0] ? c->a : gen;
    }
    c->ch->cb.on_done(c->ch->ud, c->op_tag, err, err ? NULL : queue);
}

size_t fake_done_all(struct upstream *up)
{
    size_t n = 0;
    for (size_t i = 0; i < up->n_cmds; i++) {
        struct fake_cmd *c = &up->cmds[i];
        if (has_completion(c->kind) && !c->completed && !c->ch->released && !c->ch->dead) {
            fake_done(up, i, NULL);
            n++;
        }
    }
    return n;
}

uint64_t fake_deliver(struct upstream_chan *ch, const char *ctag, const char *body, const struct upstream_props *props)
{
    if (ch->released || ch->dead || !ch->open)
        return 0;
    struct upstream_delivery d = {
        .consumer_tag = ctag,
        .delivery_tag = ch->next_dtag++,
        .exchange = "",
        .routing_key = "rk",
        .body = (const uint8_t *)body,
        .body_len = strlen(body),
    };
    if (props)
        d.props = *props;
    else
        d.props.priority = -1;
    ch->cb.on_delivery(ch->ud, &d);
    return d.delivery_tag;
}

void fake_close(struct upstream_chan *ch, enum upstream_err kind, int code, const char *name, const char *text)
{
    if (ch->released || ch->dead)
        return;
    ch->dead = true;
    struct upstream_error e = {.kind = kind, .code = code, .name = name, .text = text};
    ch->cb.on_closed(ch->ud, &e);
}

void fake_block(struct upstream_chan *ch, bool blocked)
{
    if (!ch->released && !ch->dead)
        ch->cb.on_blocked(ch->ud, blocked);
}

void fake_cancel(struct upstream_chan *ch, const char *ctag)
{
    if (!ch->released && !ch->dead && ch->open)
        ch->cb.on_cancel(ch->ud, ctag);
}

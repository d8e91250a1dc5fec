/*
 * bridge/upstream-mailbox.c — the only part of the upstream that the loop and a connection's thread (its login, its
 * close) both touch (see bridge/upstream-int.h): commands from the loop to one link, results from the links' threads to
 * the loop, and the deep copies that let a command or a result cross without borrowing anything from the side that
 * made it.
 *
 * Locking is the same in both directions and nothing more: a box's mutex is held only to link or unlink items (and, in
 * an inbox, to read or set `stopping`, `login_fd`, `sock_fd` and `cut`; `busy_since_ms` is an atomic of its own), never
 * across a callback, a rabbitmq-c call or a system call other than shutdown(). The outbox's reader, the loop, is woken
 * through an eventfd written after the item is linked, once per batch (`signalled`: the first result after the loop took
 * everything); the loop then takes the whole list under the lock, so a wake-up is never lost and an item is never seen
 * half-made. An inbox wakes nobody: the loop runs the link's rounds itself (its push activates one, bridge/upstream.c),
 * and a login thread takes the inbox when it is done; its eventfd only cuts a backoff wait short at shutdown.
 */
#include "bridge/upstream-int.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------------------------------
 * One-allocation deep copies
 */

void *upstream_bump_take(struct upstream_bump *b, size_t n, size_t align)
{
    b->off = (b->off + align - 1) & ~(align - 1);
    void *p = b->base ? b->base + b->off : NULL;
    b->off += n;
    return p;
}

const char *upstream_bump_mem(struct upstream_bump *b, const void *src, size_t n)
{
    char *p = upstream_bump_take(b, n + 1, 1);
    if (p) {
        if (n)
            memcpy(p, src, n);
        p[n] = '\0';
    }
    return p;
}

const char *upstream_bump_str(struct upstream_bump *b, const char *s)
{
    return s ? upstream_bump_mem(b, s, strlen(s)) : NULL;
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Commands
 */

const char *upstream_cmd_kind_str(enum upstream_cmd_kind k)
{
    static const char *const names[] = {"open",    "declare", "bind", "delete",  "consume", "cancel",
                                        "publish", "ack",     "nack", "release", "shutdown"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

bool upstream_cmd_has_completion(enum upstream_cmd_kind k)
{
    return k != UPSTREAM_CMD_ACK && k != UPSTREAM_CMD_NACK;
}

static const struct upstream_arg *args_copy(struct upstream_bump *b, const struct upstream_arg *src, size_t n)
{
    struct upstream_arg *args = upstream_bump_take(b, n * sizeof *args, alignof(struct upstream_arg));

    for (size_t i = 0; i < n; i++) {
        const char *key = upstream_bump_str(b, src[i].key);
        const char *str = upstream_bump_str(b, src[i].str);
        if (args)
            args[i] = (struct upstream_arg){key, src[i].type, str, src[i].num};
    }
    return n ? args : NULL;
}

static void props_copy(struct upstream_bump *b, struct upstream_props *dst, const struct upstream_props *src)
{
    struct upstream_header *h;

    dst->content_type = upstream_bump_str(b, src->content_type);
    dst->content_encoding = upstream_bump_str(b, src->content_encoding);
    dst->correlation_id = upstream_bump_str(b, src->correlation_id);
    dst->reply_to = upstream_bump_str(b, src->reply_to);
    dst->expiration = upstream_bump_str(b, src->expiration);
    dst->message_id = upstream_bump_str(b, src->message_id);
    dst->type = upstream_bump_str(b, src->type);
    dst->user_id = upstream_bump_str(b, src->user_id);
    dst->app_id = upstream_bump_str(b, src->app_id);
    h = upstream_bump_take(b, src->n_headers * sizeof *h, alignof(struct upstream_header));
    for (size_t i = 0; i < src->n_headers; i++) {
        const char *name = upstream_bump_mem(b, src->headers[i].name, src->headers[i].name_len);
        const char *value = upstream_bump_mem(b, src->headers[i].value, src->headers[i].value_len);
        if (h)
            h[i] = (struct upstream_header){name, src->headers[i].name_len, value, src->headers[i].value_len};
    }
    dst->headers = src->n_headers ? h : NULL;
}

static void cmd_fill(struct upstream_bump *b, struct upstream_cmd *dst, const struct upstream_cmd *src)
{
    *dst = *src;
    switch (src->kind) {
    case UPSTREAM_CMD_DECLARE:
        dst->u.declare.queue = upstream_bump_str(b, src->u.declare.queue);
        dst->u.declare.args = args_copy(b, src->u.declare.args, src->u.declare.n_args);
        break;
    case UPSTREAM_CMD_BIND:
        dst->u.bind.queue = upstream_bump_str(b, src->u.bind.queue);
        dst->u.bind.exchange = upstream_bump_str(b, src->u.bind.exchange);
        dst->u.bind.routing_key = upstream_bump_str(b, src->u.bind.routing_key);
        break;
    case UPSTREAM_CMD_DELETE:
        dst->u.del.queue = upstream_bump_str(b, src->u.del.queue);
        break;
    case UPSTREAM_CMD_CONSUME:
        dst->u.consume.queue = upstream_bump_str(b, src->u.consume.queue);
        dst->u.consume.consumer_tag = upstream_bump_str(b, src->u.consume.consumer_tag);
        dst->u.consume.args = args_copy(b, src->u.consume.args, src->u.consume.n_args);
        break;
    case UPSTREAM_CMD_CANCEL:
        dst->u.cancel.consumer_tag = upstream_bump_str(b, src->u.cancel.consumer_tag);
        break;
    case UPSTREAM_CMD_PUBLISH:
        dst->u.publish.exchange = upstream_bump_str(b, src->u.publish.exchange);
        dst->u.publish.routing_key = upstream_bump_str(b, src->u.publish.routing_key);
        props_copy(b, &dst->u.publish.props, &src->u.publish.props);
        dst->u.publish.body =
            src->u.publish.body_len ? (const uint8_t *)upstream_bump_mem(b, src->u.publish.body, src->u.publish.body_len) : NULL;
        break;
    default: /* OPEN, ACK, NACK, RELEASE, SHUTDOWN: nothing to copy but the struct */
        break;
    }
}

struct upstream_cmd *upstream_cmd_dup(const struct upstream_cmd *tmpl)
{
    struct upstream_cmd scratch;
    struct upstream_bump b = {NULL, sizeof(struct upstream_cmd)};
    struct upstream_cmd *c;

    cmd_fill(&b, &scratch, tmpl);
    c = malloc(b.off);
    if (!c)
        return NULL;
    b = (struct upstream_bump){(char *)c, sizeof(struct upstream_cmd)};
    cmd_fill(&b, c, tmpl);
    c->link = (struct list){NULL, NULL};
    c->embedded = false;
    return c;
}

void upstream_cmd_free(struct upstream_cmd *c)
{
    if (c && !c->embedded)
        free(c);
}

void upstream_cmd_drop(struct upstream_cmd *c)
{
    if (c->kind == UPSTREAM_CMD_OPEN)
        upstream_link_chan_free(c->ch);
    upstream_cmd_free(c);
}

void upstream_cmd_free_list(struct list *cmds)
{
    struct upstream_cmd *c;

    while ((c = list_first_entry(cmds, struct upstream_cmd, link))) {
        list_unlink(&c->link);
        upstream_cmd_free(c);
    }
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Inbox (loop -> one link)
 */

int upstream_inbox_init(struct upstream_inbox *ib)
{
    pthread_mutex_init(&ib->lock, NULL);
    list_init(&ib->cmds);
    ib->stopping = false;
    ib->login_fd = -1;
    ib->sock_fd = -1;
    ib->cut = false;
    atomic_store(&ib->busy_since_ms, 0);
    atomic_store(&ib->full_since_ms, 0);
    ib->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return ib->wake_fd == -1 ? -errno : 0;
}

void upstream_inbox_deinit(struct upstream_inbox *ib)
{
    if (!ib->cmds.next)
        return; /* never initialised */
    struct upstream_cmd *c;
    while ((c = list_first_entry(&ib->cmds, struct upstream_cmd, link))) {
        list_unlink(&c->link);
        upstream_cmd_drop(c); /* a dead link's late OPEN at shutdown too: nobody will take its channel half */
    }
    if (ib->wake_fd >= 0)
        close(ib->wake_fd);
    ib->wake_fd = -1;
    pthread_mutex_destroy(&ib->lock);
    ib->cmds = (struct list){NULL, NULL};
}

void upstream_inbox_push(struct upstream_inbox *ib, struct upstream_cmd *cmd)
{
    pthread_mutex_lock(&ib->lock);
    list_link_tail(&ib->cmds, &cmd->link);
    pthread_mutex_unlock(&ib->lock);
}

void upstream_inbox_push_list(struct upstream_inbox *ib, struct list *cmds)
{
    pthread_mutex_lock(&ib->lock);
    list_splice_tail(&ib->cmds, cmds);
    pthread_mutex_unlock(&ib->lock);
}

void upstream_inbox_stop(struct upstream_inbox *ib)
{
    pthread_mutex_lock(&ib->lock);
    ib->stopping = true;
    if (ib->login_fd >= 0)
        shutdown(ib->login_fd, SHUT_RDWR); /* the thread withdraws it under the lock before closing it */
    pthread_mutex_unlock(&ib->lock);
    if (write(ib->wake_fd, &(uint64_t){1}, sizeof(uint64_t)) == -1) {
        /* EAGAIN: the counter is saturated, the thread wakes anyway */
    }
}

bool upstream_inbox_take(struct upstream_inbox *ib, struct list *out)
{
    bool stopping;

    pthread_mutex_lock(&ib->lock);
    list_splice_tail(out, &ib->cmds);
    stopping = ib->stopping;
    pthread_mutex_unlock(&ib->lock);
    return stopping;
}

bool upstream_inbox_stopping(struct upstream_inbox *ib)
{
    bool stopping;

    pthread_mutex_lock(&ib->lock);
    stopping = ib->stopping;
    pthread_mutex_unlock(&ib->lock);
    return stopping;
}

bool upstream_inbox_set_login_fd(struct upstream_inbox *ib, int fd)
{
    bool stopping;

    pthread_mutex_lock(&ib->lock);
    ib->login_fd = fd;
    stopping = ib->stopping;
    pthread_mutex_unlock(&ib->lock);
    return !stopping;
}

void upstream_inbox_set_sock_fd(struct upstream_inbox *ib, int fd)
{
    pthread_mutex_lock(&ib->lock);
    ib->sock_fd = fd;
    pthread_mutex_unlock(&ib->lock);
}

bool upstream_inbox_cut(struct upstream_inbox *ib)
{
    bool cut = false;

    pthread_mutex_lock(&ib->lock);
    if (ib->sock_fd >= 0 && !ib->cut) {
        shutdown(ib->sock_fd, SHUT_RDWR); /* the thread withdraws it under the lock before closing it */
        ib->cut = cut = true;
    }
    pthread_mutex_unlock(&ib->lock);
    return cut;
}

bool upstream_inbox_was_cut(struct upstream_inbox *ib)
{
    bool cut;

    pthread_mutex_lock(&ib->lock);
    cut = ib->cut;
    pthread_mutex_unlock(&ib->lock);
    return cut;
}

void upstream_inbox_drain(struct upstream_inbox *ib)
{
    uint64_t n;

    if (read(ib->wake_fd, &n, sizeof n) == -1) {
        /* EAGAIN: nothing to drain */
    }
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Results and the outbox (links -> loop)
 */

const char *upstream_res_kind_str(enum upstream_res_kind k)
{
    static const char *const names[] = {"conn_up", "conn_down", "conn_exit", "blocked", "open",
                                        "done",    "delivery",  "cancel",    "closed",  "chan_done"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

struct upstream_res *upstream_res_new(struct upstream_outbox *ob, size_t extra)
{
    if (atomic_load_explicit(&ob->fail_allocs, memory_order_relaxed))
        return NULL;
    return calloc(1, sizeof(struct upstream_res) + extra);
}

struct upstream_res *upstream_res_prealloc(enum upstream_res_kind kind, bool text)
{
    struct upstream_res *r = calloc(1, sizeof *r + (text ? UPSTREAM_TEXT_MAX : 0));

    if (r)
        r->kind = kind;
    return r;
}

void upstream_res_set_err(struct upstream_res *r, const struct upstream_error *err)
{
    r->has_err = err != NULL;
    if (!err)
        return;
    r->err = *err;
    snprintf(r->text, UPSTREAM_TEXT_MAX, "%s", err->text ? err->text : "");
    r->err.text = r->text;
}

int upstream_outbox_init(struct upstream_outbox *ob)
{
    pthread_mutex_init(&ob->lock, NULL);
    list_init(&ob->res);
    ob->signalled = false;
    atomic_init(&ob->fail_allocs, false);
    ob->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return ob->fd == -1 ? -errno : 0;
}

void upstream_res_free_list(struct list *res)
{
    struct upstream_res *r;

    while ((r = list_first_entry(res, struct upstream_res, link))) {
        list_unlink(&r->link);
        free(r);
    }
}

void upstream_outbox_deinit(struct upstream_outbox *ob)
{
    if (!ob->res.next)
        return; /* never initialised */
    upstream_res_free_list(&ob->res);
    if (ob->fd >= 0)
        close(ob->fd);
    ob->fd = -1;
    pthread_mutex_destroy(&ob->lock);
    ob->res = (struct list){NULL, NULL};
}

void upstream_outbox_push(struct upstream_outbox *ob, struct upstream_res *r)
{
    bool wake;
    uint64_t one = 1;

    pthread_mutex_lock(&ob->lock);
    list_link_tail(&ob->res, &r->link);
    wake = !ob->signalled;
    ob->signalled = true;
    pthread_mutex_unlock(&ob->lock);
    if (wake && write(ob->fd, &one, sizeof one) == -1) {
        /* EAGAIN: already readable. */
    }
}

void upstream_outbox_take(struct upstream_outbox *ob, struct list *out)
{
    uint64_t n;

    if (read(ob->fd, &n, sizeof n) == -1) {
        /* EAGAIN: a previous round took the results already */
    }
    pthread_mutex_lock(&ob->lock);
    list_splice_tail(out, &ob->res);
    ob->signalled = false;
    pthread_mutex_unlock(&ob->lock);
}

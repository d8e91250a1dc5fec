/*
 * tests/integration/test-upstream.c — bridge/upstream*.c against a real RabbitMQ, and the mailbox between its two sides.
 *
 * The mailbox cases (commands copied and queued, results queued, the out-of-memory hook) need no broker and always run.
 * The others need the broker scripts/test starts: WARREN_TEST_AMQP_PORT on 127.0.0.1, guest/guest; without it they are
 * skipped (exit 77 once the mailbox cases passed). Each case drives the client event_base until the callbacks it waits
 * for have run; the loop timeout only guards against a hang and fails the case, it never synchronises anything.
 *
 * The suites are 'integration' and 'tsan': scripts/test also runs this file in a ThreadSanitizer build, where every
 * command, result and connection-thread exit crosses between the loop and the connection threads.
 */
#include "bridge/upstream.h"
#include "bridge/upstream-int.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/harness.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <sys/socket.h>

/*
 * send() and recv() of this process, counted (the connection threads' socket I/O: the test's own sockets use
 * read/write/writev through libevent): test_publish_batched checks how many system calls a batch of publishes costs.
 */
static atomic_int n_send, n_recv_eagain;
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_recv)(int, void *, size_t, int);

/* Looks the real ones up, in main() before any thread starts. */
static void io_hooks_init(void)
{
    void *s = dlsym(RTLD_NEXT, "send"), *r = dlsym(RTLD_NEXT, "recv");

    memcpy(&real_send, &s, sizeof real_send);
    memcpy(&real_recv, &r, sizeof real_recv);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    atomic_fetch_add(&n_send, 1);
    return real_send(fd, buf, len, flags);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    ssize_t n = real_recv(fd, buf, len, flags);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        atomic_fetch_add(&n_recv_eagain, 1);
    return n;
}

#define GUARD_S 20

static char broker_addr[64];
static const char *brokers[1] = {broker_addr};
static struct event_base *base;
static bool timed_out;

struct done_rec {
    uint64_t tag;
    enum upstream_err kind;
    int code;
    char queue[256];
};

struct deliv_rec {
    char ctag[64];
    uint64_t dtag;
    char body[256];
    size_t body_len;
    char exchange[64], rk[128];
    char content_type[64], correlation_id[64];
    int delivery_mode, priority;
    size_t n_headers;
    char hname[4][32], hvalue[4][64];
};

struct sess {
    struct upstream_chan *ch;
    int opened; /* 0 pending, 1 ok, -1 failed */
    enum upstream_err open_kind;
    int open_code;
    char open_text[256];
    bool closed;
    enum upstream_err closed_kind;
    int closed_code;
    char closed_name[64];
    char closed_text[256];
    struct done_rec done[16];
    int n_done;
    struct deliv_rec del[8];
    int n_del;
};

static void on_open(void *ud, const struct upstream_error *err)
{
    struct sess *s = ud;
    s->opened = err ? -1 : 1;
    if (err) {
        s->open_kind = err->kind;
        s->open_code = err->code;
        snprintf(s->open_text, sizeof s->open_text, "%s", err->text ? err->text : "");
    }
}

static void on_done(void *ud, uint64_t op_tag, const struct upstream_error *err, const char *queue)
{
    struct sess *s = ud;
    struct done_rec *d;
    if (s->n_done == 16)
        return;
    d = &s->done[s->n_done++];
    d->tag = op_tag;
    d->kind = err ? err->kind : UPSTREAM_OK;
    d->code = err ? err->code : 0;
    snprintf(d->queue, sizeof d->queue, "%s", queue ? queue : "");
}

static void on_delivery(void *ud, const struct upstream_delivery *d)
{
    struct sess *s = ud;
    struct deliv_rec *r;
    if (s->n_del == 8)
        return;
    r = &s->del[s->n_del++];
    snprintf(r->ctag, sizeof r->ctag, "%s", d->consumer_tag);
    r->dtag = d->delivery_tag;
    r->body_len = d->body_len;
    memcpy(r->body, d->body, d->body_len < sizeof r->body ? d->body_len : sizeof r->body - 1);
    snprintf(r->exchange, sizeof r->exchange, "%s", d->exchange);
    snprintf(r->rk, sizeof r->rk, "%s", d->routing_key);
    snprintf(r->content_type, sizeof r->content_type, "%s", d->props.content_type ? d->props.content_type : "");
    snprintf(r->correlation_id, sizeof r->correlation_id, "%s", d->props.correlation_id ? d->props.correlation_id : "");
    r->delivery_mode = d->props.delivery_mode;
    r->priority = d->props.priority;
    r->n_headers = d->props.n_headers;
    for (size_t i = 0; i < d->props.n_headers && i < 4; i++) {
        snprintf(r->hname[i], sizeof r->hname[i], "%.*s", (int)d->props.headers[i].name_len, d->props.headers[i].name);
        snprintf(r->hvalue[i], sizeof r->hvalue[i], "%.*s", (int)d->props.headers[i].value_len, d->props.headers[i].value);
    }
}

static void on_cancel(void *ud, const char *consumer_tag)
{
}

static void on_closed(void *ud, const struct upstream_error *err)
{
    struct sess *s = ud;
    s->closed = true;
    s->closed_kind = err->kind;
    s->closed_code = err->code;
    snprintf(s->closed_name, sizeof s->closed_name, "%s", err->name ? err->name : "");
    snprintf(s->closed_text, sizeof s->closed_text, "%s", err->text ? err->text : "");
}

static void on_blocked(void *ud, bool blocked)
{
}

static const struct upstream_chan_cb cbs = {on_open, on_done, on_delivery, on_cancel, on_closed, on_blocked};

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    timed_out = true;
    event_base_loopbreak(base);
}

/* Runs the loop until cond(arg) holds; false (and a failed check) when the guard fires first. */
static bool wait_for(bool (*cond)(const void *), const void *arg, const char *what)
{
    struct event *guard = evtimer_new(base, on_guard, NULL);
    struct timeval tv = {GUARD_S, 0};

    timed_out = false;
    evtimer_add(guard, &tv);
    while (!cond(arg) && !timed_out)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    if (timed_out)
        fprintf(stderr, "timed out waiting for %s\n", what);
    CHECK(!timed_out);
    return !timed_out;
}

static bool is_opened(const void *arg)
{
    return ((const struct sess *)arg)->opened != 0;
}

static bool is_closed(const void *arg)
{
    return ((const struct sess *)arg)->closed;
}

struct done_wait {
    const struct sess *s;
    uint64_t tag;
};

static const struct done_rec *find_done(const struct sess *s, uint64_t tag)
{
    for (int i = 0; i < s->n_done; i++)
        if (s->done[i].tag == tag)
            return &s->done[i];
    return NULL;
}

static bool has_done(const void *arg)
{
    const struct done_wait *w = arg;
    return find_done(w->s, w->tag) != NULL;
}

static const struct done_rec *wait_done(const struct sess *s, uint64_t tag)
{
    struct done_wait w = {s, tag};
    return wait_for(has_done, &w, "on_done") ? find_done(s, tag) : NULL;
}

static bool has_delivery(const void *arg)
{
    return ((const struct sess *)arg)->n_del > 0;
}

static bool has_two_deliveries(const void *arg)
{
    return ((const struct sess *)arg)->n_del > 1;
}

static bool nothing_closing(const void *arg)
{
    struct upstream_stats st;
    upstream_get_stats(arg, &st);
    return st.closing == 0;
}

static struct upstream *new_upstream_auth(unsigned channel_max, unsigned idle_close_ms, unsigned auth_reuse_ms)
{
    struct upstream_config cfg = {
        .brokers = brokers,
        .n_brokers = 1,
        .heartbeat_s = 10,
        .channel_max = channel_max,
        .frame_max_bytes = 131072,
        .connect_timeout_ms = 5000,
        .reconnect_min_ms = 100,
        .reconnect_max_ms = 1000,
        .idle_close_ms = idle_close_ms,
        .auth_reuse_ms = auth_reuse_ms,
        .product = "warren-test",
        .version = "0",
    };
    struct upstream *up = NULL;
    CHECK_EQ_INT(upstream_new(base, &cfg, &up), 0);
    return up;
}

/* Logins are reused for an hour: every case but the auth_reuse_ms one shares connections. */
static struct upstream *new_upstream_idle(unsigned channel_max, unsigned idle_close_ms)
{
    return new_upstream_auth(channel_max, idle_close_ms, 3600000);
}

/* Idle connections are kept (idle_close_ms = 0), as every case but the idle ones expects. */
static struct upstream *new_upstream(unsigned channel_max)
{
    return new_upstream_idle(channel_max, 0);
}

static char conn_name[64];
static const struct upstream_login guest = {"/", "guest", "guest", conn_name};

static bool open_sess(struct upstream *up, const struct upstream_login *login, struct sess *s)
{
    memset(s, 0, sizeof *s);
    CHECK_EQ_INT(upstream_chan_open(up, login, &cbs, s, &s->ch), 0);
    return wait_for(is_opened, s, "on_open");
}

/* Several sessions of one credential share one AMQP connection. */
static void test_shared_connection(void)
{
    struct upstream *up = new_upstream(0);
    struct sess s[3];
    struct upstream_stats st;

    for (int i = 0; i < 3; i++) {
        open_sess(up, &guest, &s[i]);
        CHECK_EQ_INT(s[i].opened, 1);
    }
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 1);
    CHECK_EQ_INT(st.channels, 3);
    for (int i = 0; i < 3; i++)
        upstream_chan_release(s[i].ch);
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.channels, 0);
    wait_for(nothing_closing, up, "channels closed");
    upstream_free(up);
}

/* declare + bind + consume on one channel, publish with properties and headers on another, confirm, delivery, ack. */
static void test_roundtrip(void)
{
    struct upstream *up = new_upstream(0);
    struct sess a, b;
    char rk[64], queue[256] = "";
    const struct done_rec *d;
    struct upstream_header hdrs[2] = {{"x-a", 3, "1", 1}, {"x-b", 3, "two", 3}};
    struct upstream_props props = {.content_type = "text/plain",
                                   .correlation_id = "corr-1",
                                   .delivery_mode = 2,
                                   .priority = 3,
                                   .headers = hdrs,
                                   .n_headers = 2};
    struct upstream_arg qargs[1] = {{"x-message-ttl", UPSTREAM_ARG_INT, NULL, 60000}};

    snprintf(rk, sizeof rk, "upstream.test.%d", (int)getpid());
    if (!open_sess(up, &guest, &a) || !open_sess(up, &guest, &b))
        goto out;
    CHECK_EQ_INT(
        upstream_chan_declare_queue(a.ch, 1, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_AUTO_DELETE | UPSTREAM_Q_OWNED, qargs, 1), 0);
    d = wait_done(&a, 1);
    CHECK(d && d->kind == UPSTREAM_OK && strncmp(d->queue, "amq.gen-", 8) == 0);
    if (d)
        snprintf(queue, sizeof queue, "%s", d->queue);
    CHECK_EQ_INT(upstream_chan_bind(a.ch, 2, queue, "amq.topic", rk), 0);
    CHECK_EQ_INT(upstream_chan_consume(a.ch, 3, queue, "ctag-1", 10, false, false, NULL, 0), 0);
    d = wait_done(&a, 3);
    CHECK(d && d->kind == UPSTREAM_OK);
    CHECK(find_done(&a, 2) && find_done(&a, 2)->kind == UPSTREAM_OK);

    CHECK_EQ_INT(upstream_chan_publish(b.ch, 10, "amq.topic", rk, &props, (const uint8_t *)"hello", 5), 0);
    d = wait_done(&b, 10);
    CHECK(d && d->kind == UPSTREAM_OK);
    if (wait_for(has_delivery, &a, "delivery")) {
        const struct deliv_rec *r = &a.del[0];
        CHECK(strcmp(r->ctag, "ctag-1") == 0);
        CHECK(r->body_len == 5 && memcmp(r->body, "hello", 5) == 0);
        CHECK(strcmp(r->exchange, "amq.topic") == 0 && strcmp(r->rk, rk) == 0);
        CHECK(strcmp(r->content_type, "text/plain") == 0);
        CHECK(strcmp(r->correlation_id, "corr-1") == 0);
        CHECK_EQ_INT(r->delivery_mode, 2);
        CHECK_EQ_INT(r->priority, 3);
        CHECK_EQ_INT(r->n_headers, 2);
        CHECK(strcmp(r->hname[0], "x-a") == 0 && strcmp(r->hvalue[0], "1") == 0);
        CHECK(strcmp(r->hname[1], "x-b") == 0 && strcmp(r->hvalue[1], "two") == 0);
        CHECK_EQ_INT(upstream_chan_ack(a.ch, r->dtag, false), 0);
    }
    /* An empty body and no properties. */
    CHECK_EQ_INT(upstream_chan_publish(b.ch, 11, "amq.topic", rk, NULL, NULL, 0), 0);
    d = wait_done(&b, 11);
    CHECK(d && d->kind == UPSTREAM_OK);
    if (wait_for(has_two_deliveries, &a, "second delivery")) {
        CHECK_EQ_INT(a.del[1].body_len, 0);
        CHECK_EQ_INT(a.del[1].priority, -1);
        CHECK_EQ_INT(a.del[1].n_headers, 0);
        CHECK(a.del[1].dtag > a.del[0].dtag);
        CHECK_EQ_INT(upstream_chan_nack(a.ch, a.del[1].dtag, false, false), 0);
    }
    CHECK_EQ_INT(upstream_chan_cancel(a.ch, 4, "ctag-1"), 0);
    d = wait_done(&a, 4);
    CHECK(d && d->kind == UPSTREAM_OK);
    struct upstream_stats st;
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.published, 2);
    CHECK_EQ_INT(st.delivered, 2);
out:
    upstream_chan_release(a.ch);
    upstream_chan_release(b.ch);
    upstream_free(up);
}

static bool sixteen_done(const void *arg)
{
    return ((const struct sess *)arg)->n_done == 16;
}

/*
 * Publishes queued together go to the broker together: at most one send() per round of the connection thread for all
 * their frames (method, header, body each), never one per frame, and no recv() that finds nothing (the thread reads
 * only what poll() said is there). (Before: three sends per publish, 48 here, and a recv() failing with EAGAIN each
 * round.)
 */
static void test_publish_batched(void)
{
    struct upstream *up = new_upstream(0);
    struct sess a;
    char rk[64];
    int sends, eagain;

    snprintf(rk, sizeof rk, "upstream.batch.%d", (int)getpid());
    if (!open_sess(up, &guest, &a))
        goto out;
    atomic_store(&n_send, 0);
    atomic_store(&n_recv_eagain, 0);
    for (int i = 0; i < 16; i++)
        CHECK_EQ_INT(upstream_chan_publish(a.ch, 100 + (uint64_t)i, "amq.topic", rk, NULL, (const uint8_t *)"body", 4), 0);
    if (wait_for(sixteen_done, &a, "16 confirms")) {
        sends = atomic_load(&n_send);
        eagain = atomic_load(&n_recv_eagain);
        printf("# 16 publishes: %d send(), %d recv() with EAGAIN\n", sends, eagain);
        CHECK(sends >= 1 && sends < 16);
        CHECK_EQ_INT(eagain, 0);
        for (int i = 0; i < 16; i++)
            CHECK(a.done[i].tag == 100 + (uint64_t)i && a.done[i].kind == UPSTREAM_OK);
    }
out:
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "CHAN_DONE");
    upstream_free(up);
}

/*
 * A released channel that carries nothing of its session is kept open and given to the next session of the connection:
 * neither the release nor the next open sends anything to the broker, and the reused channel publishes (its confirms
 * count on from the first session's). A channel that consumed is closed at its release as before: the next open sends
 * channel.open. (Before: channel.close, then channel.open and confirm.select, for every session.)
 */
static void test_channel_pool(void)
{
    struct upstream *up = new_upstream(0);
    struct sess a, b, c;
    char rk[64], queue[256] = "";
    const struct done_rec *d;

    snprintf(rk, sizeof rk, "upstream.pool.%d", (int)getpid());
    if (!open_sess(up, &guest, &a))
        goto out;
    CHECK_EQ_INT(upstream_chan_publish(a.ch, 1, "amq.topic", rk, NULL, (const uint8_t *)"a", 1), 0);
    d = wait_done(&a, 1);
    CHECK(d && d->kind == UPSTREAM_OK);
    atomic_store(&n_send, 0);
    upstream_chan_release(a.ch);
    a.ch = NULL;
    wait_for(nothing_closing, up, "CHAN_DONE of a");
    if (!open_sess(up, &guest, &b))
        goto out;
    CHECK_EQ_INT(b.opened, 1);
    CHECK_EQ_INT(atomic_load(&n_send), 0); /* no channel.close, no channel.open */
    CHECK_EQ_INT(upstream_chan_publish(b.ch, 2, "amq.topic", rk, NULL, (const uint8_t *)"b", 1), 0);
    d = wait_done(&b, 2);
    CHECK(d && d->kind == UPSTREAM_OK);
    CHECK_EQ_INT(upstream_chan_declare_queue(b.ch, 3, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_AUTO_DELETE, NULL, 0), 0);
    d = wait_done(&b, 3);
    if (d)
        snprintf(queue, sizeof queue, "%s", d->queue);
    CHECK_EQ_INT(upstream_chan_consume(b.ch, 4, queue, "ctag-pool", 10, false, false, NULL, 0), 0);
    d = wait_done(&b, 4);
    CHECK(d && d->kind == UPSTREAM_OK);
    upstream_chan_release(b.ch);
    b.ch = NULL;
    wait_for(nothing_closing, up, "CHAN_DONE of b");
    atomic_store(&n_send, 0);
    if (open_sess(up, &guest, &c)) {
        CHECK_EQ_INT(c.opened, 1);
        CHECK(atomic_load(&n_send) >= 1); /* a consumer's channel is not reused: channel.open went out */
        upstream_chan_release(c.ch);
    }
out:
    upstream_chan_release(a.ch);
    upstream_chan_release(b.ch);
    wait_for(nothing_closing, up, "CHAN_DONE");
    upstream_free(up);
}

/* A channel error closes only that channel; another channel of the same connection keeps working. */
static void test_channel_error(void)
{
    struct upstream *up = new_upstream(0);
    struct sess x, y;
    char missing[64];
    const struct done_rec *d;
    struct upstream_stats st;

    snprintf(missing, sizeof missing, "warren-missing-%d", (int)getpid());
    if (!open_sess(up, &guest, &x) || !open_sess(up, &guest, &y))
        goto out;
    CHECK_EQ_INT(upstream_chan_consume(x.ch, 1, missing, "c", 1, false, false, NULL, 0), 0);
    CHECK_EQ_INT(upstream_chan_publish(x.ch, 2, "", "nowhere", NULL, (const uint8_t *)"x", 1), 0);
    if (wait_for(is_closed, &x, "on_closed")) {
        CHECK_EQ_INT(x.closed_kind, UPSTREAM_ERR_CHANNEL);
        CHECK_EQ_INT(x.closed_code, 404);
        CHECK(strcmp(x.closed_name, "not_found") == 0);
        d = find_done(&x, 1);
        CHECK(d && d->kind == UPSTREAM_ERR_CHANNEL && d->code == 404);
        /* The publish may have reached the connection thread before or after the channel died: failed either way. */
        d = find_done(&x, 2);
        CHECK(!d || d->kind == UPSTREAM_ERR_CHANNEL);
        CHECK_EQ_INT(upstream_chan_publish(x.ch, 3, "", "q", NULL, NULL, 0), UPSTREAM_ERR_CLOSED);
    }
    CHECK_EQ_INT(upstream_chan_declare_queue(y.ch, 5, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    d = wait_done(&y, 5);
    CHECK(d && d->kind == UPSTREAM_OK);
    CHECK(!y.closed);
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 1);
    CHECK_EQ_INT(st.channels, 1);
    /* A missing exchange on publish closes the channel too (not_found). */
    CHECK_EQ_INT(upstream_chan_publish(y.ch, 6, "warren-no-such-exchange", "k", NULL, (const uint8_t *)"x", 1), 0);
    if (wait_for(is_closed, &y, "on_closed after publish")) {
        CHECK_EQ_INT(y.closed_code, 404);
        d = find_done(&y, 6);
        CHECK(d && d->kind == UPSTREAM_ERR_CHANNEL);
    }
out:
    upstream_chan_release(x.ch);
    upstream_chan_release(y.ch);
    upstream_free(up);
}

/* A queue declared UPSTREAM_Q_OWNED is deleted at release, even a durable, non-exclusive one. */
static void test_owned_deleted(void)
{
    struct upstream *up = new_upstream(0);
    struct sess a, b;
    char name[64];
    const struct done_rec *d;

    snprintf(name, sizeof name, "warren-owned-%d", (int)getpid());
    if (!open_sess(up, &guest, &a))
        goto out;
    CHECK_EQ_INT(upstream_chan_declare_queue(a.ch, 1, name, UPSTREAM_Q_DURABLE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    d = wait_done(&a, 1);
    CHECK(d && d->kind == UPSTREAM_OK && strcmp(d->queue, name) == 0);
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "release");
    if (!open_sess(up, &guest, &b))
        goto out;
    CHECK_EQ_INT(upstream_chan_declare_queue(b.ch, 2, name, UPSTREAM_Q_PASSIVE, NULL, 0), 0);
    if (wait_for(is_closed, &b, "passive declare to fail")) {
        CHECK_EQ_INT(b.closed_code, 404);
        d = find_done(&b, 2);
        CHECK(d && d->kind == UPSTREAM_ERR_CHANNEL);
    }
    upstream_chan_release(b.ch);
out:
    upstream_free(up);
}

/* A bad password (and a denied vhost) fails the open with ACCESS_REFUSED, and the ops queued behind it. */
static void test_access_refused(void)
{
    struct upstream *up = new_upstream(0);
    struct upstream_login bad = {"/", "guest", "wrong-password", NULL};
    struct upstream_login novhost = {"warren-no-such-vhost", "guest", "guest", NULL};
    struct sess s, t;
    struct upstream_stats st;

    memset(&s, 0, sizeof s);
    CHECK_EQ_INT(upstream_chan_open(up, &bad, &cbs, &s, &s.ch), 0);
    CHECK_EQ_INT(upstream_chan_declare_queue(s.ch, 1, "", UPSTREAM_Q_EXCLUSIVE, NULL, 0), 0);
    if (wait_for(is_opened, &s, "on_open")) {
        CHECK_EQ_INT(s.opened, -1);
        CHECK_EQ_INT(s.open_kind, UPSTREAM_ERR_ACCESS_REFUSED);
        CHECK(strstr(s.open_text, "ACCESS_REFUSED") != NULL);
        const struct done_rec *d = wait_done(&s, 1); /* after on_open, maybe in a later loop round */
        CHECK(d && d->kind == UPSTREAM_ERR_ACCESS_REFUSED);
    }
    upstream_chan_release(s.ch);
    open_sess(up, &novhost, &t);
    CHECK_EQ_INT(t.opened, -1);
    CHECK_EQ_INT(t.open_kind, UPSTREAM_ERR_ACCESS_REFUSED);
    CHECK(strstr(t.open_text, "warren-no-such-vhost") != NULL);
    upstream_chan_release(t.ch);
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 0);
    CHECK_EQ_INT(st.channels, 0);
    upstream_free(up);
}

/* channel_max = 2: a third session of the same credential gets a second connection. */
static void test_channel_max(void)
{
    struct upstream *up = new_upstream(2);
    struct sess s[3];
    struct upstream_stats st;

    for (int i = 0; i < 3; i++) {
        open_sess(up, &guest, &s[i]);
        CHECK_EQ_INT(s[i].opened, 1);
    }
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 2);
    CHECK_EQ_INT(st.channels, 3);
    /* Channel numbers are reused after close-ok: release one, a new session fits the first connection again. */
    upstream_chan_release(s[0].ch);
    wait_for(nothing_closing, up, "release");
    open_sess(up, &guest, &s[0]);
    CHECK_EQ_INT(s[0].opened, 1);
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 2);
    for (int i = 0; i < 3; i++)
        upstream_chan_release(s[i].ch);
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Many channels at once, before the first login tells the connection's channel_max. Every channel is given, before the
 * loop runs at all, a declare + consume + publish of its own: they must run in order once it is open, wherever it went.
 */

#define BURST 5

struct burst {
    struct sess s[BURST];
    char queue[BURST][64];
};

static bool burst_ready(const void *arg)
{
    const struct burst *b = arg;
    for (int i = 0; i < BURST; i++)
        if (b->s[i].opened == 0 || (b->s[i].opened == 1 && (b->s[i].n_del == 0 || b->s[i].n_done < 3) && !b->s[i].closed))
            return false;
    return true;
}

/* Opens BURST channels and queues their operations without running the loop; waits until each got its message back and
 * its publish confirmed. */
static void burst_run(struct upstream *up, const struct upstream_login *login, struct burst *b, const char *tag)
{
    memset(b, 0, sizeof *b);
    for (int i = 0; i < BURST; i++) {
        struct upstream_chan *ch;
        snprintf(b->queue[i], sizeof b->queue[i], "warren-%s-%d-%d", tag, (int)getpid(), i);
        CHECK_EQ_INT(upstream_chan_open(up, login, &cbs, &b->s[i], &b->s[i].ch), 0);
        ch = b->s[i].ch;
        CHECK_EQ_INT(upstream_chan_declare_queue(ch, 1, b->queue[i], UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
        CHECK_EQ_INT(upstream_chan_consume(ch, 2, b->queue[i], "burst", 10, true, false, NULL, 0), 0);
        CHECK_EQ_INT(upstream_chan_publish(ch, 3, "", b->queue[i], NULL, (const uint8_t *)b->queue[i], strlen(b->queue[i])), 0);
    }
    if (!wait_for(burst_ready, b, "every channel of the burst to open and get its message"))
        return;
    for (int i = 0; i < BURST; i++) {
        const struct sess *s = &b->s[i];
        if (s->opened != 1)
            fprintf(stderr, "burst channel %d: open failed: %s\n", i, s->open_text);
        CHECK_EQ_INT(s->opened, 1);
        CHECK(!s->closed);
        CHECK_EQ_INT(s->n_done, 3);
        for (int k = 0; k < s->n_done && k < 3; k++) {
            CHECK_EQ_INT(s->done[k].tag, (uint64_t)k + 1); /* in the order queued */
            CHECK_EQ_INT(s->done[k].kind, UPSTREAM_OK);
        }
        CHECK(s->n_del == 1 && s->del[0].body_len == strlen(b->queue[i]) &&
              memcmp(s->del[0].body, b->queue[i], s->del[0].body_len) == 0);
    }
}

static void burst_release(struct upstream *up, struct burst *b)
{
    for (int i = 0; i < BURST; i++)
        upstream_chan_release(b->s[i].ch);
    wait_for(nothing_closing, up, "the burst's channels to close");
}

/* A channel released while it waits for its connection's login: freed at once, no callback, nothing leaks. */
static void open_release_waiting(struct upstream *up, const struct upstream_login *login)
{
    struct sess *s = calloc(1, sizeof *s);

    CHECK_EQ_INT(upstream_chan_open(up, login, &cbs, s, &s->ch), 0);
    CHECK_EQ_INT(upstream_chan_declare_queue(s->ch, 1, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    upstream_chan_release(s->ch);
    free(s); /* a callback for it would now be a use after free */
}

/* channel_max = 2 in the config, 5 channels at once: 3 connections, and all 5 work. */
static void test_channel_max_burst(void)
{
    struct upstream *up = new_upstream(2);
    struct upstream_stats st;
    struct burst *b = calloc(1, sizeof *b);

    open_release_waiting(up, &guest);
    burst_run(up, &guest, b, "burst");
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 3);
    CHECK_EQ_INT(st.channels, BURST);
    burst_release(up, b);
    upstream_free(up);
    free(b);
}

/*
 * A broker whose channel_max is lower than warren's cap, without a broker of its own: a TCP proxy on the test's loop that
 * lowers channel_max in the broker's connection.tune (AMQP 0-9-1 §1.4.2.5). rabbitmq-c's tune-ok then carries the lower
 * value, and RabbitMQ holds the connection to it (a channel.open beyond it is a connection error, not_allowed).
 */
struct tune_link {
    struct bufferevent *client, *broker;
    bool tuned;
    struct tune_proxy *proxy;
    struct tune_link *next;
};

struct tune_proxy {
    struct evconnlistener *lis;
    char addr[64];
    uint16_t chan_max;
    bool frozen; /* stops reading from warren, as a blocked broker does */
    int n_tuned; /* connection.tune frames lowered */
    struct tune_link *links;
};

static void tune_link_free(struct tune_link *l)
{
    for (struct tune_link **pp = &l->proxy->links; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    bufferevent_free(l->client);
    bufferevent_free(l->broker);
    free(l);
}

static void tune_on_client(struct bufferevent *bev, void *arg)
{
    struct tune_link *l = arg;
    if (l->proxy->frozen) {
        bufferevent_disable(bev, EV_READ);
        return;
    }
    evbuffer_add_buffer(bufferevent_get_output(l->broker), bufferevent_get_input(bev));
}

/* From now on the proxy reads nothing more from warren's side (what is in its buffers stays there): warren's socket
 * fills as when RabbitMQ blocks a publishing connection and stops reading it. */
static void tune_proxy_freeze(struct tune_proxy *p)
{
    p->frozen = true;
    for (struct tune_link *l = p->links; l; l = l->next) {
        bufferevent_disable(l->client, EV_READ);
        bufferevent_setwatermark(l->client, EV_READ, 0, 1); /* libevent buffers no more than this */
    }
}

/* Bytes warren wrote that the frozen proxy left in its sockets' receive buffers. */
static bool proxy_filled(const void *arg)
{
    const struct tune_proxy *p = arg;
    int n = 0;

    for (const struct tune_link *l = p->links; l; l = l->next) {
        int k = 0;
        if (ioctl(bufferevent_getfd(l->client), FIONREAD, &k) == 0)
            n += k;
    }
    return n >= (16 << 10); /* the receive window of a socket nobody reads stays small: this is most of it */
}

/* Broker -> client: frames are passed on whole until the connection.tune (class 10, method 30) is lowered, then bytes. */
static void tune_on_broker(struct bufferevent *bev, void *arg)
{
    struct tune_link *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(l->client);

    while (!l->tuned) {
        uint8_t h[11] = {0};
        size_t len;
        if (evbuffer_copyout(in, h, 7) < 7)
            return;
        len = 7 + ((size_t)h[3] << 24 | (size_t)h[4] << 16 | (size_t)h[5] << 8 | h[6]) + 1;
        if (evbuffer_get_length(in) < len)
            return;
        evbuffer_copyout(in, h, sizeof h);
        if (h[0] == 1 && len >= 7 + 4 + 8 + 1 && h[7] == 0 && h[8] == 10 && h[9] == 0 && h[10] == 30) {
            uint8_t *f = evbuffer_pullup(in, (ev_ssize_t)len);
            uint16_t broker_max = (uint16_t)(f[11] << 8 | f[12]);
            if (broker_max == 0 || broker_max > l->proxy->chan_max) {
                f[11] = (uint8_t)(l->proxy->chan_max >> 8);
                f[12] = (uint8_t)l->proxy->chan_max;
            }
            l->tuned = true;
            l->proxy->n_tuned++;
        }
        evbuffer_remove_buffer(in, out, len);
    }
    evbuffer_add_buffer(out, in);
}

/* Once the side that ended has had its last bytes passed on, the link goes. */
static void tune_on_drained(struct bufferevent *bev, void *arg)
{
    tune_link_free(arg);
}

static void tune_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct tune_link *l = arg;
    struct bufferevent *other = bev == l->client ? l->broker : l->client;

    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    bufferevent_disable(bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(other)) == 0) {
        tune_link_free(l);
        return;
    }
    bufferevent_setcb(other, NULL, tune_on_drained, NULL, l);
}

static void tune_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct tune_proxy *p = arg;
    struct tune_link *l = calloc(1, sizeof *l);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strchr(broker_addr, ':') + 1))};

    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->proxy = p;
    l->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    l->broker = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    l->next = p->links;
    p->links = l;
    bufferevent_setcb(l->client, tune_on_client, NULL, tune_on_event, l);
    bufferevent_setcb(l->broker, tune_on_broker, NULL, tune_on_event, l);
    bufferevent_enable(l->client, EV_READ);
    bufferevent_enable(l->broker, EV_READ);
    if (bufferevent_socket_connect(l->broker, (struct sockaddr *)&to, sizeof to) != 0)
        tune_link_free(l);
}

static bool tune_proxy_start(struct tune_proxy *p, uint16_t chan_max)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sin;

    memset(p, 0, sizeof *p);
    p->chan_max = chan_max;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->lis = evconnlistener_new_bind(base, tune_on_accept, p, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
                                     (struct sockaddr *)&sin, sizeof sin);
    CHECK(p->lis != NULL);
    if (!p->lis || getsockname(evconnlistener_get_fd(p->lis), (struct sockaddr *)&sin, &len) != 0)
        return false;
    snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    return true;
}

static void tune_proxy_stop(struct tune_proxy *p)
{
    while (p->links)
        tune_link_free(p->links);
    if (p->lis)
        evconnlistener_free(p->lis);
}

/* upstream_free() while channels (and their operations) wait for a login: freed, no callback. */
static void test_free_while_waiting(void)
{
    struct upstream *up = new_upstream(0);
    struct sess s[2];

    for (int i = 0; i < 2; i++) {
        memset(&s[i], 0, sizeof s[i]);
        CHECK_EQ_INT(upstream_chan_open(up, &guest, &cbs, &s[i], &s[i].ch), 0);
        CHECK_EQ_INT(upstream_chan_publish(s[i].ch, 1, "", "nowhere", NULL, (const uint8_t *)"x", 1), 0);
    }
    upstream_free(up);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(s[0].opened == 0 && s[0].n_done == 0 && s[1].opened == 0 && s[1].n_done == 0);
}

/* The config allows 2047 channels, the broker 2: 5 channels at once spread over 3 connections; all work. A connection over
 * its channel_max would be closed by the broker. */
static void test_broker_channel_max(void)
{
    struct tune_proxy proxy;
    const char *via[1] = {proxy.addr};
    struct upstream_config cfg = {.brokers = via,
                                  .n_brokers = 1,
                                  .channel_max = 2047,
                                  .frame_max_bytes = 131072,
                                  .connect_timeout_ms = 5000,
                                  .reconnect_min_ms = 100,
                                  .reconnect_max_ms = 1000,
                                  .auth_reuse_ms = 3600000};
    struct upstream *up = NULL;
    struct upstream_stats st;
    struct burst *b = calloc(1, sizeof *b), *b2 = calloc(1, sizeof *b2);

    if (!tune_proxy_start(&proxy, 2) || upstream_new(base, &cfg, &up) != 0)
        goto out;
    open_release_waiting(up, &guest);
    burst_run(up, &guest, b, "tuned");
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 3);
    CHECK_EQ_INT(st.channels, BURST);
    CHECK_EQ_INT(proxy.n_tuned, 3);
    /* 5 more at once, the first 5 still open: one fits the third connection, 4 go to two new ones. */
    burst_run(up, &guest, b2, "tuned-more");
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.connections, 5);
    CHECK_EQ_INT(st.channels, 2 * BURST);
    CHECK_EQ_INT(proxy.n_tuned, 5);
    burst_release(up, b);
    burst_release(up, b2);
out:
    upstream_free(up);
    tune_proxy_stop(&proxy);
    free(b);
    free(b2);
}

static bool no_connection(const void *arg)
{
    struct upstream_stats st;
    upstream_get_stats(arg, &st);
    return st.connections == 0;
}

/* The broker closes the connection (rabbitmqctl close_all_connections): every channel on it gets on_closed(CONNECTION),
 * the pool forgets it, and the next session gets a new connection. Needs WARREN_TEST_RABBITMQCTL. */
static void test_connection_closed(void)
{
    const char *ctl = getenv("WARREN_TEST_RABBITMQCTL");
    struct upstream *up;
    struct sess a, b, c;
    struct upstream_stats st;
    char cmd[512];

    if (!ctl || !*ctl) {
        printf("# skipped: WARREN_TEST_RABBITMQCTL is not set\n");
        return;
    }
    up = new_upstream(0);
    if (!open_sess(up, &guest, &a) || !open_sess(up, &guest, &b))
        goto out;
    /* Only this process's connection: the broker may be shared with other tests. */
    snprintf(cmd, sizeof cmd,
             "'%s' -q list_connections pid client_properties | grep -F '%s' | cut -f1 | "
             "xargs -r -I@ '%s' close_connection @ bye >/dev/null 2>&1",
             ctl, conn_name, ctl);
    CHECK_EQ_INT(system(cmd), 0);
    if (wait_for(is_closed, &a, "on_closed a") && wait_for(is_closed, &b, "on_closed b")) {
        CHECK_EQ_INT(a.closed_kind, UPSTREAM_ERR_CONNECTION);
        CHECK_EQ_INT(a.closed_code, 320);
        CHECK(strcmp(a.closed_name, "connection_forced") == 0);
        CHECK_EQ_INT(b.closed_kind, UPSTREAM_ERR_CONNECTION);
    }
    CHECK_EQ_INT(upstream_chan_publish(a.ch, 1, "", "q", NULL, NULL, 0), UPSTREAM_ERR_CLOSED);
    upstream_chan_release(a.ch);
    upstream_chan_release(b.ch);
    wait_for(no_connection, up, "the pool to forget the connection");
    if (open_sess(up, &guest, &c)) {
        CHECK_EQ_INT(c.opened, 1);
        upstream_get_stats(up, &st);
        CHECK_EQ_INT(st.connections, 1);
        CHECK_EQ_INT(st.channels, 1);
        upstream_chan_release(c.ch);
    }
out:
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Idle connections (idle_close_ms). Each case logs in with a connection_name of its own, so that rabbitmqctl can tell its
 * connections apart. What must NOT close is checked against a witness: another upstream whose idle connection closes after
 * a longer idle_close_ms, so the loop has run past the deadline of the one under test when the witness is gone.
 */

#define IDLE_MS         200
#define IDLE_WITNESS_MS (2 * IDLE_MS)

static const char *ctl_path(void)
{
    const char *ctl = getenv("WARREN_TEST_RABBITMQCTL");
    return ctl && *ctl ? ctl : NULL;
}

/* The broker's count of connections named `name`, or -1 when it cannot be asked. */
static int ctl_count_connections(const char *name)
{
    char cmd[512];
    int n = -1;
    FILE *f;

    if (!ctl_path())
        return -1;
    snprintf(cmd, sizeof cmd, "'%s' -q list_connections client_properties | grep -cF -- '\"%s\"'", ctl_path(), name);
    f = popen(cmd, "r");
    if (!f)
        return -1;
    if (fscanf(f, "%d", &n) != 1)
        n = -1;
    pclose(f);
    return n;
}

/* Asks the broker until it lists `want` connections named `name` (it may drop a closed one a moment after close-ok).
 * Each rabbitmqctl run takes a good fraction of a second, which paces the tries. True when it agreed, or cannot be asked. */
static bool ctl_agrees(const char *name, int want)
{
    int n = -1;

    if (!ctl_path())
        return true;
    for (int i = 0; i < 20 && n != want; i++)
        n = ctl_count_connections(name);
    if (n != want)
        fprintf(stderr, "rabbitmqctl lists %d connection(s) named %s, expected %d\n", n, name, want);
    CHECK_EQ_INT(n, want);
    return n == want;
}

static int connections_of(const struct upstream *up)
{
    struct upstream_stats st;
    upstream_get_stats(up, &st);
    return (int)st.connections;
}

static bool one_connection(const void *arg)
{
    return connections_of(arg) == 1;
}

/* Opens and releases a channel on a witness upstream (idle_close_ms = IDLE_WITNESS_MS), then runs the loop until the
 * witness's idle connection is closed: at least IDLE_WITNESS_MS have passed on the loop since this call. */
static void idle_witness_run(void)
{
    struct upstream *w = new_upstream_idle(0, IDLE_WITNESS_MS);
    struct upstream_login login = guest;
    char name[96];
    struct sess s;

    snprintf(name, sizeof name, "%s-idle-witness", conn_name);
    login.conn_name = name;
    if (open_sess(w, &login, &s)) {
        upstream_chan_release(s.ch);
        wait_for(no_connection, w, "the witness's idle connection to close");
    }
    upstream_free(w);
}

/* The last channel released and closed: IDLE_MS later the connection is closed (connection.close) and its thread joined. */
static void test_idle_close(void)
{
    struct upstream *up = new_upstream_idle(0, IDLE_MS);
    struct upstream_login login = guest;
    char name[96];
    struct sess a, b;
    struct upstream_stats st;

    snprintf(name, sizeof name, "%s-idle-close", conn_name);
    login.conn_name = name;
    if (!open_sess(up, &login, &a) || !open_sess(up, &login, &b))
        goto out;
    CHECK_EQ_INT(connections_of(up), 1);
    ctl_agrees(name, 1);
    /* One channel left: not idle. */
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "the first channel to close");
    CHECK_EQ_INT(upstream_chan_declare_queue(b.ch, 1, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    CHECK(wait_done(&b, 1) && find_done(&b, 1)->kind == UPSTREAM_OK);
    upstream_chan_release(b.ch);
    wait_for(nothing_closing, up, "the last channel to close");
    CHECK_EQ_INT(connections_of(up), 1); /* until the timer fires and the broker answers connection.close */
    if (wait_for(no_connection, up, "the idle connection to close")) {
        upstream_get_stats(up, &st);
        CHECK_EQ_INT(st.channels, 0);
        CHECK_EQ_INT(st.closing, 0);
        ctl_agrees(name, 0);
    }
out:
    upstream_free(up);
}

/* A channel of the same credential opened before the timer fires reuses the connection, which then stays while in use;
 * once that channel is gone too, the connection closes. */
static void test_idle_reuse(void)
{
    struct upstream *up = new_upstream_idle(0, IDLE_MS);
    struct upstream_login login = guest;
    char name[96];
    struct sess a, b, c;
    const struct done_rec *d;

    snprintf(name, sizeof name, "%s-idle-reuse", conn_name);
    login.conn_name = name;
    if (!open_sess(up, &login, &a))
        goto out;
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "the channel to close"); /* the idle timer is armed from here */
    if (!open_sess(up, &login, &b))
        goto out;
    CHECK_EQ_INT(b.opened, 1);
    CHECK_EQ_INT(connections_of(up), 1);
    idle_witness_run();
    CHECK_EQ_INT(connections_of(up), 1);
    ctl_agrees(name, 1);
    /* Still in the pool (not retired by a stale timer): another session of the credential gets it too. */
    if (open_sess(up, &login, &c)) {
        CHECK_EQ_INT(c.opened, 1);
        CHECK_EQ_INT(connections_of(up), 1);
        upstream_chan_release(c.ch);
    }
    /* The reused connection and channel work: declare, publish with a confirm, get the message back. */
    CHECK_EQ_INT(upstream_chan_declare_queue(b.ch, 1, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    d = wait_done(&b, 1);
    if (d && d->kind == UPSTREAM_OK) {
        char queue[256];
        snprintf(queue, sizeof queue, "%s", d->queue);
        CHECK_EQ_INT(upstream_chan_consume(b.ch, 2, queue, "idle", 10, true, false, NULL, 0), 0);
        CHECK_EQ_INT(upstream_chan_publish(b.ch, 3, "", queue, NULL, (const uint8_t *)"again", 5), 0);
        d = wait_done(&b, 3);
        CHECK(d && d->kind == UPSTREAM_OK);
        if (wait_for(has_delivery, &b, "the delivery on the reused connection"))
            CHECK(b.del[0].body_len == 5 && memcmp(b.del[0].body, "again", 5) == 0);
    }
    CHECK(!b.closed);
    upstream_chan_release(b.ch);
    wait_for(no_connection, up, "the connection to close once idle again");
    ctl_agrees(name, 0);
out:
    upstream_free(up);
}

/* idle_close_ms = 0: an idle connection stays open (until upstream_free). */
static void test_idle_keep(void)
{
    struct upstream *up = new_upstream_idle(0, 0);
    struct upstream_login login = guest;
    char name[96];
    struct sess a, b;

    snprintf(name, sizeof name, "%s-idle-keep", conn_name);
    login.conn_name = name;
    if (!open_sess(up, &login, &a))
        goto out;
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "the channel to close");
    idle_witness_run();
    CHECK_EQ_INT(connections_of(up), 1);
    ctl_agrees(name, 1);
    /* Still usable: the next session gets it. */
    if (open_sess(up, &login, &b)) {
        CHECK_EQ_INT(b.opened, 1);
        CHECK_EQ_INT(connections_of(up), 1);
        upstream_chan_release(b.ch);
    }
out:
    upstream_free(up);
}

/*
 * auth_reuse_ms = 0: a connection takes no session after the one its login was made for, so the second session of the
 * credential logs in on a connection of its own; and the first connection, which nobody may join any more, closes as
 * soon as its session is released, although idle_close_ms is long.
 */
static void test_auth_reuse(void)
{
    struct upstream *up = new_upstream_auth(0, 3600000, 0);
    struct upstream_login login = guest;
    char name[96];
    struct sess a, b;

    snprintf(name, sizeof name, "%s-auth-reuse", conn_name);
    login.conn_name = name;
    if (!open_sess(up, &login, &a) || !open_sess(up, &login, &b))
        goto out;
    CHECK_EQ_INT(connections_of(up), 2);
    ctl_agrees(name, 2);
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "the first channel to close");
    if (wait_for(one_connection, up, "the first connection to close at once"))
        ctl_agrees(name, 1);
    upstream_chan_release(b.ch);
out:
    upstream_free(up);
}

/* No broker on the port: the open fails with UNREACHABLE. */
static void test_unreachable(void)
{
    struct upstream_config cfg = {.brokers = (const char *const[]){"127.0.0.1:1"},
                                  .n_brokers = 1,
                                  .connect_timeout_ms = 2000,
                                  .reconnect_min_ms = 10,
                                  .reconnect_max_ms = 100};
    struct upstream *up = NULL;
    struct sess s;

    CHECK_EQ_INT(upstream_new(base, &cfg, &up), 0);
    open_sess(up, &guest, &s);
    CHECK_EQ_INT(s.opened, -1);
    CHECK_EQ_INT(s.open_kind, UPSTREAM_ERR_UNREACHABLE);
    upstream_chan_release(s.ch);
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * A broker that stops reading, and the caps on connections
 */

#define BIG_BODY  (4u << 20)
#define BIG_COUNT 16 /* 64 MiB: far more than the sockets between warren and the frozen proxy hold */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct upstream *new_upstream_via(const char *const *via, unsigned write_timeout_ms)
{
    struct upstream_config cfg = {.brokers = via,
                                  .n_brokers = 1,
                                  .channel_max = 2047,
                                  .frame_max_bytes = 131072,
                                  .connect_timeout_ms = 5000,
                                  .reconnect_min_ms = 10,
                                  .reconnect_max_ms = 100,
                                  .auth_reuse_ms = 3600000,
                                  .write_timeout_ms = write_timeout_ms};
    struct upstream *up = NULL;
    CHECK_EQ_INT(upstream_new(base, &cfg, &up), 0);
    return up;
}

/* Publishes BIG_COUNT bodies of BIG_BODY bytes on `s` (tags 1..), into a proxy that no longer reads. */
static void publish_big(struct sess *s)
{
    uint8_t *body = calloc(1, BIG_BODY);

    CHECK(body != NULL);
    for (int i = 0; body && i < BIG_COUNT; i++)
        CHECK_EQ_INT(upstream_chan_publish(s->ch, (uint64_t)i + 1, "", "warren-nowhere", NULL, body, BIG_BODY), 0);
    free(body);
}

/*
 * A broker that stops reading (the proxy freezes) while a connection thread writes 64 MiB: the thread sits in
 * rabbitmq-c's send, which waits without a deadline. The watchdog cuts that connection after write_timeout_ms: its
 * channel gets on_closed(CONNECTION) saying so, and the next session gets a new connection. (Before: no callback, ever.)
 */
static void test_write_watchdog(void)
{
    struct tune_proxy proxy;
    const char *via[1] = {proxy.addr};
    struct upstream *up = NULL;
    struct sess a, b;
    uint64_t t0;

    if (!tune_proxy_start(&proxy, 2047) || !(up = new_upstream_via(via, 300)) || !open_sess(up, &guest, &a))
        goto out;
    tune_proxy_freeze(&proxy);
    publish_big(&a);
    t0 = now_ms();
    if (wait_for(proxy_filled, &proxy, "warren's socket to fill") && wait_for(is_closed, &a, "on_closed of the stuck connection")) {
        CHECK_EQ_INT(a.closed_kind, UPSTREAM_ERR_CONNECTION);
        CHECK(strstr(a.closed_text, "amqp_write_timeout_ms") != NULL);
        CHECK(now_ms() - t0 < 5000);
    }
    upstream_chan_release(a.ch);
    proxy.frozen = false; /* new connections through the proxy are read again */
    if (open_sess(up, &guest, &b)) {
        CHECK_EQ_INT(b.opened, 1);
        upstream_chan_release(b.ch);
    }
    wait_for(nothing_closing, up, "CHAN_DONE after the cut");
out:
    upstream_free(up);
    tune_proxy_stop(&proxy);
}

/* upstream_free() while a thread is stuck writing to a broker that does not read (and the watchdog is far off): it
 * returns within its deadline, cutting the socket. (Before: pthread_join waited until the broker read again.) */
static void test_free_while_stuck(void)
{
    struct tune_proxy proxy;
    const char *via[1] = {proxy.addr};
    struct upstream *up = NULL;
    struct sess a;
    uint64_t t0;

    if (!tune_proxy_start(&proxy, 2047) || !(up = new_upstream_via(via, 3600000)) || !open_sess(up, &guest, &a))
        goto out;
    tune_proxy_freeze(&proxy);
    publish_big(&a);
    wait_for(proxy_filled, &proxy, "warren's socket to fill");
    t0 = now_ms();
    upstream_free(up);
    up = NULL;
    CHECK(now_ms() - t0 < 3000);
out:
    upstream_free(up);
    tune_proxy_stop(&proxy);
}

/* A "broker" that accepts and closes at once: the socket ends during the login. */
static void drop_on_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (*(int *)arg)++;
    evutil_closesocket(fd);
}

/*
 * The socket closes during the AMQP login: that is a connection failure (UNREACHABLE, broker_unreachable), not a refused
 * login, and the reconnect backoff applies to the next attempt. (Before: ACCESS_REFUSED, and no backoff.)
 */
static void test_login_dropped(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sin;
    char addr[64] = "";
    const char *via[1] = {addr};
    int accepted = 0;
    struct evconnlistener *lis;
    struct upstream_config cfg = {
        .brokers = via, .n_brokers = 1, .connect_timeout_ms = 2000, .reconnect_min_ms = 400, .reconnect_max_ms = 400};
    struct upstream *up = NULL;
    struct sess a, b;
    uint64_t t0;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lis = evconnlistener_new_bind(base, drop_on_accept, &accepted, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
                                  (struct sockaddr *)&sin, sizeof sin);
    CHECK(lis != NULL);
    if (!lis || getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&sin, &len) != 0)
        goto out;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    CHECK_EQ_INT(upstream_new(base, &cfg, &up), 0);
    if (!up || !open_sess(up, &guest, &a))
        goto out;
    CHECK_EQ_INT(a.opened, -1);
    CHECK_EQ_INT(a.open_kind, UPSTREAM_ERR_UNREACHABLE);
    CHECK(strstr(a.open_text, "login") != NULL);
    t0 = now_ms();
    if (open_sess(up, &guest, &b)) {
        CHECK_EQ_INT(b.open_kind, UPSTREAM_ERR_UNREACHABLE);
        CHECK(now_ms() - t0 >= 300); /* the second attempt waited out the backoff */
        upstream_chan_release(b.ch);
    }
    CHECK_EQ_INT(accepted, 2);
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "CHAN_DONE of both");
out:
    upstream_free(up);
    if (lis)
        evconnlistener_free(lis);
}

static bool no_thread(const void *arg)
{
    struct upstream_stats st;
    upstream_get_stats(arg, &st);
    return st.threads == 0;
}

static struct upstream *new_upstream_capped(unsigned max, unsigned per_credential, unsigned auth_reuse_ms)
{
    struct upstream_config cfg = {.brokers = brokers,
                                  .n_brokers = 1,
                                  .frame_max_bytes = 131072,
                                  .connect_timeout_ms = 5000,
                                  .reconnect_min_ms = 10,
                                  .reconnect_max_ms = 100,
                                  .auth_reuse_ms = auth_reuse_ms,
                                  .max_connections = max,
                                  .max_connections_per_credential = per_credential};
    struct upstream *up = NULL;
    CHECK_EQ_INT(upstream_new(base, &cfg, &up), 0);
    return up;
}

/*
 * amqp_max_connections = 1: a second credential is refused (on_open(LIMIT), connection_limit, later, from the loop) and
 * nothing is sent to the broker for it. A refused login stops counting as soon as its session heard of it, released or
 * not: its thread exits at once, and the cap admits the next credential.
 */
static void test_conn_limit(void)
{
    struct upstream *up = new_upstream_capped(1, 0, 3600000);
    struct upstream_login other = {"/", "warren-nobody", "nothing", NULL};
    struct upstream_login bad = {"/", "guest", "wrong-password", NULL};
    struct upstream_stats st;
    struct sess a, b, c, d;

    if (!open_sess(up, &guest, &a))
        goto out;
    memset(&b, 0, sizeof b);
    CHECK_EQ_INT(upstream_chan_open(up, &other, &cbs, &b, &b.ch), 0);
    CHECK_EQ_INT(b.opened, 0); /* not from inside the call */
    if (wait_for(is_opened, &b, "on_open of the refused channel")) {
        CHECK_EQ_INT(b.opened, -1);
        CHECK_EQ_INT(b.open_kind, UPSTREAM_ERR_LIMIT);
        CHECK(strstr(b.open_text, "amqp_max_connections") != NULL);
    }
    CHECK_EQ_INT(upstream_chan_publish(b.ch, 1, "", "q", NULL, NULL, 0), UPSTREAM_ERR_CLOSED);
    upstream_get_stats(up, &st);
    CHECK_EQ_INT(st.threads, 1);
    upstream_chan_release(b.ch);
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "CHAN_DONE of both");
    upstream_free(up);

    /* A refused login, never released: its thread goes all the same, and the next credential gets a connection. */
    up = new_upstream_capped(1, 0, 3600000);
    if (!open_sess(up, &bad, &c))
        goto out;
    CHECK_EQ_INT(c.open_kind, UPSTREAM_ERR_ACCESS_REFUSED);
    wait_for(no_thread, up, "the refused login's thread to exit");
    if (open_sess(up, &guest, &d)) {
        CHECK_EQ_INT(d.opened, 1);
        upstream_chan_release(d.ch);
    }
    upstream_chan_release(c.ch);
    wait_for(nothing_closing, up, "CHAN_DONE of the refused login's channel, served by the loop");
out:
    upstream_free(up);
}

/* amqp_max_connections_per_credential = 1 with amqp_auth_reuse_ms = 0: the second session of the credential needs a new
 * connection and is refused (credential_connection_limit); another credential is not. */
static void test_conn_limit_per_credential(void)
{
    struct upstream *up = new_upstream_capped(100, 1, 0);
    struct sess a, b;

    if (!open_sess(up, &guest, &a))
        goto out;
    if (open_sess(up, &guest, &b)) {
        CHECK_EQ_INT(b.opened, -1);
        CHECK_EQ_INT(b.open_kind, UPSTREAM_ERR_LIMIT);
        CHECK(strstr(b.open_text, "amqp_max_connections_per_credential") != NULL);
        upstream_chan_release(b.ch);
    }
    upstream_chan_release(a.ch);
    wait_for(nothing_closing, up, "CHAN_DONE of both");
out:
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Channel states, as the loop side sees them
 */

/* WAITING while the first login runs, OPENING once sent to a live connection, then OPEN, CLOSED after a channel error,
 * OPEN_FAILED after a refused login. */
static void test_chan_states(void)
{
    struct upstream *up = new_upstream(0);
    struct upstream_login bad = {"/", "guest", "wrong-password", NULL};
    struct sess s, t, u;
    char missing[64];

    snprintf(missing, sizeof missing, "warren-missing-states-%d", (int)getpid());
    memset(&s, 0, sizeof s);
    CHECK_EQ_INT(upstream_chan_open(up, &guest, &cbs, &s, &s.ch), 0);
    CHECK_EQ_INT(upstream_chan_get_state(s.ch), UPSTREAM_CHAN_WAITING);
    if (!wait_for(is_opened, &s, "on_open"))
        goto out;
    CHECK_EQ_INT(upstream_chan_get_state(s.ch), UPSTREAM_CHAN_OPEN);
    memset(&t, 0, sizeof t);
    CHECK_EQ_INT(upstream_chan_open(up, &guest, &cbs, &t, &t.ch), 0);
    CHECK_EQ_INT(upstream_chan_get_state(t.ch), UPSTREAM_CHAN_OPENING); /* the connection is up: sent at once */
    wait_for(is_opened, &t, "on_open on the live connection");
    CHECK_EQ_INT(upstream_chan_get_state(t.ch), UPSTREAM_CHAN_OPEN);
    CHECK_EQ_INT(upstream_chan_consume(t.ch, 1, missing, "c", 1, false, false, NULL, 0), 0);
    if (wait_for(is_closed, &t, "on_closed"))
        CHECK_EQ_INT(upstream_chan_get_state(t.ch), UPSTREAM_CHAN_CLOSED);
    CHECK_EQ_INT(upstream_chan_get_state(s.ch), UPSTREAM_CHAN_OPEN);
    upstream_chan_release(t.ch);
    memset(&u, 0, sizeof u);
    CHECK_EQ_INT(upstream_chan_open(up, &bad, &cbs, &u, &u.ch), 0);
    if (wait_for(is_opened, &u, "the refused on_open")) {
        CHECK_EQ_INT(u.opened, -1);
        CHECK_EQ_INT(upstream_chan_get_state(u.ch), UPSTREAM_CHAN_OPEN_FAILED);
        CHECK_EQ_INT(upstream_chan_ack(u.ch, 1, false), UPSTREAM_ERR_CLOSED);
    }
    upstream_chan_release(u.ch);
out:
    upstream_chan_release(s.ch);
    wait_for(nothing_closing, up, "channels closed");
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * Out of memory on the connection threads (upstream_test_fail_alloc: every result a thread allocates fails). What ends a
 * channel or a connection is preallocated and still arrives; what is lost is an on_done that the end covers.
 */

/* A channel error: on_closed(not_found) arrives, the failed consume's on_done is lost; the release's CHAN_DONE and the
 * idle connection's CONN_EXIT arrive too. */
static void test_oom_channel_closed(void)
{
    struct upstream *up = new_upstream_idle(0, IDLE_MS);
    struct upstream_login login = guest;
    char name[96], missing[64];
    struct sess x;

    snprintf(name, sizeof name, "%s-oom-closed", conn_name);
    snprintf(missing, sizeof missing, "warren-missing-oom-%d", (int)getpid());
    login.conn_name = name;
    if (!open_sess(up, &login, &x))
        goto out;
    upstream_test_fail_alloc(up, true);
    CHECK_EQ_INT(upstream_chan_consume(x.ch, 1, missing, "c", 1, false, false, NULL, 0), 0);
    if (wait_for(is_closed, &x, "on_closed while out of memory")) {
        CHECK_EQ_INT(x.closed_kind, UPSTREAM_ERR_CHANNEL);
        CHECK_EQ_INT(x.closed_code, 404);
        CHECK(strcmp(x.closed_name, "not_found") == 0);
        CHECK_EQ_INT(x.n_done, 0); /* its failure came before on_closed, and was lost */
    }
    upstream_chan_release(x.ch);
    wait_for(nothing_closing, up, "CHAN_DONE while out of memory");
    wait_for(no_connection, up, "CONN_EXIT of the idle connection while out of memory");
out:
    upstream_test_fail_alloc(up, false);
    upstream_free(up);
}

/* A delivery the thread cannot allocate ends its channel, not the connection (it cannot be dropped unacked; the broker
 * requeues it at the channel's close), and so does a publish whose confirm cannot be reported (its session would wait for
 * it forever): both channels get on_closed(NOMEM), the connection lives on and serves the next session. */
static void test_oom_channel_lost(void)
{
    struct upstream *up = new_upstream(0);
    struct sess a, b, c;
    const struct done_rec *d;
    char queue[256] = "";

    if (!open_sess(up, &guest, &a) || !open_sess(up, &guest, &b))
        goto out;
    CHECK_EQ_INT(upstream_chan_declare_queue(a.ch, 1, "", UPSTREAM_Q_EXCLUSIVE | UPSTREAM_Q_OWNED, NULL, 0), 0);
    d = wait_done(&a, 1);
    if (!d || d->kind != UPSTREAM_OK)
        goto out;
    snprintf(queue, sizeof queue, "%s", d->queue);
    CHECK_EQ_INT(upstream_chan_consume(a.ch, 2, queue, "oom", 10, false, false, NULL, 0), 0);
    d = wait_done(&a, 2);
    CHECK(d && d->kind == UPSTREAM_OK);
    upstream_test_fail_alloc(up, true);
    CHECK_EQ_INT(upstream_chan_publish(b.ch, 3, "", queue, NULL, (const uint8_t *)"lost", 4), 0);
    if (wait_for(is_closed, &a, "on_closed a") && wait_for(is_closed, &b, "on_closed b")) {
        CHECK_EQ_INT(a.closed_kind, UPSTREAM_ERR_NOMEM);
        CHECK(strcmp(a.closed_name, "internal_error") == 0);
        CHECK_EQ_INT(b.closed_kind, UPSTREAM_ERR_NOMEM);
        CHECK_EQ_INT(a.n_del, 0);
        CHECK(find_done(&b, 3) == NULL);
        CHECK_EQ_INT(upstream_chan_get_state(a.ch), UPSTREAM_CHAN_CLOSED);
    }
    CHECK_EQ_INT(connections_of(up), 1);
    upstream_chan_release(a.ch);
    upstream_chan_release(b.ch);
    wait_for(nothing_closing, up, "CHAN_DONE of both while out of memory");
    upstream_test_fail_alloc(up, false);
    if (open_sess(up, &guest, &c)) {
        CHECK_EQ_INT(c.opened, 1);
        CHECK_EQ_INT(connections_of(up), 1);
        upstream_chan_release(c.ch);
    }
out:
    upstream_test_fail_alloc(up, false);
    upstream_free(up);
}

/* A refused login: on_open(ACCESS_REFUSED) arrives although nothing can be allocated. */
static void test_oom_open_failed(void)
{
    struct upstream *up = new_upstream(0);
    struct upstream_login bad = {"/", "guest", "wrong-password", NULL};
    struct sess s;

    upstream_test_fail_alloc(up, true);
    memset(&s, 0, sizeof s);
    CHECK_EQ_INT(upstream_chan_open(up, &bad, &cbs, &s, &s.ch), 0);
    CHECK_EQ_INT(upstream_chan_declare_queue(s.ch, 1, "", UPSTREAM_Q_EXCLUSIVE, NULL, 0), 0);
    if (wait_for(is_opened, &s, "on_open while out of memory")) {
        CHECK_EQ_INT(s.opened, -1);
        CHECK_EQ_INT(s.open_kind, UPSTREAM_ERR_ACCESS_REFUSED);
        CHECK(strstr(s.open_text, "ACCESS_REFUSED") != NULL);
    }
    upstream_chan_release(s.ch);
    wait_for(nothing_closing, up, "CHAN_DONE while out of memory");
    upstream_test_fail_alloc(up, false);
    upstream_free(up);
}

/* ---------------------------------------------------------------------------------------------------------------------
 * The mailbox, without a broker
 */

/* A template of each command kind whose every field is set, from buffers the test overwrites after the copy. */
struct cmd_src {
    char s1[32], s2[32], s3[32], key[16], str[16], hname[16], hvalue[16], ctype[16], corr[16];
    uint8_t body[8];
    struct upstream_arg args[2];
    struct upstream_header hdrs[1];
};

static void cmd_src_init(struct cmd_src *src)
{
    memset(src, 0, sizeof *src);
    snprintf(src->s1, sizeof src->s1, "queue-1");
    snprintf(src->s2, sizeof src->s2, "exchange-2");
    snprintf(src->s3, sizeof src->s3, "key.3");
    snprintf(src->key, sizeof src->key, "x-arg");
    snprintf(src->str, sizeof src->str, "value");
    snprintf(src->hname, sizeof src->hname, "x-h");
    snprintf(src->hvalue, sizeof src->hvalue, "hv");
    snprintf(src->ctype, sizeof src->ctype, "text/plain");
    snprintf(src->corr, sizeof src->corr, "c-1");
    memcpy(src->body, "b\0dy", 4);
    src->args[0] = (struct upstream_arg){src->key, UPSTREAM_ARG_STR, src->str, 0};
    src->args[1] = (struct upstream_arg){"x-n", UPSTREAM_ARG_INT, NULL, -42};
    src->hdrs[0] = (struct upstream_header){src->hname, 3, src->hvalue, 2};
}

static void cmd_src_scribble(struct cmd_src *src)
{
    char *bufs[] = {src->s1, src->s2, src->s3, src->key, src->str, src->hname, src->hvalue, src->ctype, src->corr};

    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        memset(bufs[i], 'X', strlen(bufs[i]));
    memset(src->body, 'X', sizeof src->body);
}

static struct upstream_cmd cmd_template(enum upstream_cmd_kind k, struct cmd_src *src)
{
    struct upstream_cmd t = {.kind = k, .op_tag = 1000 + (uint64_t)k};

    switch (k) {
    case UPSTREAM_CMD_DECLARE:
        t.u.declare = (__typeof__(t.u.declare)){src->s1, UPSTREAM_Q_DURABLE | UPSTREAM_Q_OWNED, src->args, 2};
        break;
    case UPSTREAM_CMD_BIND:
        t.u.bind = (__typeof__(t.u.bind)){src->s1, src->s2, src->s3};
        break;
    case UPSTREAM_CMD_DELETE:
        t.u.del.queue = src->s1;
        break;
    case UPSTREAM_CMD_CONSUME:
        t.u.consume = (__typeof__(t.u.consume)){src->s1, src->s2, 77, true, true, src->args, 2};
        break;
    case UPSTREAM_CMD_CANCEL:
        t.u.cancel.consumer_tag = src->s2;
        break;
    case UPSTREAM_CMD_PUBLISH:
        t.u.publish.exchange = src->s2;
        t.u.publish.routing_key = src->s3;
        t.u.publish.props = (struct upstream_props){.content_type = src->ctype,
                                                    .correlation_id = src->corr,
                                                    .delivery_mode = 2,
                                                    .priority = 9,
                                                    .has_timestamp = true,
                                                    .timestamp = 123456789,
                                                    .headers = src->hdrs,
                                                    .n_headers = 1};
        t.u.publish.body = src->body;
        t.u.publish.body_len = 4;
        break;
    case UPSTREAM_CMD_ACK:
    case UPSTREAM_CMD_NACK:
        t.u.ack = (__typeof__(t.u.ack)){(uint64_t)1 << 40, true, k == UPSTREAM_CMD_NACK};
        break;
    default:
        break;
    }
    return t;
}

static bool str_is(const char *got, const char *want)
{
    return got && strcmp(got, want) == 0;
}

static void check_args(const struct upstream_arg *a, size_t n)
{
    CHECK_EQ_INT(n, 2);
    if (!a || n != 2)
        return;
    CHECK(str_is(a[0].key, "x-arg") && a[0].type == UPSTREAM_ARG_STR && str_is(a[0].str, "value"));
    CHECK(str_is(a[1].key, "x-n") && a[1].type == UPSTREAM_ARG_INT && a[1].str == NULL && a[1].num == -42);
}

static void check_publish(const struct upstream_cmd *c)
{
    const struct upstream_props *p = &c->u.publish.props;

    CHECK(str_is(c->u.publish.exchange, "exchange-2") && str_is(c->u.publish.routing_key, "key.3"));
    CHECK(str_is(p->content_type, "text/plain") && str_is(p->correlation_id, "c-1") && !p->reply_to && !p->app_id);
    CHECK(p->delivery_mode == 2 && p->priority == 9 && p->has_timestamp && p->timestamp == 123456789);
    CHECK_EQ_INT(p->n_headers, 1);
    if (p->headers && p->n_headers == 1)
        CHECK(p->headers[0].name_len == 3 && memcmp(p->headers[0].name, "x-h", 3) == 0 && p->headers[0].value_len == 2 &&
              memcmp(p->headers[0].value, "hv", 2) == 0);
    CHECK(c->u.publish.body_len == 4 && c->u.publish.body && memcmp(c->u.publish.body, "b\0dy", 4) == 0);
}

/* Checks a copy against what cmd_template() put in, after the template's buffers were overwritten. */
static void check_copy(const struct upstream_cmd *c, enum upstream_cmd_kind k)
{
    CHECK_EQ_INT(c->kind, k);
    CHECK_EQ_INT(c->op_tag, 1000 + (uint64_t)k);
    CHECK(!c->embedded);
    switch (k) {
    case UPSTREAM_CMD_DECLARE:
        CHECK(str_is(c->u.declare.queue, "queue-1") && c->u.declare.flags == (UPSTREAM_Q_DURABLE | UPSTREAM_Q_OWNED));
        check_args(c->u.declare.args, c->u.declare.n_args);
        break;
    case UPSTREAM_CMD_BIND:
        CHECK(str_is(c->u.bind.queue, "queue-1") && str_is(c->u.bind.exchange, "exchange-2") &&
              str_is(c->u.bind.routing_key, "key.3"));
        break;
    case UPSTREAM_CMD_DELETE:
        CHECK(str_is(c->u.del.queue, "queue-1"));
        break;
    case UPSTREAM_CMD_CONSUME:
        CHECK(str_is(c->u.consume.queue, "queue-1") && str_is(c->u.consume.consumer_tag, "exchange-2"));
        CHECK(c->u.consume.prefetch == 77 && c->u.consume.no_ack && c->u.consume.exclusive);
        check_args(c->u.consume.args, c->u.consume.n_args);
        break;
    case UPSTREAM_CMD_CANCEL:
        CHECK(str_is(c->u.cancel.consumer_tag, "exchange-2"));
        break;
    case UPSTREAM_CMD_PUBLISH:
        check_publish(c);
        break;
    case UPSTREAM_CMD_ACK:
    case UPSTREAM_CMD_NACK:
        CHECK(c->u.ack.delivery_tag == (uint64_t)1 << 40 && c->u.ack.multiple && c->u.ack.requeue == (k == UPSTREAM_CMD_NACK));
        break;
    default:
        break;
    }
}

/* Every kind of command is deep-copied (the session's buffers may go right after the call) and crosses an inbox intact,
 * in order; a NULL string stays NULL. */
static void test_cmd_roundtrip(void)
{
    struct upstream_inbox ib;
    struct list got = LIST_INIT(got);
    struct cmd_src src;
    struct upstream_cmd *c;
    int n = 0;

    CHECK_EQ_INT(upstream_inbox_init(&ib), 0);
    cmd_src_init(&src);
    for (int k = UPSTREAM_CMD_OPEN; k <= UPSTREAM_CMD_SHUTDOWN; k++) {
        struct upstream_cmd t = cmd_template((enum upstream_cmd_kind)k, &src);
        c = upstream_cmd_dup(&t);
        CHECK(c != NULL);
        if (c)
            upstream_inbox_push(&ib, c);
        CHECK(strcmp(upstream_cmd_kind_str((enum upstream_cmd_kind)k), "?") != 0);
    }
    cmd_src_scribble(&src); /* the copies must not borrow any of it */
    CHECK(!upstream_inbox_take(&ib, &got));
    while ((c = list_first_entry(&got, struct upstream_cmd, link))) {
        list_unlink(&c->link);
        check_copy(c, (enum upstream_cmd_kind)n++);
        upstream_cmd_free(c);
    }
    CHECK_EQ_INT(n, UPSTREAM_CMD_SHUTDOWN + 1);
    struct upstream_cmd nulls = {.kind = UPSTREAM_CMD_BIND, .u.bind = {NULL, "e", NULL}};
    c = upstream_cmd_dup(&nulls);
    CHECK(c && !c->u.bind.queue && str_is(c->u.bind.exchange, "e") && !c->u.bind.routing_key);
    upstream_cmd_free(c);
    CHECK_EQ_INT(upstream_cmd_has_completion(UPSTREAM_CMD_ACK), 0);
    CHECK_EQ_INT(upstream_cmd_has_completion(UPSTREAM_CMD_PUBLISH), 1);
    upstream_inbox_deinit(&ib);
}

/* An inbox keeps order across push and push_list, leaves embedded commands alone, and tells the link to stop. */
static void test_inbox(void)
{
    struct upstream_inbox ib;
    struct upstream_cmd open = {.kind = UPSTREAM_CMD_OPEN, .embedded = true},
                        shut = {.kind = UPSTREAM_CMD_SHUTDOWN, .embedded = true};
    struct upstream_cmd ack = {.kind = UPSTREAM_CMD_ACK, .u.ack = {.delivery_tag = 5}};
    struct list held = LIST_INIT(held), got = LIST_INIT(got);
    enum upstream_cmd_kind want[] = {UPSTREAM_CMD_OPEN, UPSTREAM_CMD_ACK, UPSTREAM_CMD_SHUTDOWN};
    struct upstream_cmd *c;
    int n = 0;

    CHECK_EQ_INT(upstream_inbox_init(&ib), 0);
    list_link_tail(&held, &open.link);
    c = upstream_cmd_dup(&ack);
    if (c)
        list_link_tail(&held, &c->link);
    upstream_inbox_push_list(&ib, &held);
    CHECK(list_is_empty(&held));
    upstream_inbox_push(&ib, &shut);
    CHECK(!upstream_inbox_stopping(&ib));
    CHECK(upstream_inbox_set_login_fd(&ib, -1));
    CHECK(!upstream_inbox_take(&ib, &got));
    while ((c = list_first_entry(&got, struct upstream_cmd, link))) {
        list_unlink(&c->link);
        CHECK(n < 3 && c->kind == want[n]);
        n++;
        upstream_cmd_free(c); /* a no-op for the embedded ones */
    }
    CHECK_EQ_INT(n, 3);
    upstream_inbox_drain(&ib);
    upstream_inbox_stop(&ib);
    CHECK(upstream_inbox_stopping(&ib));
    CHECK(!upstream_inbox_set_login_fd(&ib, -1));
    c = upstream_cmd_dup(&ack);
    if (c)
        upstream_inbox_push(&ib, c); /* still queued at deinit: freed there */
    /* An OPEN nobody took (a dead link's, at shutdown): its channel half goes with it (the leak check says so). */
    struct upstream_link_chan *lch = NULL;
    CHECK_EQ_INT(upstream_link_chan_new(NULL, &lch), 0);
    open = (struct upstream_cmd){.kind = UPSTREAM_CMD_OPEN, .embedded = true, .ch = lch};
    upstream_inbox_push(&ib, &open);
    upstream_inbox_deinit(&ib);
    upstream_inbox_deinit(&ib); /* idempotent */
}

/* The outbox keeps order; the hook fails upstream_res_new() but not a preallocation, whose error text is copied (and cut
 * at UPSTREAM_TEXT_MAX). */
static void test_outbox(void)
{
    struct upstream_outbox ob;
    struct list got = LIST_INIT(got);
    struct upstream_res *r, *end;
    char text[2 * UPSTREAM_TEXT_MAX];
    struct upstream_error err = {UPSTREAM_ERR_CHANNEL, 404, "not_found", text};
    int n = 0;

    CHECK_EQ_INT(upstream_outbox_init(&ob), 0);
    memset(text, 'a', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    r = upstream_res_new(&ob, 0);
    CHECK(r != NULL);
    if (r) {
        r->kind = UPSTREAM_RES_BLOCKED;
        upstream_outbox_push(&ob, r);
    }
    atomic_store(&ob.fail_allocs, true);
    CHECK(upstream_res_new(&ob, 0) == NULL);
    end = upstream_res_prealloc(UPSTREAM_RES_CLOSED, true);
    CHECK(end != NULL);
    if (end) {
        upstream_res_set_err(end, &err);
        text[0] = 'b'; /* copied, not borrowed */
        upstream_outbox_push(&ob, end);
    }
    atomic_store(&ob.fail_allocs, false);
    upstream_outbox_take(&ob, &got);
    while ((r = list_first_entry(&got, struct upstream_res, link))) {
        list_unlink(&r->link);
        if (n == 0)
            CHECK_EQ_INT(r->kind, UPSTREAM_RES_BLOCKED);
        if (n == 1) {
            CHECK(r->kind == UPSTREAM_RES_CLOSED && r->has_err && r->err.code == 404 && str_is(r->err.name, "not_found"));
            CHECK(r->err.text && r->err.text[0] == 'a' && strlen(r->err.text) == UPSTREAM_TEXT_MAX - 1);
        }
        n++;
        free(r);
    }
    CHECK_EQ_INT(n, 2);
    r = upstream_res_new(&ob, 0);
    if (r)
        upstream_outbox_push(&ob, r); /* still queued at deinit: freed there */
    upstream_outbox_deinit(&ob);
    upstream_outbox_deinit(&ob); /* idempotent */
}

/* Every state and kind has a name of its own. */
static void test_names(void)
{
    for (int i = UPSTREAM_CHAN_WAITING; i <= UPSTREAM_CHAN_RELEASED; i++) {
        CHECK(strcmp(upstream_chan_state_str((enum upstream_chan_state)i), "?") != 0);
        for (int j = UPSTREAM_CHAN_WAITING; j < i; j++)
            CHECK(strcmp(upstream_chan_state_str((enum upstream_chan_state)i),
                         upstream_chan_state_str((enum upstream_chan_state)j)) != 0);
    }
    for (int i = UPSTREAM_RES_CONN_UP; i <= UPSTREAM_RES_CHAN_DONE; i++)
        CHECK(strcmp(upstream_res_kind_str((enum upstream_res_kind)i), "?") != 0);
    CHECK(strcmp(upstream_chan_state_str((enum upstream_chan_state)99), "?") == 0);
}

int main(void)
{
    const char *port = getenv("WARREN_TEST_AMQP_PORT");

    io_hooks_init();
    RUN(test_cmd_roundtrip);
    RUN(test_inbox);
    RUN(test_outbox);
    RUN(test_names);
    if (!port || !*port) {
        printf("SKIP: WARREN_TEST_AMQP_PORT is not set (run through scripts/test)\n");
        return harness_done() == 0 ? 77 : 1;
    }
    snprintf(broker_addr, sizeof broker_addr, "127.0.0.1:%s", port);
    snprintf(conn_name, sizeof conn_name, "test-upstream-%d", (int)getpid());
    base = event_base_new();
    if (!base)
        return 1;
    RUN(test_shared_connection);
    RUN(test_roundtrip);
    RUN(test_publish_batched);
    RUN(test_channel_pool);
    RUN(test_channel_error);
    RUN(test_owned_deleted);
    RUN(test_access_refused);
    RUN(test_channel_max);
    RUN(test_channel_max_burst);
    RUN(test_broker_channel_max);
    RUN(test_free_while_waiting);
    RUN(test_connection_closed);
    RUN(test_idle_close);
    RUN(test_idle_reuse);
    RUN(test_idle_keep);
    RUN(test_auth_reuse);
    RUN(test_unreachable);
    RUN(test_write_watchdog);
    RUN(test_free_while_stuck);
    RUN(test_login_dropped);
    RUN(test_conn_limit);
    RUN(test_conn_limit_per_credential);
    RUN(test_chan_states);
    RUN(test_oom_channel_closed);
    RUN(test_oom_channel_lost);
    RUN(test_oom_open_failed);
    event_base_free(base);
    return harness_done();
}

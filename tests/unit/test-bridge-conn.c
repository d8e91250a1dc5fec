/*
 * tests/unit/test-bridge-conn.c — bridge/conn.h, the transport, on a socketpair with a probe front-end: input reaches the
 * front-end and a hand-over inside `input` gives the rest to the next one at once; a graceful close flushes, then sends
 * FIN, and the connection is freed at the peer's FIN; conn_kill() from a callback frees from the loop, never inside;
 * reading paused and resumed, and held over the memory budget (a held peer's FIN found through TCP_INFO); the output limit; the
 * deadline; shutdown through the ops table; output coalescing (issue 9), with the syscalls counted by interposition: what
 * one loop turn queues, from several callbacks, leaves in one writev() at the end of that same turn with no epoll_ctl, a
 * read asks no FIONREAD, a partial write keeps the rest in order for the write event, a file goes between the bytes
 * around it, and a drain callback that always writes more gets one write per turn. Links only the transport library (no ws/, no
 * session), which is the point: the transport knows no front-end.
 */
#include "bridge/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/list.h"
#include "harness.h"

/*
 * Syscall counters. These definitions in the executable take precedence over libc's for every caller, libevent's shared
 * library included, and go straight to the kernel.
 */
static bool counting;
static int count_fd = -1; /* writev() is counted on this descriptor only */
static int n_writev, n_epoll_ctl, n_fionread;

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (counting && fd == count_fd)
        n_writev++;
    return syscall(SYS_writev, fd, iov, n);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (counting)
        n_epoll_ctl++;
    return (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (counting && req == FIONREAD)
        n_fionread++;
    return (int)syscall(SYS_ioctl, fd, req, arg);
}

static void count_start(int fd)
{
    count_fd = fd;
    n_writev = n_epoll_ctl = n_fionread = 0;
    counting = true;
}

/* What the probe front-end saw. */
struct probe {
    struct conn *c;
    char got[256];
    size_t n_got;
    char got_next[256]; /* what the front-end after a hand-over saw */
    size_t n_got_next;
    int inputs, drains, shutdowns, frees, gones;
    bool kill_in_input;
    bool hand_over_at_bar; /* consume up to '|' and install probe_next_ops */
    bool yield_one;        /* consume one byte per call, then conn_yield_input() */
    size_t max_seen;       /* most bytes waiting at one input call */
    const char *reply;     /* written in pieces of reply_piece bytes after each input (issue 9 tests) */
    size_t reply_len, reply_piece;
    struct event *also; /* made active by input before replying: another callback of the same turn */
    int drain_writes;   /* the drain callback writes "z" this many more times */
    bool take_none;     /* input consumes nothing */
    struct list conns;  /* the owner's list */
};

static void take_all(struct conn *c, char *buf, size_t *n, size_t cap)
{
    struct evbuffer *in = conn_input(c);
    size_t len = evbuffer_get_length(in);
    if (len > cap - *n)
        len = cap - *n;
    evbuffer_remove(in, buf + *n, len);
    *n += len;
}

static const struct conn_ops probe_next_ops;

static void probe_input(struct conn *c, void *fe)
{
    struct probe *p = fe;
    p->inputs++;
    size_t waiting = evbuffer_get_length(conn_input(c));
    if (waiting > p->max_seen)
        p->max_seen = waiting;
    if (p->yield_one) {
        evbuffer_remove(conn_input(c), p->got + p->n_got, 1);
        p->n_got++;
        if (evbuffer_get_length(conn_input(c)) > 0)
            conn_yield_input(c);
        return;
    }
    if (p->take_none)
        return;
    if (p->kill_in_input) {
        conn_kill(c);
        CHECK_EQ_INT(p->frees, 0); /* never freed from inside a callback */
        return;
    }
    struct evbuffer *in = conn_input(c);
    struct evbuffer_ptr bar = evbuffer_search(in, "|", 1, NULL);
    if (p->hand_over_at_bar && bar.pos >= 0) {
        evbuffer_remove(in, p->got + p->n_got, (size_t)bar.pos + 1);
        p->n_got += (size_t)bar.pos + 1;
        conn_set_frontend(c, &probe_next_ops, p);
        return;
    }
    take_all(c, p->got, &p->n_got, sizeof(p->got));
    if (p->also)
        event_active(p->also, 0, 0);
    for (size_t off = 0; off < p->reply_len; off += p->reply_piece) {
        size_t n = p->reply_len - off < p->reply_piece ? p->reply_len - off : p->reply_piece;
        CHECK_EQ_INT(conn_write(c, p->reply + off, n), 0);
    }
}

static void probe_next_input(struct conn *c, void *fe)
{
    struct probe *p = fe;
    take_all(c, p->got_next, &p->n_got_next, sizeof(p->got_next));
}

static void probe_drain(struct conn *c, void *fe)
{
    struct probe *p = fe;
    p->drains++;
    if (p->drain_writes > 0) {
        p->drain_writes--;
        CHECK_EQ_INT(conn_write(c, "z", 1), 0);
    }
}

static void probe_shutdown(struct conn *c, void *fe)
{
    ((struct probe *)fe)->shutdowns++;
    conn_close(c);
}

static void probe_free(struct conn *c, void *fe)
{
    ((struct probe *)fe)->frees++;
}

static const struct conn_ops probe_ops = {
    .name = "probe", .input = probe_input, .drain = probe_drain, .shutdown = probe_shutdown, .free = probe_free};
static const struct conn_ops probe_next_ops = {.name = "probe-next", .input = probe_next_input, .free = probe_free};

static void probe_gone(void *owner, struct conn *c)
{
    struct probe *p = owner;
    p->gones++;
    CHECK_EQ_INT(p->frees, 0); /* the owner hears first, while the front-end still exists */
    list_unlink(conn_node(c));
}

/* One event base, a configuration and a connection on one end of a socketpair; `peer` is the other end. */
struct rig {
    struct event_base *base;
    struct conn_conf *cc;
    struct probe p;
    int peer;
    atomic_bool hold; /* conn_accept.hold: the memory budget's flag */
};

/* The connection on `fd`, the peer on `peer` (both connected). */
static void rig_init_fds(struct rig *r, size_t send_limit, int fd, int peer)
{
    struct conf conf;
    memset(r, 0, sizeof(*r));
    atomic_init(&r->hold, false);
    r->base = event_base_new();
    conf_init(&conf);
    conf.client_send_limit_bytes = send_limit;
    CHECK_EQ_INT(conn_conf_new(&conf, r->base, NULL, &r->cc), 0);
    conf_deinit(&conf);
    evutil_make_socket_nonblocking(fd);
    r->peer = peer;
    list_init(&r->p.conns);
    struct conn_accept a = {
        .base = r->base, .cc = r->cc, .fd = fd, .peer = "test:1", .gone = probe_gone, .owner = &r->p, .hold = &r->hold};
    CHECK_EQ_INT(conn_new(&a, &r->p.c), 0);
    list_link_tail(&r->p.conns, conn_node(r->p.c));
    conn_set_frontend(r->p.c, &probe_ops, &r->p);
}

static void rig_init(struct rig *r, size_t send_limit)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    rig_init_fds(r, send_limit, sv[0], sv[1]);
}

static void rig_deinit(struct rig *r)
{
    while (!list_is_empty(&r->p.conns))
        conn_free(conn_of_node(r->p.conns.next));
    conn_conf_unref(r->cc);
    close(r->peer);
    event_base_free(r->base);
}

/* Runs the loop until *flag becomes non-zero or `ms` pass. */
static void run_until(struct rig *r, const int *flag, uint64_t ms)
{
    uint64_t end = clock_now_ms() + ms;
    while (!*flag && clock_now_ms() < end) {
        event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static void run_for(struct rig *r, uint64_t ms)
{
    int never = 0;
    run_until(r, &never, ms);
}

static void test_input_and_hand_over(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    r.p.hand_over_at_bar = true;
    CHECK_EQ_INT(write(r.peer, "GET|frames", 10), 10);
    run_until(&r, &r.p.inputs, 1000);
    run_for(&r, 20);
    CHECK_EQ_INT(r.p.n_got, 4);
    CHECK(memcmp(r.p.got, "GET|", 4) == 0);
    CHECK_EQ_INT(r.p.n_got_next, 6); /* in the same turn, without more bytes arriving */
    CHECK(memcmp(r.p.got_next, "frames", 6) == 0);
    rig_deinit(&r);
    CHECK_EQ_INT(r.p.gones, 1);
    CHECK_EQ_INT(r.p.frees, 1);
}

static void test_graceful_close(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    CHECK_EQ_INT(conn_write(r.p.c, "bye", 3), 0);
    conn_close(r.p.c);
    CHECK_EQ_INT(conn_state(r.p.c), CONN_CLOSING);
    run_for(&r, 50);
    char buf[16];
    fcntl(r.peer, F_SETFL, O_NONBLOCK);
    CHECK_EQ_INT(read(r.peer, buf, sizeof(buf)), 3); /* flushed */
    CHECK_EQ_INT(read(r.peer, buf, sizeof(buf)), 0); /* then FIN */
    CHECK_EQ_INT(r.p.gones, 0);                      /* lingering for our peer's FIN */
    CHECK_EQ_INT(write(r.peer, "late", 4), 4);       /* still read while closing */
    run_until(&r, &r.p.inputs, 1000);
    CHECK_EQ_INT(r.p.n_got, 4);
    shutdown(r.peer, SHUT_WR);
    run_until(&r, &r.p.gones, 1000);
    CHECK_EQ_INT(r.p.gones, 1);
    CHECK_EQ_INT(r.p.frees, 1);
    rig_deinit(&r);
}

static void test_kill_from_callback(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    r.p.kill_in_input = true;
    CHECK_EQ_INT(write(r.peer, "x", 1), 1);
    run_until(&r, &r.p.gones, 1000);
    CHECK_EQ_INT(r.p.inputs, 1);
    CHECK_EQ_INT(r.p.frees, 1);
    rig_deinit(&r);
}

static void test_pause_resume(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    conn_pause_reading(r.p.c, true);
    CHECK(!conn_wants_input(r.p.c));
    CHECK_EQ_INT(write(r.peer, "abc", 3), 3);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.inputs, 0);
    conn_pause_reading(r.p.c, false);
    CHECK_EQ_INT(r.p.inputs, 0); /* never from inside the call */
    run_until(&r, &r.p.inputs, 1000);
    CHECK_EQ_INT(r.p.n_got, 3);
    rig_deinit(&r);
}

/* The memory budget's hold: independent of the front-end's pause, set by the flag where input arrives, released. */
static void test_hold(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    atomic_store(&r.hold, true); /* over the budget: the next read holds the connection, its bytes kept */
    CHECK_EQ_INT(write(r.peer, "abc", 3), 3);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.inputs, 0);
    CHECK(!conn_wants_input(r.p.c));
    conn_pause_reading(r.p.c, true); /* the front-end pauses too: both must be off */
    atomic_store(&r.hold, false);
    conn_hold_reading(r.p.c, false);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.inputs, 0);
    conn_pause_reading(r.p.c, false);
    run_until(&r, &r.p.inputs, 1000);
    CHECK_EQ_INT(r.p.n_got, 3);
    /* Held by the owner's walk, then released: input is handed over at the next turn, never inside the call. */
    conn_hold_reading(r.p.c, true);
    CHECK_EQ_INT(write(r.peer, "de", 2), 2);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.n_got, 3);
    conn_pause_reading(r.p.c, true);
    conn_pause_reading(r.p.c, false); /* the front-end resumes: still held */
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.n_got, 3);
    int before = r.p.inputs;
    conn_hold_reading(r.p.c, false);
    CHECK_EQ_INT(r.p.inputs, before);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.n_got, 5);
    /* conn_close() releases the hold: the peer's goodbye is read. */
    conn_hold_reading(r.p.c, true);
    conn_close(r.p.c);
    CHECK_EQ_INT(write(r.peer, "fg", 2), 2);
    run_for(&r, 30);
    CHECK_EQ_INT(r.p.n_got, 7);
    conn_held_check(r.p.c); /* not held (and not TCP): nothing */
    CHECK_EQ_INT(conn_state(r.p.c), CONN_CLOSING);
    rig_deinit(&r);
}

/* The rig on a TCP connection over loopback (accepted end: the connection; connecting end: the peer). Returns the
 * connection's descriptor. */
static int rig_init_tcp(struct rig *r, size_t send_limit)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), cl = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    CHECK(l != -1 && cl != -1);
    CHECK_EQ_INT(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
    CHECK_EQ_INT(listen(l, 1), 0);
    CHECK_EQ_INT(getsockname(l, (struct sockaddr *)&sin, &len), 0);
    CHECK_EQ_INT(connect(cl, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int fd = accept(l, NULL, NULL);
    CHECK(fd != -1);
    close(l);
    rig_init_fds(r, send_limit, fd, cl);
    return fd;
}

/* Issue 9: small writes go out at once (TCP_NODELAY): with Nagle's algorithm a STOMP frame waited for the peer's delayed
 * ACK, ~40 ms per exchange. The accepted socket starts without it (the kernel's default), the connection sets it. */
static void test_nodelay(void)
{
    struct rig r;
    int fd = rig_init_tcp(&r, 1 << 20), on = 1;
    socklen_t len = sizeof(on);
    CHECK_EQ_INT(getsockopt(r.peer, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    CHECK_EQ_INT(on, 0); /* what a socket has unless told */
    CHECK_EQ_INT(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    CHECK(on != 0);
    rig_deinit(&r);
}

/* A held connection reads nothing, so its peer's FIN is seen through conn_held_check() (TCP_INFO), not by reading. */
static void test_held_peer_gone(void)
{
    struct rig r;
    (void)rig_init_tcp(&r, 1 << 20);
    int cl = r.peer;
    conn_hold_reading(r.p.c, true);
    conn_held_check(r.p.c); /* the peer is there */
    run_for(&r, 20);
    CHECK_EQ_INT(r.p.gones, 0);
    shutdown(cl, SHUT_WR);
    run_for(&r, 50); /* the FIN is not read: the connection does not see it */
    CHECK_EQ_INT(r.p.gones, 0);
    conn_held_check(r.p.c);
    CHECK_EQ_INT(conn_state(r.p.c), CONN_DEAD);
    run_until(&r, &r.p.gones, 1000); /* freed from the loop */
    CHECK_EQ_INT(r.p.gones, 1);
    rig_deinit(&r);
}

/*
 * Issue 7: a front-end that spent its budget yields with conn_yield_input() and is called again at the next loop turn,
 * once per turn (not again within the turn: other sockets are polled first); one read takes at most CONN_READ_MAX.
 */
static void test_yield_and_read_bound(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    r.p.yield_one = true;
    CHECK_EQ_INT(write(r.peer, "abcde", 5), 5);
    run_until(&r, &r.p.inputs, 1000);
    CHECK_EQ_INT(r.p.inputs, 1);
    for (int turn = 2; turn <= 5; turn++) {
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        CHECK_EQ_INT(r.p.inputs, turn); /* exactly one more call per loop turn */
    }
    CHECK_EQ_INT(r.p.n_got, 5);
    CHECK(memcmp(r.p.got, "abcde", 5) == 0);
    event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK_EQ_INT(r.p.inputs, 5); /* nothing left: no more calls */
    rig_deinit(&r);

    /* 200 KiB at once from the peer: the first input call sees one read's worth, not all that is in the socket */
    rig_init(&r, 1 << 20);
    static char big[200 * 1024];
    memset(big, 'x', sizeof(big));
    size_t sent = 0;
    while (sent < sizeof(big)) {
        ssize_t w = write(r.peer, big + sent, sizeof(big) - sent);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    run_until(&r, &r.p.inputs, 1000); /* the probe keeps 256 bytes: the first call is the one that shows the read */
    CHECK(r.p.inputs > 0);
    CHECK(r.p.max_seen > 0 && r.p.max_seen <= CONN_READ_MAX);
    rig_deinit(&r);
}

/* conn_written(): what left the output, so a front-end knows when something it queued is on the wire. */
static void test_written(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    CHECK_EQ_INT(conn_written(r.p.c), 0);
    CHECK_EQ_INT(conn_write(r.p.c, "0123456789", 10), 0);
    uint64_t mark = conn_written(r.p.c) + conn_pending(r.p.c);
    CHECK_EQ_INT(mark, 10);
    conn_set_drain_mark(r.p.c, 0);
    run_until(&r, &r.p.drains, 1000);
    CHECK_EQ_INT(conn_written(r.p.c), 10);
    rig_deinit(&r);
}

static void test_send_limit_and_drain(void)
{
    struct rig r;
    rig_init(&r, 100);
    conn_set_drain_mark(r.p.c, 0);
    CHECK_EQ_INT(conn_send_check(r.p.c, 100), 0);
    CHECK_EQ_INT(conn_write(r.p.c, "0123456789", 10), 0);
    CHECK_EQ_INT(conn_pending(r.p.c), 10);
    run_until(&r, &r.p.drains, 1000);
    CHECK_EQ_INT(r.p.drains, 1);
    CHECK_EQ_INT(conn_pending(r.p.c), 0);
    CHECK_EQ_INT(conn_write(r.p.c, "0123456789", 10), 0);
    CHECK_EQ_INT(conn_send_check(r.p.c, 91), CONN_E_TOO_SLOW);
    CHECK_EQ_INT(conn_state(r.p.c), CONN_OPEN); /* the caller says goodbye, then closes */
    CHECK_EQ_INT(conn_pending(r.p.c), 10);
    conn_kill(r.p.c);
    run_until(&r, &r.p.gones, 1000);
    CHECK_EQ_INT(r.p.frees, 1);
    rig_deinit(&r);
}

static void test_deadline(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    conn_set_deadline(r.p.c, 10, "test deadline");
    run_until(&r, &r.p.gones, 1000);
    CHECK_EQ_INT(r.p.gones, 1);
    rig_deinit(&r);

    rig_init(&r, 1 << 20);
    conn_set_deadline(r.p.c, 10, NULL);
    conn_set_deadline(r.p.c, 0, NULL); /* cancelled */
    run_for(&r, 40);
    CHECK_EQ_INT(r.p.gones, 0);
    rig_deinit(&r);
}

static void test_shutdown_through_ops(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    conn_shutdown(r.p.c);
    CHECK_EQ_INT(r.p.shutdowns, 1);
    CHECK_EQ_INT(conn_state(r.p.c), CONN_CLOSING);
    conn_shutdown(r.p.c); /* closing already: goes on closing */
    CHECK_EQ_INT(r.p.shutdowns, 1);
    rig_deinit(&r);
    CHECK_EQ_INT(r.p.frees, 1);

    rig_init(&r, 1 << 20);
    conn_set_frontend(r.p.c, &probe_next_ops, &r.p); /* no shutdown callback: killed */
    conn_shutdown(r.p.c);
    CHECK_EQ_INT(conn_state(r.p.c), CONN_DEAD);
    run_until(&r, &r.p.gones, 1000);
    CHECK_EQ_INT(r.p.gones, 1);
    rig_deinit(&r);
}

/* Runs exactly one loop turn (one poll, then the callbacks it made active). */
static void one_turn(struct rig *r)
{
    event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void write_d(evutil_socket_t fd, short what, void *arg)
{
    CHECK_EQ_INT(conn_write(arg, "d", 1), 0);
}

/*
 * Issue 9: several conn_write() in one turn, from the input callback and from another callback of the same turn, leave
 * in ONE writev() at the end of that turn (a SOCK_SEQPACKET socketpair keeps each write a record, so the peer counts
 * them too), with no epoll_ctl (no write event armed and disarmed) and no FIONREAD for the read.
 */
static void test_one_write_per_turn(void)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    struct rig r;
    rig_init_fds(&r, 1 << 20, sv[0], sv[1]);
    r.p.reply = "abc";
    r.p.reply_len = 3;
    r.p.reply_piece = 1;
    r.p.also = event_new(r.base, -1, 0, write_d, r.p.c);
    CHECK_EQ_INT(write(r.peer, "x", 1), 1);
    count_start(sv[0]);
    one_turn(&r);
    counting = false;
    CHECK_EQ_INT(r.p.inputs, 1);
    CHECK_EQ_INT(n_writev, 1);    /* in this very turn: the old bufferevent wrote one turn later */
    CHECK_EQ_INT(n_epoll_ctl, 0); /* it also armed EV_WRITE, then disarmed it */
    CHECK_EQ_INT(n_fionread, 0);  /* and asked FIONREAD before each read */
    CHECK_EQ_INT(conn_pending(r.p.c), 0);
    char buf[16];
    CHECK_EQ_INT(recv(r.peer, buf, sizeof(buf), MSG_DONTWAIT), 4); /* one record, in the order of the calls */
    CHECK(memcmp(buf, "abcd", 4) == 0);
    CHECK_EQ_INT(recv(r.peer, buf, sizeof(buf), MSG_DONTWAIT), -1);
    count_start(sv[0]);
    one_turn(&r); /* nothing left: no write */
    counting = false;
    CHECK_EQ_INT(n_writev, 0);
    event_free(r.p.also);
    rig_deinit(&r);
}

/*
 * What the socket does not take stays queued, in order, and is written when the socket has room: at most one write per
 * turn for this connection, conn_pending() counting what waits, drain once it is out.
 */
static void test_partial_write_in_order(void)
{
    enum { BIG = 256 * 1024 };
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &(int){4096}, sizeof(int));
    struct rig r;
    rig_init_fds(&r, 1 << 20, sv[0], sv[1]);
    char *big = malloc(BIG), *got = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 23);
    r.p.reply = big;
    r.p.reply_len = BIG;
    r.p.reply_piece = 1000;
    conn_set_drain_mark(r.p.c, 0);
    CHECK_EQ_INT(write(r.peer, "x", 1), 1);
    count_start(sv[0]);
    one_turn(&r);
    CHECK_EQ_INT(n_writev, 1);
    CHECK(conn_pending(r.p.c) > 0 && conn_pending(r.p.c) < BIG); /* partly taken */
    CHECK_EQ_INT(r.p.drains, 0);
    fcntl(r.peer, F_SETFL, O_NONBLOCK);
    size_t n = 0;
    int most = n_writev;
    for (int turn = 0; turn < 20000 && n < BIG; turn++) {
        ssize_t k = read(r.peer, got + n, BIG - n);
        if (k > 0)
            n += (size_t)k;
        n_writev = 0;
        one_turn(&r);
        if (n_writev > most)
            most = n_writev;
    }
    counting = false;
    CHECK_EQ_INT(n, BIG);
    CHECK(memcmp(got, big, BIG) == 0);
    CHECK_EQ_INT(most, 1); /* never more than one write per turn */
    CHECK_EQ_INT(conn_pending(r.p.c), 0);
    CHECK_EQ_INT(conn_written(r.p.c), BIG);
    CHECK(r.p.drains >= 1);
    free(big);
    free(got);
    rig_deinit(&r);
}

/* conn_close() after bytes and a file staged in the same turn: all of it, in order, then FIN. */
static void test_close_flushes_staged(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    char path[] = "/tmp/test-bridge-conn-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd != -1);
    unlink(path);
    CHECK_EQ_INT(write(fd, "FILE", 4), 4);
    CHECK_EQ_INT(conn_write(r.p.c, "head", 4), 0);
    CHECK_EQ_INT(conn_write_file(r.p.c, fd, 4), 0);
    CHECK_EQ_INT(conn_write(r.p.c, "tail", 4), 0);
    CHECK_EQ_INT(conn_pending(r.p.c), 12);
    conn_close(r.p.c);
    run_for(&r, 50);
    char buf[32];
    size_t n = 0;
    ssize_t k;
    fcntl(r.peer, F_SETFL, O_NONBLOCK);
    while ((k = read(r.peer, buf + n, sizeof(buf) - n)) > 0)
        n += (size_t)k;
    CHECK_EQ_INT(k, 0); /* FIN after the bytes */
    CHECK_EQ_INT(n, 12);
    CHECK(memcmp(buf, "headFILEtail", 12) == 0);
    rig_deinit(&r);
}

/* The input limit: no more is read while that much waits, and reading comes back once the front-end consumed it. */
static void test_input_limit(void)
{
    struct rig r;
    rig_init(&r, 1 << 20);
    conn_set_input_limit(r.p.c, 10);
    r.p.take_none = true;
    char msg[100];
    memset(msg, 'm', sizeof(msg));
    CHECK_EQ_INT(write(r.peer, msg, sizeof(msg)), (ssize_t)sizeof(msg));
    run_for(&r, 30);
    CHECK_EQ_INT(evbuffer_get_length(conn_input(r.p.c)), 10); /* the rest stays in the socket */
    CHECK_EQ_INT(r.p.max_seen, 10);
    r.p.take_none = false;
    conn_pause_reading(r.p.c, true);
    conn_pause_reading(r.p.c, false); /* input again: the front-end takes the 10, reading resumes */
    run_for(&r, 50);
    CHECK_EQ_INT(r.p.n_got, 100);
    CHECK(memcmp(r.p.got, msg, 100) == 0);
    rig_deinit(&r);
}

/* A drain callback that writes every time it is called: one write per turn, the loop returns between them. */
static void test_drain_writer_bounded(void)
{
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    struct rig r;
    rig_init_fds(&r, 1 << 20, sv[0], sv[1]);
    conn_set_drain_mark(r.p.c, 1 << 20);
    r.p.drain_writes = 1000;
    CHECK_EQ_INT(conn_write(r.p.c, "s", 1), 0);
    count_start(sv[0]);
    for (int turn = 1; turn <= 10; turn++) {
        one_turn(&r);
        CHECK_EQ_INT(n_writev, turn);
    }
    counting = false;
    char buf[8];
    int records = 0;
    while (recv(r.peer, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        records++;
    CHECK_EQ_INT(records, 10);
    rig_deinit(&r);
}

int main(void)
{
    RUN(test_input_and_hand_over);
    RUN(test_graceful_close);
    RUN(test_kill_from_callback);
    RUN(test_pause_resume);
    RUN(test_hold);
    RUN(test_held_peer_gone);
    RUN(test_yield_and_read_bound);
    RUN(test_written);
    RUN(test_send_limit_and_drain);
    RUN(test_deadline);
    RUN(test_shutdown_through_ops);
    RUN(test_nodelay);
    RUN(test_one_write_per_turn);
    RUN(test_partial_write_in_order);
    RUN(test_close_flushes_staged);
    RUN(test_drain_writer_bounded);
    RUN(test_input_limit);
    return harness_done();
}

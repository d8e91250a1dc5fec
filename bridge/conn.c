/*
 * bridge/conn.c — one accepted connection: plain TCP on the socket itself, TLS as a libevent_openssl bufferevent; and
 * the reference-counted configuration connections are accepted with, which also carries the loop's output flusher for
 * them. The contract is in bridge/conn.h.
 *
 * Output (issue 9: one write per connection per loop turn, never one syscall per frame). conn_write() only appends to
 * the connection's output evbuffer and puts the connection on its flusher's list; the flusher is one event, made
 * active at the first such append of a loop turn. libevent runs the active callbacks of one priority in the order they
 * were activated, and one activated from a callback goes to the tail of the queue being run
 * (event_process_active_single_queue() takes TAILQ_FIRST until the queue is empty): the sockets that epoll reported, the
 * timers that expired and the upstream's mailbox were all queued before the first callback ran, so the flusher runs
 * after the turn's input and deliveries, and writes each listed connection once. A plain connection whose socket has
 * taken everything so far (no write event armed) is written directly, one writev() of the whole output (at most
 * libevent's 128 chains); only what the socket did not take arms the write event, which writes the rest when the kernel
 * has room and disarms once the output is empty. Nothing is armed or disarmed on the common path: no epoll_ctl, no extra
 * epoll_wait, one writev. A TLS connection keeps libevent_openssl's writing (it writes when the socket is writable,
 * one SSL_write() per evbuffer chain); the flusher pulls the turn's output into one chain (up to one TLS record), so it
 * goes as one SSL_write(), one record. Callbacks run by the flush (ops->drain) may queue more: that waits for the next
 * turn (a zero timer), so no connection keeps the flusher, and the loop, to itself.
 *
 * Input, plain TCP: one persistent read event; each callback reads once, at most CONN_READ_MAX bytes (fewer when the
 * input limit is near), into space reserved in the input evbuffer: no FIONREAD ioctl per read as evbuffer_read() does,
 * and no read after a short one (the level-triggered poll says when more came). The event is registered while reading
 * is wanted (not paused, not held, input under conn_set_input_limit(), not dead) and the front-end's input callback is
 * called directly from it. A TLS connection reads through the bufferevent (its read high-watermark is the input limit).
 *
 * Four more libevent events: `reaper` frees the connection at the next loop turn (conn_kill(), so no callback ever frees
 * its own connection), `resume` delivers buffered input after conn_pause_reading(false) (never re-entrantly from the
 * front-end that resumed), `yield` delivers it at the next loop turn after a front-end spent its work budget
 * (conn_yield_input()), and `deadline` is the one timer: the front-end's deadline while CONN_OPEN (the request timeout
 * of the HTTP front-end), then the linger once closing.
 *
 * Back-pressure: ops->drain is called after a write that left at most the drain mark in the output (CONN_OPEN), and a
 * closing connection sends its FIN after the write that emptied it; a peer whose input waits (reading paused) fills its
 * TCP window instead of our memory (the read event is not registered past the input limit).
 *
 * The memory budget's hold (conn_hold_reading()) is a second reason not to read, next to the front-end's pause: the
 * socket is read only when neither is set. The read callback checks the owner's flag (conn_accept.hold) before handing
 * input over, so a connection that reads while the process is over its budget holds itself with what it just read.
 */
#include "bridge/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/log.h"

/* Most bytes of a TLS connection's output pulled into one chain per turn: one TLS record's plaintext (RFC 8446 §5.1). */
#define CONN_TLS_COALESCE_MAX 16384

/* A socket call that failed for now, not for good. */
static bool retriable(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

/* The loop's flusher for the connections of one conn_conf (one loop, see struct conn_conf). */
struct conn_flusher {
    struct event *ev;
    struct list dirty; /* struct conn by flush_node: output queued this turn, not written yet */
    bool active;       /* ev is active (runs later in this pass) */
    bool running;      /* inside flush_cb */
};

struct conn {
    struct list node;       /* on the owner's list: the owner links and unlinks it */
    struct list flush_node; /* on cc->flusher->dirty while output waits for the end of the turn */
    void (*gone)(void *owner, struct conn *c);
    void *owner;
    void *owner_tag;
    struct conn_conf *cc; /* a reference, fixed at accept */
    evutil_socket_t fd;
    struct bufferevent *bev;   /* TLS only */
    struct evbuffer *in, *out; /* plain: ours; TLS: the bufferevent's */
    struct event *rd, *wr;     /* plain only: reading, and writing what the socket did not take at once */
    size_t in_limit;           /* plain: conn_set_input_limit() (0: none) */
    size_t drain_mark;         /* plain: conn_set_drain_mark() */
    struct event *reaper;      /* deferred free */
    struct event *resume;      /* deferred input after conn_pause_reading(false) */
    struct event *yield;       /* conn_yield_input(): input again at the next loop turn */
    uint64_t queued;           /* bytes ever queued for output (conn_written()) */
    struct event *deadline;    /* the front-end's deadline, then the linger */
    const char *deadline_why;
    uint64_t deadline_ms;
    const struct conn_ops *ops;
    void *fe;
    enum conn_state state;
    bool read_paused;
    bool held;               /* conn_hold_reading(): the process is over its memory budget */
    const atomic_bool *hold; /* conn_accept.hold */
    bool discard_input;      /* conn_discard_input(): what arrives is dropped */
    bool wr_shut;            /* FIN sent (shutdown SHUT_WR) after our last bytes */
    bool rd_on;              /* plain: rd is registered */
    bool wr_on;              /* plain: wr is registered (the kernel's send buffer is full) */
    char peer[64];
};

const char *conn_state_str(enum conn_state st)
{
    switch (st) {
    case CONN_OPEN:
        return "open";
    case CONN_CLOSING:
        return "closing";
    case CONN_DEAD:
        return "dead";
    }
    return "?";
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Configurations, and the flusher they carry */

static void flush_cb(evutil_socket_t fd, short what, void *arg);

int conn_conf_new(const struct conf *conf, struct event_base *base, struct upstream *up, struct conn_conf **out)
{
    struct conn_conf *cc = calloc(1, sizeof(*cc));
    struct conn_flusher *f = calloc(1, sizeof(*f));
    if (!cc || !f || !(f->ev = evtimer_new(base, flush_cb, f)))
        goto fail;
    if (conf_copy(&cc->conf, conf) != 0)
        goto fail;
    list_init(&f->dirty);
    cc->flusher = f;
    cc->refs = 1;
    snprintf(cc->server_header, sizeof(cc->server_header), "%s/%s", cc->conf.server_name, WARREN_VERSION);
    cc->env = (struct session_env){
        .base = base, .up = up, .conf = &cc->conf, .server_header = cc->conf.hide_server_info ? NULL : cc->server_header};
    *out = cc;
    return 0;

fail:
    if (f && f->ev)
        event_free(f->ev);
    free(f);
    free(cc);
    return -ENOMEM;
}

void conn_conf_unref(struct conn_conf *cc)
{
    if (!cc || --cc->refs > 0)
        return;
    event_free(cc->flusher->ev); /* no connection is left on its list: each holds a reference */
    free(cc->flusher);
    conf_deinit(&cc->conf);
    free(cc);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Input */

/* Plain TCP: the read event is registered exactly while the socket should be read. */
static void update_reading(struct conn *c)
{
    if (c->bev)
        return;
    bool want =
        c->state != CONN_DEAD && !c->read_paused && !c->held && (c->in_limit == 0 || evbuffer_get_length(c->in) < c->in_limit);
    if (want == c->rd_on)
        return;
    if (want ? event_add(c->rd, NULL) == 0 : event_del(c->rd) == 0)
        c->rd_on = want;
}

/* Reading stops (bufferevent) or resumes for the pause or the hold. */
static void reading_changed(struct conn *c)
{
    if (!c->bev)
        update_reading(c);
    else if (c->read_paused || c->held)
        bufferevent_disable(c->bev, EV_READ);
    else
        bufferevent_enable(c->bev, EV_READ);
}

/*
 * Hands buffered input to the front-end, again to the next one when it hands the connection over, then drops what a
 * discarding connection received.
 */
static void dispatch_input(struct conn *c)
{
    const struct conn_ops *ops;
    do {
        ops = c->ops;
        if (!ops || !conn_wants_input(c))
            break;
        ops->input(c, c->fe);
    } while (c->ops != ops);
    if (c->state == CONN_CLOSING && c->discard_input)
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
    update_reading(c); /* what was consumed may bring the input back under its limit */
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    dispatch_input(arg);
}

/* Input arrived: over the memory budget, what was read waits and nothing more is read; else the front-end gets it. */
static void input_arrived(struct conn *c)
{
    if (c->hold && atomic_load(c->hold))
        conn_hold_reading(c, true);
    dispatch_input(c);
}

/* Plain TCP: one read per readiness, into space reserved in the input (no FIONREAD), at most CONN_READ_MAX. */
static void rd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    size_t want = CONN_READ_MAX, have = evbuffer_get_length(c->in);
    size_t room = c->in_limit == 0 ? want : have < c->in_limit ? c->in_limit - have : 0;
    if (room < want)
        want = room;
    struct evbuffer_iovec v[2];
    int nv = want ? evbuffer_reserve_space(c->in, (ev_ssize_t)want, v, 2) : 0;
    if (nv <= 0) {
        update_reading(c); /* at the limit (or out of memory: the loop comes back) */
        return;
    }
    struct iovec iov[2];
    size_t left = want;
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
        left -= iov[i].iov_len;
    }
    ssize_t n = nv == 1 ? read(fd, iov[0].iov_base, iov[0].iov_len) : readv(fd, iov, nv);
    if (n < 0 && retriable(errno))
        return;
    if (n <= 0) { /* the peer's FIN, or a reset */
        if (n < 0)
            log_msg(LOG_DEBUG, c->peer, "read failed: %s", strerror(errno));
        conn_kill(c);
        return;
    }
    size_t got = (size_t)n;
    int used = 0;
    while (used < nv && (used == 0 || got > 0)) {
        v[used].iov_len = iov[used].iov_len < got ? iov[used].iov_len : got;
        got -= v[used].iov_len;
        used++;
    }
    evbuffer_commit_space(c->in, v, used);
    input_arrived(c);
}

void conn_yield_input(struct conn *c)
{
    /* A zero timeout, not event_active(): an active event re-activated from its own callback would run again in the same
     * turn, before the loop polls the other sockets; a timer runs after the next poll. */
    static const struct timeval now = {0, 0};
    if (c->state != CONN_DEAD)
        evtimer_add(c->yield, &now);
}

struct evbuffer *conn_input(struct conn *c)
{
    return c->in;
}

void conn_set_input_limit(struct conn *c, size_t bytes)
{
    c->in_limit = bytes;
    if (c->bev)
        bufferevent_setwatermark(c->bev, EV_READ, 0, bytes);
    else
        update_reading(c);
}

void conn_pause_reading(struct conn *c, bool paused)
{
    if (c->read_paused == paused || c->state != CONN_OPEN)
        return;
    c->read_paused = paused;
    reading_changed(c);
    if (!paused && !c->held)
        event_active(c->resume, 0, 0);
}

void conn_hold_reading(struct conn *c, bool held)
{
    if (c->held == held || c->state != CONN_OPEN)
        return;
    c->held = held;
    reading_changed(c);
    if (!held && !c->read_paused)
        event_active(c->resume, 0, 0);
}

void conn_held_check(struct conn *c)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (!c->held || getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return;
    if (ti.tcpi_state != TCP_ESTABLISHED) { /* CLOSE_WAIT: its FIN came; CLOSE: it reset */
        log_msg(LOG_DEBUG, c->peer, "peer gone while reading was held; closing");
        conn_kill(c);
    }
}

bool conn_wants_input(const struct conn *c)
{
    return c->state != CONN_DEAD && !c->read_paused && !c->held && !c->discard_input;
}

void conn_discard_input(struct conn *c)
{
    c->discard_input = true;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Output */

static void closing_flushed(struct conn *c);

/* Output was queued: the connection is written by the flusher at the end of this turn (see the top of the file). */
static void staged(struct conn *c)
{
    struct conn_flusher *f = c->cc->flusher;
    if (list_is_linked(&c->flush_node) || (!c->bev && c->wr_on)) /* listed, or the write event takes it */
        return;
    list_link_tail(&f->dirty, &c->flush_node);
    if (!f->active && !f->running) { /* inside the flush, the next turn's timer takes it (flush_cb) */
        event_active(f->ev, 0, 0);
        f->active = true;
    }
}

/* Plain TCP: some output left; what the socket took is reported (drain, or the closing FIN). */
static void wrote(struct conn *c)
{
    size_t left = evbuffer_get_length(c->out);
    if (c->state == CONN_OPEN && left <= c->drain_mark && c->ops && c->ops->drain)
        c->ops->drain(c, c->fe);
    else if (c->state == CONN_CLOSING && left == 0)
        closing_flushed(c);
}

/* Plain TCP: one writev() (or sendfile() for a file) of the output; the write event is armed exactly while some is left. */
static void write_out(struct conn *c)
{
    int n = evbuffer_write_atmost(c->out, c->fd, -1);
    if (n < 0 && !retriable(errno)) {
        log_msg(LOG_DEBUG, c->peer, "write failed: %s", strerror(errno));
        conn_kill(c);
        return;
    }
    bool more = evbuffer_get_length(c->out) > 0;
    if (more != c->wr_on && (more ? event_add(c->wr, NULL) == 0 : event_del(c->wr) == 0))
        c->wr_on = more;
    if (n > 0)
        wrote(c);
}

static void wr_cb(evutil_socket_t fd, short what, void *arg)
{
    write_out(arg);
}

/* The end of the turn for one connection. */
static void flush_one(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    if (!c->bev) {
        if (!c->wr_on)
            write_out(c);
        return;
    }
    size_t len = evbuffer_get_length(c->out); /* TLS: one chain, one SSL_write(), when the bufferevent writes */
    (void)evbuffer_pullup(c->out, (ev_ssize_t)(len < CONN_TLS_COALESCE_MAX ? len : CONN_TLS_COALESCE_MAX));
}

/* Moves every node of `from` to the empty `to`; `from` is left empty. */
static void list_move_all(struct list *from, struct list *to)
{
    list_init(to);
    if (list_is_empty(from))
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    list_init(from);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    static const struct timeval next_turn = {0, 0};
    struct conn_flusher *f = arg;
    struct list todo;
    f->active = false;
    f->running = true;
    list_move_all(&f->dirty, &todo);
    while (!list_is_empty(&todo)) {
        struct conn *c = list_entry(todo.next, struct conn, flush_node);
        list_unlink(&c->flush_node);
        flush_one(c);
    }
    f->running = false;
    if (!list_is_empty(&f->dirty)) /* queued by callbacks of this flush: after the next poll */
        evtimer_add(f->ev, &next_turn);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
    if (c->state == CONN_DEAD)
        return 0;
    if (evbuffer_add(c->out, data, len) != 0)
        return -ENOMEM;
    c->queued += len;
    staged(c);
    return 0;
}

int conn_write_file(struct conn *c, int fd, uint64_t len)
{
    if (c->state == CONN_DEAD || evbuffer_add_file(c->out, fd, 0, (ev_off_t)len) != 0) {
        close(fd); /* evbuffer_add_file() owns fd only on success */
        return -ENOMEM;
    }
    c->queued += len;
    staged(c);
    return 0;
}

uint64_t conn_written(const struct conn *c)
{
    return c->queued - conn_pending(c);
}

size_t conn_pending(const struct conn *c)
{
    return c->out ? evbuffer_get_length(c->out) : 0;
}

int conn_send_check(struct conn *c, size_t len)
{
    size_t queued = conn_pending(c);
    size_t limit = c->cc->conf.client_send_limit_bytes;
    if (queued + len <= limit)
        return 0;
    log_msg(LOG_WARN, c->peer, "client too slow: %zu bytes queued, limit %zu; closing", queued, limit);
    return CONN_E_TOO_SLOW;
}

void conn_set_drain_mark(struct conn *c, size_t bytes)
{
    if (c->state != CONN_OPEN)
        return;
    c->drain_mark = bytes;
    if (c->bev)
        bufferevent_setwatermark(c->bev, EV_WRITE, bytes, 0);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Time and close */

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_free(arg);
}

void conn_kill(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    c->state = CONN_DEAD;
    if (c->bev) {
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    } else {
        update_reading(c);
        if (c->wr_on && event_del(c->wr) == 0)
            c->wr_on = false;
    }
    event_active(c->reaper, 0, 0);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->deadline_why)
        log_msg(LOG_INFO, c->peer, "%s (%llu ms); closing", c->deadline_why, (unsigned long long)c->deadline_ms);
    conn_kill(c);
}

void conn_set_deadline(struct conn *c, uint64_t ms, const char *why)
{
    c->deadline_why = why;
    c->deadline_ms = ms;
    if (ms == 0) {
        evtimer_del(c->deadline);
        return;
    }
    struct timeval tv = clock_timeval(ms);
    evtimer_add(c->deadline, &tv);
}

/* Everything we had to say is on the wire: FIN, then wait for the peer's (EOF) or the linger. */
static void closing_flushed(struct conn *c)
{
    if (c->wr_shut)
        return;
    c->wr_shut = true;
    shutdown(c->fd, SHUT_WR);
}

void conn_close(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_CLOSING;
    /* The peer's goodbye and FIN must be read even if the front-end had paused reading (or the memory budget held it). */
    if (c->read_paused || c->held) {
        c->read_paused = false;
        c->held = false;
        reading_changed(c);
    }
    c->drain_mark = 0;
    if (c->bev)
        bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    conn_set_deadline(c, CONN_CLOSE_LINGER_MS, NULL);
    if (conn_pending(c) == 0) /* else after the write that empties the output */
        closing_flushed(c);
}

void conn_shutdown(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->ops && c->ops->shutdown)
        c->ops->shutdown(c, c->fe);
    else
        conn_kill(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* bufferevent callbacks (TLS) */

static void read_cb(struct bufferevent *bev, void *arg)
{
    input_arrived(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_OPEN) {
        if (c->ops && c->ops->drain)
            c->ops->drain(c, c->fe);
    } else if (c->state == CONN_CLOSING && conn_pending(c) == 0) {
        closing_flushed(c);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e)
            log_msg(LOG_INFO, c->peer, "TLS error: %s", ERR_reason_error_string(e));
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_kill(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Lifecycle */

/* TLS: the bufferevent; takes `ssl` over. -ENOMEM on failure (ssl freed; fd still ours). */
static int tls_new(struct conn *c, struct event_base *base, SSL *ssl)
{
    /* The flusher may pull a chain up (move it) while libevent_openssl retries an SSL_write() that wanted to write: the
     * retry then passes the same bytes, at least as many, from another address. */
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->bev = bufferevent_openssl_socket_new(base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!c->bev)
        return -ENOMEM;
    c->in = bufferevent_get_input(c->bev);
    c->out = bufferevent_get_output(c->bev);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    /* One read per callback is at most this (the per-turn input bound of issue 7; a TLS bufferevent may add what is
     * pending in one decrypted record). */
    bufferevent_set_max_single_read(c->bev, CONN_READ_MAX);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}

/* Plain TCP: our buffers and events on the socket. */
static int plain_new(struct conn *c, struct event_base *base)
{
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rd = event_new(base, c->fd, EV_READ | EV_PERSIST, rd_cb, c);
    c->wr = event_new(base, c->fd, EV_WRITE | EV_PERSIST, wr_cb, c);
    if (!c->in || !c->out || !c->rd || !c->wr)
        return -ENOMEM;
    (void)evbuffer_set_flags(c->out, EVBUFFER_FLAG_DRAINS_TO_FD); /* conn_write_file(): sendfile() */
    update_reading(c);
    return 0;
}

/* Frees what conn_new() built (each part may be missing) and closes the socket. */
static void conn_release(struct conn *c)
{
    if (c->bev) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN); /* skip the close_notify exchange on a dead peer */
        bufferevent_free(c->bev);                         /* closes fd */
    } else {
        if (c->rd)
            event_free(c->rd);
        if (c->wr)
            event_free(c->wr);
        if (c->in)
            evbuffer_free(c->in);
        if (c->out)
            evbuffer_free(c->out);
        evutil_closesocket(c->fd);
    }
    if (c->reaper)
        event_free(c->reaper);
    if (c->resume)
        event_free(c->resume);
    if (c->yield)
        event_free(c->yield);
    if (c->deadline)
        event_free(c->deadline);
}

int conn_new(const struct conn_accept *a, struct conn **out)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(a->fd);
        SSL_free(a->ssl);
        return -ENOMEM;
    }
    snprintf(c->peer, sizeof(c->peer), "%s", a->peer);
    list_init(&c->node);
    list_init(&c->flush_node);
    c->fd = a->fd;
    c->reaper = event_new(a->base, -1, 0, reaper_cb, c);
    c->resume = event_new(a->base, -1, 0, resume_cb, c);
    c->yield = evtimer_new(a->base, resume_cb, c);
    c->deadline = evtimer_new(a->base, deadline_cb, c);
    int r = a->ssl ? tls_new(c, a->base, a->ssl) : plain_new(c, a->base);
    if (r != 0 || !c->reaper || !c->resume || !c->yield || !c->deadline) {
        if (a->ssl && !c->bev)
            SSL_free(a->ssl);
        conn_release(c);
        free(c);
        return -ENOMEM;
    }
    c->gone = a->gone;
    c->owner = a->owner;
    c->owner_tag = a->owner_tag;
    c->hold = a->hold;
    c->cc = a->cc;
    c->cc->refs++;
    /* No Nagle: what one loop turn queued goes out in one write, and small frames are not held back waiting for the
     * peer's delayed ACK (issue 9: a ~40 ms stall per exchange). Not a TCP socket (tests' socketpairs): nothing to do. */
    (void)setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    log_msg(LOG_DEBUG, c->peer, "connection accepted%s", conn_is_tls(c) ? " (TLS)" : "");
    *out = c;
    return 0;
}

void conn_free(struct conn *c)
{
    if (!c)
        return;
    if (c->gone)
        c->gone(c->owner, c);
    if (c->ops && c->ops->free)
        c->ops->free(c, c->fe);
    c->ops = NULL;
    c->fe = NULL;
    list_unlink(&c->flush_node);
    conn_release(c);
    conn_conf_unref(c->cc);
    log_msg(LOG_DEBUG, c->peer, "connection closed");
    free(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Accessors */

struct list *conn_node(struct conn *c)
{
    return &c->node;
}

struct conn *conn_of_node(struct list *node)
{
    return list_entry(node, struct conn, node);
}

void conn_set_frontend(struct conn *c, const struct conn_ops *ops, void *fe)
{
    c->ops = ops;
    c->fe = fe;
}

void *conn_owner_tag(const struct conn *c)
{
    return c->owner_tag;
}

enum conn_state conn_state(const struct conn *c)
{
    return c->state;
}

const char *conn_peer(const struct conn *c)
{
    return c->peer;
}

bool conn_is_tls(const struct conn *c)
{
    return c->bev != NULL;
}

const struct conf *conn_config(const struct conn *c)
{
    return &c->cc->conf;
}

const struct session_env *conn_session_env(const struct conn *c)
{
    return &c->cc->env;
}

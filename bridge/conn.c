/*
 * bridge/conn.c — one accepted connection as a bufferevent (plain, or TLS with libevent_openssl), and the
 * reference-counted configuration connections are accepted with. The contract is in bridge/conn.h.
 *
 * Four libevent events besides the bufferevent: `reaper` frees the connection at the next loop turn (conn_kill(), so
 * no callback ever frees its own connection), `resume` delivers buffered input after conn_pause_reading(false) (never
 * re-entrantly from the front-end that resumed), `yield` delivers it at the next loop turn after a front-end spent its
 * work budget (conn_yield_input()), and `deadline` is the one timer: the front-end's deadline while CONN_OPEN (the
 * request timeout of the HTTP front-end), then the linger once closing.
 *
 * Back-pressure: the bufferevent's write low-watermark is the front-end's drain mark while CONN_OPEN and 0 once closing,
 * so the write callback says "drained" or "everything flushed"; its read high-watermark is the input limit, so a peer
 * whose input waits (reading paused) fills its TCP window instead of our memory.
 *
 * The memory budget's hold (conn_hold_reading()) is a second reason not to read, next to the front-end's pause: the
 * socket is read only when neither is set. read_cb() checks the owner's flag (conn_accept.hold) before handing input
 * over, so a connection that reads while the process is over its budget holds itself with what it just read.
 */
#include "bridge/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/log.h"

struct conn {
    struct list node; /* on the owner's list: the owner links and unlinks it */
    void (*gone)(void *owner, struct conn *c);
    void *owner;
    void *owner_tag;
    struct conn_conf *cc; /* a reference, fixed at accept */
    struct bufferevent *bev;
    struct event *reaper;   /* deferred free */
    struct event *resume;   /* deferred input after conn_pause_reading(false) */
    struct event *yield;    /* conn_yield_input(): input again at the next loop turn */
    uint64_t queued;        /* bytes ever queued for output (conn_written()) */
    struct event *deadline; /* the front-end's deadline, then the linger */
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
/* Configurations */

int conn_conf_new(const struct conf *conf, struct event_base *base, struct upstream *up, struct conn_conf **out)
{
    struct conn_conf *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return -ENOMEM;
    if (conf_copy(&cc->conf, conf) != 0) {
        free(cc);
        return -ENOMEM;
    }
    cc->refs = 1;
    snprintf(cc->server_header, sizeof(cc->server_header), "%s/%s", cc->conf.server_name, WARREN_VERSION);
    cc->env = (struct session_env){
        .base = base, .up = up, .conf = &cc->conf, .server_header = cc->conf.hide_server_info ? NULL : cc->server_header};
    *out = cc;
    return 0;
}

void conn_conf_unref(struct conn_conf *cc)
{
    if (!cc || --cc->refs > 0)
        return;
    conf_deinit(&cc->conf);
    free(cc);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Input */

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
    if (c->state == CONN_CLOSING && c->discard_input) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    dispatch_input(arg);
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
    return bufferevent_get_input(c->bev);
}

void conn_set_input_limit(struct conn *c, size_t bytes)
{
    bufferevent_setwatermark(c->bev, EV_READ, 0, bytes);
}

void conn_pause_reading(struct conn *c, bool paused)
{
    if (c->read_paused == paused || c->state != CONN_OPEN)
        return;
    c->read_paused = paused;
    if (paused) {
        bufferevent_disable(c->bev, EV_READ);
    } else if (!c->held) {
        bufferevent_enable(c->bev, EV_READ);
        event_active(c->resume, 0, 0);
    }
}

void conn_hold_reading(struct conn *c, bool held)
{
    if (c->held == held || c->state != CONN_OPEN)
        return;
    c->held = held;
    if (held) {
        bufferevent_disable(c->bev, EV_READ);
    } else if (!c->read_paused) {
        bufferevent_enable(c->bev, EV_READ);
        event_active(c->resume, 0, 0);
    }
}

void conn_held_check(struct conn *c)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (!c->held || getsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
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

int conn_write(struct conn *c, const void *data, size_t len)
{
    if (c->state == CONN_DEAD)
        return 0;
    if (bufferevent_write(c->bev, data, len) != 0)
        return -ENOMEM;
    c->queued += len;
    return 0;
}

int conn_write_file(struct conn *c, int fd, uint64_t len)
{
    if (c->state == CONN_DEAD || evbuffer_add_file(bufferevent_get_output(c->bev), fd, 0, (ev_off_t)len) != 0) {
        close(fd); /* evbuffer_add_file() owns fd only on success */
        return -ENOMEM;
    }
    c->queued += len;
    return 0;
}

uint64_t conn_written(const struct conn *c)
{
    return c->queued - conn_pending(c);
}

size_t conn_pending(const struct conn *c)
{
    return c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
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
    if (c->state == CONN_OPEN)
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
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
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

/* Everything we had to say is on the wire: FIN, then wait for the peer's (EOF in event_cb) or the linger. */
static void closing_flushed(struct conn *c)
{
    if (c->wr_shut)
        return;
    c->wr_shut = true;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
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
        bufferevent_enable(c->bev, EV_READ);
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    conn_set_deadline(c, CONN_CLOSE_LINGER_MS, NULL);
    if (conn_pending(c) == 0)
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
/* bufferevent callbacks */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->hold && atomic_load(c->hold)) /* over the memory budget: what was read waits, nothing more is */
        conn_hold_reading(c, true);
    dispatch_input(c);
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

/* The bufferevent, plain or TLS; takes `ssl` over. NULL on failure (ssl freed; fd still ours). */
static struct bufferevent *bev_new(struct event_base *base, evutil_socket_t fd, SSL *ssl)
{
    if (!ssl)
        return bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    return bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
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
    c->bev = bev_new(a->base, a->fd, a->ssl);
    c->reaper = event_new(a->base, -1, 0, reaper_cb, c);
    c->resume = event_new(a->base, -1, 0, resume_cb, c);
    c->yield = evtimer_new(a->base, resume_cb, c);
    c->deadline = evtimer_new(a->base, deadline_cb, c);
    if (!c->bev || !c->reaper || !c->resume || !c->yield || !c->deadline)
        goto fail;
    c->gone = a->gone;
    c->owner = a->owner;
    c->owner_tag = a->owner_tag;
    c->hold = a->hold;
    c->cc = a->cc;
    c->cc->refs++;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    /* One read per callback is at most this (libevent's default, made explicit: the per-turn input bound of issue 7;
     * a TLS bufferevent may add what is pending in one decrypted record). */
    bufferevent_set_max_single_read(c->bev, CONN_READ_MAX);
    /* No Nagle: what one loop turn queued goes out in one write (libevent writes the whole output buffer when the socket
     * is writable), and small frames are not held back waiting for the peer's delayed ACK (issue 9: a ~40 ms stall per
     * exchange). Not a TCP socket (tests' socketpairs): nothing to do. */
    (void)setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_msg(LOG_DEBUG, c->peer, "connection accepted%s", conn_is_tls(c) ? " (TLS)" : "");
    *out = c;
    return 0;

fail:
    if (c->bev)
        bufferevent_free(c->bev); /* closes fd */
    else
        evutil_closesocket(a->fd);
    if (c->reaper)
        event_free(c->reaper);
    if (c->resume)
        event_free(c->resume);
    if (c->yield)
        event_free(c->yield);
    if (c->deadline)
        event_free(c->deadline);
    free(c);
    return -ENOMEM;
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
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl)
        SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN); /* skip the close_notify exchange on a dead peer */
    bufferevent_free(c->bev);
    event_free(c->reaper);
    event_free(c->resume);
    event_free(c->yield);
    event_free(c->deadline);
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
    return bufferevent_openssl_get_ssl(c->bev) != NULL;
}

const struct conf *conn_config(const struct conn *c)
{
    return &c->cc->conf;
}

const struct session_env *conn_session_env(const struct conn *c)
{
    return &c->cc->env;
}

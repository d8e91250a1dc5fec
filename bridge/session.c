/*
 * bridge/session.c — one STOMP session: input loop, command dispatch, CONNECT/DISCONNECT, heart-beats, ERROR and
 * RECEIPT, and the upstream channel's callbacks.
 *
 * Input: every WebSocket message is appended to `in`; the stomp/ parser runs over it frame by frame (zero-copy, the frame
 * borrows `in` until the loop drops the consumed bytes). The loop stops while CONNECT waits for the broker, while the
 * session is flow-paused (too many unconfirmed publishes or bytes, too many pending operations, or the broker blocked
 * publishers: DESIGN.md invariants 2 and 4) and after DISCONNECT; held bytes stay in `in` (bounded: the transport stops
 * reading while paused, and a WebSocket message is bounded by max_message_bytes). A frame its handler deferred
 * (SESSION_DEFER: no room for it yet) stays there unconsumed too.
 *
 * Errors follow the spec, not Web-STOMP: every ERROR is followed by io->close() (STOMP 1.2 "ERROR": "the server MUST
 * then close the connection"), and carries `receipt-id` when the offending frame had `receipt`.
 */
#include "bridge/session-int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "bridge/log.h"
#include "bridge/peer.h"
#include "bridge/throttle.h"
#include "bridge/timer.h"
#include "conf/conf.h"

/* The loop's serialisation buffer is given back after a frame that made it grow past this. */
#define SESSION_KEEP_BYTES 16384
/*
 * Frames (heart-beat runs included) one process_input() call handles; the rest waits SESSION_YIELD_MS, so one message
 * of 190k BEGIN/ABORT frames cannot hold the loop for tens of milliseconds (issue 7), and the front-end feeds nothing
 * more meanwhile (io->backlog).
 */
#define SESSION_TURN_FRAMES 1024
#define SESSION_YIELD_MS    1

static void process_input(struct session *s);

const char *session_state_str(enum session_state st)
{
    switch (st) {
    case SESSION_ST_LOGIN:
        return "login";
    case SESSION_ST_CONNECTING:
        return "connecting";
    case SESSION_ST_OPEN:
        return "open";
    case SESSION_ST_DISCONNECTING:
        return "disconnecting";
    case SESSION_ST_CLOSED:
        return "closed";
    }
    return "?";
}

void session_log(struct session *s, int level, const char *fmt, ...)
{
    if (!log_enabled((enum log_level)level))
        return;
    char prefix[sizeof(s->peer) + sizeof(s->id) + 1]; /* "peer session-id" once connected, made here: not held */
    if (s->connected)
        snprintf(prefix, sizeof(prefix), "%s %s", s->peer, s->id);
    else
        snprintf(prefix, sizeof(prefix), "%s", s->peer);
    va_list ap;
    va_start(ap, fmt);
    log_vmsg((enum log_level)level, prefix, fmt, ap);
    va_end(ap);
}

char *session_strndup(const char *p, size_t n)
{
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, p, n);
        r[n] = '\0';
    }
    return r;
}

int session_random(uint8_t *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -EIO;
}

int session_timer(struct session *s, struct timer **t, timer_fn fn)
{
    if (!*t)
        *t = timer_new(s->env.base, fn, s);
    return *t ? 0 : -ENOMEM;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Output                                                                                                              */

/*
 * Memory an idle session does not hold (issue 9): the parser's header array (max_headers entries, 3.2 kB by default) and
 * the buffer a frame is serialised into are the loop's, lent to one session for one process_input() or one frame and
 * given back; sessions live on one loop thread, so one set per thread serves them all. A nested use while lent (none is
 * known: a session's callbacks do not feed or send for another session) gets a private allocation for that call.
 * The thread's set is freed when the thread ends.
 */
struct session_scratch {
    struct stomp_header *hdrs;
    size_t hdrs_cap;
    bool hdrs_lent;
    char *out;
    size_t out_cap;
    bool out_lent;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local struct session_scratch *scratch_tls;

static void scratch_destroy(void *p)
{
    struct session_scratch *sc = p;
    free(sc->hdrs);
    free(sc->out);
    free(sc);
}

static void scratch_key_make(void)
{
    (void)pthread_key_create(&scratch_key, scratch_destroy);
}

static struct session_scratch *scratch_get(void)
{
    if (scratch_tls)
        return scratch_tls;
    struct session_scratch *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    (void)pthread_once(&scratch_once, scratch_key_make);
    if (pthread_setspecific(scratch_key, sc) != 0) {
        free(sc);
        return NULL;
    }
    scratch_tls = sc;
    return sc;
}

/* A header array of at least `need` entries for one process_input(); *own tells session_hdrs_return() to free it. */
static struct stomp_header *hdrs_borrow(size_t need, size_t *cap, bool *own)
{
    struct session_scratch *sc = scratch_get();
    *own = !sc || sc->hdrs_lent;
    if (*own) {
        *cap = need;
        return calloc(need ? need : 1, sizeof(struct stomp_header));
    }
    if (sc->hdrs_cap < need) {
        struct stomp_header *h = realloc(sc->hdrs, need * sizeof(*h));
        if (!h)
            return NULL;
        sc->hdrs = h;
        sc->hdrs_cap = need;
    }
    sc->hdrs_lent = true;
    *cap = sc->hdrs_cap;
    return sc->hdrs;
}

static void hdrs_return(struct stomp_header *h, bool own)
{
    if (own)
        free(h);
    else if (scratch_tls)
        scratch_tls->hdrs_lent = false;
}

/* The serialisation buffer for one frame: the thread's when free, else a private one (out->buf NULL, grown on demand). */
struct out_buf {
    char *buf;
    size_t cap;
    bool own;
};

static void out_borrow(struct out_buf *o)
{
    struct session_scratch *sc = scratch_get();
    o->own = !sc || sc->out_lent;
    if (o->own) {
        o->buf = NULL;
        o->cap = 0;
        return;
    }
    sc->out_lent = true;
    o->buf = sc->out;
    o->cap = sc->out_cap;
}

static void out_return(struct out_buf *o)
{
    bool keep = !o->own && o->cap <= SESSION_KEEP_BYTES;
    if (!o->own) {
        scratch_tls->out = keep ? o->buf : NULL;
        scratch_tls->out_cap = keep ? o->cap : 0;
        scratch_tls->out_lent = false;
    }
    if (!keep)
        free(o->buf);
}

static int write_frame(struct session *s, const struct stomp_frame *f, struct out_buf *o, size_t *len)
{
    unsigned flags = s->conf->trailing_lf ? STOMP_WRITE_TRAILING_LF : 0;
    const char *reason = NULL;
    int r = stomp_frame_write(f, s->version, flags, o->buf, o->cap, len, &reason);
    if (r == STOMP_E_NOSPACE) {
        if (*len > s->conf->client_send_limit_bytes) /* never sendable: not worth the allocation */
            return 0;
        size_t cap = *len + 256;
        char *n = realloc(o->buf, cap);
        if (!n)
            return -ENOMEM;
        o->buf = n;
        o->cap = cap;
        r = stomp_frame_write(f, s->version, flags, o->buf, o->cap, len, &reason);
    }
    if (r != 0)
        session_log(s, LOG_DEBUG, "cannot write %s frame: %s", stomp_cmd_str(f->cmd), reason ? reason : stomp_error_str(r));
    return r;
}

int session_send_frame(struct session *s, enum stomp_cmd cmd, const struct stomp_header *h, size_t n, const char *body,
                       size_t body_len)
{
    struct stomp_frame f = {.cmd = cmd, .headers = (struct stomp_header *)h, .n_headers = n, .body = body, .body_len = body_len};
    size_t len = 0;
    if (s->state == SESSION_ST_CLOSED)
        return -EPIPE;
    struct out_buf o;
    out_borrow(&o);
    int r = write_frame(s, &f, &o, &len);
    if (r == 0 && len > s->conf->client_send_limit_bytes) { /* the transport would close the client as too slow for it */
        s->out.too_big = len;
        r = -EMSGSIZE;
    }
    int sent = r == 0 ? s->io.send(s->io_ud, o.buf, len) : 0;
    out_return(&o);
    if (r != 0)
        return r < 0 ? r : -EINVAL;
    if (sent != 0)
        return -EPIPE;
    stomp_heartbeat_sent(&s->tm.hb, timer_now_ms());
    return 0;
}

void session_close(struct session *s, const char *reason)
{
    if (s->state == SESSION_ST_CLOSED)
        return;
    s->state = SESSION_ST_CLOSED;
    timer_disarm(s->tm.heartbeat);
    timer_disarm(s->tm.login);
    timer_disarm(s->tm.idle);
    timer_disarm(s->tm.throttle);
    session_subs_detach(s); /* the last member of a fan-out group takes its queue with it */
    upstream_chan_release(s->ch);
    s->ch = NULL;
    excl_owner_release(&s->excl); /* with the channel, as the broker frees a closed connection's exclusive queues */
    session_log(s, LOG_DEBUG, "closing: %s", reason);
    s->io.close(s->io_ud, reason);
}

static void on_resume(void *arg);
static void on_hb_timer(void *arg);
static void on_idle_timer(void *arg);
static void on_throttle_timer(void *arg);

void session_input_resume(struct session *s)
{
    if (s->in.len == 0)
        return;
    if (session_timer(s, &s->in.resume, on_resume) != 0) {
        (void)SESSION_FATAL(s, "out of memory");
        return;
    }
    timer_arm(s->in.resume, 0);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Timers                                                                                                              */

static void hb_schedule(struct session *s)
{
    uint64_t next = stomp_heartbeat_next_deadline(&s->tm.hb);
    if (next == UINT64_MAX || s->state == SESSION_ST_CLOSED)
        return;
    uint64_t now = timer_now_ms();
    uint64_t d = next > now ? next - now : 0;
    if (session_timer(s, &s->tm.heartbeat, on_hb_timer) != 0) {
        (void)SESSION_FATAL(s, "out of memory");
        return;
    }
    timer_arm(s->tm.heartbeat, d);
}

static void on_hb_timer(void *arg)
{
    struct session *s = arg;
    bool beat = false;
    uint64_t now = timer_now_ms();
    if (s->ops.read_paused) /* we stopped reading: the client's beats are waiting in the socket, not missing */
        stomp_heartbeat_received(&s->tm.hb, now);
    int r = stomp_heartbeat_tick(&s->tm.hb, now, &beat);
    if (beat && s->io.send(s->io_ud, "\n", 1) == 0)
        stomp_heartbeat_sent(&s->tm.hb, now);
    if (r == STOMP_E_HEARTBEAT_TIMEOUT) {
        session_log(s, LOG_INFO, "missed client heart-beats, closing");
        session_close(s, "missed client heart-beats");
        return;
    }
    hb_schedule(s);
}

static void on_login_timer(void *arg)
{
    struct session *s = arg;
    if (s->state == SESSION_ST_LOGIN || s->state == SESSION_ST_CONNECTING) {
        session_log(s, LOG_INFO, "no CONNECT completed within %d ms, closing", s->conf->login_timeout_ms);
        session_close(s, "login timeout");
    }
}

static void idle_schedule(struct session *s, uint64_t now)
{
    uint64_t idle = (uint64_t)s->conf->idle_timeout_ms;
    uint64_t due = s->in.last_frame_ms + idle;
    uint64_t d = due > now ? due - now : 0;
    if (idle == 0 || s->state == SESSION_ST_CLOSED)
        return;
    if (session_timer(s, &s->tm.idle, on_idle_timer) != 0) {
        (void)SESSION_FATAL(s, "out of memory");
        return;
    }
    timer_arm(s->tm.idle, d);
}

static void on_idle_timer(void *arg)
{
    struct session *s = arg;
    uint64_t now = timer_now_ms();
    if (now - s->in.last_frame_ms >= (uint64_t)s->conf->idle_timeout_ms) {
        session_log(s, LOG_INFO, "no frame for %d ms, closing", s->conf->idle_timeout_ms);
        session_close(s, "idle timeout");
        return;
    }
    idle_schedule(s, now);
}

static void on_resume(void *arg)
{
    process_input(arg);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Upstream callbacks                                                                                                  */

static void send_connected(struct session *s, uint32_t send_ms, uint32_t recv_ms)
{
    char hb[32];
    struct stomp_header h[4];
    size_t n = 0;
    char server[UPSTREAM_BROKER_MAX + 72];
    snprintf(hb, sizeof(hb), "%u,%u", send_ms, recv_ms);
    /* In Web-STOMP's order (clients and test suites match CONNECTED as a whole). `server` names the broker first, as
     * Web-STOMP does ("RabbitMQ/3.10.8"), then warren: "RabbitMQ/3.10.8 warren/0.1.0". */
    if (s->env.server_header && !s->conf->hide_server_info) {
        const char *broker = upstream_chan_broker(s->ch);
        snprintf(server, sizeof(server), "%s%s%s", broker, broker[0] ? " " : "", s->env.server_header);
        h[n++] = session_hdr("server", server);
    }
    h[n++] = session_hdr("session", s->id);
    h[n++] = session_hdr("heart-beat", hb);
    h[n++] = session_hdr("version", stomp_version_str(s->version));
    (void)session_send_frame(s, STOMP_CMD_CONNECTED, h, n, "", 0);
}

/* An AMQP reply text without its "NOT_FOUND - " prefix (the name is the ERROR's `message` already). */
static const char *reply_text_detail(const char *text)
{
    size_t n = strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");
    return n > 0 && strncmp(text + n, " - ", 3) == 0 && text[n + 3] ? text + n + 3 : text;
}

/* The ERROR for a broker-side failure: `Broker connection lost` when the connection died, else the broker's own name for
 * it (not_found, precondition_failed, ...), with the broker's reply text as the body, as RabbitMQ's current plugin words
 * it ("no exchange 'x' in vhost '/'", without 3.10's "NOT_FOUND - "). */
static void broker_error(struct session *s, const char *receipt, const struct upstream_error *err)
{
    const char *text = err->text && err->text[0] ? err->text : upstream_err_str(err->kind);
    struct session_arg r = {receipt, receipt ? strlen(receipt) : 0};
    if (err->kind == UPSTREAM_ERR_CONNECTION)
        (void)session_error_frame(s, &r, SESSION_ERR_BROKER_LOST, &SARG(text), 1, NULL);
    else
        (void)session_error_frame(
            s, &r, SESSION_ERR_BROKER,
            (const struct session_arg[]){SARG(err->name && err->name[0] ? err->name : upstream_err_str(err->kind)),
                                         SARG(reply_text_detail(text))},
            2, NULL);
}

static void open_failed(struct session *s, const struct upstream_error *err)
{
    if (err->kind == UPSTREAM_ERR_LIMIT) { /* a cap on AMQP connections: the text names the key */
        (void)SESSION_FAIL(s, NULL, CONN_LIMIT, SARG(err->text ? err->text : upstream_err_str(err->kind)));
        return;
    }
    if (err->kind != UPSTREAM_ERR_ACCESS_REFUSED) {
        /* The connection died under the channel.open: the same ERROR as for the sessions already open on it. */
        broker_error(s, NULL, err);
        return;
    }
    /* The client gets RabbitMQ's words exactly (clients and test suites compare them); the broker's reason is logged. */
    if (err->text && err->text[0])
        session_log(s, LOG_INFO, "the broker refused the login: %s", err->text);
    if (err->code == 530) { /* not_allowed: the vhost does not exist or the user may not use it */
        (void)SESSION_FAIL(s, NULL, VHOST_DENIED, SARG(session_vhost(s)));
        return;
    }
    /* A refused password: this address's next login waits (bridge/throttle.h). */
    throttle_login_failed(s->env.throttle, s->peer, timer_now_ms(), (unsigned)s->conf->login_failure_delay_max_ms);
    (void)SESSION_FAIL(s, NULL, ACCESS_REFUSED, SARG(session_user(s)));
}

static void on_open(void *ud, const struct upstream_error *err)
{
    struct session *s = ud;
    if (s->state != SESSION_ST_CONNECTING)
        return;
    if (err) {
        open_failed(s, err);
        return;
    }
    struct stomp_limits lim = {s->conf->max_frame_bytes, (size_t)s->conf->max_headers, s->conf->max_header_line_bytes,
                               s->conf->max_body_bytes};
    stomp_parser_set_limits(&s->in.parser, &lim);
    stomp_parser_set_version(&s->in.parser, s->version);
    s->state = SESSION_ST_OPEN;
    s->connected = true;
    timer_free(s->tm.login); /* not needed again */
    s->tm.login = NULL;
    session_flow_update(s);
    stomp_heartbeat_init(&s->tm.hb, s->tm.send_ms, s->tm.recv_ms, (unsigned)s->conf->heartbeat_timeout_pct, timer_now_ms());
    send_connected(s, s->tm.send_ms, s->tm.recv_ms);
    session_log(s, LOG_DEBUG, "CONNECTED %s as '%s'", stomp_version_str(s->version), session_user(s));
    hb_schedule(s);
    s->in.last_frame_ms = timer_now_ms();
    idle_schedule(s, s->in.last_frame_ms);
    session_input_resume(s);
}

static void on_done(void *ud, uint64_t op_tag, const struct upstream_error *err, const char *queue)
{
    session_ops_done(ud, op_tag, err);
}

static void on_closed(void *ud, const struct upstream_error *err)
{
    struct session *s = ud;
    session_log(s, LOG_INFO, "AMQP channel closed: %s (%d) %s", err->name ? err->name : upstream_err_str(err->kind), err->code,
                err->text ? err->text : "");
    broker_error(s, session_ops_first_receipt(s), err);
}

void session_upstream_failed(struct session *s, const struct upstream_error *err)
{
    if (s->state == SESSION_ST_CLOSED)
        return;
    if (err->kind == UPSTREAM_ERR_LIMIT) /* a fan-out group's channel needed a connection over a cap */
        (void)SESSION_FAIL(s, NULL, CONN_LIMIT, SARG(err->text ? err->text : upstream_err_str(err->kind)));
    else
        on_closed(s, err);
}

static void on_delivery(void *ud, const struct upstream_delivery *d)
{
    session_sub_delivery(ud, d);
}

static void on_cancel(void *ud, const char *consumer_tag)
{
    session_sub_cancelled(ud, consumer_tag);
}

static void on_blocked(void *ud, bool blocked)
{
    session_ops_blocked(ud, blocked);
}

static const struct upstream_chan_cb chan_cb = {
    .on_open = on_open,
    .on_done = on_done,
    .on_delivery = on_delivery,
    .on_cancel = on_cancel,
    .on_closed = on_closed,
    .on_blocked = on_blocked,
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* CONNECT, DISCONNECT                                                                                                 */

static char *header_dup(const struct stomp_frame *f, const char *name, const char *def)
{
    const struct stomp_header *h = stomp_frame_header(f, name);
    return h ? session_strndup(h->value, h->value_len) : strdup(def ? def : "");
}

/* True when `user` is in loopback_users and the client is not on loopback: RabbitMQ's check_user_loopback, applied to
 * the STOMP client's address as Web-STOMP does (the broker only ever sees warren's own, loopback, address). */
static bool loopback_refused(const struct session *s, const char *user)
{
    const struct conf_list *l = &s->conf->loopback_users;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], user) == 0)
            return !peer_is_loopback(s->peer);
    return false;
}

static enum session_rc negotiate(struct session *s, const struct stomp_frame *f)
{
    const struct stomp_header *av = stomp_frame_header(f, "accept-version");
    const struct stomp_header *hb = stomp_frame_header(f, "heart-beat");
    const char *reason = NULL;
    uint32_t cx = 0, cy = 0;
    if (stomp_version_negotiate(av ? av->value : NULL, av ? av->value_len : 0, STOMP_VERSIONS_ALL, &s->version, &reason) != 0)
        return SESSION_FAIL(s, NULL, VERSION_MISMATCH, SARG(stomp_version_list_str(STOMP_VERSIONS_ALL)));
    if (stomp_heartbeat_parse(hb ? hb->value : NULL, hb ? hb->value_len : 0, &cx, &cy, &reason) != 0)
        return SESSION_FAIL(s, NULL, BAD_HEARTBEAT, SARG(reason ? reason : "invalid heart-beat header"));
    stomp_heartbeat_negotiate(cx, cy, (uint32_t)s->conf->heartbeat_send_min_ms, (uint32_t)s->conf->heartbeat_recv_min_ms, 0,
                              &s->tm.send_ms, &s->tm.recv_ms);
    return SESSION_OK;
}

static void login_drop(struct session_login *l)
{
    free(l->user);
    free(l->pass);
    free(l->vhost);
    *l = (struct session_login){0};
}

/* Opens the session's channel with login `l` (which is then dropped). */
static enum session_rc login_open(struct session *s, struct session_login *l)
{
    struct upstream_login lg = {.vhost = l->vhost, .user = l->user, .pass = l->pass, .conn_name = s->peer};
    int r = upstream_chan_open(s->env.up, &lg, &chan_cb, s, &s->ch);
    login_drop(l);
    if (r != 0)
        return SESSION_FATAL_RC(s, "cannot open an AMQP channel", r);
    session_flow_update(s);
    return SESSION_HELD;
}

/* The throttle's turn for a held login came. */
static void on_throttle_timer(void *arg)
{
    struct session *s = arg;
    uint64_t now = timer_now_ms();
    if (s->state != SESSION_ST_CONNECTING || !s->pending_login.user || s->ch)
        return;
    if (now < s->tm.throttle_due) { /* the loop's cached time ran behind the clock: not its turn yet */
        timer_arm(s->tm.throttle, s->tm.throttle_due - now);
        return;
    }
    (void)login_open(s, &s->pending_login);
}

static enum session_rc cmd_connect(struct session *s, const struct stomp_frame *f, bool replay)
{
    if (s->state != SESSION_ST_LOGIN)
        return SESSION_FAIL0(s, f, ALREADY_CONNECTED);
    if (negotiate(s, f) != SESSION_OK)
        return SESSION_CLOSED;
    /* default_pass goes only with default_user: a CONNECT that names a login and no passcode logs in with an empty
     * password, so the configured password is never tried for a user the client chose (doc/compatibility.md). */
    bool named = stomp_frame_header(f, "login") != NULL;
    struct session_login l = {header_dup(f, "login", s->conf->default_user),
                              header_dup(f, "passcode", named ? "" : s->conf->default_pass),
                              header_dup(f, "host", s->conf->default_vhost)};
    if (l.user && loopback_refused(s, l.user)) {
        session_log(s, LOG_WARN, "login failed for user '%s': this user's access is restricted to localhost", l.user);
        login_drop(&l);
        return SESSION_FAIL0(s, f, NOT_LOOPBACK);
    }
    if (!l.user || !l.pass || !l.vhost) {
        login_drop(&l);
        return SESSION_FATAL_RC(s, "cannot open an AMQP channel", -ENOMEM);
    }
    free(s->user);
    free(s->vhost);
    s->user = strdup(l.user);
    s->vhost = strdup(l.vhost);
    if (!s->user || !s->vhost) {
        login_drop(&l);
        return SESSION_FATAL_RC(s, "cannot open an AMQP channel", -ENOMEM);
    }
    s->state = SESSION_ST_CONNECTING;
    /* Brute-force guard: an address whose logins the broker refused waits its turn before this one is tried. */
    unsigned max_ms = (unsigned)s->conf->login_failure_delay_max_ms;
    uint64_t now = timer_now_ms();
    uint64_t wait = throttle_login_wait(s->env.throttle, s->peer, now, max_ms);
    if (wait == 0)
        return login_open(s, &l);
    if (wait == THROTTLE_REFUSED) {
        char num[24];
        login_drop(&l); /* logged once, as every ERROR: the client chooses how many of these there are */
        return SESSION_FAIL(s, f, LOGIN_THROTTLED, session_arg_int(num, sizeof(num), max_ms));
    }
    session_log(s, LOG_INFO, "login as '%s' held %llu ms: recent refused logins from this address", session_user(s),
                (unsigned long long)wait);
    if (session_timer(s, &s->tm.throttle, on_throttle_timer) != 0) {
        login_drop(&l);
        return SESSION_FATAL_RC(s, "cannot open an AMQP channel", -ENOMEM);
    }
    s->pending_login = l;
    s->tm.throttle_due = now + wait;
    timer_arm(s->tm.throttle, wait);
    session_flow_update(s);
    return SESSION_HELD;
}

static enum session_rc cmd_disconnect(struct session *s, const struct stomp_frame *f, bool replay)
{
    s->state = SESSION_ST_DISCONNECTING;
    return session_receipt_add(s, stomp_frame_header(f, "receipt"), true) == SESSION_OK ? SESSION_HELD : SESSION_CLOSED;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Dispatch and the input loop                                                                                         */

static const session_handler_fn handlers[STOMP_CMD_COUNT] = {
    [STOMP_CMD_CONNECT] = cmd_connect,
    [STOMP_CMD_STOMP] = cmd_connect,
    [STOMP_CMD_SEND] = session_cmd_send,
    [STOMP_CMD_SUBSCRIBE] = session_cmd_subscribe,
    [STOMP_CMD_UNSUBSCRIBE] = session_cmd_unsubscribe,
    [STOMP_CMD_BEGIN] = session_cmd_begin,
    [STOMP_CMD_COMMIT] = session_cmd_commit,
    [STOMP_CMD_ABORT] = session_cmd_abort,
    [STOMP_CMD_ACK] = session_cmd_ack,
    [STOMP_CMD_NACK] = session_cmd_ack,
    [STOMP_CMD_DISCONNECT] = cmd_disconnect,
};

enum session_rc session_dispatch(struct session *s, const struct stomp_frame *f, bool replay)
{
    session_handler_fn fn = (unsigned)f->cmd < STOMP_CMD_COUNT ? handlers[f->cmd] : NULL;
    bool connect = f->cmd == STOMP_CMD_CONNECT || f->cmd == STOMP_CMD_STOMP;
    if (!fn)
        return SESSION_FAIL(s, f, BAD_COMMAND, SARG(stomp_cmd_str(f->cmd)));
    if (s->state == SESSION_ST_LOGIN && !connect)
        return SESSION_FAIL0(s, f, NOT_LOGGED_IN);
    enum session_rc r = fn(s, f, replay);
    if (r == SESSION_OK && s->state == SESSION_ST_OPEN) {
        const struct stomp_header *rc = stomp_frame_header(f, "receipt");
        if (rc)
            r = session_receipt_add(s, rc, false);
    }
    return r;
}

static bool can_parse(const struct session *s)
{
    return s->state == SESSION_ST_LOGIN || (s->state == SESSION_ST_OPEN && !s->ops.read_paused);
}

/* Length of the command line at `p` (for "Could not interpret command"), capped, printable bytes only. */
static int command_len(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && i < 32 && p[i] >= 0x20 && p[i] < 0x7f)
        i++;
    return (int)i;
}

static void parse_failed(struct session *s, int r, const char *reason, const char *frame, size_t len)
{
    if (!reason)
        reason = stomp_error_str(r);
    char num[24];
    if (r == STOMP_E_COMMAND)
        (void)SESSION_FAIL(s, NULL, BAD_COMMAND, ((struct session_arg){frame, (size_t)command_len(frame, len)}));
    else if (r == STOMP_E_TOO_BIG)
        (void)SESSION_FAIL(s, NULL, FRAME_TOO_BIG, SARG(reason),
                           session_arg_int(num, sizeof(num),
                                           (long long)(s->state == SESSION_ST_LOGIN ? s->conf->max_frame_bytes_unauthenticated
                                                                                    : s->conf->max_frame_bytes)));
    else
        (void)SESSION_FAIL(s, NULL, FRAME_INVALID, SARG(reason));
}

/*
 * Held input waits for the next turn (the budget is spent); the front-end is told while it does. False when the resume
 * timer cannot be had (the session failed: the input is dropped).
 */
static bool input_backlog(struct session *s, bool pending)
{
    if (pending) {
        if (session_timer(s, &s->in.resume, on_resume) != 0) {
            (void)SESSION_FATAL(s, "out of memory");
            return false;
        }
        timer_yield(s->in.resume);
    }
    if (s->in.backlog == pending)
        return true;
    s->in.backlog = pending;
    if (s->io.backlog)
        s->io.backlog(s->io_ud, pending);
    return true;
}

/*
 * Parses and dispatches the frames of buf[0..len) (starting at a frame boundary) until the input runs out, a frame is cut
 * short, reading is paused, a frame is deferred or this turn's budget is spent; returns the bytes consumed. The header
 * array is the loop's, lent for the call (see struct session_scratch).
 */
static size_t parse_frames(struct session *s, char *buf, size_t len)
{
    size_t off = 0;
    unsigned frames = 0;
    bool spent = false, own = false;
    size_t cap = 0;
    struct stomp_header *hdrs = hdrs_borrow(s->in.parser.limits.max_headers, &cap, &own);
    if (!hdrs) {
        (void)SESSION_FATAL(s, "out of memory");
        return len;
    }
    stomp_parser_set_headers(&s->in.parser, hdrs, cap);
    while (off < len && can_parse(s)) {
        if (frames++ == SESSION_TURN_FRAMES) {
            spent = true;
            break;
        }
        size_t used = 0;
        struct stomp_frame f;
        const char *reason = NULL;
        int r = stomp_parser_feed(&s->in.parser, buf + off, len - off, &used, &f, &reason);
        if (r == STOMP_NEED_MORE)
            break;
        if (r == STOMP_HEARTBEAT) {
            off += used;
            continue;
        }
        if (r != 0) {
            parse_failed(s, r, reason, buf + off, len - off);
            break;
        }
        s->in.last_frame_ms = timer_now_ms();
        if (session_dispatch(s, &f, false) == SESSION_DEFER)
            break; /* nothing was done: the frame is parsed again when reading resumes (the parser is between frames) */
        off += used;
    }
    stomp_parser_set_headers(&s->in.parser, NULL, 0);
    hdrs_return(hdrs, own);
    if (s->state == SESSION_ST_CLOSED)
        off = len;
    if (!input_backlog(s, spent && s->state != SESSION_ST_CLOSED))
        off = len;
    return off;
}

/* Makes room for `n` more bytes of held input; false (the session failed) when out of memory. */
static bool input_reserve(struct session *s, size_t n)
{
    if (s->in.len + n <= s->in.cap)
        return true;
    size_t cap = s->in.cap ? s->in.cap : 4096;
    while (cap < s->in.len + n)
        cap *= 2;
    char *b = realloc(s->in.buf, cap);
    if (!b) {
        (void)SESSION_FATAL(s, "out of memory");
        return false;
    }
    s->in.buf = b;
    s->in.cap = cap;
    return true;
}

/* Held input is given back as soon as none is left: an idle session holds no input buffer. */
static void input_release(struct session *s)
{
    if (s->in.len > 0)
        return;
    free(s->in.buf);
    s->in.buf = NULL;
    s->in.cap = 0;
}

/* The held input (bytes a previous feed could not handle then): from the resume timer, or after a feed appended to it. */
static void process_input(struct session *s)
{
    if (s->in.processing)
        return;
    s->in.processing = true;
    size_t off = parse_frames(s, s->in.buf, s->in.len);
    if (off > s->in.len)
        off = s->in.len;
    if (s->in.len > off) /* never memmove(NULL, ...): the buffer may have been given back */
        memmove(s->in.buf, s->in.buf + off, s->in.len - off);
    s->in.len -= off;
    input_release(s);
    s->in.processing = false;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Public API                                                                                                          */

static int session_init(struct session *s, const char *peer)
{
    const struct conf *c = s->conf;
    uint8_t rnd[16];
    snprintf(s->peer, sizeof(s->peer), "%s", peer ? peer : "?");
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return -EIO;
    memcpy(s->id, "session-", 8);
    dest_base64url(rnd, sizeof(rnd), s->id + 8);
    size_t unauth = c->max_frame_bytes_unauthenticated;
    struct stomp_limits lim = {unauth, (size_t)c->max_headers,
                               c->max_header_line_bytes < unauth ? c->max_header_line_bytes : unauth,
                               c->max_body_bytes < unauth ? c->max_body_bytes : unauth};
    stomp_parser_init(&s->in.parser, &lim, NULL, 0); /* the header array is lent per parse (parse_frames()) */
    stomp_heartbeat_init(&s->tm.hb, 0, 0, 100, timer_now_ms());
    /* The other timers are made when first armed (session_timer()): an idle session holds only those it uses. */
    if (session_timer(s, &s->tm.login, on_login_timer) != 0)
        return -ENOMEM;
    timer_arm(s->tm.login, (uint64_t)c->login_timeout_ms);
    return 0;
}

struct session *session_new(const struct session_env *env, const struct session_io *io, void *io_ud, const char *peer)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->env = *env;
    s->conf = env->conf;
    excl_owner_init(&s->excl, env->excl);
    s->io = *io;
    s->io_ud = io_ud;
    s->version = STOMP_V1_0;
    session_ops_init(s);
    session_map_init(s);
    session_txs_init(s);
    if (session_subs_init(s) != 0 || session_init(s, peer) != 0) {
        s->state = SESSION_ST_CLOSED;
        session_free(s);
        return NULL;
    }
    return s;
}

void session_free(struct session *s)
{
    if (!s)
        return;
    upstream_chan_release(s->ch);
    s->ch = NULL;
    excl_owner_release(&s->excl);
    timer_free(s->tm.heartbeat);
    timer_free(s->tm.login);
    timer_free(s->tm.idle);
    timer_free(s->tm.throttle);
    timer_free(s->in.resume);
    login_drop(&s->pending_login);
    session_ops_deinit(s);
    session_txs_deinit(s);
    session_subs_deinit(s);
    session_map_deinit(s);
    stomp_parser_deinit(&s->in.parser);
    free(s->in.buf);
    free(s->user);
    free(s->vhost);
    free(s);
}

int session_feed(struct session *s, char *data, size_t len)
{
    if (s->state == SESSION_ST_CLOSED || s->state == SESSION_ST_DISCONNECTING)
        return 0;
    stomp_heartbeat_received(&s->tm.hb, timer_now_ms());
    if (len == 0)
        return 0;
    /* Before CONNECTED (while the broker or the login throttle answers) a client may have at most two frames of
     * max_frame_bytes_unauthenticated waiting, not 8 MiB (issue 7). */
    size_t bound =
        s->connected ? s->conf->max_frame_bytes + s->conf->max_message_bytes : 2 * s->conf->max_frame_bytes_unauthenticated;
    if (s->in.len + len > bound) {
        char num[24];
        (void)SESSION_FAIL(s, NULL, TOO_MUCH_INPUT, session_arg_int(num, sizeof(num), (long long)bound));
        return 0;
    }
    if (s->in.len > 0 || s->in.processing) { /* behind held input: in order, after it */
        if (!input_reserve(s, len))
            return 0;
        memcpy(s->in.buf + s->in.len, data, len);
        s->in.len += len;
        process_input(s);
        return 0;
    }
    /* Nothing held: the frames are parsed where they are, and only what is left (a frame cut short, frames held by
     * flow control or the turn's budget) is copied. */
    s->in.processing = true;
    size_t off = parse_frames(s, data, len);
    size_t rest = off < len ? len - off : 0;
    if (rest > 0 && input_reserve(s, rest)) {
        if (s->in.len > 0) /* (cannot happen: nothing feeds during a dispatch) kept in arrival order all the same */
            memmove(s->in.buf + rest, s->in.buf, s->in.len);
        memcpy(s->in.buf, data + off, rest);
        s->in.len += rest;
    }
    s->in.processing = false;
    return 0;
}

void session_on_drain(struct session *s)
{
    if (s->state == SESSION_ST_OPEN || s->state == SESSION_ST_DISCONNECTING)
        session_subs_drain(s);
}

const char *session_id(const struct session *s)
{
    return s->connected ? s->id : "";
}

bool session_is_connected(const struct session *s)
{
    return s->connected;
}

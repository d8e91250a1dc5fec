/*
 * bridge/wsconn.c — the WebSocket front-end: from the 101 reply to the close handshake, with a STOMP session on top.
 *
 * Input follows h2o's h2o_websocket_proceed: decode until no progress (or until the transport says stop: reading paused
 * by the session, input discarded, connection dead), hand each message to the session, answer pings, and echo the
 * peer's close. The session's `struct session_io` calls land here and become WebSocket messages: text when
 * ws_frame = text and the frame is UTF-8 (RFC 6455 §5.6), binary otherwise, compressed when permessage-deflate was
 * negotiated and the message is worth it. Nothing here frees anything from inside a session callback: an end is
 * conn_close() (after our close frame) or conn_kill(), and the transport frees the connection, then this front-end
 * through conn_ops.free, from the loop.
 *
 * Back-pressure (DESIGN.md invariant 2): the session reads io->pending(); the transport calls conn_ops.drain when the
 * output falls to half of client_send_buffer_bytes, which becomes session_on_drain(); a message that would take the
 * output past client_send_limit_bytes closes the connection as too slow (conn_send_check(); close 1008 after what is
 * queued).
 *
 * Isolation (issue 7, DESIGN.md invariant 4), everything a peer can make this front-end spend:
 *  - memory before login: until the session sent CONNECTED, the decoder (and so the inflater, which writes into its
 *    bounded buffer) accepts messages of at most max_frame_bytes_unauthenticated, and the transport holds at most that
 *    much unread input; a frame header announcing more is refused before a byte of it is buffered (close 1009);
 *  - control replies: a pong is queued only when the previous one has left the output (RFC 6455 §5.5.3 lets us answer
 *    the latest ping only), otherwise the ping's payload is kept (the last one wins) and answered when the output
 *    moves; every control frame goes through conn_send_check() like data;
 *  - output over client_send_buffer_bytes: reading stops until it drains to half, so a peer that sends without reading
 *    waits in TCP instead of making us queue replies;
 *  - CPU per loop turn: one ws_input() call decodes at most WSCONN_TURN_BYTES from the wire, WSCONN_TURN_INFLATE bytes
 *    of inflated output and WSCONN_TURN_EVENTS events, then yields to the other clients (conn_yield_input()); input is
 *    fed to the decoder in slices of WSCONN_SLICE bytes so that one call cannot inflate much more than a budget; while
 *    the session holds frames over its own per-turn budget (io->backlog) nothing more is fed;
 *  - inflation: a message whose expansion ratio passes max_inflate_ratio once over WSCONN_RATIO_MIN_BYTES is refused
 *    (close 1009), and a connection that inflates more than max_inflate_bytes_per_sec (a bucket holding one second of
 *    it, at least one max_message_bytes message) is not read until the bucket has refilled.
 * The reasons to stop reading (the session's flow control, its backlog, the output mark, the inflation rate) are
 * kept apart and the socket is read when none holds.
 */
#include "bridge/wsconn.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/conn.h"
#include "bridge/log.h"
#include "bridge/session.h"
#include "conf/conf.h"
#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/utf8.h"

/* The thread's compression buffer is given back after a message that made it grow past this. */
#define WSCONN_KEEP_BYTES (64u << 10)
/* Work one ws_input() call may do before yielding to the other clients of the loop (see the file comment). */
#define WSCONN_TURN_BYTES   (64u << 10)
#define WSCONN_TURN_INFLATE (1u << 20)
#define WSCONN_TURN_EVENTS  64
/* Most bytes fed to the decoder at once: 1 KiB of DEFLATE inflates to at most ~1 MiB (1032:1). */
#define WSCONN_SLICE 1024
/* max_inflate_ratio applies to compressed messages once they inflated past this. */
#define WSCONN_RATIO_MIN_BYTES (1u << 20)

/* Why reading is stopped: any bit set stops it. */
enum wsconn_hold {
    HOLD_SESSION = 1 << 0, /* the session's flow control (io->pause_reading) */
    HOLD_BACKLOG = 1 << 1, /* the session holds frames over its per-turn budget (io->backlog) */
    HOLD_OUTPUT = 1 << 2,  /* our output is over client_send_buffer_bytes */
    HOLD_RATE = 1 << 3,    /* the inflation bucket is empty */
};

struct wsconn {
    struct conn *conn;
    struct ws_decoder dec;
    struct ws_deflate *z; /* NULL: permessage-deflate not negotiated */
    struct session *session;
    bool logged_in; /* the limits after login are in force */
    unsigned hold;  /* enum wsconn_hold bits */
    /* pongs: at most one in the output (until conn_written() reaches pong_mark), and one payload waiting */
    uint64_t pong_mark;
    bool pong_waiting;
    uint8_t pong_len;
    uint8_t *pong; /* WS_CONTROL_PAYLOAD_MAX bytes, made when a ping first has to wait */
    /* inflation rate: a bucket of `tokens` bytes refilled at max_inflate_bytes_per_sec */
    int64_t tokens;
    uint64_t tokens_ms;
    struct event *rate_timer; /* made the first time the bucket runs dry */
};

static const char *const stomp_subprotocols[] = {"v12.stomp", "v11.stomp", "v10.stomp"};

/* Stops or resumes reading for `why`; the socket is read while no reason holds. */
static void hold(struct wsconn *ws, unsigned why, bool on)
{
    unsigned before = ws->hold;
    ws->hold = on ? ws->hold | why : ws->hold & ~why;
    if ((before != 0) != (ws->hold != 0))
        conn_pause_reading(ws->conn, ws->hold != 0);
}

/* Queues a close frame (RFC 6455 §5.5.1) and starts closing. `code` 0 sends an empty close frame. */
static void ws_close(struct wsconn *ws, uint16_t code, const char *reason)
{
    if (conn_state(ws->conn) != CONN_OPEN)
        return;
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t n = ws_frame_close_encode(frame, code, reason, reason ? strlen(reason) : 0);
    conn_write(ws->conn, frame, n);
    conn_close(ws->conn);
}

/*
 * Queues a control frame the peer asked for (a pong, the echo of its close) if it fits within client_send_limit_bytes
 * like any data; otherwise the peer is too slow: close 1008 (the one frame allowed past the limit, once).
 */
static bool control_write(struct wsconn *ws, const uint8_t *frame, size_t n)
{
    if (conn_send_check(ws->conn, n) != 0) {
        conn_discard_input(ws->conn);
        ws_close(ws, WS_CLOSE_POLICY, "client too slow");
        return false;
    }
    conn_write(ws->conn, frame, n);
    return true;
}

/* Sends the waiting pong once the previous one has left the output (RFC 6455 §5.5.3: the latest ping is answered). */
static bool pong_can_go(struct wsconn *ws)
{
    return conn_state(ws->conn) == CONN_OPEN && conn_written(ws->conn) >= ws->pong_mark;
}

static void pong_send(struct wsconn *ws, const uint8_t *data, size_t len)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t n = ws_frame_pong_encode(frame, data, len);
    if (control_write(ws, frame, n))
        ws->pong_mark = conn_written(ws->conn) + conn_pending(ws->conn);
}

static void pong_flush(struct wsconn *ws)
{
    if (!ws->pong_waiting || !pong_can_go(ws))
        return;
    ws->pong_waiting = false;
    pong_send(ws, ws->pong, ws->pong_len);
}

static void on_ping(struct wsconn *ws, const uint8_t *data, size_t len)
{
    if (pong_can_go(ws)) { /* the usual case: answered at once, the newest ping replacing any waiting one */
        ws->pong_waiting = false;
        pong_send(ws, data, len);
        return;
    }
    if (!ws->pong && !(ws->pong = malloc(WS_CONTROL_PAYLOAD_MAX))) {
        conn_discard_input(ws->conn);
        ws_close(ws, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    memcpy(ws->pong, data, len);
    ws->pong_len = (uint8_t)len;
    ws->pong_waiting = true;
}

/* Reading stops while our output is over client_send_buffer_bytes (resumed by ws_drain at half of it). */
static void output_check(struct wsconn *ws)
{
    if (conn_pending(ws->conn) > conn_config(ws->conn)->client_send_buffer_bytes)
        hold(ws, HOLD_OUTPUT, true);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* The thread's compression scratch */

/*
 * What compressing needs besides a connection's own history is the thread's, not each connection's (issue 9: an idle
 * session holds none of it): the buffer a message is compressed into (its bytes are copied to the output at once) and,
 * for connections that reset their compressor after every message (server_no_context_takeover), the compressor itself
 * (ws_deflate_set_shared()). Connections live on one loop thread; the set is freed when the thread ends.
 */
struct wsconn_scratch {
    struct ws_buf zout;
    struct ws_deflate_shared *sh;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local struct wsconn_scratch *scratch_tls;

static void scratch_destroy(void *p)
{
    struct wsconn_scratch *sc = p;
    ws_buf_deinit(&sc->zout);
    ws_deflate_shared_free(sc->sh);
    free(sc);
}

static void scratch_key_make(void)
{
    (void)pthread_key_create(&scratch_key, scratch_destroy);
}

static struct wsconn_scratch *scratch_get(void)
{
    if (scratch_tls)
        return scratch_tls;
    struct wsconn_scratch *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return NULL;
    sc->sh = ws_deflate_shared_new();
    (void)pthread_once(&scratch_once, scratch_key_make);
    if (!sc->sh || pthread_setspecific(scratch_key, sc) != 0) {
        ws_deflate_shared_free(sc->sh);
        free(sc);
        return NULL;
    }
    ws_buf_init(&sc->zout, 0);
    scratch_tls = sc;
    return sc;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* session_io */

/* Queues one message compressed; false when compression failed (the caller sends it as it is). */
static bool send_compressed(struct wsconn *ws, enum ws_opcode op, const char *bytes, size_t len)
{
    const char *reason = NULL;
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    struct wsconn_scratch *sc = scratch_get();
    if (!sc)
        return false;
    struct ws_buf *zout = &sc->zout;
    zout->len = 0;
    zout->max = conn_config(ws->conn)->client_send_limit_bytes;
    if (ws_deflate_compress(ws->z, (const uint8_t *)bytes, len, zout, &reason) != 0) {
        log_msg(LOG_DEBUG, conn_peer(ws->conn), "compression failed (%s); sending uncompressed", reason ? reason : "?");
        return false;
    }
    size_t hl = ws_frame_header_encode(hdr, op, true, true, zout->len);
    conn_write(ws->conn, hdr, hl);
    conn_write(ws->conn, zout->data, zout->len);
    if (zout->cap > WSCONN_KEEP_BYTES)
        ws_buf_deinit(zout); /* the next message grows it again */
    return true;
}

static int io_send(void *ud, const char *bytes, size_t len)
{
    struct wsconn *ws = ud;
    if (conn_state(ws->conn) != CONN_OPEN)
        return -1;
    if (conn_send_check(ws->conn, len) != 0) {
        /*
         * Too slow: the limit is on queued bytes, so a STOMP ERROR would only wait behind them like this message; a
         * close frame 1008 (policy violation) with its reason is what can still be said, queued past the limit (it
         * is small), then the usual close, whose linger bounds how long the peer has to read what is queued.
         */
        conn_discard_input(ws->conn);
        ws_close(ws, WS_CLOSE_POLICY, "client too slow");
        return -1;
    }
    /* A text message must be UTF-8 (RFC 6455 §5.6): anything else goes as binary. */
    enum ws_opcode op = WS_OP_BINARY;
    if (conn_config(ws->conn)->ws_frame == CONF_WS_FRAME_TEXT && ws_utf8_valid((const uint8_t *)bytes, len))
        op = WS_OP_TEXT;
    if (ws->z && ws_deflate_wants(ws->z, len) && send_compressed(ws, op, bytes, len))
        return 0;
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header_encode(hdr, op, true, false, len);
    conn_write(ws->conn, hdr, hl);
    conn_write(ws->conn, bytes, len);
    return 0;
}

static size_t io_pending(void *ud)
{
    struct wsconn *ws = ud;
    return conn_pending(ws->conn);
}

static void io_pause_reading(void *ud, bool paused)
{
    hold(ud, HOLD_SESSION, paused);
}

static void io_backlog(void *ud, bool pending)
{
    hold(ud, HOLD_BACKLOG, pending);
}

static void io_close(void *ud, const char *reason)
{
    ws_close(ud, WS_CLOSE_NORMAL, reason);
}

static const struct session_io wsconn_session_io = {
    .send = io_send,
    .pending = io_pending,
    .pause_reading = io_pause_reading,
    .close = io_close,
    .backlog = io_backlog,
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* Input */

static void on_event(struct wsconn *ws, const struct ws_event *ev)
{
    bool open = conn_state(ws->conn) == CONN_OPEN;
    switch (ev->type) {
    case WS_EV_MESSAGE:
        if (open)
            session_feed(ws->session, (char *)ev->data, ev->len);
        break;
    case WS_EV_PING:
        if (open)
            on_ping(ws, ev->data, ev->len);
        break;
    case WS_EV_CLOSE:
        conn_discard_input(ws->conn);
        if (!open)
            break;
        if (conn_send_check(ws->conn, WS_CONTROL_FRAME_MAX) != 0) /* the echo counts like any reply */
            ws_close(ws, WS_CLOSE_POLICY, "client too slow");
        else /* echo the peer's code (RFC 6455 §5.5.1); 1005 means it sent none */
            ws_close(ws, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, NULL);
        break;
    case WS_EV_PONG:
    case WS_EV_NONE:
        break;
    }
}

/* The decoder's and the transport's bounds: before login, a message is a STOMP frame of max_frame_bytes_unauthenticated. */
static void set_limits(struct wsconn *ws, bool logged_in)
{
    const struct conf *conf = conn_config(ws->conn);
    size_t max = logged_in ? conf->max_message_bytes : conf->max_frame_bytes_unauthenticated;
    struct ws_limits lim = {
        .max_message_bytes = max, .max_inflate_ratio = conf->max_inflate_ratio, .inflate_ratio_min_bytes = WSCONN_RATIO_MIN_BYTES};
    ws->logged_in = logged_in;
    ws_decoder_set_limits(&ws->dec, &lim);
    conn_set_input_limit(ws->conn, max + WS_FRAME_HEADER_MAX_MASKED);
}

static void rate_cb(evutil_socket_t fd, short what, void *arg)
{
    hold(arg, HOLD_RATE, false);
}

/*
 * Takes `n` inflated bytes from the bucket (refilled at max_inflate_bytes_per_sec, holding one second of it but at
 * least one max_message_bytes message, so a legitimate big message passes at full speed). Empty: reading stops until
 * the deficit is refilled.
 */
static void rate_take(struct wsconn *ws, uint64_t n)
{
    const struct conf *conf = conn_config(ws->conn);
    uint64_t rate = conf->max_inflate_bytes_per_sec;
    if (rate == 0 || n == 0)
        return;
    int64_t burst = (int64_t)(rate > conf->max_message_bytes ? rate : conf->max_message_bytes);
    uint64_t now = clock_now_ms();
    uint64_t elapsed = now - ws->tokens_ms < 3600000 ? now - ws->tokens_ms : 3600000; /* no overflow below */
    uint64_t refill = elapsed * rate / 1000;
    ws->tokens_ms = now;
    ws->tokens = refill >= (uint64_t)burst || ws->tokens + (int64_t)refill > burst ? burst : ws->tokens + (int64_t)refill;
    ws->tokens -= (int64_t)n;
    if (ws->tokens >= 0 || (ws->hold & HOLD_RATE))
        return;
    uint64_t wait_ms = ((uint64_t)-ws->tokens * 1000 + rate - 1) / rate;
    struct timeval tv = clock_timeval(wait_ms ? wait_ms : 1);
    if (!ws->rate_timer)
        ws->rate_timer = evtimer_new(conn_session_env(ws->conn)->base, rate_cb, ws);
    if (ws->rate_timer && evtimer_add(ws->rate_timer, &tv) == 0) {
        hold(ws, HOLD_RATE, true);
        return;
    }
    conn_discard_input(ws->conn); /* cannot wait for the refill: the bound holds by closing */
    ws_close(ws, WS_CLOSE_INTERNAL, "out of memory");
}

/*
 * One decoder step over the first bytes of the input (at most WSCONN_SLICE with permessage-deflate). Returns 1 when an event was
 * handled, 0 when bytes were only consumed, -1 when decoding must stop (no input, or an error: the close is under way).
 */
static int decode_some(struct wsconn *ws, struct evbuffer *in, size_t *wire)
{
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return -1;
    /* Slices bound what one call inflates; without permessage-deflate a call produces no more than it is fed. */
    size_t n = ws->z && v.iov_len > WSCONN_SLICE ? WSCONN_SLICE : v.iov_len;
    size_t used = 0;
    struct ws_event ev;
    const char *reason = NULL;
    int r = ws_decoder_feed(&ws->dec, v.iov_base, n, &used, &ev, &reason);
    evbuffer_drain(in, used);
    *wire += used;
    if (r == WS_NEED_MORE)
        return 0;
    if (r != 0) {
        log_msg(LOG_INFO, conn_peer(ws->conn), "WebSocket error %u: %s", ws_error_close_code(r), reason ? reason : "");
        conn_discard_input(ws->conn); /* the decoder is failed: what follows is discarded */
        ws_close(ws, ws_error_close_code(r), reason);
        return -1;
    }
    on_event(ws, &ev);
    return 1;
}

/* conn_ops.input: decodes until no progress, until the transport says stop, or until this turn's budget is spent. */
static void ws_input(struct conn *c, void *fe)
{
    struct wsconn *ws = fe;
    struct evbuffer *in = conn_input(c);
    size_t wire = 0;
    unsigned events = 0;
    uint64_t inflated0 = ws_decoder_inflated_bytes(&ws->dec);
    if (!ws->logged_in && session_is_connected(ws->session))
        set_limits(ws, true);
    while (conn_wants_input(c)) {
        uint64_t inflated = ws_decoder_inflated_bytes(&ws->dec);
        if (wire >= WSCONN_TURN_BYTES || inflated - inflated0 >= WSCONN_TURN_INFLATE || events >= WSCONN_TURN_EVENTS) {
            conn_yield_input(c);
            break;
        }
        int r = decode_some(ws, in, &wire);
        if (r < 0)
            break;
        events += (unsigned)r;
        rate_take(ws, ws_decoder_inflated_bytes(&ws->dec) - inflated);
        output_check(ws);
    }
}

/* conn_ops.drain: the output fell to half of client_send_buffer_bytes (or moved while below it). */
static void ws_drain(struct conn *c, void *fe)
{
    struct wsconn *ws = fe;
    pong_flush(ws);
    hold(ws, HOLD_OUTPUT, false);
    session_on_drain(ws->session);
}

/* conn_ops.shutdown: close 1001 and the usual close handshake. */
static void ws_shutdown(struct conn *c, void *fe)
{
    ws_close(fe, WS_CLOSE_GOING_AWAY, "server shutting down");
}

static void wsconn_free(struct wsconn *ws)
{
    if (!ws)
        return;
    session_free(ws->session);
    if (ws->rate_timer)
        event_free(ws->rate_timer);
    ws_decoder_deinit(&ws->dec);
    ws_deflate_free(ws->z);
    free(ws->pong);
    free(ws);
}

static void ws_free(struct conn *c, void *fe)
{
    wsconn_free(fe);
}

static const struct conn_ops wsconn_ops = {
    .name = "websocket",
    .input = ws_input,
    .drain = ws_drain,
    .shutdown = ws_shutdown,
    .free = ws_free,
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* The upgrade */

static void deflate_config_from_conf(const struct conf *conf, struct ws_deflate_config *dc)
{
    ws_deflate_config_init(dc);
    dc->enabled = conf->compression;
    dc->server_no_context_takeover = conf->deflate_server_no_context_takeover;
    dc->server_max_window_bits = conf->deflate_server_max_window_bits;
    dc->level = conf->deflate_level;
    dc->mem_level = conf->deflate_mem_level;
    dc->threshold_bytes = conf->deflate_threshold_bytes;
    dc->max_message_bytes = conf->max_message_bytes;
}

/* Negotiates permessage-deflate over every Sec-WebSocket-Extensions line; `resp` gets the response value (or ""). */
static int negotiate_deflate(struct wsconn *ws, const struct ws_request *req, char *resp, size_t cap)
{
    struct ws_deflate_config dc;
    struct ws_deflate_params params = {0};
    size_t rlen = 0;
    deflate_config_from_conf(conn_config(ws->conn), &dc);
    resp[0] = '\0';
    for (size_t i = 0; i < req->num_extensions && !params.enabled; i++) {
        int r = ws_deflate_negotiate(req->extensions[i].ptr, req->extensions[i].len, &dc, &params, resp, cap, &rlen);
        if (r != 0)
            return r;
    }
    if (!params.enabled)
        return 0;
    struct wsconn_scratch *sc = scratch_get();
    if (!sc)
        return -ENOMEM;
    int r = ws_deflate_new(&params, &dc, &ws->z);
    if (r != 0)
        return r;
    ws_deflate_set_shared(ws->z, sc->sh);
    ws_decoder_set_inflate(&ws->dec, ws_deflate_inflate, ws->z);
    return 0;
}

/* The codec state and the 101 reply for `req`; returns 0, or 500 with *reason. */
static int handshake(struct wsconn *ws, const struct ws_request *req, char *reply, size_t cap, size_t *n, const char **proto,
                     const char **reason)
{
    char ext[WS_DEFLATE_RESPONSE_MAX];
    ws_decoder_init(&ws->dec, NULL);
    *proto = ws_handshake_select_protocol(req, stomp_subprotocols, 3);
    if (negotiate_deflate(ws, req, ext, sizeof(ext)) != 0 ||
        ws_handshake_response(reply, cap, n, req, *proto, ext[0] ? ext : NULL) != 0) {
        *reason = "cannot build the handshake reply";
        return 500;
    }
    return 0;
}

int wsconn_accept(struct conn *c, const struct ws_request *req, const char **reason)
{
    char reply[1024];
    size_t n = 0;
    const char *proto = NULL;
    int status;
    struct wsconn *ws = calloc(1, sizeof(*ws));
    if (!ws)
        goto oom;
    ws->conn = c;
    status = handshake(ws, req, reply, sizeof(reply), &n, &proto, reason);
    if (status != 0)
        goto fail;
    ws->session = session_new(conn_session_env(c), &wsconn_session_io, ws, conn_peer(c));
    if (!ws->session)
        goto oom;
    ws->tokens = INT64_MAX / 2; /* full: refilled to the burst at the first take */
    ws->tokens_ms = clock_now_ms();
    set_limits(ws, false);
    conn_write(c, reply, n);
    conn_set_deadline(c, 0, NULL); /* the session times the login from here */
    conn_set_frontend(c, &wsconn_ops, ws);
    conn_set_drain_mark(c, conn_config(c)->client_send_buffer_bytes / 2);
    log_msg(LOG_DEBUG, conn_peer(c), "WebSocket open (%s%s)", proto ? proto : "no subprotocol",
            ws->z ? ", permessage-deflate" : "");
    return 0;

oom:
    *reason = "out of memory";
    status = 503;
fail:
    wsconn_free(ws);
    return status;
}

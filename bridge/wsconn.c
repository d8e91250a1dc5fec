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
 */
#include "bridge/wsconn.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/conn.h"
#include "bridge/log.h"
#include "bridge/session.h"
#include "conf/conf.h"
#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/utf8.h"

/* The compression scratch buffer is given back after a message that made it grow past this. */
#define WSCONN_KEEP_BYTES (64u << 10)

struct wsconn {
    struct conn *conn;
    struct ws_decoder dec;
    struct ws_deflate *z; /* NULL: permessage-deflate not negotiated */
    struct ws_buf zout;   /* compression scratch */
    struct session *session;
};

static const char *const stomp_subprotocols[] = {"v12.stomp", "v11.stomp", "v10.stomp"};

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

/* ------------------------------------------------------------------------------------------------------------------ */
/* session_io */

/* Queues one message compressed; false when compression failed (the caller sends it as it is). */
static bool send_compressed(struct wsconn *ws, enum ws_opcode op, const char *bytes, size_t len)
{
    const char *reason = NULL;
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    ws->zout.len = 0;
    if (ws_deflate_compress(ws->z, (const uint8_t *)bytes, len, &ws->zout, &reason) != 0) {
        log_msg(LOG_DEBUG, conn_peer(ws->conn), "compression failed (%s); sending uncompressed", reason ? reason : "?");
        return false;
    }
    size_t hl = ws_frame_header_encode(hdr, op, true, true, ws->zout.len);
    conn_write(ws->conn, hdr, hl);
    conn_write(ws->conn, ws->zout.data, ws->zout.len);
    if (ws->zout.cap > WSCONN_KEEP_BYTES)
        ws_buf_deinit(&ws->zout); /* keeps its max: the next message grows it again */
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
    struct wsconn *ws = ud;
    conn_pause_reading(ws->conn, paused);
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
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* Input */

static void on_event(struct wsconn *ws, const struct ws_event *ev)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    bool open = conn_state(ws->conn) == CONN_OPEN;
    switch (ev->type) {
    case WS_EV_MESSAGE:
        if (open)
            session_feed(ws->session, (const char *)ev->data, ev->len);
        break;
    case WS_EV_PING:
        if (open)
            conn_write(ws->conn, frame, ws_frame_pong_encode(frame, ev->data, ev->len));
        break;
    case WS_EV_CLOSE:
        conn_discard_input(ws->conn);
        if (open) /* echo the peer's code (RFC 6455 §5.5.1); 1005 means it sent none */
            ws_close(ws, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, NULL);
        break;
    case WS_EV_PONG:
    case WS_EV_NONE:
        break;
    }
}

/* conn_ops.input: decodes until no progress or until the transport says stop. */
static void ws_input(struct conn *c, void *fe)
{
    struct wsconn *ws = fe;
    struct evbuffer *in = conn_input(c);
    while (conn_wants_input(c)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return;
        size_t used = 0;
        struct ws_event ev;
        const char *reason = NULL;
        int r = ws_decoder_feed(&ws->dec, v.iov_base, v.iov_len, &used, &ev, &reason);
        evbuffer_drain(in, used);
        if (r == WS_NEED_MORE)
            continue;
        if (r != 0) {
            log_msg(LOG_INFO, conn_peer(c), "WebSocket error %u: %s", ws_error_close_code(r), reason ? reason : "");
            conn_discard_input(c); /* the decoder is failed: what follows is discarded */
            ws_close(ws, ws_error_close_code(r), reason);
            return;
        }
        on_event(ws, &ev);
    }
}

/* conn_ops.drain: the output fell to half of client_send_buffer_bytes. */
static void ws_drain(struct conn *c, void *fe)
{
    struct wsconn *ws = fe;
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
    ws_decoder_deinit(&ws->dec);
    ws_deflate_free(ws->z);
    ws_buf_deinit(&ws->zout);
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
    int r = ws_deflate_new(&params, &dc, &ws->z);
    if (r != 0)
        return r;
    ws_decoder_set_inflate(&ws->dec, ws_deflate_inflate, ws->z);
    return 0;
}

/* The codec state and the 101 reply for `req`; returns 0, or 500 with *reason. */
static int handshake(struct wsconn *ws, const struct ws_request *req, char *reply, size_t cap, size_t *n, const char **proto,
                     const char **reason)
{
    const struct conf *conf = conn_config(ws->conn);
    char ext[WS_DEFLATE_RESPONSE_MAX];
    struct ws_limits lim = {.max_message_bytes = conf->max_message_bytes};
    ws_decoder_init(&ws->dec, &lim);
    ws_buf_init(&ws->zout, conf->client_send_limit_bytes);
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

/*
 * bridge/client.c — one client connection, from the first HTTP byte to the close handshake.
 *
 * States: HTTP (reading the request head) → WS (frames flow; the STOMP session sees message payloads) → CLOSING (our
 * close frame is queued: we flush it and wait for the peer's close or a timer) → freed. A plain GET that is not an
 * upgrade is answered from conf->http_root (the demo page) and the connection closes after the reply. A peer that has not
 * completed its TLS handshake and request head within login_timeout_ms is dropped; from the upgrade on, the session
 * times the STOMP login.
 *
 * The loop follows h2o's h2o_websocket_proceed: decode until no progress, hand each message to the session, and let the
 * session's io callbacks queue output. Nothing here frees the client from inside a session callback: every path that ends
 * a connection goes through client_kill(), which only schedules the reaper event (STYLE.md §3.3).
 *
 * Back-pressure (DESIGN.md invariant 2): the session reads io->pending() to decide whether to keep settling deliveries;
 * the write callback fires when the output falls to half of client_send_buffer_bytes and calls session_on_drain(); a
 * queue beyond client_send_limit_bytes closes the client as too slow. The session pauses reading through
 * io->pause_reading() while its publishes wait for the broker.
 */
#include "bridge/client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/log.h"
#include "conf/conf.h"
#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/utf8.h"

/* How long we wait for the peer's close frame (or its FIN) after sending ours, and for an HTTP reply to flush. */
#define CLIENT_CLOSE_LINGER_MS 5000
/* The compression scratch buffer is given back after a message that made it grow past this. */
#define CLIENT_KEEP_BYTES (64u << 10)
/* Largest static file served from http_root. */
#define CLIENT_MAX_STATIC_BYTES (16u << 20)

enum client_state {
    CLIENT_HTTP = 0,    /* reading the HTTP request head */
    CLIENT_WS = 1,      /* WebSocket open, session attached */
    CLIENT_CLOSING = 2, /* close frame (or HTTP reply) queued; flushing, then waiting for the peer */
    CLIENT_DEAD = 3,    /* reaper scheduled */
};

struct client {
    struct server_ctx *ctx;
    struct client_conf *cc;  /* this connection's configuration (a reference), fixed at accept */
    const struct conf *conf; /* &cc->conf */
    struct client *prev, *next;
    struct bufferevent *bev;
    struct event *reaper; /* deferred free */
    struct event *resume; /* deferred input processing after pause_reading(false) */
    struct event *linger; /* request timer (login_timeout_ms) while in CLIENT_HTTP, then the close timer */
    enum client_state state;
    bool read_paused; /* by the session */
    bool peer_closed; /* nothing more to decode: the peer's close frame arrived, its frames were bad, or HTTP only */
    bool wr_shut;     /* we sent FIN (shutdown SHUT_WR) after flushing our last bytes */
    struct ws_decoder dec;
    struct ws_deflate *z;
    struct ws_buf zout; /* compression scratch */
    struct session *session;
    char peer[64];
};

static void client_process(struct client *c);

/* ------------------------------------------------------------------------------------------------------------------ */
/* Lifecycle */

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    client_free(arg);
}

/* Ends the connection at the next loop turn; safe from any callback. */
static void client_kill(struct client *c)
{
    if (c->state == CLIENT_DEAD)
        return;
    c->state = CLIENT_DEAD;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_active(c->reaper, 0, 0);
}

void client_free(struct client *c)
{
    if (!c)
        return;
    struct server_ctx *ctx = c->ctx;
    if (c->prev)
        c->prev->next = c->next;
    else
        ctx->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctx->n_clients--;
    if (ctx->n_clients == 0 && ctx->on_empty)
        ctx->on_empty(ctx->on_empty_arg);
    session_free(c->session);
    c->session = NULL;
    if (c->bev) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        if (ssl)
            SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN); /* skip the close_notify exchange on a dead peer */
        bufferevent_free(c->bev);
    }
    event_free(c->reaper);
    event_free(c->resume);
    event_free(c->linger);
    ws_decoder_deinit(&c->dec);
    ws_deflate_free(c->z);
    ws_buf_deinit(&c->zout);
    client_conf_unref(c->cc);
    log_msg(LOG_DEBUG, c->peer, "connection closed");
    free(c);
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    if (c->state == CLIENT_HTTP)
        log_msg(LOG_INFO, c->peer, "no complete request within login_timeout_ms (%d ms); closing", c->conf->login_timeout_ms);
    client_kill(c);
}

/*
 * Everything we had to say is on the wire: send FIN and wait for the peer's (EOF in event_cb) or the linger timer. We
 * never close() while the peer may still be sending: unread input would make the kernel answer with a RST, which can
 * destroy the close frame or HTTP error still in flight (RFC 6455 §7.1.1: the server closes the TCP connection first,
 * but cleanly).
 */
static void client_closing_flushed(struct client *c)
{
    if (c->wr_shut)
        return;
    c->wr_shut = true;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
}

/* Output queued (close frame or HTTP reply): flush it (write callback at low watermark 0), then client_closing_flushed(). */
static void client_start_closing(struct client *c)
{
    c->state = CLIENT_CLOSING;
    /* The peer's close frame and FIN must be read even if the session had paused reading (CONNECTING, broker blocked). */
    if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    struct timeval tv = clock_timeval(CLIENT_CLOSE_LINGER_MS);
    evtimer_add(c->linger, &tv);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        client_closing_flushed(c);
}

/* Queues a close frame (RFC 6455 §5.5.1) and starts closing. `code` 0 sends an empty close frame. */
static void client_ws_close(struct client *c, uint16_t code, const char *reason)
{
    if (c->state != CLIENT_WS)
        return;
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t n = ws_frame_close_encode(frame, code, reason, reason ? strlen(reason) : 0);
    bufferevent_write(c->bev, frame, n);
    client_start_closing(c);
}

void client_shutdown_all(struct server_ctx *ctx)
{
    for (struct client *c = ctx->clients; c; c = c->next) {
        if (c->state == CLIENT_WS)
            client_ws_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
        else if (c->state == CLIENT_HTTP)
            client_kill(c);
    }
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* session_io */

static int io_send(void *ud, const char *bytes, size_t len)
{
    struct client *c = ud;
    if (c->state != CLIENT_WS)
        return -1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct conf *conf = c->conf;
    if (evbuffer_get_length(out) + len > conf->client_send_limit_bytes) {
        log_msg(LOG_WARN, c->peer, "client too slow: %zu bytes queued, limit %zu; closing", evbuffer_get_length(out),
                conf->client_send_limit_bytes);
        client_kill(c);
        return -1;
    }
    /* A text message must be UTF-8 (RFC 6455 §5.6): anything else goes as binary. */
    enum ws_opcode op = WS_OP_BINARY;
    if (conf->ws_frame == CONF_WS_FRAME_TEXT && ws_utf8_valid((const uint8_t *)bytes, len))
        op = WS_OP_TEXT;
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    if (c->z && ws_deflate_wants(c->z, len)) {
        const char *reason = NULL;
        c->zout.len = 0;
        if (ws_deflate_compress(c->z, (const uint8_t *)bytes, len, &c->zout, &reason) == 0) {
            size_t hl = ws_frame_header_encode(hdr, op, true, true, c->zout.len);
            evbuffer_add(out, hdr, hl);
            evbuffer_add(out, c->zout.data, c->zout.len);
            if (c->zout.cap > CLIENT_KEEP_BYTES)
                ws_buf_deinit(&c->zout); /* keeps its max: the next message grows it again */
            return 0;
        }
        log_msg(LOG_DEBUG, c->peer, "compression failed (%s); sending uncompressed", reason ? reason : "?");
    }
    size_t hl = ws_frame_header_encode(hdr, op, true, false, len);
    evbuffer_add(out, hdr, hl);
    evbuffer_add(out, bytes, len);
    return 0;
}

static size_t io_pending(void *ud)
{
    struct client *c = ud;
    return c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    client_process(arg);
}

static void io_pause_reading(void *ud, bool paused)
{
    struct client *c = ud;
    if (c->read_paused == paused || c->state != CLIENT_WS)
        return;
    c->read_paused = paused;
    if (paused) {
        bufferevent_disable(c->bev, EV_READ);
    } else {
        bufferevent_enable(c->bev, EV_READ);
        event_active(c->resume, 0, 0); /* frames already buffered; not re-entrantly from the session */
    }
}

static void io_close(void *ud, const char *reason)
{
    client_ws_close(ud, WS_CLOSE_NORMAL, reason);
}

static const struct session_io client_session_io = {
    .send = io_send,
    .pending = io_pending,
    .pause_reading = io_pause_reading,
    .close = io_close,
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* HTTP */

static void http_reply_error(struct client *c, int status, const char *reason)
{
    char buf[512];
    size_t n = 0;
    log_msg(LOG_INFO, c->peer, "HTTP %d: %s", status, reason ? reason : ws_http_status_phrase(status));
    if (ws_handshake_error_response(buf, sizeof(buf), &n, status, reason) == 0)
        bufferevent_write(c->bev, buf, n);
    c->peer_closed = true;
    client_start_closing(c);
}

static const char *mime_type(const char *path)
{
    static const char *const map[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(dot, map[i][0]) == 0)
            return map[i][1];
    return "application/octet-stream";
}

/*
 * Maps a request target to a file under http_root: only [A-Za-z0-9._-/] characters, no segment starting with '.', the
 * query string ignored, "/" and directories → index.html. Returns false when the target is not acceptable.
 */
static bool static_path(const struct conf *conf, const struct ws_slice *target, char *out, size_t cap)
{
    size_t len = 0;
    while (len < target->len && target->ptr[len] != '?' && target->ptr[len] != '#')
        len++;
    if (len == 0 || target->ptr[0] != '/')
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = target->ptr[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
                  ch == '.' || ch == '/';
        if (!ok || (ch == '.' && target->ptr[i - 1] == '/'))
            return false;
    }
    bool dir = target->ptr[len - 1] == '/';
    int n = snprintf(out, cap, "%s%.*s%s", conf->http_root, (int)len, target->ptr, dir ? "index.html" : "");
    return n > 0 && (size_t)n < cap;
}

static void http_serve_static(struct client *c, const struct ws_request *req)
{
    const struct conf *conf = c->conf;
    char path[4096];
    if (!conf->http_root[0] || !static_path(conf, &req->path, path, sizeof(path))) {
        http_reply_error(c, 404, "Not Found");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        size_t pl = strlen(path);
        if (pl + sizeof("/index.html") > sizeof(path)) {
            http_reply_error(c, 404, "Not Found");
            return;
        }
        memcpy(path + pl, "/index.html", sizeof("/index.html"));
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > CLIENT_MAX_STATIC_BYTES) {
        if (fd >= 0)
            close(fd);
        {
            http_reply_error(c, 404, "Not Found");
            return;
        }
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %lld\r\nCache-Control: no-cache\r\n"
                        "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
                        mime_type(path), (long long)st.st_size);
    bool head = req->method.len == 4;
    if (head || st.st_size == 0 || evbuffer_add_file(out, fd, 0, st.st_size) != 0)
        close(fd); /* evbuffer_add_file owns fd on success */
    log_msg(LOG_DEBUG, c->peer, "HTTP 200 %s", path);
    c->peer_closed = true;
    client_start_closing(c);
}

static bool path_is(const struct ws_slice *target, const char *path)
{
    size_t len = 0;
    while (len < target->len && target->ptr[len] != '?')
        len++;
    return len == strlen(path) && memcmp(target->ptr, path, len) == 0;
}

static bool origin_allowed(const struct conf *conf, const struct ws_slice *origin)
{
    if (!origin->ptr || conf->allow_origins.n == 0)
        return true;
    for (size_t i = 0; i < conf->allow_origins.n; i++) {
        const char *o = conf->allow_origins.items[i];
        if (strlen(o) == origin->len && strncasecmp(o, origin->ptr, origin->len) == 0)
            return true;
    }
    return false;
}

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
static int ws_negotiate_deflate(struct client *c, const struct ws_request *req, char *resp, size_t cap)
{
    struct ws_deflate_config dc;
    struct ws_deflate_params params = {0};
    size_t rlen = 0;
    deflate_config_from_conf(c->conf, &dc);
    resp[0] = '\0';
    for (size_t i = 0; i < req->num_extensions && !params.enabled; i++) {
        int r = ws_deflate_negotiate(req->extensions[i].ptr, req->extensions[i].len, &dc, &params, resp, cap, &rlen);
        if (r != 0)
            return r;
    }
    if (!params.enabled)
        return 0;
    int r = ws_deflate_new(&params, &dc, &c->z);
    if (r != 0)
        return r;
    ws_decoder_set_inflate(&c->dec, ws_deflate_inflate, c->z);
    return 0;
}

static const char *const stomp_subprotocols[] = {"v12.stomp", "v11.stomp", "v10.stomp"};

/* Completes the upgrade of a validated request: 101 reply, codec state, session. */
static void ws_accept(struct client *c, const struct ws_request *req)
{
    const struct conf *conf = c->conf;
    char ext[WS_DEFLATE_RESPONSE_MAX];
    char reply[1024];
    size_t n = 0;
    struct ws_limits lim = {.max_message_bytes = conf->max_message_bytes};
    ws_decoder_init(&c->dec, &lim);
    ws_buf_init(&c->zout, conf->client_send_limit_bytes);
    const char *proto = ws_handshake_select_protocol(req, stomp_subprotocols, 3);
    if (ws_negotiate_deflate(c, req, ext, sizeof(ext)) != 0 ||
        ws_handshake_response(reply, sizeof(reply), &n, req, proto, ext[0] ? ext : NULL) != 0) {
        http_reply_error(c, 500, "cannot build the handshake reply");
        return;
    }
    c->session = session_new(&c->cc->env, &client_session_io, c, c->peer);
    if (!c->session) {
        http_reply_error(c, 503, "out of memory");
        return;
    }
    bufferevent_write(c->bev, reply, n);
    evtimer_del(c->linger); /* the session times the login from here */
    c->state = CLIENT_WS;
    bufferevent_setwatermark(c->bev, EV_WRITE, conf->client_send_buffer_bytes / 2, 0);
    log_msg(LOG_DEBUG, c->peer, "WebSocket open (%s%s)", proto ? proto : "no subprotocol", c->z ? ", permessage-deflate" : "");
}

/* Parses the request head; returns false while more bytes are needed. */
static bool http_process(struct client *c)
{
    const struct conf *conf = c->conf;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len > conf->max_handshake_bytes)
        len = conf->max_handshake_bytes;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    struct ws_header hdrs[256];
    size_t max_headers = (size_t)conf->max_http_headers < 256 ? (size_t)conf->max_http_headers : 256;
    struct ws_request req;
    const char *reason = NULL;
    ws_request_init(&req, hdrs, max_headers, conf->max_handshake_bytes);
    int r = ws_handshake_parse(buf, len, &req, &reason);
    if (r == WS_NEED_MORE)
        return false;
    if (r == 0 && !req.is_upgrade) {
        if (path_is(&req.path, conf->ws_path))
            http_reply_error(c, 426, "this is a WebSocket endpoint");
        else
            http_serve_static(c, &req);
        return true;
    }
    if (r == 0 && !path_is(&req.path, conf->ws_path)) {
        http_reply_error(c, 404, "no WebSocket endpoint here");
        return true;
    }
    if (r == 0)
        r = ws_handshake_validate(&req, &reason);
    if (r != 0) {
        http_reply_error(c, req.status ? req.status : 400, reason);
        return true;
    }
    if (!origin_allowed(conf, &req.origin)) {
        http_reply_error(c, 403, "origin not allowed");
        return true;
    }
    ws_accept(c, &req);
    evbuffer_drain(in, req.consumed);
    return true;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* WebSocket */

static void ws_on_event(struct client *c, const struct ws_event *ev)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    switch (ev->type) {
    case WS_EV_MESSAGE:
        if (c->state == CLIENT_WS)
            session_feed(c->session, (const char *)ev->data, ev->len);
        break;
    case WS_EV_PING:
        if (c->state == CLIENT_WS)
            bufferevent_write(c->bev, frame, ws_frame_pong_encode(frame, ev->data, ev->len));
        break;
    case WS_EV_CLOSE:
        c->peer_closed = true;
        if (c->state == CLIENT_WS) /* echo the peer's code (RFC 6455 §5.5.1); 1005 means it sent none */
            client_ws_close(c, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, NULL);
        break;
    case WS_EV_PONG:
    case WS_EV_NONE:
        break;
    }
}

static void ws_process(struct client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while ((c->state == CLIENT_WS && !c->read_paused) || (c->state == CLIENT_CLOSING && !c->peer_closed)) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return;
        size_t used = 0;
        struct ws_event ev;
        const char *reason = NULL;
        int r = ws_decoder_feed(&c->dec, v.iov_base, v.iov_len, &used, &ev, &reason);
        evbuffer_drain(in, used);
        if (r == WS_NEED_MORE)
            continue;
        if (r != 0) {
            log_msg(LOG_INFO, c->peer, "WebSocket error %u: %s", ws_error_close_code(r), reason ? reason : "");
            c->peer_closed = true; /* the decoder is failed: what follows is discarded */
            client_ws_close(c, ws_error_close_code(r), reason);
            return;
        }
        ws_on_event(c, &ev);
    }
}

static void client_process(struct client *c)
{
    if (c->state == CLIENT_HTTP && !http_process(c))
        return;
    if (c->state == CLIENT_WS || c->state == CLIENT_CLOSING)
        ws_process(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* bufferevent callbacks */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    client_process(c);
    if (c->state == CLIENT_CLOSING && c->peer_closed)
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->state == CLIENT_WS) {
        session_on_drain(c->session);
    } else if (c->state == CLIENT_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        client_closing_flushed(c);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e)
            log_msg(LOG_INFO, c->peer, "TLS error: %s", ERR_reason_error_string(e));
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        client_kill(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Configurations */

int client_conf_new(const struct conf *conf, struct event_base *base, struct upstream *up, struct client_conf **out)
{
    struct client_conf *cc = calloc(1, sizeof(*cc));
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

void client_conf_unref(struct client_conf *cc)
{
    if (!cc || --cc->refs > 0)
        return;
    conf_deinit(&cc->conf);
    free(cc);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Accept */

int client_start(struct server_ctx *ctx, evutil_socket_t fd, SSL *ssl, const char *peer)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->ctx = ctx;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    if (ssl)
        c->bev = bufferevent_openssl_socket_new(ctx->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    else
        c->bev = bufferevent_socket_new(ctx->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    ssl = NULL; /* owned by the bufferevent (or freed below through it) */
    c->reaper = event_new(ctx->base, -1, 0, reaper_cb, c);
    c->resume = event_new(ctx->base, -1, 0, resume_cb, c);
    c->linger = evtimer_new(ctx->base, linger_cb, c);
    if (!c->bev || !c->reaper || !c->resume || !c->linger)
        goto fail;
    c->next = ctx->clients;
    if (ctx->clients)
        ctx->clients->prev = c;
    ctx->clients = c;
    ctx->n_clients++;
    c->cc = ctx->conf;
    c->cc->refs++;
    c->conf = &c->cc->conf;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, c->conf->max_message_bytes + WS_FRAME_HEADER_MAX_MASKED);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* A peer that never completes its TLS handshake or HTTP request is dropped after login_timeout_ms. */
    int ms = c->conf->login_timeout_ms;
    struct timeval tv = clock_timeval(ms);
    evtimer_add(c->linger, &tv);
    log_msg(LOG_DEBUG, c->peer, "connection accepted%s", bufferevent_openssl_get_ssl(c->bev) ? " (TLS)" : "");
    return 0;

fail:
    if (c) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c->reaper)
            event_free(c->reaper);
        if (c->resume)
            event_free(c->resume);
        if (c->linger)
            event_free(c->linger);
        free(c);
    } else {
        evutil_closesocket(fd);
    }
    if (ssl)
        SSL_free(ssl);
    return -ENOMEM;
}

void client_reject_fd(evutil_socket_t fd, int status, const char *reason)
{
    char buf[512];
    size_t n = 0;
    if (ws_handshake_error_response(buf, sizeof(buf), &n, status, reason) == 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    evutil_closesocket(fd);
}

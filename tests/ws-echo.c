/*
 * tests/ws-echo.c — a WebSocket echo server built on ws/ (handshake, frame codec, permessage-deflate), for
 * conformance suites such as Autobahn's fuzzingclient and tests/conformance/ws-conformance.mjs.
 *
 * Usage: ws-echo PORT [MAX_MESSAGE_BYTES]
 * Listens on 127.0.0.1:PORT (0 picks a free port) and prints "listening on PORT" on stdout once ready. Every text and
 * binary message is echoed with the same opcode (compressed when permessage-deflate was negotiated), pings are answered,
 * a client close is echoed with its code, and a protocol error closes with the code ws_error_close_code() gives (1002,
 * 1007, 1009) and the decoder's reason. MAX_MESSAGE_BYTES defaults to 16 MiB (Autobahn's 9.x cases).
 *
 * I/O is libevent core only: one bufferevent per connection, input taken chunk by chunk straight from the evbuffer.
 * This is a test tool, not the product (bridge/ is): no TLS, no subprotocols, no flow control beyond libevent's.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "ws/deflate.h"
#include "ws/frame.h"
#include "ws/handshake.h"

#define HANDSHAKE_MAX   8192
#define HEADERS_MAX     64
#define RESPONSE_MAX    1024
#define DEFAULT_MAX_MSG (16u << 20)

enum conn_state {
    CONN_HANDSHAKE = 0,
    CONN_OPEN = 1,
    CONN_CLOSING = 2,  /* last bytes queued, input discarded: shut down writing once they are flushed */
    CONN_DRAINING = 3, /* write side shut down: discard input until the client closes (or a timeout) */
};

struct server {
    struct event_base *base;
    size_t max_message;
    struct ws_deflate_config deflate_cfg;
};

struct conn {
    struct server *srv;
    struct bufferevent *bev;
    enum conn_state state;
    struct ws_decoder dec;
    struct ws_deflate *deflate; /* NULL unless negotiated */
    struct ws_buf zbuf;         /* compressed outgoing message */
};

static void conn_free(struct conn *c)
{
    bufferevent_free(c->bev);
    ws_decoder_deinit(&c->dec);
    ws_deflate_free(c->deflate);
    ws_buf_deinit(&c->zbuf);
    free(c);
}

/*
 * Called once the last bytes are flushed: a half close, then input is drained until the client closes. Closing the
 * socket with unread input would send an RST, which can make the client's kernel drop our close frame before the
 * client has read it (RFC 6455 §7.1.1 wants the TCP close to follow the closing handshake, not to cut it short).
 */
static void conn_flushed(struct conn *c)
{
    c->state = CONN_DRAINING;
    if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0) {
        conn_free(c);
        return;
    }
    struct timeval linger = {5, 0};
    bufferevent_set_timeouts(c->bev, &linger, NULL);
}

/* Stops processing input; the connection ends once what is queued has been written. */
static void conn_finish(struct conn *c)
{
    c->state = CONN_CLOSING;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_flushed(c);
}

static void send_close(struct conn *c, uint16_t code, const char *reason)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    size_t n = ws_frame_close_encode(frame, code, reason, reason ? strlen(reason) : 0);
    bufferevent_write(c->bev, frame, n);
    conn_finish(c);
}

static void send_http_error(struct conn *c, int status, const char *reason)
{
    char out[RESPONSE_MAX];
    size_t n = 0;
    if (ws_handshake_error_response(out, sizeof out, &n, status, reason) == 0)
        bufferevent_write(c->bev, out, n);
    conn_finish(c);
}

/* Echoes one message, compressed when deflate is on (threshold 0: always). Returns 0 or a negative errno. */
static int echo_message(struct conn *c, const struct ws_event *ev)
{
    const uint8_t *payload = ev->data;
    size_t len = ev->len;
    bool rsv1 = false;
    if (c->deflate && ws_deflate_wants(c->deflate, len)) {
        const char *why = NULL;
        c->zbuf.len = 0;
        int r = ws_deflate_compress(c->deflate, payload, len, &c->zbuf, &why);
        if (r != 0)
            return r < 0 ? r : -EMSGSIZE;
        payload = c->zbuf.data;
        len = c->zbuf.len;
        rsv1 = true;
    }
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t h = ws_frame_header_encode(hdr, ev->opcode, true, rsv1, len);
    if (bufferevent_write(c->bev, hdr, h) != 0 || (len && bufferevent_write(c->bev, payload, len) != 0))
        return -ENOMEM;
    if (c->zbuf.cap > (1u << 20))
        ws_buf_deinit(&c->zbuf); /* do not pin a big buffer after a big message */
    return 0;
}

/* Handles one decoder event. Returns false when the connection is closing. */
static bool handle_event(struct conn *c, const struct ws_event *ev)
{
    uint8_t frame[WS_CONTROL_FRAME_MAX];
    switch (ev->type) {
    case WS_EV_MESSAGE:
        if (echo_message(c, ev) != 0) {
            send_close(c, WS_CLOSE_INTERNAL, "echo failed");
            return false;
        }
        return true;
    case WS_EV_PING:
        bufferevent_write(c->bev, frame, ws_frame_pong_encode(frame, ev->data, ev->len));
        return true;
    case WS_EV_CLOSE:
        /* §5.5.1: echo the status code; no code received → an empty close frame. */
        send_close(c, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, NULL);
        return false;
    default:
        return true;
    }
}

/* Feeds the frame decoder from the input buffer, segment by segment, until it is empty or the connection closes. */
static void read_frames(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == CONN_OPEN && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t used = 0;
        struct ws_event ev;
        const char *reason = NULL;
        int r = ws_decoder_feed(&c->dec, v.iov_base, v.iov_len, &used, &ev, &reason);
        evbuffer_drain(in, used);
        if (r == WS_NEED_MORE)
            continue;
        if (r != 0) {
            send_close(c, ws_error_close_code(r), reason);
            return;
        }
        if (!handle_event(c, &ev))
            return;
    }
}

/* Builds the permessage-deflate response from the client's offers (one call per Sec-WebSocket-Extensions line). */
static int negotiate_deflate(struct conn *c, const struct ws_request *req, char *ext, size_t cap)
{
    struct ws_deflate_params params = {0};
    size_t n = 0;
    for (size_t i = 0; i < req->num_extensions && !params.enabled; i++) {
        int r = ws_deflate_negotiate(req->extensions[i].ptr, req->extensions[i].len, &c->srv->deflate_cfg, &params, ext, cap, &n);
        if (r != 0)
            return r;
    }
    if (!params.enabled)
        return 0;
    int r = ws_deflate_new(&params, &c->srv->deflate_cfg, &c->deflate);
    if (r != 0)
        return r;
    ws_decoder_set_inflate(&c->dec, ws_deflate_inflate, c->deflate);
    return 0;
}

/* Answers a parsed upgrade request with 101 (or an HTTP error). Returns false when the connection is closing. */
static bool accept_upgrade(struct conn *c, struct ws_request *req)
{
    const char *reason = NULL;
    if (!req->is_upgrade) {
        send_http_error(c, 426, "this server only speaks WebSocket");
        return false;
    }
    if (ws_handshake_validate(req, &reason) != 0) {
        send_http_error(c, req->status, reason);
        return false;
    }
    char ext[WS_DEFLATE_RESPONSE_MAX] = "";
    char out[RESPONSE_MAX];
    size_t n = 0;
    if (negotiate_deflate(c, req, ext, sizeof ext) != 0 || ws_handshake_response(out, sizeof out, &n, req, NULL, ext) != 0) {
        send_http_error(c, 500, "cannot build the handshake response");
        return false;
    }
    bufferevent_write(c->bev, out, n);
    c->state = CONN_OPEN;
    return true;
}

static void read_handshake(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    if (len > HANDSHAKE_MAX)
        len = HANDSHAKE_MAX; /* the parser then answers 431 */
    const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)len);
    struct ws_header headers[HEADERS_MAX];
    struct ws_request req;
    const char *reason = NULL;
    ws_request_init(&req, headers, HEADERS_MAX, HANDSHAKE_MAX);
    int r = ws_handshake_parse(buf, len, &req, &reason);
    if (r == WS_NEED_MORE)
        return;
    if (r != 0) {
        send_http_error(c, req.status ? req.status : 400, reason);
        return;
    }
    if (!accept_upgrade(c, &req))
        return;
    evbuffer_drain(in, req.consumed);
    read_frames(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_HANDSHAKE)
        read_handshake(c);
    else if (c->state == CONN_OPEN)
        read_frames(c);
    else
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_CLOSING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_flushed(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        conn_free(arg);
}

static void on_accept(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
    struct server *srv = arg;
    struct conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c || !bev) {
        free(c);
        if (bev)
            bufferevent_free(bev);
        else
            evutil_closesocket(fd);
        return;
    }
    c->srv = srv;
    c->bev = bev;
    struct ws_limits lim = {.max_message_bytes = srv->max_message};
    ws_decoder_init(&c->dec, &lim);
    ws_buf_init(&c->zbuf, SIZE_MAX);
    struct timeval idle = {120, 0};
    bufferevent_set_timeouts(bev, &idle, &idle);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static struct evconnlistener *listen_on(struct server *srv, unsigned port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *lst = evconnlistener_new_bind(srv->base, on_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                                         (struct sockaddr *)&sin, sizeof sin);
    if (!lst)
        return NULL;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    if (getsockname(evconnlistener_get_fd(lst), (struct sockaddr *)&bound, &blen) != 0) {
        evconnlistener_free(lst);
        return NULL;
    }
    printf("listening on %u\n", (unsigned)ntohs(bound.sin_port));
    fflush(stdout);
    return lst;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s PORT [MAX_MESSAGE_BYTES]\n", argv[0]);
        return 2;
    }
    struct server srv = {.max_message = argc == 3 ? strtoull(argv[2], NULL, 10) : DEFAULT_MAX_MSG};
    ws_deflate_config_init(&srv.deflate_cfg);
    srv.deflate_cfg.threshold_bytes = 0;
    srv.deflate_cfg.max_message_bytes = srv.max_message;
    signal(SIGPIPE, SIG_IGN);
    srv.base = event_base_new();
    if (!srv.base)
        return 1;
    struct evconnlistener *lst = listen_on(&srv, (unsigned)strtoul(argv[1], NULL, 10));
    if (!lst) {
        perror("listen");
        event_base_free(srv.base);
        return 1;
    }
    event_base_dispatch(srv.base);
    evconnlistener_free(lst);
    event_base_free(srv.base);
    return 0;
}

/*
 * bridge/http.c — the HTTP front-end: one request head per connection, answered through the route table below.
 *
 * The head is parsed again from the start each time bytes arrive (ws/handshake.c is stateless and bounded by
 * max_handshake_bytes). A request ws/handshake.c rejects is answered with its status before any route is looked at; then
 * the first row of `http_routes` whose path matches takes the request: its `upgrade` handler when the client asks for a
 * WebSocket, its `request` handler otherwise. A row without an `upgrade` handler answers an upgrade with 404. The
 * WebSocket row validates the upgrade (RFC 6455 §4.2.1), checks Origin and hands the connection to bridge/wsconn.c;
 * every other answer is a reply followed by conn_close() (no keep-alive), with the peer's further bytes discarded.
 *
 * Adding a route (`/metrics`, `/healthz`): a match function and a `request` handler that writes its reply and calls
 * http_reply_done(), and a row before the static catch-all.
 */
#include "bridge/http.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "bridge/conn.h"
#include "bridge/log.h"
#include "bridge/wsconn.h"
#include "conf/conf.h"
#include "ws/frame.h"
#include "ws/handshake.h"

/* Largest static file served from http_root. */
#define HTTP_MAX_STATIC_BYTES (16u << 20)
/* Header lines kept for one request: max_http_headers' upper bound in conf/keys.c. */
#define HTTP_MAX_HEADERS 256

/* One row of the route table (see the file comment). */
struct http_route {
    const char *name;
    bool (*match)(const struct conf *conf, const struct ws_slice *target);
    void (*upgrade)(struct conn *c, struct ws_request *req); /* NULL: 404 "no WebSocket endpoint here" */
    void (*request)(struct conn *c, const struct ws_request *req);
};

/* ------------------------------------------------------------------------------------------------------------------ */
/* Replies */

/* The reply is written: nothing more is read from this peer, and the connection closes once it is flushed. */
static void http_reply_done(struct conn *c)
{
    conn_discard_input(c);
    conn_close(c);
}

static void http_reply_error(struct conn *c, int status, const char *reason)
{
    char buf[512];
    size_t n = 0;
    log_msg(LOG_INFO, conn_peer(c), "HTTP %d: %s", status, reason ? reason : ws_http_status_phrase(status));
    if (ws_handshake_error_response(buf, sizeof(buf), &n, status, reason) == 0)
        conn_write(c, buf, n);
    http_reply_done(c);
}

void http_reject_fd(evutil_socket_t fd, int status, const char *reason)
{
    char buf[512];
    size_t n = 0;
    if (ws_handshake_error_response(buf, sizeof(buf), &n, status, reason) == 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    evutil_closesocket(fd);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Static files (http_root) */

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

/*
 * Opens the regular file `path` names (a directory: its index.html, `path` rewritten) of at most HTTP_MAX_STATIC_BYTES.
 * Returns the descriptor with *st filled, or -1.
 */
static int static_open(char *path, size_t cap, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, st) == 0 && S_ISDIR(st->st_mode)) {
        close(fd);
        size_t pl = strlen(path);
        if (pl + sizeof("/index.html") > cap)
            return -1;
        memcpy(path + pl, "/index.html", sizeof("/index.html"));
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0 || fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || (uint64_t)st->st_size > HTTP_MAX_STATIC_BYTES) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* GET or HEAD of a file under http_root: 200, or 404 for anything that is not a servable file. */
static void static_get(struct conn *c, const struct ws_request *req)
{
    const struct conf *conf = conn_config(c);
    char path[4096];
    struct stat st;
    int fd = -1;
    if (conf->http_root[0] && static_path(conf, &req->path, path, sizeof(path)))
        fd = static_open(path, sizeof(path), &st);
    if (fd < 0) {
        http_reply_error(c, 404, "Not Found");
        return;
    }
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %lld\r\nCache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
                     mime_type(path), (long long)st.st_size);
    conn_write(c, head, (size_t)n);
    bool is_head = req->method.len == 4;
    if (is_head || st.st_size == 0)
        close(fd);
    else
        conn_write_file(c, fd, (uint64_t)st.st_size); /* takes fd over */
    log_msg(LOG_DEBUG, conn_peer(c), "HTTP 200 %s", path);
    http_reply_done(c);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* The WebSocket endpoint (ws_path) */

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

/* An upgrade of ws_path: RFC 6455 §4.2.1 checks, the Origin allow list, then the WebSocket front-end takes over. */
static void ws_upgrade(struct conn *c, struct ws_request *req)
{
    const char *reason = NULL;
    if (ws_handshake_validate(req, &reason) != 0) {
        http_reply_error(c, req->status ? req->status : 400, reason);
        return;
    }
    if (!origin_allowed(conn_config(c), &req->origin)) {
        http_reply_error(c, 403, "origin not allowed");
        return;
    }
    int status = wsconn_accept(c, req, &reason);
    if (status != 0)
        http_reply_error(c, status, reason);
}

/* A plain GET of the WebSocket endpoint. */
static void ws_plain(struct conn *c, const struct ws_request *req)
{
    http_reply_error(c, 426, "this is a WebSocket endpoint");
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Routes */

/* The path of a request target without its query string. */
static bool path_is(const struct ws_slice *target, const char *path)
{
    size_t len = 0;
    while (len < target->len && target->ptr[len] != '?')
        len++;
    return len == strlen(path) && memcmp(target->ptr, path, len) == 0;
}

static bool match_ws_path(const struct conf *conf, const struct ws_slice *target)
{
    return path_is(target, conf->ws_path);
}

static bool match_any(const struct conf *conf, const struct ws_slice *target)
{
    return true;
}

static const struct http_route http_routes[] = {
    {"websocket", match_ws_path, ws_upgrade, ws_plain},
    /* Endpoints of their own go here, before the catch-all: {"metrics", match_metrics, NULL, metrics_get}, ... */
    {"static", match_any, NULL, static_get},
};

static void route(struct conn *c, struct ws_request *req)
{
    const struct conf *conf = conn_config(c);
    for (size_t i = 0; i < sizeof(http_routes) / sizeof(http_routes[0]); i++) {
        const struct http_route *rt = &http_routes[i];
        if (!rt->match(conf, &req->path))
            continue;
        if (!req->is_upgrade)
            rt->request(c, req);
        else if (rt->upgrade)
            rt->upgrade(c, req);
        else
            http_reply_error(c, 404, "no WebSocket endpoint here");
        return;
    }
    http_reply_error(c, 404, "Not Found");
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* The front-end */

/* conn_ops.input: waits for a complete request head, then answers it. */
static void http_input(struct conn *c, void *fe)
{
    const struct conf *conf = conn_config(c);
    struct evbuffer *in = conn_input(c);
    size_t len = evbuffer_get_length(in);
    if (len > conf->max_handshake_bytes)
        len = conf->max_handshake_bytes;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    struct ws_header hdrs[HTTP_MAX_HEADERS];
    size_t max_headers = (size_t)conf->max_http_headers < HTTP_MAX_HEADERS ? (size_t)conf->max_http_headers : HTTP_MAX_HEADERS;
    struct ws_request req;
    const char *reason = NULL;
    ws_request_init(&req, hdrs, max_headers, conf->max_handshake_bytes);
    int r = ws_handshake_parse(buf, len, &req, &reason);
    if (r == WS_NEED_MORE)
        return;
    if (r != 0) {
        http_reply_error(c, req.status ? req.status : 400, reason);
        return;
    }
    route(c, &req);
    evbuffer_drain(in, req.consumed); /* what follows an upgrade belongs to the WebSocket front-end */
}

/* conn_ops.shutdown: a connection still sending its request is dropped. */
static void http_shutdown(struct conn *c, void *fe)
{
    conn_kill(c);
}

static const struct conn_ops http_ops = {
    .name = "http",
    .input = http_input,
    .shutdown = http_shutdown,
};

int http_conn_start(struct conn *c)
{
    const struct conf *conf = conn_config(c);
    conn_set_frontend(c, &http_ops, NULL);
    /* Sized for the WebSocket front-end this connection may become: one whole frame may wait while reading is paused. */
    conn_set_input_limit(c, conf->max_message_bytes + WS_FRAME_HEADER_MAX_MASKED);
    /* A peer that never completes its TLS handshake or HTTP request is dropped; from the upgrade on, the session times
     * the STOMP login. */
    conn_set_deadline(c, (uint64_t)conf->login_timeout_ms, "no complete request within login_timeout_ms");
    return 0;
}

/*
 * ws/handshake.c — bounded, zero-copy HTTP/1.x request parsing and the RFC 6455 §4.2 server handshake, see
 * ws/handshake.h.
 *
 * The parser follows picohttpparser: no state between calls, the whole head is re-scanned from byte 0 each time (heads are
 * small and capped by max_bytes, checked before waiting for more), and every output is a slice of the input. It is
 * strict where laxness has caused request smuggling elsewhere (RFC 7230 §3.2.4: no obs-fold, no space before the colon,
 * no bare CR, no control characters; no request bodies at all since nothing here reads them) and lenient where RFC 7230
 * §3.5 allows (bare LF line ends, empty lines before the request line, empty list elements).
 */
#include "ws/handshake.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void ws_request_init(struct ws_request *req, struct ws_header *headers, size_t num_headers, size_t max_bytes)
{
    memset(req, 0, sizeof(*req));
    req->headers = headers;
    req->num_headers = headers ? num_headers : 0;
    req->max_bytes = max_bytes;
}

/* ---- character classes and slices ---- */

/* RFC 7230 §3.2.6 tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar / SP / HTAB / obs-text (RFC 7230 §3.2). */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static bool slice_ieq(struct ws_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(s.ptr, lit, n) == 0;
}

static bool slice_eq(struct ws_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static struct ws_slice slice_trim(struct ws_slice s)
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t')) {
        s.ptr++;
        s.len--;
    }
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Next element of a comma-separated #list (RFC 7230 §7), trimmed, empty elements skipped. false at the end. */
static bool list_next(struct ws_slice *list, struct ws_slice *tok)
{
    while (list->len) {
        const char *comma = memchr(list->ptr, ',', list->len);
        size_t n = comma ? (size_t)(comma - list->ptr) : list->len;
        *tok = slice_trim((struct ws_slice){list->ptr, n});
        list->ptr += comma ? n + 1 : n;
        list->len -= comma ? n + 1 : n;
        if (tok->len)
            return true;
    }
    return false;
}

static bool list_has_token(struct ws_slice list, const char *token)
{
    struct ws_slice tok;
    while (list_next(&list, &tok))
        if (slice_ieq(tok, token))
            return true;
    return false;
}

/* ---- line scanning ---- */

static int http_error(struct ws_request *req, int status, const char *why, const char **reason)
{
    req->status = status;
    *reason = why;
    return WS_E_HTTP;
}

/*
 * Next line of buf[*pos..n) without its CRLF or LF. Returns 0, WS_NEED_MORE when no LF is there yet, or 400 for a CR not
 * followed by LF (as the HTTP status, with *why).
 */
static int next_line(const char *buf, size_t n, size_t *pos, struct ws_slice *line, const char **why)
{
    const char *start = buf + *pos;
    const char *lf = memchr(start, '\n', n - *pos);
    if (!lf)
        return WS_NEED_MORE;
    size_t len = (size_t)(lf - start);
    if (len && start[len - 1] == '\r')
        len--;
    if (memchr(start, '\r', len)) {
        *why = "bare CR in request head";
        return 400;
    }
    *line = (struct ws_slice){start, len};
    *pos += (size_t)(lf - start) + 1;
    return 0;
}

/* ---- request line ---- */

static int parse_version(struct ws_request *req, struct ws_slice v, const char **reason)
{
    if (v.len != 8 || memcmp(v.ptr, "HTTP/", 5) != 0 || v.ptr[6] != '.' || v.ptr[5] < '0' || v.ptr[5] > '9' || v.ptr[7] < '0' ||
        v.ptr[7] > '9')
        return http_error(req, 400, "malformed HTTP version", reason);
    if (v.ptr[5] != '1' || (v.ptr[7] != '0' && v.ptr[7] != '1'))
        return http_error(req, 505, "HTTP version not supported", reason);
    req->minor_version = v.ptr[7] - '0';
    return 0;
}

/* request-line = method SP request-target SP HTTP-version (RFC 7230 §3.1.1), single spaces only. */
static int parse_request_line(struct ws_request *req, struct ws_slice line, const char **reason)
{
    size_t i = 0;
    while (i < line.len && is_tchar((unsigned char)line.ptr[i]))
        i++;
    if (i == 0 || i == line.len || line.ptr[i] != ' ')
        return http_error(req, 400, "malformed request line", reason);
    req->method = (struct ws_slice){line.ptr, i};
    size_t t = ++i;
    while (i < line.len && (unsigned char)line.ptr[i] > 0x20 && (unsigned char)line.ptr[i] < 0x7F)
        i++;
    if (i == t || i == line.len || line.ptr[i] != ' ')
        return http_error(req, 400, "malformed request target", reason);
    req->path = (struct ws_slice){line.ptr + t, i - t};
    int r = parse_version(req, (struct ws_slice){line.ptr + i + 1, line.len - i - 1}, reason);
    if (r != 0)
        return r;
    if (!slice_eq(req->method, "GET") && !slice_eq(req->method, "HEAD"))
        return http_error(req, 405, "method not allowed", reason);
    return 0;
}

/* ---- header fields ---- */

static int set_once(struct ws_request *req, struct ws_slice *dst, struct ws_slice v, const char *dup, const char **reason)
{
    if (dst->ptr)
        return http_error(req, 400, dup, reason);
    *dst = v;
    return 0;
}

static int add_protocols(struct ws_request *req, struct ws_slice v, const char **reason)
{
    struct ws_slice tok;
    while (list_next(&v, &tok)) {
        for (size_t i = 0; i < tok.len; i++)
            if (!is_tchar((unsigned char)tok.ptr[i]))
                return http_error(req, 400, "malformed Sec-WebSocket-Protocol", reason);
        if (req->num_protocols == WS_REQUEST_MAX_PROTOCOLS)
            return http_error(req, 400, "too many subprotocols offered", reason);
        req->protocols[req->num_protocols++] = tok;
    }
    return 0;
}

static int check_content_length(struct ws_request *req, struct ws_slice v, const char **reason)
{
    if (v.len == 0)
        return http_error(req, 400, "malformed Content-Length", reason);
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return http_error(req, 400, "malformed Content-Length", reason);
        if (v.ptr[i] != '0')
            return http_error(req, 400, "request body not accepted", reason);
    }
    return 0;
}

/* Records what the handshake needs from one header (name compared case-insensitively, RFC 7230 §3.2). */
static int interpret_header(struct ws_request *req, struct ws_slice n, struct ws_slice v, const char **reason)
{
    if (slice_ieq(n, "Host"))
        return set_once(req, &req->host, v, "duplicate Host header", reason);
    if (slice_ieq(n, "Origin"))
        return set_once(req, &req->origin, v, "duplicate Origin header", reason);
    if (slice_ieq(n, "Sec-WebSocket-Key"))
        return set_once(req, &req->key, v, "duplicate Sec-WebSocket-Key header", reason);
    if (slice_ieq(n, "Sec-WebSocket-Version"))
        return set_once(req, &req->version, v, "duplicate Sec-WebSocket-Version header", reason);
    if (slice_ieq(n, "Sec-WebSocket-Protocol"))
        return add_protocols(req, v, reason);
    if (slice_ieq(n, "Sec-WebSocket-Extensions")) {
        if (req->num_extensions == WS_REQUEST_MAX_EXTENSION_HEADERS)
            return http_error(req, 400, "too many Sec-WebSocket-Extensions headers", reason);
        req->extensions[req->num_extensions++] = v;
    } else if (slice_ieq(n, "Upgrade")) {
        if (!req->upgrade.ptr)
            req->upgrade = v;
        req->upgrade_websocket |= list_has_token(v, "websocket");
    } else if (slice_ieq(n, "Connection")) {
        req->connection_upgrade |= list_has_token(v, "upgrade");
    } else if (slice_ieq(n, "Content-Length")) {
        return check_content_length(req, v, reason);
    } else if (slice_ieq(n, "Transfer-Encoding")) {
        return http_error(req, 400, "request body not accepted", reason);
    }
    return 0;
}

/* header-field = field-name ":" OWS field-value OWS (RFC 7230 §3.2). */
static int parse_header(struct ws_request *req, struct ws_slice line, size_t *count, size_t cap, const char **reason)
{
    if (line.ptr[0] == ' ' || line.ptr[0] == '\t')
        return http_error(req, 400, "obsolete header line folding", reason);
    size_t i = 0;
    while (i < line.len && is_tchar((unsigned char)line.ptr[i]))
        i++;
    if (i == 0 || i == line.len || line.ptr[i] != ':')
        return http_error(req, 400, "malformed header name", reason);
    struct ws_slice name = {line.ptr, i};
    struct ws_slice value = slice_trim((struct ws_slice){line.ptr + i + 1, line.len - i - 1});
    for (size_t k = 0; k < value.len; k++)
        if (!is_value_char((unsigned char)value.ptr[k]))
            return http_error(req, 400, "control character in header value", reason);
    if (*count == cap)
        return http_error(req, 431, "too many header fields", reason);
    req->headers[*count] = (struct ws_header){name, value};
    (*count)++;
    return interpret_header(req, name, value, reason);
}

static void reset_outputs(struct ws_request *req)
{
    struct ws_header *headers = req->headers;
    size_t cap = req->num_headers, max = req->max_bytes;
    memset(req, 0, sizeof(*req));
    req->headers = headers;
    req->num_headers = cap;
    req->max_bytes = max;
}

/* Scans lines of buf[0..n) up to the blank line. Returns 0, WS_NEED_MORE, or WS_E_HTTP. */
static int parse_head(const char *buf, size_t n, struct ws_request *req, size_t *count, const char **reason)
{
    size_t pos = 0, cap = req->num_headers;
    struct ws_slice line;
    const char *why = NULL;
    bool have_request_line = false;
    for (;;) {
        int r = next_line(buf, n, &pos, &line, &why);
        if (r == WS_NEED_MORE)
            return r;
        if (r != 0)
            return http_error(req, r, why, reason);
        if (!have_request_line) {
            if (line.len == 0)
                continue; /* RFC 7230 §3.5: ignore empty lines before the request line */
            r = parse_request_line(req, line, reason);
            have_request_line = true;
        } else if (line.len == 0) {
            req->consumed = pos;
            return 0;
        } else {
            r = parse_header(req, line, count, cap, reason);
        }
        if (r != 0)
            return r;
    }
}

int ws_handshake_parse(const char *buf, size_t len, struct ws_request *req, const char **reason)
{
    size_t max = req->max_bytes ? req->max_bytes : WS_HANDSHAKE_DEFAULT_MAX_BYTES;
    size_t n = len < max ? len : max;
    size_t count = 0;
    reset_outputs(req);
    int r = parse_head(buf, n, req, &count, reason);
    if (r == WS_NEED_MORE && len >= max)
        return http_error(req, 431, "request header too large", reason);
    if (r != 0)
        return r;
    req->num_headers = count;
    req->is_upgrade = req->upgrade_websocket || req->key.ptr || req->version.ptr;
    return 0;
}

/* ---- validation and replies ---- */

/* Sec-WebSocket-Key: base64 of 16 bytes is exactly 22 alphabet characters followed by "==" (RFC 6455 §4.1). */
static bool key_is_valid(struct ws_slice key)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (key.len != 24 || key.ptr[22] != '=' || key.ptr[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (key.ptr[i] == 0 || !strchr(alphabet, key.ptr[i]))
            return false;
    return true;
}

int ws_handshake_validate(struct ws_request *req, const char **reason)
{
    if (!slice_eq(req->method, "GET"))
        return http_error(req, 405, "WebSocket upgrade requires GET", reason);
    if (req->minor_version != 1)
        return http_error(req, 400, "WebSocket upgrade requires HTTP/1.1", reason);
    if (!req->host.ptr)
        return http_error(req, 400, "missing Host header", reason);
    if (!req->upgrade_websocket)
        return http_error(req, 400, "Upgrade header must contain websocket", reason);
    if (!req->connection_upgrade)
        return http_error(req, 400, "Connection header must contain upgrade", reason);
    if (!req->version.ptr || !slice_eq(req->version, "13"))
        return http_error(req, 426, "unsupported Sec-WebSocket-Version (13 required)", reason);
    if (!key_is_valid(req->key))
        return http_error(req, 400, "missing or malformed Sec-WebSocket-Key", reason);
    req->status = 0;
    return 0;
}

int ws_handshake_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_KEY_LEN + 1])
{
    char buf[256 + sizeof(WS_GUID)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (key_len > 256)
        return -EINVAL;
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, WS_GUID, sizeof(WS_GUID) - 1);
    if (EVP_Digest(buf, key_len + sizeof(WS_GUID) - 1, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return -EIO;
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != WS_ACCEPT_KEY_LEN)
        return -EIO;
    out[WS_ACCEPT_KEY_LEN] = '\0';
    return 0;
}

const char *ws_handshake_select_protocol(const struct ws_request *req, const char *const *prefs, size_t num_prefs)
{
    for (size_t p = 0; p < num_prefs; p++)
        for (size_t i = 0; i < req->num_protocols; i++)
            if (slice_eq(req->protocols[i], prefs[p]))
                return prefs[p];
    return NULL;
}

/* Bounded output builder for the replies. */
struct outbuf {
    char *p;
    size_t cap, len;
    bool overflow;
};

static void put(struct outbuf *o, const char *s, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(struct outbuf *o, const char *s)
{
    put(o, s, strlen(s));
}

static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

int ws_handshake_response(char *out, size_t cap, size_t *out_len, const struct ws_request *req, const char *protocol,
                          const char *extensions)
{
    char accept[WS_ACCEPT_KEY_LEN + 1];
    struct outbuf o = {out, cap, 0, false};
    if (has_crlf(protocol) || has_crlf(extensions))
        return -EINVAL;
    int r = ws_handshake_accept_key(req->key.ptr ? req->key.ptr : "", req->key.len, accept);
    if (r != 0)
        return r;
    puts_(&o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    puts_(&o, accept);
    if (protocol) {
        puts_(&o, "\r\nSec-WebSocket-Protocol: ");
        puts_(&o, protocol);
    }
    if (extensions && *extensions) {
        puts_(&o, "\r\nSec-WebSocket-Extensions: ");
        puts_(&o, extensions);
    }
    puts_(&o, "\r\n\r\n");
    if (o.overflow)
        return -ENOSPC;
    *out_len = o.len;
    return 0;
}

const char *ws_http_status_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Error";
}

int ws_handshake_error_response(char *out, size_t cap, size_t *out_len, int status, const char *reason)
{
    struct outbuf o = {out, cap, 0, false};
    const char *phrase = ws_http_status_phrase(status);
    const char *body = reason ? reason : phrase;
    size_t body_len = strlen(body);
    char line[160];
    snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n", status,
             phrase, body_len + 1);
    puts_(&o, line);
    puts_(&o, "Connection: close\r\n");
    if (status == 405)
        puts_(&o, "Allow: GET\r\n");
    if (status == 426)
        puts_(&o, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    puts_(&o, "\r\n");
    size_t body_at = o.len;
    put(&o, body, body_len);
    puts_(&o, "\n");
    if (o.overflow)
        return -ENOSPC;
    for (size_t i = body_at; i < body_at + body_len; i++)
        if (out[i] == '\r' || out[i] == '\n')
            out[i] = ' ';
    *out_len = o.len;
    return 0;
}

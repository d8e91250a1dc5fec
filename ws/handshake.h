/*
 * ws/handshake.h — HTTP/1.1 request parsing and the RFC 6455 §4.2 opening handshake, server side.
 *
 * The parser is picohttpparser-shaped: stateless, zero-copy, bounded. Call ws_handshake_parse() with everything read so far
 * (from the start of the request); it re-scans from the beginning each time (requests are small and bounded by
 * `req->max_bytes`) and returns WS_NEED_MORE until the blank line ending the headers has arrived. All strings in
 * `struct ws_request` are slices of the caller's buffer: they are NOT NUL-terminated and stay valid only as long as that
 * buffer is unchanged.
 *
 * Parsing and WebSocket validation are separate so that bridge/ can serve plain HTTP GETs (static files, metrics) from the
 * same listener: a well-formed GET without upgrade headers parses with `is_upgrade == false`. When `is_upgrade` is true,
 * ws_handshake_validate() checks the RFC 6455 §4.2.1 rules and gives the HTTP status for the error answer.
 *
 * Typical server flow:
 *     struct ws_header hdrs[32];
 *     struct ws_request req;
 *     ws_request_init(&req, hdrs, 32, 8192);
 *     r = ws_handshake_parse(buf, len, &req, &reason);          // WS_NEED_MORE → read more and call again
 *     if (r == 0 && req.is_upgrade) r = ws_handshake_validate(&req, &reason);
 *     if (r == WS_E_HTTP) ws_handshake_error_response(out, cap, &n, req.status, reason) → send, close
 *     proto = ws_handshake_select_protocol(&req, prefs, 3);     // NULL: no Sec-WebSocket-Protocol header in the reply
 *     ws_handshake_response(out, cap, &n, &req, proto, ext_response) → send; bytes after req.consumed are WS frames.
 * No function here allocates, logs or keeps global state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/error.h"

/* Default bound of a whole request (request line + headers + blank line) when max_bytes is 0. */
#define WS_HANDSHAKE_DEFAULT_MAX_BYTES 8192
/* Length of a Sec-WebSocket-Accept value (base64 of a 20-byte SHA-1), without the NUL. */
#define WS_ACCEPT_KEY_LEN 28
/* Maximum number of Sec-WebSocket-Protocol tokens kept (all header lines together); more → 400. */
#define WS_REQUEST_MAX_PROTOCOLS 16
/* Maximum number of Sec-WebSocket-Extensions header lines kept; more → 400. */
#define WS_REQUEST_MAX_EXTENSION_HEADERS 4

/* A borrowed, non-NUL-terminated byte range. `ptr == NULL` (len 0) means absent. */
struct ws_slice {
    const char *ptr;
    size_t len;
};

/* One header line; name and value are slices of the request buffer, value trimmed of surrounding SP/HTAB. */
struct ws_header {
    struct ws_slice name;
    struct ws_slice value;
};

struct ws_request {
    /* --- inputs, set by ws_request_init() and kept across calls --- */
    struct ws_header *headers; /* caller-supplied array */
    size_t num_headers;        /* in: capacity of `headers` (the limit; more headers → 431); out on success: count used */
    size_t max_bytes;          /* bound on the whole request; 0 → WS_HANDSHAKE_DEFAULT_MAX_BYTES */

    /* --- outputs of ws_handshake_parse() (valid when it returned 0) --- */
    size_t consumed;         /* bytes of the request including the blank line; what follows belongs to the next layer */
    int status;              /* on WS_E_HTTP: HTTP status to answer with (400, 405, 426, 431, 505); else 0 */
    struct ws_slice method;  /* "GET" or "HEAD" (anything else is rejected with 405) */
    struct ws_slice path;    /* request-target, as sent (origin-form "/ws?x=1" or absolute-form) */
    int minor_version;       /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    struct ws_slice host;    /* Host (absent → ptr NULL) */
    struct ws_slice origin;  /* Origin (absent → ptr NULL) */
    struct ws_slice key;     /* Sec-WebSocket-Key, trimmed (not yet checked; see ws_handshake_validate) */
    struct ws_slice version; /* Sec-WebSocket-Version */
    struct ws_slice upgrade; /* Upgrade */
    struct ws_slice protocols[WS_REQUEST_MAX_PROTOCOLS]; /* Sec-WebSocket-Protocol tokens, client order */
    size_t num_protocols;
    struct ws_slice extensions[WS_REQUEST_MAX_EXTENSION_HEADERS]; /* raw Sec-WebSocket-Extensions values, in order */
    size_t num_extensions;
    bool connection_upgrade; /* some Connection header holds the token "upgrade" (case-insensitive) */
    bool upgrade_websocket;  /* some Upgrade header holds the token "websocket" (case-insensitive) */
    /*
     * True when the client asks for a WebSocket: the Upgrade header holds the token "websocket" (case-insensitive), or a
     * Sec-WebSocket-Key or Sec-WebSocket-Version header is present. Other Upgrade values (h2c...) are ignored, as
     * RFC 7230 §6.7 allows, and the request stays a plain GET.
     */
    bool is_upgrade;
};

/* Sets the inputs and clears the outputs. `headers` may be NULL only when `num_headers` is 0. */
void ws_request_init(struct ws_request *req, struct ws_header *headers, size_t num_headers, size_t max_bytes);

/*
 * Parses one HTTP/1.x request head from buf[0..len) (from its first byte; call again with the longer buffer after
 * WS_NEED_MORE, the same `req` may be reused).
 *
 * Returns
 *   0             complete and well-formed: outputs set, `req->consumed` bytes used, `req->num_headers` = count;
 *   WS_NEED_MORE  no blank line yet and len < max_bytes (req->num_headers is left at its input value);
 *   WS_E_HTTP     rejected; `req->status` is the HTTP status to answer with, `*reason` a static explanation:
 *                 431 request head over max_bytes (checked before waiting for more) or more headers than the array holds,
 *                 400 malformed request line or header (bad token chars, obs-fold, space before colon, control chars,
 *                     bare CR, duplicate Host / Sec-WebSocket-Key / Sec-WebSocket-Version, a request body announced by
 *                     Content-Length != 0 or Transfer-Encoding, too many protocols or extension lines),
 *                 405 method other than GET or HEAD,
 *                 505 HTTP version other than 1.0 / 1.1.
 * Lines may end in CRLF or a bare LF (RFC 7230 §3.5). Never reads outside buf[0..len).
 */
int ws_handshake_parse(const char *buf, size_t len, struct ws_request *req, const char **reason) WS_MUSTCHECK;

/*
 * Checks a parsed request against RFC 6455 §4.2.1: method GET, HTTP/1.1, Host present, Upgrade contains "websocket",
 * Connection contains "upgrade", Sec-WebSocket-Key is base64 of exactly 16 bytes, Sec-WebSocket-Version is 13.
 * Returns 0, or WS_E_HTTP with `req->status` 405 (not GET), 426 (version missing or not 13: the error response then
 * carries "Sec-WebSocket-Version: 13"), or 400 (anything else), and `*reason` set.
 */
int ws_handshake_validate(struct ws_request *req, const char **reason) WS_MUSTCHECK;

/*
 * Computes Sec-WebSocket-Accept = base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) (RFC 6455 §4.2.2) into
 * out[0..28) and NUL-terminates it (out needs WS_ACCEPT_KEY_LEN + 1 = 29 bytes). `key` is taken as given (already
 * trimmed). Returns 0, or -EINVAL when key_len is over 256, -EIO when libcrypto fails.
 */
int ws_handshake_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_KEY_LEN + 1]) WS_MUSTCHECK;

/*
 * Picks the subprotocol: the first entry of the server preference list `prefs` (e.g. {"v12.stomp", "v11.stomp",
 * "v10.stomp"}) that the client offered (exact, case-sensitive match, RFC 6455 §4.2.2 / §11.3.4). Returns the `prefs`
 * entry (static lifetime of the caller's list), or NULL when the client offered none of them or no protocol at all (then
 * the reply has no Sec-WebSocket-Protocol header; the handshake still succeeds).
 */
const char *ws_handshake_select_protocol(const struct ws_request *req, const char *const *prefs, size_t num_prefs);

/*
 * Writes the "101 Switching Protocols" reply for a validated request into out[0..cap): Upgrade, Connection,
 * Sec-WebSocket-Accept, then "Sec-WebSocket-Protocol: <protocol>" when protocol is not NULL, then
 * "Sec-WebSocket-Extensions: <extensions>" when extensions is not NULL and not empty (the value built by ws/deflate.h's
 * negotiation). *out_len gets the length (not NUL-terminated). Returns 0, -ENOSPC when cap is too small (nothing usable
 * written), -EINVAL when protocol/extensions contain CR or LF, or ws_handshake_accept_key()'s errors.
 */
int ws_handshake_response(char *out, size_t cap, size_t *out_len, const struct ws_request *req, const char *protocol,
                          const char *extensions) WS_MUSTCHECK;

/*
 * Writes an HTTP/1.1 error reply: status line with the standard phrase for `status` (400, 403, 404, 405, 426, 431, 500,
 * 503, 505; others get "Error"), Content-Type: text/plain, Content-Length, Connection: close, "Allow: GET" for 405,
 * "Upgrade: websocket" + "Sec-WebSocket-Version: 13" for 426, and `reason` plus "\n" as the body (NULL → the phrase).
 * CR and LF in `reason` are written as spaces. *out_len gets the length. Returns 0, or -ENOSPC when cap is too small.
 */
int ws_handshake_error_response(char *out, size_t cap, size_t *out_len, int status, const char *reason) WS_MUSTCHECK;

/* Standard reason phrase of an HTTP status ("Bad Request"...), "Error" for unknown ones. Never NULL. */
const char *ws_http_status_phrase(int status);

/*
 * tests/unit/test-ws-handshake.c — HTTP request parsing, RFC 6455 §4.2 validation, accept key, subprotocol choice and the
 * replies (ws/handshake.h).
 *
 * The parser is stateless: each input is offered as a growing prefix (whole, one more byte at a time, random growth),
 * every prefix copied right before a PROT_NONE page; every incomplete prefix must give WS_NEED_MORE (or the same early
 * error) and the complete one the same final answer.
 */
#include <errno.h>
#include <string.h>

#include "harness.h"
#include "ws/handshake.h"

#define NHDR 16

static const char RFC_REQUEST[] = "GET /chat HTTP/1.1\r\n"
                                  "Host: server.example.com\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Origin: http://example.com\r\n"
                                  "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "\r\n";

static bool slice_is(struct ws_slice s, const char *lit)
{
    return s.ptr && s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/*
 * Parses `text` (plus `extra` trailing bytes that must not be consumed) in every mode; returns the final result with
 * *req filled by the last (complete) call in whole mode. `early` allows an error before the full input (fail fast).
 */
static int parse_all(const char *text, size_t max, struct ws_request *req, struct ws_header *hdrs, size_t nhdr)
{
    size_t len = strlen(text);
    int final = -1000;
    for (int m = SPLIT_MODES - 1; m >= 0; m--) {
        struct guard_slot slot = {0};
        uint64_t seed = 42 + len;
        size_t have = 0;
        int r = WS_NEED_MORE;
        ws_request_init(req, hdrs, nhdr, max);
        while (have < len && r == WS_NEED_MORE) {
            have += split_next((enum split_mode)m, len - have, &seed);
            const char *p = guard_copy(&slot, text, have);
            const char *reason = NULL;
            r = ws_handshake_parse(p, have, req, &reason);
            if (r == WS_NEED_MORE)
                CHECK_EQ_INT(req->num_headers, nhdr);
            if (r == WS_E_HTTP)
                CHECK(reason != NULL && req->status >= 400);
            if (r == 0 && m == SPLIT_WHOLE) {
                /* keep slices valid after guard_free: re-parse from the caller's text */
                ws_request_init(req, hdrs, nhdr, max);
                CHECK_EQ_INT(ws_handshake_parse(text, have, req, &reason), 0);
            }
        }
        if (m != SPLIT_MODES - 1)
            CHECK_EQ_INT(r, final);
        final = r;
        guard_free(&slot);
    }
    return final;
}

/* Parses and validates; returns 0 or the HTTP status. */
static int status_of(const char *text)
{
    struct ws_header hdrs[NHDR];
    struct ws_request req;
    const char *reason = NULL;
    int r = parse_all(text, 0, &req, hdrs, NHDR);
    if (r == 0 && req.is_upgrade)
        r = ws_handshake_validate(&req, &reason);
    if (r == WS_NEED_MORE)
        return -1;
    return r == 0 ? 0 : req.status;
}

static void test_accept_key(void)
{
    char out[WS_ACCEPT_KEY_LEN + 1];
    /* RFC 6455 §1.3 and §4.2.2: SHA-1 of key + GUID, base64 */
    CHECK_EQ_INT(ws_handshake_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    char big[300];
    memset(big, 'A', sizeof(big));
    CHECK_EQ_INT(ws_handshake_accept_key(big, sizeof(big), out), -EINVAL);
}

static void test_rfc_request(void)
{
    struct ws_header hdrs[NHDR];
    struct ws_request req;
    const char *reason = NULL;
    CHECK_EQ_INT(parse_all(RFC_REQUEST, 0, &req, hdrs, NHDR), 0);
    CHECK_EQ_INT(req.consumed, strlen(RFC_REQUEST));
    CHECK_EQ_INT(req.num_headers, 7);
    CHECK(slice_is(req.method, "GET"));
    CHECK(slice_is(req.path, "/chat"));
    CHECK_EQ_INT(req.minor_version, 1);
    CHECK(slice_is(req.host, "server.example.com"));
    CHECK(slice_is(req.origin, "http://example.com"));
    CHECK(slice_is(req.key, "dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK(slice_is(req.version, "13"));
    CHECK(slice_is(req.upgrade, "websocket"));
    CHECK_EQ_INT(req.num_protocols, 2);
    CHECK(slice_is(req.protocols[0], "chat") && slice_is(req.protocols[1], "superchat"));
    CHECK(req.is_upgrade && req.connection_upgrade && req.upgrade_websocket);
    CHECK(slice_is(hdrs[0].name, "Host") && slice_is(hdrs[0].value, "server.example.com"));
    CHECK_EQ_INT(ws_handshake_validate(&req, &reason), 0);
    char out[512];
    size_t n = 0;
    CHECK_EQ_INT(ws_handshake_response(out, sizeof(out), &n, &req, "chat", NULL), 0);
    static const char expect[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                 "Sec-WebSocket-Protocol: chat\r\n"
                                 "\r\n";
    CHECK(n == strlen(expect) && memcmp(out, expect, n) == 0);
    CHECK_EQ_INT(ws_handshake_response(out, n - 1, &n, &req, "chat", NULL), -ENOSPC);
    CHECK_EQ_INT(ws_handshake_response(out, sizeof(out), &n, &req, "a\r\nX: y", NULL), -EINVAL);
    CHECK_EQ_INT(ws_handshake_response(out, sizeof(out), &n, &req, NULL, "permessage-deflate"), 0);
    out[n] = 0;
    CHECK(strstr(out, "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n") != NULL);
    CHECK(strstr(out, "Sec-WebSocket-Protocol") == NULL);
}

static void test_trailing_bytes_not_consumed(void)
{
    char text[600];
    snprintf(text, sizeof(text), "%s%s", RFC_REQUEST, "\x81\x85 frame bytes");
    struct ws_header hdrs[NHDR];
    struct ws_request req;
    const char *reason = NULL;
    ws_request_init(&req, hdrs, NHDR, 0);
    CHECK_EQ_INT(ws_handshake_parse(text, strlen(text), &req, &reason), 0);
    CHECK_EQ_INT(req.consumed, strlen(RFC_REQUEST));
}

static void test_plain_get(void)
{
    struct ws_header hdrs[NHDR];
    struct ws_request req;
    CHECK_EQ_INT(parse_all("GET /index.html?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nUpgrade: h2c\r\n"
                           "Connection: Upgrade, HTTP2-Settings\r\n\r\n",
                           0, &req, hdrs, NHDR),
                 0);
    CHECK(!req.is_upgrade);
    CHECK(slice_is(req.path, "/index.html?x=1"));
    CHECK_EQ_INT(parse_all("HEAD / HTTP/1.0\n\n", 0, &req, hdrs, NHDR), 0);
    CHECK(!req.is_upgrade && req.minor_version == 0 && slice_is(req.method, "HEAD"));
    CHECK_EQ_INT(req.num_headers, 0);
    /* LF-only lines, empty lines before the request line, OWS around values, empty header value */
    CHECK_EQ_INT(parse_all("\r\n\nGET / HTTP/1.1\nHost:   h  \t\nX-Empty:\n\n", 0, &req, hdrs, NHDR), 0);
    CHECK(slice_is(req.host, "h"));
    CHECK(req.headers[1].value.len == 0);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\n\r\n"), 0);
}

static void test_upgrade_variants(void)
{
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n"
                           "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\nsec-websocket-version: 13\r\n\r\n"),
                 0);
    /* Upgrade and Connection lists spread over several lines */
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: foo/1\r\nUpgrade: , websocket\r\nConnection: close\r\n"
                           "Connection: ,upgrade,\r\nSec-WebSocket-Key: abcdefghijklmnopqrstuv==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"),
                 0);
}

#define UPG_HEAD "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
#define GOOD_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define V13      "Sec-WebSocket-Version: 13\r\n"

static void test_validate_errors(void)
{
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY V13 "\r\n"), 0);
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY "Sec-WebSocket-Version: 8\r\n\r\n"), 426);
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY "\r\n"), 426);
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n"), 426);
    CHECK_EQ_INT(status_of(UPG_HEAD V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n" V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n" V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY GOOD_KEY V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of(UPG_HEAD GOOD_KEY V13 V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" GOOD_KEY V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n" GOOD_KEY V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n" GOOD_KEY V13 "\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websockets\r\nConnection: upgrades\r\n" GOOD_KEY V13 "\r\n"),
                 400);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" GOOD_KEY V13 "\r\n"),
                 400);
    CHECK_EQ_INT(status_of("HEAD /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" GOOD_KEY V13 "\r\n"),
                 405);
}

static void test_parse_errors(void)
{
    CHECK_EQ_INT(status_of("POST /ws HTTP/1.1\r\nHost: h\r\n\r\n"), 405);
    CHECK_EQ_INT(status_of("POST /ws HTTP/1.1\r\n"), 405); /* decided on the request line, without waiting */
    CHECK_EQ_INT(status_of("GET /ws HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    CHECK_EQ_INT(status_of("GET /ws HTTP/1.1x\r\nHost: h\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws http/1.1\r\nHost: h\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET  /ws HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /ws\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /w s HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("G(T / HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET /\x7f HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\n: h\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: a\x01"
                           "b\r\n\r\n"),
                 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nOrigin: a\r\nOrigin: b\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nSec-WebSocket-Protocol: a, b/c\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\n"), -1);
    /* obs-text in values is allowed */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\n\r\n"), 0);
}

static void test_limits(void)
{
    struct ws_header hdrs[4];
    struct ws_request req;
    const char *reason = NULL;
    static const char five[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    CHECK_EQ_INT(parse_all(five, 0, &req, hdrs, 4), WS_E_HTTP);
    CHECK_EQ_INT(req.status, 431);
    CHECK_EQ_INT(parse_all("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 0, &req, hdrs, 4), 0);
    CHECK_EQ_INT(req.num_headers, 4);
    CHECK_EQ_INT(parse_all("GET / HTTP/1.1\r\n\r\n", 0, &req, NULL, 0), 0);
    /* max_bytes: exactly at the limit is fine, one more byte of head is 431, decided before the end arrives */
    static const char req18[] = "GET / HTTP/1.1\r\n\r\n";
    CHECK_EQ_INT(parse_all(req18, 18, &req, hdrs, 4), 0);
    CHECK_EQ_INT(parse_all(req18, 17, &req, hdrs, 4), WS_E_HTTP);
    CHECK_EQ_INT(req.status, 431);
    ws_request_init(&req, hdrs, 4, 17);
    CHECK_EQ_INT(ws_handshake_parse(req18, 16, &req, &reason), WS_NEED_MORE);
    CHECK_EQ_INT(ws_handshake_parse(req18, 17, &req, &reason), WS_E_HTTP);
    CHECK_EQ_INT(req.status, 431);
    /* the default bound */
    static char huge[WS_HANDSHAKE_DEFAULT_MAX_BYTES + 100];
    memset(huge, 'a', sizeof(huge));
    memcpy(huge, "GET / HTTP/1.1\r\nX: ", 19);
    ws_request_init(&req, hdrs, 4, 0);
    CHECK_EQ_INT(ws_handshake_parse(huge, sizeof(huge), &req, &reason), WS_E_HTTP);
    CHECK_EQ_INT(req.status, 431);
    /* too many protocols */
    char many[1024] = "GET / HTTP/1.1\r\nSec-WebSocket-Protocol: p0";
    for (int i = 1; i < WS_REQUEST_MAX_PROTOCOLS + 1; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), ",p%d", i);
    strcat(many, "\r\n\r\n");
    CHECK_EQ_INT(status_of(many), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nSec-WebSocket-Extensions: a\r\nSec-WebSocket-Extensions: b\r\n"
                           "Sec-WebSocket-Extensions: c\r\nSec-WebSocket-Extensions: d\r\nSec-WebSocket-Extensions: e\r\n\r\n"),
                 400);
}

static void test_protocol_selection(void)
{
    static const char *const prefs[] = {"v12.stomp", "v11.stomp", "v10.stomp"};
    struct ws_header hdrs[NHDR];
    struct ws_request req;
    CHECK_EQ_INT(parse_all(UPG_HEAD GOOD_KEY V13 "Sec-WebSocket-Protocol: v10.stomp, v11.stomp\r\n"
                                                 "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n",
                           0, &req, hdrs, NHDR),
                 0);
    CHECK_EQ_INT(req.num_protocols, 3);
    CHECK(ws_handshake_select_protocol(&req, prefs, 3) == prefs[0]);
    CHECK(ws_handshake_select_protocol(&req, prefs + 1, 2) == prefs[1]);
    CHECK_EQ_INT(parse_all(UPG_HEAD GOOD_KEY V13 "Sec-WebSocket-Protocol: v10.stomp\r\n\r\n", 0, &req, hdrs, NHDR), 0);
    CHECK(ws_handshake_select_protocol(&req, prefs, 3) == prefs[2]);
    CHECK_EQ_INT(parse_all(UPG_HEAD GOOD_KEY V13 "Sec-WebSocket-Protocol: mqtt, V12.STOMP\r\n\r\n", 0, &req, hdrs, NHDR), 0);
    CHECK(ws_handshake_select_protocol(&req, prefs, 3) == NULL);
    CHECK_EQ_INT(parse_all(UPG_HEAD GOOD_KEY V13 "\r\n", 0, &req, hdrs, NHDR), 0);
    CHECK(ws_handshake_select_protocol(&req, prefs, 3) == NULL);
    CHECK_EQ_INT(parse_all(UPG_HEAD GOOD_KEY V13 "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                                                 "Sec-WebSocket-Extensions: x-foo\r\n\r\n",
                           0, &req, hdrs, NHDR),
                 0);
    CHECK_EQ_INT(req.num_extensions, 2);
    CHECK(slice_is(req.extensions[0], "permessage-deflate; client_max_window_bits"));
    CHECK(slice_is(req.extensions[1], "x-foo"));
}

static void test_error_response(void)
{
    char out[512];
    size_t n = 0;
    CHECK_EQ_INT(ws_handshake_error_response(out, sizeof(out), &n, 426, "need version 13"), 0);
    out[n] = 0;
    CHECK(strncmp(out, "HTTP/1.1 426 Upgrade Required\r\n", 31) == 0);
    CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(strstr(out, "\r\nConnection: close\r\n") != NULL);
    CHECK(strstr(out, "\r\nContent-Length: 16\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nneed version 13\n") != NULL);
    CHECK_EQ_INT(ws_handshake_error_response(out, sizeof(out), &n, 400, "bad\r\nInjected: 1"), 0);
    out[n] = 0;
    CHECK(strstr(out, "\r\nInjected") == NULL);
    CHECK(strstr(out, "Sec-WebSocket-Version") == NULL);
    CHECK_EQ_INT(ws_handshake_error_response(out, sizeof(out), &n, 405, NULL), 0);
    out[n] = 0;
    CHECK(strstr(out, "\r\nAllow: GET\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nMethod Not Allowed\n") != NULL);
    CHECK_EQ_INT(ws_handshake_error_response(out, 20, &n, 431, "x"), -ENOSPC);
    CHECK(strcmp(ws_http_status_phrase(999), "Error") == 0);
}

int main(void)
{
    RUN(test_accept_key);
    RUN(test_rfc_request);
    RUN(test_trailing_bytes_not_consumed);
    RUN(test_plain_get);
    RUN(test_upgrade_variants);
    RUN(test_validate_errors);
    RUN(test_parse_errors);
    RUN(test_limits);
    RUN(test_protocol_selection);
    RUN(test_error_response);
    return harness_done();
}

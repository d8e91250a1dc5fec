/*
 * tests/fuzz/fuzz-ws-handshake.c — libFuzzer target for the HTTP upgrade parser and handshake (ws/handshake.h).
 *
 * Input layout: byte 0 = header array capacity (0..31) and whether max_bytes is small (bit 5), byte 1 = seed of the
 * prefix lengths, the rest = the request. The parser is stateless, so the request is offered as growing prefixes (as
 * reads would deliver it), each copied to an exact-size heap block so ASan sees any over-read. A complete request goes
 * through validation, subprotocol selection and both replies; every slice must lie inside the input.
 */
#include <stdlib.h>
#include <string.h>

#include "ws/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_slice(struct ws_slice s, const char *buf, size_t len)
{
    if (s.ptr && (s.ptr < buf || s.ptr + s.len > buf + len))
        abort();
}

static void check_request(const struct ws_request *req, const char *buf, size_t len)
{
    if (req->consumed == 0 || req->consumed > len)
        abort();
    check_slice(req->method, buf, len);
    check_slice(req->path, buf, len);
    check_slice(req->host, buf, len);
    check_slice(req->key, buf, len);
    for (size_t i = 0; i < req->num_headers; i++) {
        check_slice(req->headers[i].name, buf, req->consumed);
        check_slice(req->headers[i].value, buf, req->consumed);
    }
    for (size_t i = 0; i < req->num_protocols; i++)
        check_slice(req->protocols[i], buf, req->consumed);
    for (size_t i = 0; i < req->num_extensions; i++)
        check_slice(req->extensions[i], buf, req->consumed);
}

static void answer(struct ws_request *req, const char *buf, size_t len)
{
    static const char *const prefs[] = {"v12.stomp", "v11.stomp", "v10.stomp"};
    char out[1024];
    size_t n = 0;
    const char *reason = NULL;
    check_request(req, buf, len);
    int r = req->is_upgrade ? ws_handshake_validate(req, &reason) : 0;
    if (r == WS_E_HTTP) {
        if (ws_handshake_error_response(out, sizeof(out), &n, req->status, reason) != 0)
            abort();
        return;
    }
    if (r != 0)
        abort();
    const char *proto = ws_handshake_select_protocol(req, prefs, 3);
    if (req->is_upgrade && ws_handshake_response(out, sizeof(out), &n, req, proto, "permessage-deflate") != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ws_header hdrs[32];
    struct ws_request req;
    if (size < 2)
        return 0;
    size_t nhdr = data[0] & 31;
    size_t max = data[0] & 32 ? 64 : 0;
    uint32_t seed = data[1] | 0x100u;
    const char *text = (const char *)data + 2;
    size_t len = size - 2, have = 0;
    ws_request_init(&req, hdrs, nhdr, max);
    while (have < len) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        have += seed % 3 == 0 ? len - have : 1 + seed % (len - have);
        char *p = malloc(have);
        if (!p)
            return 0;
        memcpy(p, text, have);
        const char *reason = NULL;
        int r = ws_handshake_parse(p, have, &req, &reason);
        if (r == 0)
            answer(&req, p, have);
        else if (r == WS_E_HTTP && (req.status < 400 || !reason))
            abort();
        else if (r != WS_E_HTTP && r != WS_NEED_MORE)
            abort();
        free(p);
        if (r != WS_NEED_MORE)
            break;
    }
    return 0;
}

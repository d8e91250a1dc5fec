/*
 * bench/wsclient.c — RFC 6455 client handshake and server-frame reader for the load generator (bench/wsclient.h).
 */
#include "bench/wsclient.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ws/handshake.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void bench_ws_key(char key[BENCH_WS_KEY_LEN + 1], uint64_t rnd[2])
{
    uint8_t raw[18] = {0};
    memcpy(raw, rnd, 16);
    size_t o = 0;
    for (size_t i = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        key[o++] = b64[(v >> 18) & 63];
        key[o++] = b64[(v >> 12) & 63];
        key[o++] = b64[(v >> 6) & 63];
        key[o++] = b64[v & 63];
    }
    /* 16 bytes → 22 characters and "==" */
    key[22] = '=';
    key[23] = '=';
    key[24] = '\0';
}

size_t bench_ws_request(char *out, size_t cap, const char *host, const char *path, const char *key, const char *protocols,
                        bool deflate)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n%s\r\n",
                     path, host, key, protocols,
                     deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The value of header `name` in the reply's header block hdrs[0..len), or NULL; *vlen its length. */
static const char *reply_header(const char *hdrs, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = hdrs, *end = hdrs + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 1;
    }
    return NULL;
}

int bench_ws_response(const char *in, size_t len, const char *key, size_t *consumed, bool *deflate, const char **reason)
{
    const char *end = NULL;
    for (size_t i = 3; i < len; i++)
        if (in[i] == '\n' && in[i - 1] == '\r' && in[i - 2] == '\n' && in[i - 3] == '\r') {
            end = in + i + 1;
            break;
        }
    if (!end) {
        if (len > 16384) {
            *reason = "handshake reply over 16 KiB";
            return -1;
        }
        return 1;
    }
    if (len < 12 || memcmp(in, "HTTP/1.1 101", 12) != 0) {
        *reason = "the server did not answer 101 Switching Protocols";
        return -1;
    }
    char want[WS_ACCEPT_KEY_LEN + 1];
    if (ws_handshake_accept_key(key, strlen(key), want) != 0) {
        *reason = "cannot compute Sec-WebSocket-Accept";
        return -1;
    }
    size_t vlen = 0;
    const char *v = reply_header(in, (size_t)(end - in), "Sec-WebSocket-Accept", &vlen);
    if (!v || vlen != WS_ACCEPT_KEY_LEN || memcmp(v, want, vlen) != 0) {
        *reason = "wrong or missing Sec-WebSocket-Accept";
        return -1;
    }
    v = reply_header(in, (size_t)(end - in), "Sec-WebSocket-Extensions", &vlen);
    *deflate = v && vlen >= 18 && strncasecmp(v, "permessage-deflate", 18) == 0;
    *consumed = (size_t)(end - in);
    return 0;
}

int bench_ws_frame_read(const uint8_t *in, size_t len, uint64_t max_payload, size_t *consumed, struct bench_ws_frame *f,
                        const char **reason)
{
    if (len < 2)
        return 1;
    if (in[1] & 0x80) {
        *reason = "masked server frame (RFC 6455 §5.1)";
        return -1;
    }
    if (in[0] & 0x30) {
        *reason = "RSV2/RSV3 set";
        return -1;
    }
    uint64_t plen = in[1] & 0x7f;
    size_t hl = 2;
    if (plen == 126) {
        if (len < 4)
            return 1;
        plen = (uint64_t)in[2] << 8 | in[3];
        hl = 4;
    } else if (plen == 127) {
        if (len < 10)
            return 1;
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = plen << 8 | in[2 + i];
        if (plen >> 63) {
            *reason = "64-bit length with the MSB set";
            return -1;
        }
        hl = 10;
    }
    if (plen > max_payload) {
        *reason = "frame larger than the generator accepts";
        return -1;
    }
    if (len - hl < plen)
        return 1;
    f->fin = (in[0] & 0x80) != 0;
    f->rsv1 = (in[0] & 0x40) != 0;
    f->opcode = in[0] & 0x0f;
    f->payload = in + hl;
    f->len = (size_t)plen;
    *consumed = hl + (size_t)plen;
    return 0;
}

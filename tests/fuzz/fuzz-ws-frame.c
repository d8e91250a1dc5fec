/*
 * tests/fuzz/fuzz-ws-frame.c — libFuzzer target for the RFC 6455 frame decoder (ws/frame.h), without zlib.
 *
 * Input layout: byte 0 = options (bits 0-2 pick max_message_bytes, bit 3 plugs an identity inflate hook so the RSV1 /
 * compressed-message path runs without zlib), bytes 1-2 = seed of the chunk sizes, the rest = client frames. Each chunk
 * is copied to its own exact-size heap block so ASan sees any over-read. Every event is checked against the contract
 * (text is valid UTF-8, control payloads ≤ 125 bytes, close codes valid, sizes within the limit) and answered with the
 * encoders, as bridge/ would. permessage-deflate with real zlib is fuzz-ws-frame-deflate.c.
 */
#include <stdlib.h>
#include <string.h>

#include "ws/frame.h"
#include "ws/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink; /* makes the reads of every event byte observable */

static const uint64_t limits[8] = {1, 5, 125, 126, 1000, 65536, 70000, 1u << 20};

static int identity_inflate(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out, const char **reason)
{
    (void)z;
    (void)fin;
    if (len == 0)
        return 0;
    int r = ws_buf_reserve(out, len);
    if (r != 0) {
        *reason = "message too big";
        return r;
    }
    memcpy(out->data + out->len, in, len);
    out->len += len;
    return 0;
}

static void check_event(const struct ws_event *ev, uint64_t max)
{
    uint8_t reply[WS_CONTROL_FRAME_MAX];
    for (size_t i = 0; i < ev->len; i++)
        sink ^= ev->data[i];
    switch (ev->type) {
    case WS_EV_MESSAGE:
        if (ev->len > max)
            abort();
        if (ev->opcode == WS_OP_TEXT && !ws_utf8_valid(ev->data, ev->len))
            abort();
        break;
    case WS_EV_PING:
        if (ev->len > WS_CONTROL_PAYLOAD_MAX)
            abort();
        (void)ws_frame_pong_encode(reply, ev->data, ev->len);
        break;
    case WS_EV_PONG:
        if (ev->len > WS_CONTROL_PAYLOAD_MAX)
            abort();
        break;
    case WS_EV_CLOSE:
        if (ev->close_code != WS_CLOSE_NO_STATUS && !ws_close_code_is_valid(ev->close_code))
            abort();
        if (!ws_utf8_valid(ev->data, ev->len))
            abort();
        (void)ws_frame_close_encode(reply, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, (const char *)ev->data,
                                    ev->len);
        break;
    case WS_EV_NONE:
        abort();
    }
}

/* Feeds one chunk until it is used up; returns false once the decoder failed. */
static bool feed_chunk(struct ws_decoder *d, const uint8_t *p, size_t len, uint64_t max)
{
    size_t off = 0;
    for (;;) {
        size_t consumed = 0;
        struct ws_event ev;
        const char *reason = NULL;
        int r = ws_decoder_feed(d, p + off, len - off, &consumed, &ev, &reason);
        if (consumed > len - off)
            abort();
        off += consumed;
        if (r == 0) {
            check_event(&ev, max);
            continue;
        }
        if (r == WS_NEED_MORE) {
            if (off != len)
                abort();
            return true;
        }
        if (!reason || ws_error_close_code(r) < 1002)
            abort();
        uint8_t reply[WS_CONTROL_FRAME_MAX];
        (void)ws_frame_close_encode(reply, ws_error_close_code(r), reason, strlen(reason));
        return false;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint64_t max = limits[data[0] & 7];
    uint32_t seed = (uint32_t)data[1] << 8 | data[2] | 1u;
    struct ws_limits lim = {.max_message_bytes = max};
    struct ws_decoder d;
    ws_decoder_init(&d, &lim);
    if (data[0] & 8)
        ws_decoder_set_inflate(&d, identity_inflate, NULL);
    data += 3;
    size -= 3;
    while (size > 0) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        size_t n = seed % 4 == 0 ? size : 1 + seed % (size < 64 ? size : 64);
        uint8_t *chunk = malloc(n);
        if (!chunk)
            break;
        memcpy(chunk, data, n);
        bool ok = feed_chunk(&d, chunk, n, max);
        free(chunk);
        data += n;
        size -= n;
        if (!ok)
            break;
    }
    (void)ws_decoder_state_str(ws_decoder_get_state(&d));
    ws_decoder_deinit(&d);
    return 0;
}

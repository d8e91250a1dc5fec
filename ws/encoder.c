/*
 * ws/encoder.c — RFC 6455 §5.2 frame headers and whole control frames for the server side, see ws/frame.h.
 *
 * Server frames are never masked (§5.1). Lengths always use the minimal encoding, which the decoder on the other side
 * is entitled to demand. ws_frame_client_encode() builds masked client frames, valid or deliberately invalid, for tests
 * and fuzz seeds.
 */
#include "ws/frame.h"

#include <assert.h>
#include <string.h>

#include "ws/utf8.h"

/* Writes byte 1's length field (with the mask bit) and the extended length; returns bytes written after byte 0. */
static size_t encode_length(uint8_t *out, uint64_t len, bool masked)
{
    uint8_t m = masked ? 0x80 : 0;
    if (len < 126) {
        out[0] = (uint8_t)(m | len);
        return 1;
    }
    if (len <= 0xFFFF) {
        out[0] = m | 126;
        out[1] = (uint8_t)(len >> 8);
        out[2] = (uint8_t)len;
        return 3;
    }
    out[0] = m | 127;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 9;
}

size_t ws_frame_header_encode(uint8_t out[WS_FRAME_HEADER_MAX], enum ws_opcode op, bool fin, bool rsv1, uint64_t payload_len)
{
    assert(!(op & 0x8) || (fin && payload_len <= WS_CONTROL_PAYLOAD_MAX));
    assert(payload_len >> 63 == 0);
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (op & 0x0F));
    return 1 + encode_length(out + 1, payload_len, false);
}

static size_t control_encode(uint8_t out[WS_CONTROL_FRAME_MAX], enum ws_opcode op, const uint8_t *payload, size_t len)
{
    if (len > WS_CONTROL_PAYLOAD_MAX)
        len = WS_CONTROL_PAYLOAD_MAX;
    size_t h = ws_frame_header_encode(out, op, true, false, len);
    if (len)
        memcpy(out + h, payload, len);
    return h + len;
}

size_t ws_frame_close_encode(uint8_t out[WS_CONTROL_FRAME_MAX], uint16_t code, const char *reason, size_t reason_len)
{
    uint8_t body[WS_CONTROL_PAYLOAD_MAX];
    size_t n = 0;
    if (code != 0) {
        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        n = 2;
        if (reason && reason_len) {
            size_t r = ws_utf8_prefix((const uint8_t *)reason, reason_len, WS_CONTROL_PAYLOAD_MAX - 2);
            memcpy(body + 2, reason, r);
            n += r;
        }
    }
    return control_encode(out, WS_OP_CLOSE, body, n);
}

size_t ws_frame_ping_encode(uint8_t out[WS_CONTROL_FRAME_MAX], const uint8_t *payload, size_t len)
{
    return control_encode(out, WS_OP_PING, payload, len);
}

size_t ws_frame_pong_encode(uint8_t out[WS_CONTROL_FRAME_MAX], const uint8_t *payload, size_t len)
{
    return control_encode(out, WS_OP_PONG, payload, len);
}

size_t ws_frame_client_encode(uint8_t *out, size_t cap, uint8_t opcode, bool fin, uint8_t rsv, const uint8_t mask[4],
                              const uint8_t *payload, size_t len)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX_MASKED];
    hdr[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0x0F));
    size_t h = 1 + encode_length(hdr + 1, len, true);
    memcpy(hdr + h, mask, 4);
    h += 4;
    if (cap < h || cap - h < len)
        return 0;
    memcpy(out, hdr, h);
    if (len)
        memcpy(out + h, payload, len);
    ws_mask_apply(out + h, len, mask, 0);
    return h + len;
}

/*
 * ws/decoder.c — incremental RFC 6455 frame decoder for client → server frames, see ws/frame.h.
 *
 * The shape is wslay's wslay_frame_recv(): an explicit state per header field so a frame can be cut anywhere between
 * reads. Every check is done at the earliest byte that decides it (RFC 6455 §5.2 header bits on the first byte, masking
 * and control-frame size on the second, minimal length encoding when the extended length is complete), and every length
 * is compared with max_message_bytes before any payload byte is waited for or buffered (STYLE.md §3.5). Payload bytes are
 * copied once into the message buffer and unmasked there; text is UTF-8 validated as each chunk lands (§8.1 "fail fast").
 * Compressed messages (RFC 7692) are unmasked through a small stack buffer and streamed into the inflate hook, which
 * appends to the same bounded buffer, so the limit applies to the inflated size.
 */
#include "ws/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A delivered message buffer larger than this is freed rather than kept for the next message (idle connections). */
#define MSG_KEEP_BYTES 4096
/* Unmasking scratch for compressed payloads handed to the inflate hook. */
#define INFLATE_CHUNK 4096

const char *ws_decoder_state_str(enum ws_decoder_state s)
{
    switch (s) {
    case WS_DEC_HEADER:
        return "HEADER";
    case WS_DEC_EXTLEN:
        return "EXTLEN";
    case WS_DEC_MASKKEY:
        return "MASKKEY";
    case WS_DEC_PAYLOAD:
        return "PAYLOAD";
    case WS_DEC_CLOSED:
        return "CLOSED";
    case WS_DEC_FAILED:
        return "FAILED";
    }
    return "?";
}

const char *ws_event_type_str(enum ws_event_type t)
{
    switch (t) {
    case WS_EV_NONE:
        return "NONE";
    case WS_EV_MESSAGE:
        return "MESSAGE";
    case WS_EV_PING:
        return "PING";
    case WS_EV_PONG:
        return "PONG";
    case WS_EV_CLOSE:
        return "CLOSE";
    }
    return "?";
}

/* ---- bounded buffer ---- */

void ws_buf_init(struct ws_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void ws_buf_deinit(struct ws_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int ws_buf_reserve(struct ws_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return WS_E_TOO_BIG;
    if (b->cap - b->len >= n)
        return 0;
    size_t want = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (cap > b->max)
        cap = b->max;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* ---- masking ---- */

unsigned ws_mask_apply(uint8_t *buf, size_t len, const uint8_t mask[4], unsigned pos)
{
    uint8_t m[8];
    for (unsigned i = 0; i < 8; i++)
        m[i] = mask[(pos + i) & 3];
    uint64_t m64;
    memcpy(&m64, m, sizeof(m64));
    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, sizeof(w));
        w ^= m64;
        memcpy(buf + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        buf[i] ^= m[i & 7];
    return (unsigned)((pos + len) & 3);
}

/* ---- decoder ---- */

void ws_decoder_set_limits(struct ws_decoder *d, const struct ws_limits *lim)
{
    d->max_message = lim && lim->max_message_bytes ? lim->max_message_bytes : 1;
    d->max_ratio = lim ? lim->max_inflate_ratio : 0;
    d->ratio_min = lim ? lim->inflate_ratio_min_bytes : 0;
    d->msg.max = d->max_message > SIZE_MAX ? SIZE_MAX : (size_t)d->max_message;
}

void ws_decoder_init(struct ws_decoder *d, const struct ws_limits *lim)
{
    memset(d, 0, sizeof(*d));
    d->state = WS_DEC_HEADER;
    ws_buf_init(&d->msg, 1);
    ws_decoder_set_limits(d, lim);
    ws_utf8_init(&d->utf8);
}

uint64_t ws_decoder_inflated_bytes(const struct ws_decoder *d)
{
    return d->inflated_total;
}

void ws_decoder_deinit(struct ws_decoder *d)
{
    ws_buf_deinit(&d->msg);
}

void ws_decoder_set_inflate(struct ws_decoder *d, ws_inflate_fn fn, struct ws_deflate *z)
{
    d->inflate = fn;
    d->deflate = z;
}

enum ws_decoder_state ws_decoder_get_state(const struct ws_decoder *d)
{
    return d->state;
}

bool ws_close_code_is_valid(uint16_t code)
{
    /* §7.4.1: 1004 reserved, 1005/1006/1015 must not be sent; 1012-1014 are IANA-registered since. §7.4.2: 3000-4999. */
    if (code >= 1000 && code <= 1003)
        return true;
    if (code >= 1007 && code <= 1014)
        return true;
    return code >= 3000 && code <= 4999;
}

static int fail(struct ws_decoder *d, int err, const char *why, const char **reason)
{
    d->state = WS_DEC_FAILED;
    d->error = err;
    d->error_reason = why;
    *reason = why;
    return err;
}

static bool is_control(uint8_t op)
{
    return (op & 0x8) != 0;
}

/* First header byte: FIN, RSV1-3, opcode (§5.2), fragmentation rules (§5.4), RSV1 rules (RFC 7692 §6). */
static const char *check_byte0(struct ws_decoder *d, uint8_t b)
{
    d->fin = (b & 0x80) != 0;
    d->rsv1 = (b & 0x40) != 0;
    d->opcode = b & 0x0F;
    uint8_t op = d->opcode;
    if (op != WS_OP_CONT && op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
        return "unknown opcode";
    if (b & 0x30)
        return "RSV2/RSV3 bit set";
    if (is_control(op)) {
        if (!d->fin)
            return "fragmented control frame";
        if (d->rsv1)
            return "RSV1 bit set on a control frame";
        return NULL;
    }
    if (op == WS_OP_CONT && !d->in_message)
        return "continuation frame without a message to continue";
    if (op != WS_OP_CONT && d->in_message)
        return "new data frame inside a fragmented message";
    if (d->rsv1 && !d->inflate)
        return "RSV1 bit set but no extension negotiated";
    if (d->rsv1 && op == WS_OP_CONT)
        return "RSV1 bit set on a continuation frame";
    return NULL;
}

/* Starts a new data message on its first frame (the previous one was delivered or never started). */
static void message_begin(struct ws_decoder *d)
{
    d->msg_opcode = d->opcode;
    d->msg_compressed = d->rsv1;
    d->msg_wire_bytes = 0;
    d->msg_in_bytes = 0;
    d->msg.len = 0;
    d->utf8_done = 0;
    ws_utf8_init(&d->utf8);
}

/* Frame length known: check it against the limits before waiting for any payload. */
static int length_known(struct ws_decoder *d, const char **why)
{
    d->remaining = d->frame_len;
    d->hdr_have = 0;
    d->hdr_need = 4;
    d->state = WS_DEC_MASKKEY;
    if (is_control(d->opcode)) {
        d->ctrl_len = 0;
        return 0;
    }
    if (d->frame_len > d->max_message || d->msg_wire_bytes > d->max_message - d->frame_len) {
        *why = "message too big";
        return WS_E_TOO_BIG;
    }
    d->msg_wire_bytes += d->frame_len;
    return 0;
}

/* Second header byte: MASK (§5.1: client frames must be masked) and the 7-bit length. */
static int check_byte1(struct ws_decoder *d, uint8_t b, const char **why)
{
    if (!(b & 0x80)) {
        *why = "client frame not masked";
        return WS_E_PROTOCOL;
    }
    uint8_t len7 = b & 0x7F;
    if (is_control(d->opcode) && len7 > WS_CONTROL_PAYLOAD_MAX) {
        *why = "control frame payload over 125 bytes";
        return WS_E_PROTOCOL;
    }
    if (d->opcode != WS_OP_CONT && !is_control(d->opcode))
        message_begin(d);
    if (len7 >= 126) {
        d->hdr_have = 0;
        d->hdr_need = len7 == 126 ? 2 : 8;
        d->state = WS_DEC_EXTLEN;
        return 0;
    }
    d->frame_len = len7;
    return length_known(d, why);
}

/* Extended length complete: §5.2 "the minimal number of bytes MUST be used", and the 64-bit MSB MUST be 0. */
static int extlen_done(struct ws_decoder *d, const char **why)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < d->hdr_need; i++)
        v = v << 8 | d->hdr[i];
    if (d->hdr_need == 8 && (v >> 63)) {
        *why = "64-bit payload length with the most significant bit set";
        return WS_E_PROTOCOL;
    }
    if ((d->hdr_need == 2 && v < 126) || (d->hdr_need == 8 && v <= 0xFFFF)) {
        *why = "payload length not minimally encoded";
        return WS_E_PROTOCOL;
    }
    d->frame_len = v;
    return length_known(d, why);
}

static int header_byte(struct ws_decoder *d, uint8_t b, const char **why)
{
    if (d->hdr_have == 0) {
        d->hdr_have = 1;
        *why = check_byte0(d, b);
        return *why ? WS_E_PROTOCOL : 0;
    }
    return check_byte1(d, b, why);
}

/* Validates the message bytes appended since the last call (text only). */
static int utf8_check_new(struct ws_decoder *d, const char **why)
{
    if (d->msg_opcode != WS_OP_TEXT || d->utf8_done == d->msg.len)
        return 0;
    int r = ws_utf8_feed(&d->utf8, d->msg.data + d->utf8_done, d->msg.len - d->utf8_done, NULL);
    d->utf8_done = d->msg.len;
    if (r != 0)
        *why = "invalid UTF-8 in text message";
    return r;
}

/*
 * After the inflate hook ran: counts its output, then the ratio check (a message that inflates absurdly AND is large
 * is a bomb, whatever max_message_bytes allows: 4 KiB of compressed newlines make 4 MiB).
 */
static int inflated(struct ws_decoder *d, size_t before, const char **why)
{
    d->inflated_total += d->msg.len - before;
    if (d->max_ratio && d->ratio_min && d->msg.len > d->ratio_min && d->msg.len / d->max_ratio > d->msg_in_bytes) {
        *why = "compression ratio too high";
        return WS_E_TOO_BIG;
    }
    return 0;
}

/* Compressed payload: unmask through a scratch buffer and stream into the inflate hook. */
static int payload_inflate(struct ws_decoder *d, const uint8_t *p, size_t n, const char **why)
{
    uint8_t scratch[INFLATE_CHUNK];
    while (n > 0) {
        size_t k = n < sizeof(scratch) ? n : sizeof(scratch);
        size_t before = d->msg.len;
        memcpy(scratch, p, k);
        d->mask_pos = (uint8_t)ws_mask_apply(scratch, k, d->mask, d->mask_pos);
        d->msg_in_bytes += k;
        int r = d->inflate(d->deflate, scratch, k, false, &d->msg, why);
        if (r == 0)
            r = inflated(d, before, why);
        if (r != 0)
            return r;
        r = utf8_check_new(d, why);
        if (r != 0)
            return r;
        p += k;
        n -= k;
    }
    return 0;
}

static int payload_chunk(struct ws_decoder *d, const uint8_t *p, size_t n, const char **why)
{
    if (is_control(d->opcode)) {
        memcpy(d->ctrl + d->ctrl_len, p, n);
        d->mask_pos = (uint8_t)ws_mask_apply(d->ctrl + d->ctrl_len, n, d->mask, d->mask_pos);
        d->ctrl_len = (uint8_t)(d->ctrl_len + n);
        return 0;
    }
    if (d->msg_compressed)
        return payload_inflate(d, p, n, why);
    int r = ws_buf_reserve(&d->msg, n);
    if (r != 0) {
        *why = r == WS_E_TOO_BIG ? "message too big" : "out of memory";
        return r;
    }
    memcpy(d->msg.data + d->msg.len, p, n);
    d->mask_pos = (uint8_t)ws_mask_apply(d->msg.data + d->msg.len, n, d->mask, d->mask_pos);
    d->msg.len += n;
    return utf8_check_new(d, why);
}

/* A close frame is complete: §5.5.1 body = optional (2-byte code + UTF-8 reason); §7.4 code ranges. */
static int close_done(struct ws_decoder *d, struct ws_event *ev, const char **why)
{
    ev->type = WS_EV_CLOSE;
    ev->close_code = WS_CLOSE_NO_STATUS;
    ev->data = d->ctrl;
    ev->len = 0;
    if (d->ctrl_len == 1) {
        *why = "close frame with a 1-byte payload";
        return WS_E_PROTOCOL;
    }
    if (d->ctrl_len >= 2) {
        ev->close_code = (uint16_t)(d->ctrl[0] << 8 | d->ctrl[1]);
        if (!ws_close_code_is_valid(ev->close_code)) {
            *why = "invalid close code";
            return WS_E_PROTOCOL;
        }
        if (!ws_utf8_valid(d->ctrl + 2, d->ctrl_len - 2u)) {
            *why = "invalid UTF-8 in close reason";
            return WS_E_UTF8;
        }
        ev->data = d->ctrl + 2;
        ev->len = d->ctrl_len - 2u;
    }
    d->state = WS_DEC_CLOSED;
    return 0;
}

/* Last frame of a data message: flush the inflater, finish UTF-8 validation, deliver. */
static int message_done(struct ws_decoder *d, struct ws_event *ev, const char **why)
{
    int r;
    if (d->msg_compressed) {
        size_t before = d->msg.len;
        r = d->inflate(d->deflate, NULL, 0, true, &d->msg, why);
        if (r == 0)
            r = inflated(d, before, why);
        if (r == 0)
            r = utf8_check_new(d, why);
        if (r != 0)
            return r;
    }
    if (d->msg_opcode == WS_OP_TEXT && !ws_utf8_complete(&d->utf8)) {
        *why = "incomplete UTF-8 sequence at the end of a text message";
        return WS_E_UTF8;
    }
    ev->type = WS_EV_MESSAGE;
    ev->opcode = (enum ws_opcode)d->msg_opcode;
    ev->compressed = d->msg_compressed;
    ev->data = d->msg.data ? d->msg.data : d->ctrl;
    ev->len = d->msg.len;
    d->in_message = false;
    d->msg_ready_reset = true;
    return 0;
}

/* Payload fully read: produce the frame's event, if any. */
static int frame_done(struct ws_decoder *d, struct ws_event *ev, const char **why)
{
    d->state = WS_DEC_HEADER;
    d->hdr_have = 0;
    switch (d->opcode) {
    case WS_OP_CLOSE:
        return close_done(d, ev, why);
    case WS_OP_PING:
    case WS_OP_PONG:
        ev->type = d->opcode == WS_OP_PING ? WS_EV_PING : WS_EV_PONG;
        ev->data = d->ctrl;
        ev->len = d->ctrl_len;
        return 0;
    }
    if (!d->fin) {
        d->in_message = true;
        return 0;
    }
    return message_done(d, ev, why);
}

/* Copies header bytes (extended length or mask key) into dst until hdr_need are present. */
static size_t collect(struct ws_decoder *d, uint8_t *dst, const uint8_t *in, size_t avail)
{
    size_t n = (size_t)(d->hdr_need - d->hdr_have);
    if (n > avail)
        n = avail;
    memcpy(dst + d->hdr_have, in, n);
    d->hdr_have = (uint8_t)(d->hdr_have + n);
    return n;
}

/* One step of the state machine: consumes some of in[*pos..len) or completes a frame. */
static int step(struct ws_decoder *d, const uint8_t *in, size_t len, size_t *pos, const char **why)
{
    switch (d->state) {
    case WS_DEC_HEADER:
        return header_byte(d, in[(*pos)++], why);
    case WS_DEC_EXTLEN:
        *pos += collect(d, d->hdr, in + *pos, len - *pos);
        return d->hdr_have == d->hdr_need ? extlen_done(d, why) : 0;
    case WS_DEC_MASKKEY:
        *pos += collect(d, d->mask, in + *pos, len - *pos);
        if (d->hdr_have == d->hdr_need) {
            d->mask_pos = 0;
            d->state = WS_DEC_PAYLOAD;
        }
        return 0;
    case WS_DEC_PAYLOAD: {
        size_t n = len - *pos;
        if (n > d->remaining)
            n = (size_t)d->remaining;
        int r = payload_chunk(d, in + *pos, n, why);
        *pos += n;
        d->remaining -= n;
        return r;
    }
    case WS_DEC_CLOSED:
    case WS_DEC_FAILED:
        break;
    }
    return 0;
}

int ws_decoder_feed(struct ws_decoder *d, const uint8_t *in, size_t len, size_t *consumed, struct ws_event *ev, const char **reason)
{
    const char *why = "internal error";
    size_t pos = 0;
    memset(ev, 0, sizeof(*ev));
    *consumed = 0;
    if (d->state == WS_DEC_FAILED) {
        *reason = d->error_reason;
        return d->error;
    }
    if (d->msg_ready_reset) {
        d->msg_ready_reset = false;
        d->msg.len = 0;
        if (d->msg.cap > MSG_KEEP_BYTES)
            ws_buf_deinit(&d->msg);
    }
    if (d->state == WS_DEC_CLOSED) {
        *consumed = len;
        return WS_NEED_MORE;
    }
    for (;;) {
        if (d->state == WS_DEC_PAYLOAD && d->remaining == 0) {
            int r = frame_done(d, ev, &why);
            *consumed = pos;
            if (r != 0)
                return fail(d, r, why, reason);
            if (ev->type != WS_EV_NONE)
                return 0;
        }
        if (pos == len)
            break;
        int r = step(d, in, len, &pos, &why);
        if (r != 0) {
            *consumed = pos;
            return fail(d, r, why, reason);
        }
    }
    *consumed = pos;
    return WS_NEED_MORE;
}

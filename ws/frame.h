/*
 * ws/frame.h — RFC 6455 §5 frame codec, server side: an incremental decoder for client frames that reassembles messages,
 * and encoders for (unmasked) server frames.
 *
 * Decoder: bytes in, one event out per call, no I/O, no clock (wslay's model). Client frames must be masked
 * (§5.1); the decoder validates every rule of §5 (lengths, opcodes, RSV bits, control frames, fragmentation), validates
 * text messages as UTF-8 incrementally (§8.1, failing on the first bad byte even mid-frame), validates close payloads
 * (§5.5.1, §7.4) and enforces `max_message_bytes` on the reassembled — and, with permessage-deflate, inflated — message
 * before buffering it (STYLE.md §3.5). The payload of a MESSAGE event is delivered whole, in a buffer the decoder owns.
 *
 * permessage-deflate (RFC 7692) is plugged in through ws_decoder_set_inflate(): the decoder unmasks each compressed
 * chunk and hands it to the inflate hook (normally ws_deflate_inflate() from ws/deflate.h), which appends the
 * decompressed bytes to the message buffer through ws_buf_reserve(), bounded by max_message_bytes. The frame codec
 * itself never includes zlib.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/error.h"
#include "ws/utf8.h"

/* §5.2 opcodes. */
enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Largest frame header: 2 + 8 (64-bit length); a masked (client) header adds 4. */
#define WS_FRAME_HEADER_MAX        10
#define WS_FRAME_HEADER_MAX_MASKED 14
/* §5.5: control frame payloads are at most 125 bytes. */
#define WS_CONTROL_PAYLOAD_MAX 125
/* A whole server control frame (header 2 + payload 125). */
#define WS_CONTROL_FRAME_MAX 127

/* ------------------------------------------------------------------------------------------------------------------ */
/* Bounded growable byte buffer (the decoder's message buffer; also the output of the inflate hook). */

struct ws_buf {
    uint8_t *data; /* heap, owned by the buffer; NULL while cap == 0 */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
    size_t max;    /* hard bound on len; growing past it fails with WS_E_TOO_BIG */
};

/* Empty buffer bounded by `max` (allocates nothing). */
void ws_buf_init(struct ws_buf *b, size_t max);
/* Frees the storage; idempotent. */
void ws_buf_deinit(struct ws_buf *b);
/*
 * Makes room for `n` more bytes at data + len (grows geometrically, never beyond max). Does not change len: the caller
 * writes then adds to len. Returns 0, WS_E_TOO_BIG when len + n > max (checked before allocating), or -ENOMEM.
 */
int ws_buf_reserve(struct ws_buf *b, size_t n) WS_MUSTCHECK;

/* ------------------------------------------------------------------------------------------------------------------ */
/* Decoder */

struct ws_limits {
    /*
     * Largest message accepted, in bytes, after reassembly and after inflation. Also checked against each frame's
     * declared length as soon as its header is read (so nothing oversize is ever waited for). Must be >= 1;
     * 0 is treated as 1.
     */
    uint64_t max_message_bytes;
    /*
     * permessage-deflate bomb check (DESIGN.md invariant 4): a compressed message whose inflated size has passed
     * inflate_ratio_min_bytes and is more than max_inflate_ratio times the compressed bytes received for it so far fails
     * with WS_E_TOO_BIG ("compression ratio too high"), checked as each chunk is inflated. 0 in either field: no check.
     */
    uint32_t max_inflate_ratio;
    uint64_t inflate_ratio_min_bytes;
};

struct ws_deflate; /* ws/deflate.h; opaque here */

/*
 * The inflate hook (signature of ws_deflate_inflate() in ws/deflate.h). Called with successive unmasked chunks of one
 * compressed message (the concatenated payloads of its frames, RFC 7692 §7.2.2), in order; `fin` is true exactly on
 * the last call for the message (possibly with len == 0), after which the hook must have flushed everything (appending
 * the 00 00 FF FF tail itself) and handled context takeover. Decompressed bytes are appended to `out` via
 * ws_buf_reserve() and out->len. Returns 0, WS_E_TOO_BIG (out->max reached while output remains), WS_E_PAYLOAD
 * (corrupt stream), or -ENOMEM / other negative errno; sets *reason on error. `in` is valid only during the call.
 */
typedef int (*ws_inflate_fn)(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out,
                             const char **reason);

/* Decoder states (wslay's istate). A frame can span reads, so each field of its header has its own state. */
enum ws_decoder_state {
    WS_DEC_HEADER = 0,  /* reading the 2 fixed header bytes */
    WS_DEC_EXTLEN = 1,  /* reading the 16- or 64-bit extended payload length */
    WS_DEC_MASKKEY = 2, /* reading the 4-byte masking key */
    WS_DEC_PAYLOAD = 3, /* reading payload bytes */
    WS_DEC_CLOSED = 4,  /* a CLOSE event was delivered; further input is discarded (RFC 6455 §5.5.1) */
    WS_DEC_FAILED = 5,  /* an error was returned; every later feed returns it again */
};

const char *ws_decoder_state_str(enum ws_decoder_state s);

enum ws_event_type {
    WS_EV_NONE = 0,
    WS_EV_MESSAGE = 1, /* a complete text or binary message: opcode, data, len (text is valid UTF-8) */
    WS_EV_PING = 2,    /* data/len: ping payload (≤125 bytes); answer with ws_frame_pong_encode() */
    WS_EV_PONG = 3,    /* data/len: pong payload */
    WS_EV_CLOSE = 4,   /* close_code (1005 when the frame had no payload), data/len: UTF-8 reason (may be empty) */
};

const char *ws_event_type_str(enum ws_event_type t);

struct ws_event {
    enum ws_event_type type;
    enum ws_opcode opcode; /* MESSAGE: WS_OP_TEXT or WS_OP_BINARY; control events: their opcode */
    bool compressed;       /* MESSAGE: it was sent with RSV1 (permessage-deflate) and has been inflated */
    uint16_t close_code;   /* CLOSE only */
    uint8_t *data;         /* owned by the decoder, writable by the caller; valid until the next ws_decoder_feed() or _deinit() */
    size_t len;
};

/* All fields private: use the functions below. Embedded by value; _init/_deinit. */
struct ws_decoder {
    enum ws_decoder_state state;
    int error; /* sticky result once FAILED */
    const char *error_reason;
    uint64_t max_message;
    uint32_t max_ratio;
    uint64_t ratio_min;
    uint64_t inflated_total; /* bytes the inflate hook produced since _init (ws_decoder_inflated_bytes()) */
    ws_inflate_fn inflate;
    struct ws_deflate *deflate;
    /* current frame */
    uint8_t hdr[8]; /* extended-length bytes being collected */
    uint8_t hdr_have, hdr_need;
    bool fin, rsv1;
    uint8_t opcode;
    uint8_t mask[4];
    uint8_t mask_pos;   /* index of the mask byte for the next payload byte (0..3) */
    uint64_t remaining; /* payload bytes still to read in this frame */
    uint64_t frame_len;
    /* current data message */
    bool in_message; /* a fragmented data message is open (a continuation is expected) */
    bool msg_compressed;
    bool msg_ready_reset; /* the previous MESSAGE event's buffer must be cleared on the next feed */
    uint8_t msg_opcode;
    uint64_t msg_wire_bytes; /* bytes announced by the headers of the current message's frames */
    uint64_t msg_in_bytes;   /* compressed bytes of the current message handed to the inflate hook so far */
    size_t utf8_done;        /* bytes of msg already UTF-8 validated */
    struct ws_utf8 utf8;
    struct ws_buf msg;
    /* current control frame */
    uint8_t ctrl[WS_CONTROL_PAYLOAD_MAX];
    uint8_t ctrl_len;
};

/* Prepares a decoder with the given limits (copied). Allocates nothing. */
void ws_decoder_init(struct ws_decoder *d, const struct ws_limits *lim);
/*
 * Replaces the limits (copied) between two feeds, e.g. when the connection logs in and its bound before login
 * (max_frame_bytes_unauthenticated) becomes max_message_bytes. A frame whose header was already checked keeps going; a
 * message already buffered beyond a lowered max_message_bytes fails at its next byte.
 */
void ws_decoder_set_limits(struct ws_decoder *d, const struct ws_limits *lim);
/* Total bytes the inflate hook has appended since _init(): the front-end's measure of inflation work (budgets, rate). */
uint64_t ws_decoder_inflated_bytes(const struct ws_decoder *d);
/* Frees the message buffer; idempotent. The decoder must be _init()ed again before reuse. */
void ws_decoder_deinit(struct ws_decoder *d);

/*
 * Enables permessage-deflate on this connection (call right after a successful negotiation, before feeding frames):
 * from now on RSV1 is allowed on the first frame of a data message, and such messages are passed through `fn(z, ...)`.
 * Without this call any RSV1 bit is a protocol error. `z` is borrowed and must outlive the decoder's use of it.
 */
void ws_decoder_set_inflate(struct ws_decoder *d, ws_inflate_fn fn, struct ws_deflate *z);

/*
 * Consumes bytes of client frames from in[0..len) until one event is complete or the input is exhausted. *consumed is
 * always set (0..len). Call again with in + *consumed after handling the event.
 *
 * Returns
 *   0             one event in *ev (see struct ws_event for lifetimes); *consumed may be < len;
 *   WS_NEED_MORE  all of the input was consumed (*consumed == len) and no event is complete yet; also returned for all
 *                 input after a CLOSE event (discarded);
 *   WS_E_PROTOCOL (→ 1002) unmasked frame, RSV bit not negotiated (RSV1 only allowed on the first frame of a data
 *                 message with deflate on; RSV2/RSV3 never), unknown opcode, control frame fragmented or > 125 bytes,
 *                 continuation without a message, data frame inside a fragmented message, non-minimal length encoding,
 *                 64-bit length with MSB set, close payload of 1 byte or with an invalid code (§7.4: valid are
 *                 1000-1003, 1007-1014, 3000-4999);
 *   WS_E_UTF8     (→ 1007) text message or close reason not valid UTF-8 (detected at the first bad byte; an incomplete
 *                 sequence at the end of the message also fails);
 *   WS_E_TOO_BIG  (→ 1009) frame or message over max_message_bytes (inflated size included; a frame header announcing
 *                 more is refused before any payload byte is buffered), or a compression ratio over max_inflate_ratio;
 *   WS_E_PAYLOAD  (→ 1007) the inflate hook rejected the compressed data;
 *   -ENOMEM, other negative errno (→ 1011).
 * After an error the decoder is FAILED and returns the same error (with the same *reason) for every later call. *reason
 * is set on every error to a static string usable as the close reason. Use ws_error_close_code() for the code.
 */
int ws_decoder_feed(struct ws_decoder *d, const uint8_t *in, size_t len, size_t *consumed, struct ws_event *ev,
                    const char **reason) WS_MUSTCHECK;

/* Current state, for tests and debugging. */
enum ws_decoder_state ws_decoder_get_state(const struct ws_decoder *d);

/* True when the close code may appear in a close frame on the wire (RFC 6455 §7.4.1/§7.4.2; 1012-1014 accepted). */
bool ws_close_code_is_valid(uint16_t code);

/* ------------------------------------------------------------------------------------------------------------------ */
/* Encoder (server → client frames are never masked, RFC 6455 §5.1) */

/*
 * Writes a frame header (FIN, RSV1, opcode, minimal 7/16/64-bit length, no mask) into out. Returns its length (2, 4 or
 * 10). The payload follows it unchanged. Control opcodes must have fin set and payload_len ≤ 125 (asserted).
 */
size_t ws_frame_header_encode(uint8_t out[WS_FRAME_HEADER_MAX], enum ws_opcode op, bool fin, bool rsv1, uint64_t payload_len);

/*
 * Writes a whole close frame into out: code (big-endian) and the reason truncated to at most 123 bytes at a UTF-8
 * character boundary (invalid UTF-8 in reason is cut at the first bad byte). code 0 writes an empty close frame (no code,
 * no reason). Returns the frame length (2..127).
 */
size_t ws_frame_close_encode(uint8_t out[WS_CONTROL_FRAME_MAX], uint16_t code, const char *reason, size_t reason_len);

/* Writes a whole ping / pong frame; the payload is truncated to 125 bytes. Returns the frame length (2..127). */
size_t ws_frame_ping_encode(uint8_t out[WS_CONTROL_FRAME_MAX], const uint8_t *payload, size_t len);
size_t ws_frame_pong_encode(uint8_t out[WS_CONTROL_FRAME_MAX], const uint8_t *payload, size_t len);

/*
 * Client-side (masked) encoder, for tests, fuzz seeds and tools: writes header + masked payload into out[0..cap).
 * Returns the frame length, or 0 when cap is too small. Any opcode value and RSV bits may be written (rsv is the 3-bit
 * RSV1..RSV3 field), so tests can build invalid frames too; minimal length encoding is always used.
 */
size_t ws_frame_client_encode(uint8_t *out, size_t cap, uint8_t opcode, bool fin, uint8_t rsv, const uint8_t mask[4],
                              const uint8_t *payload, size_t len);

/* XORs buf[0..len) with the 4-byte mask starting at mask index `pos` (0..3), word at a time. Returns the next index. */
unsigned ws_mask_apply(uint8_t *buf, size_t len, const uint8_t mask[4], unsigned pos);

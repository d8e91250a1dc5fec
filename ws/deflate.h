/*
 * ws/deflate.h — permessage-deflate (RFC 7692), server side: offer negotiation, message inflate and deflate.
 *
 * Three parts:
 *  - ws_deflate_negotiate() reads a client's Sec-WebSocket-Extensions value, picks the first acceptable
 *    permessage-deflate offer under the server's `struct ws_deflate_config`, and writes the response value for the 101
 *    reply (ws_handshake_response()'s `extensions` argument). The agreed parameters land in `struct ws_deflate_params`.
 *  - `struct ws_deflate` holds the per-connection zlib streams built from those parameters. ws_deflate_inflate() turns
 *    the payloads of one compressed message (RSV1 set on its first frame), fed in any number of chunks, into the
 *    message bytes appended to a `struct ws_buf`; ws_deflate_compress() turns one outgoing message into the payload to
 *    send with RSV1 set.
 * `struct ws_buf` (ws/frame.h) is the frame decoder's bounded message buffer: inflated bytes go straight into it, and
 * ws_deflate_inflate() has the signature of ws/frame.h's ws_inflate_fn, so it plugs into ws_decoder_set_inflate().
 *
 * Memory: the zlib streams are created lazily, the inflater on the first compressed message received and the deflater on
 * the first message compressed, so a connection that never uses compression costs only sizeof(struct ws_deflate) (about
 * 60 bytes); a connection that resets its compressor after every message compresses with its thread's shared stream
 * (ws_deflate_set_shared()) and never holds one.
 * Nothing here does I/O, logs, reads a clock or keeps globals. This is the only file pair that includes <zlib.h>.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/error.h"
#include "ws/frame.h" /* struct ws_buf, ws_buf_reserve() */

/* Extension token (RFC 7692 §7). */
#define WS_DEFLATE_TOKEN "permessage-deflate"
/* Largest response value ws_deflate_negotiate() can write (all four parameters), NUL included. */
#define WS_DEFLATE_RESPONSE_MAX 160

/* ---------------------------------------------------------------------------------------------------------------- */
/* Configuration and negotiation                                                                                    */
/* ---------------------------------------------------------------------------------------------------------------- */

/* Server preferences (from conf/). ws_deflate_config_init() gives the defaults shown. */
struct ws_deflate_config {
    bool enabled;                    /* false: every offer is declined (default true) */
    bool server_no_context_takeover; /* always reset our compressor after each message (default false) */
    bool client_no_context_takeover; /* always ask the client to reset its compressor per message (default false) */
    int server_max_window_bits;      /* 8..15: largest LZ77 window our compressor uses (default 15) */
    int client_max_window_bits;      /* 8..15: largest window we let the client use, when it allows a limit (default 15) */
    int level;                       /* zlib level 0..9, or -1 for zlib's default (default 6) */
    int mem_level;                   /* zlib memLevel 1..9 (default 8) */
    size_t threshold_bytes;          /* messages shorter than this are sent uncompressed (default 128) */
    size_t max_message_bytes;        /* cap on an inflated message; 0 = no cap besides the ws_buf's max (default 16 MiB) */
};

void ws_deflate_config_init(struct ws_deflate_config *cfg);

/*
 * The agreed parameters (RFC 7692 §7.1), filled by ws_deflate_negotiate(). `enabled` false means no permessage-deflate
 * on this connection: RSV1 must then be rejected by the frame decoder and no struct ws_deflate is needed.
 */
struct ws_deflate_params {
    bool enabled;
    bool server_no_context_takeover; /* we reset our compressor after every message */
    bool client_no_context_takeover; /* the client resets its compressor: we reset our inflater after every message */
    int server_max_window_bits;      /* 8..15, our compressor's window (8 is produced with zlib's 9, see deflate.c) */
    int client_max_window_bits;      /* 8..15, the client's window (15 when it was not limited) */
};

/*
 * Parses one Sec-WebSocket-Extensions value offer_header[0..len) (RFC 6455 §9.1: comma-separated offers, each a token
 * followed by `; name[=value]` parameters, values being tokens or quoted-strings) and accepts the first acceptable
 * "permessage-deflate" offer (token compared case-insensitively).
 *
 * An offer is skipped (and the next one considered) when it is syntactically broken, has an unknown parameter, a
 * parameter given twice, a value on a parameter that takes none, or a window-bits value that is not 8..15 in decimal
 * without leading zeros (quoted values are unquoted first, RFC 7692 §7.1). Other extensions are ignored. When the client
 * sent several Sec-WebSocket-Extensions lines, call this once per line in order and stop at the first acceptance.
 *
 * Acceptance rules (RFC 7692 §7.1.1-7.1.2):
 *  - server_no_context_takeover is in the response when offered or when cfg prefers it;
 *  - client_no_context_takeover is in the response when offered or when cfg prefers it;
 *  - server_max_window_bits = min(offered value or 15, cfg value); in the response only when offered (a compressor may
 *    always use a smaller window than the peer allows without announcing it);
 *  - client_max_window_bits: when offered (with or without value) the response carries min(value or 15, cfg value);
 *    when not offered the client keeps 15 and the response carries nothing.
 *
 * On success writes the NUL-terminated response value, e.g.
 * "permessage-deflate; server_no_context_takeover; client_max_window_bits=15", into response[0..cap) with its length
 * in *response_len, and fills *out with enabled = true. When no offer is acceptable (or cfg->enabled is false, or
 * offer_header is NULL/empty) returns 0 with out->enabled = false, *response_len = 0 and response = "" (when cap > 0).
 *
 * Returns 0, -ENOSPC when cap is too small for the response (WS_DEFLATE_RESPONSE_MAX always suffices), -EINVAL on NULL
 * out/response/response_len or an invalid cfg. Never reads outside offer_header[0..len).
 */
int ws_deflate_negotiate(const char *offer_header, size_t len, const struct ws_deflate_config *cfg, struct ws_deflate_params *out,
                         char *response, size_t cap, size_t *response_len) WS_MUSTCHECK;

/* ---------------------------------------------------------------------------------------------------------------- */
/* Per-connection compression state                                                                                 */
/* ---------------------------------------------------------------------------------------------------------------- */

struct ws_deflate;

/*
 * Creates the state for one connection. `params` must have enabled = true (from ws_deflate_negotiate()); `cfg` gives
 * level, mem_level, threshold_bytes and max_message_bytes and is copied (it need not outlive the call).
 * Returns 0 and *out, -EINVAL on bad arguments, -ENOMEM.
 */
int ws_deflate_new(const struct ws_deflate_params *params, const struct ws_deflate_config *cfg,
                   struct ws_deflate **out) WS_MUSTCHECK;

/* Frees everything. NULL is a no-op. */
void ws_deflate_free(struct ws_deflate *z);

/*
 * Inflates the next chunk of a compressed message's payload (already unmasked), appending the output to `out`. Call it
 * for every payload byte of every frame of the message, in order, in chunks of any size (len 0 allowed), and with
 * fin = true on the last call of the message (typically the end of the FIN frame's payload): that call also feeds the
 * 00 00 FF FF tail (RFC 7692 §7.2.2), checks the message ended on a block boundary and, with client_no_context_takeover,
 * resets the inflater. A message with an empty compressed payload is the empty message. DEFLATE blocks with BFINAL set
 * are accepted (§7.2.3.4): the window is carried over to the following blocks and messages.
 *
 * Inflated bytes are bounded by out->max and by cfg->max_message_bytes counted over the whole message (out->len before
 * the first call of the message is not counted against the latter); crossing either bound is detected as soon as one byte
 * too many would be produced, so a decompression bomb costs at most the bound.
 *
 * Returns
 *   0             chunk consumed (and, with fin, the message is complete in `out`);
 *   WS_E_TOO_BIG  inflated message over a bound → close 1009;
 *   WS_E_PAYLOAD  corrupt DEFLATE data, a message not ending on a block boundary, or more than 8 DEFLATE streams ended
 *                 (BFINAL) in one message (each end costs a copy of the window: a CPU bound) → close 1007;
 *   -ENOMEM       allocation failure (zlib state or `out`) → close 1011.
 * After an error the connection must be closed: the state is unusable for further messages (ws_deflate_free() is safe).
 * *reason is set to a static string on every non-zero return (reason may be NULL).
 */
int ws_deflate_inflate(struct ws_deflate *z, const uint8_t *in, size_t len, bool fin, struct ws_buf *out,
                       const char **reason) WS_MUSTCHECK;

/*
 * True when a message of `len` bytes should be sent compressed (len >= threshold_bytes). Control frames are never
 * compressed (RFC 7692 §6.1); that is the caller's rule.
 */
bool ws_deflate_wants(const struct ws_deflate *z, size_t len);

/*
 * Compresses one whole message in[0..len) (len 0 allowed), appending to `out` the payload to send with RSV1 set on the
 * first frame: DEFLATE blocks ended with Z_SYNC_FLUSH and the trailing 00 00 FF FF removed (RFC 7692 §7.2.1); the empty
 * message gives the single byte 00 (§7.2.3.6). The output is a whole message: fragment it afterwards if needed.
 * With server_no_context_takeover the compressor is reset after each message; otherwise later messages may refer back
 * to earlier ones, so messages must be sent in the order they were compressed.
 *
 * Returns 0, WS_E_TOO_BIG when `out` would exceed out->max, -ENOMEM, -EIO on an internal zlib error. On any error
 * out->len is restored and the compressor is reset (a sender may always drop its history, the peer is unaffected), so
 * the state stays usable. *reason is set to a static string on every non-zero return (reason may be NULL).
 */
int ws_deflate_compress(struct ws_deflate *z, const uint8_t *in, size_t len, struct ws_buf *out, const char **reason) WS_MUSTCHECK;

/*
 * A compressor shared by the connections of one thread that reset theirs after every message
 * (server_no_context_takeover): such a connection keeps no history, so it needs no deflate state of its own between
 * messages and one stream serves them all, one message at a time (a message is compressed whole by one call). The
 * caller owns it (one per thread: nothing here keeps globals) and frees it after every connection using it.
 */
struct ws_deflate_shared;
struct ws_deflate_shared *ws_deflate_shared_new(void);     /* NULL when out of memory */
void ws_deflate_shared_free(struct ws_deflate_shared *sh); /* NULL is a no-op */
/* Compress z's messages with `sh` when z resets after every message (otherwise z's own stream); NULL: z's own. */
void ws_deflate_set_shared(struct ws_deflate *z, struct ws_deflate_shared *sh);
/* Whether z holds a zlib stream of its own now (tests: what an idle connection keeps). */
bool ws_deflate_holds_state(const struct ws_deflate *z);

/* The parameters the state was created with. */
const struct ws_deflate_params *ws_deflate_params(const struct ws_deflate *z);

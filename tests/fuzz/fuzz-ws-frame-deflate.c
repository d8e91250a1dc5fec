/*
 * tests/fuzz/fuzz-ws-frame-deflate.c — the frame decoder with permessage-deflate negotiated, plus ws/deflate.c alone.
 *
 * Input layout: byte 0 picks the agreed parameters (bit 0 client_no_context_takeover, bit 1 server_no_context_takeover,
 * bits 2-4 client window 8..15, bits 5-7 server window 8..15), byte 1 the read size used to feed the decoder (0 = all
 * at once), the rest is client frames. Three things are checked on the same bytes:
 *  1. the decoder (ws/frame.h) fed in chunks, with ws_deflate_inflate() as its inflate hook: no crash, no over-read,
 *     messages within max_message_bytes; every compressed message is re-compressed and inflated again and must come
 *     back identical (ws_deflate_compress ∘ ws_deflate_inflate is the identity);
 *  2. the raw bytes inflated directly as two messages (arbitrary DEFLATE data): only 0 / WS_E_PAYLOAD / WS_E_TOO_BIG;
 *  3. the raw bytes compressed then inflated: identical;
 *  4. the raw bytes as a Sec-WebSocket-Extensions value: negotiation never over-reads and an acceptance always yields a
 *     response that starts with the token and that ws_deflate_new() accepts.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/deflate.h"
#include "ws/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MESSAGE (1u << 16)

static void fuzz_assert(bool ok)
{
    if (!ok)
        abort();
}

static struct ws_deflate *make(uint8_t flags)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    cfg.max_message_bytes = MAX_MESSAGE;
    struct ws_deflate_params p = {
        .enabled = true,
        .client_no_context_takeover = flags & 1,
        .server_no_context_takeover = (flags >> 1) & 1,
        .client_max_window_bits = 8 + ((flags >> 2) & 7),
        .server_max_window_bits = 8 + ((flags >> 5) & 7),
    };
    struct ws_deflate *z = NULL;
    if (ws_deflate_new(&p, &cfg, &z) != 0)
        abort();
    return z;
}

/* The receiver matching make(flags) as a sender: its window and context rule are the sender's. */
static struct ws_deflate *make_rx(uint8_t flags)
{
    uint8_t sbits = (flags >> 5) & 7, snct = (flags >> 1) & 1;
    return make((uint8_t)((flags & 0xe2) | (sbits << 2) | snct));
}

/* Compresses msg with tx, inflates it with rx, and checks the bytes come back. */
static void check_round_trip(struct ws_deflate *tx, struct ws_deflate *rx, const uint8_t *msg, size_t len)
{
    struct ws_buf wire, back;
    ws_buf_init(&wire, SIZE_MAX);
    ws_buf_init(&back, MAX_MESSAGE);
    const char *reason = NULL;
    int r = ws_deflate_compress(tx, msg, len, &wire, &reason);
    fuzz_assert(r == 0 || r == -ENOMEM);
    if (r == 0) {
        r = ws_deflate_inflate(rx, wire.data, wire.len, true, &back, &reason);
        fuzz_assert(r == 0 || r == -ENOMEM);
        fuzz_assert(r != 0 || (back.len == len && (len == 0 || memcmp(back.data, msg, len) == 0)));
    }
    ws_buf_deinit(&wire);
    ws_buf_deinit(&back);
}

static void run_decoder(uint8_t flags, size_t step, const uint8_t *in, size_t len)
{
    struct ws_deflate *z = make(flags), *tx = make(flags), *rx = make_rx(flags);
    struct ws_limits lim = {.max_message_bytes = MAX_MESSAGE};
    struct ws_decoder d;
    ws_decoder_init(&d, &lim);
    ws_decoder_set_inflate(&d, ws_deflate_inflate, z);
    size_t off = 0;
    for (unsigned guard = 0; off < len && guard < 100000; guard++) {
        size_t n = step && step < len - off ? step : len - off;
        size_t used = 0;
        struct ws_event ev;
        const char *reason = NULL;
        int r = ws_decoder_feed(&d, in + off, n, &used, &ev, &reason);
        fuzz_assert(used <= n);
        off += used;
        if (r != 0 && r != WS_NEED_MORE) {
            fuzz_assert(reason != NULL);
            break;
        }
        if (r == 0 && ev.type == WS_EV_MESSAGE) {
            fuzz_assert(ev.len <= MAX_MESSAGE);
            if (ev.compressed)
                check_round_trip(tx, rx, ev.data, ev.len);
        }
    }
    ws_decoder_deinit(&d);
    ws_deflate_free(z);
    ws_deflate_free(tx);
    ws_deflate_free(rx);
}

static void run_inflate(uint8_t flags, size_t step, const uint8_t *in, size_t len)
{
    struct ws_deflate *z = make(flags);
    struct ws_buf out;
    ws_buf_init(&out, MAX_MESSAGE);
    for (int msg = 0; msg < 2; msg++) {
        out.len = 0;
        size_t off = 0;
        int r = 0;
        do {
            size_t n = step && step < len - off ? step : len - off;
            const char *reason = NULL;
            r = ws_deflate_inflate(z, in + off, n, off + n == len, &out, &reason);
            fuzz_assert(r == 0 || r == WS_E_PAYLOAD || r == WS_E_TOO_BIG || r == -ENOMEM);
            fuzz_assert(out.len <= MAX_MESSAGE);
            off += n;
        } while (r == 0 && off < len);
        if (r != 0)
            break;
    }
    ws_buf_deinit(&out);
    ws_deflate_free(z);
}

static void run_negotiate(uint8_t flags, const uint8_t *in, size_t len)
{
    struct ws_deflate_config cfg;
    ws_deflate_config_init(&cfg);
    cfg.server_no_context_takeover = flags & 1;
    cfg.client_no_context_takeover = (flags >> 1) & 1;
    cfg.client_max_window_bits = 8 + ((flags >> 2) & 7);
    cfg.server_max_window_bits = 8 + ((flags >> 5) & 7);
    struct ws_deflate_params p;
    char resp[WS_DEFLATE_RESPONSE_MAX];
    size_t n = 0;
    fuzz_assert(ws_deflate_negotiate((const char *)in, len, &cfg, &p, resp, sizeof resp, &n) == 0);
    fuzz_assert(n < sizeof resp && strlen(resp) == n);
    if (!p.enabled) {
        fuzz_assert(n == 0);
        return;
    }
    fuzz_assert(strncmp(resp, WS_DEFLATE_TOKEN, strlen(WS_DEFLATE_TOKEN)) == 0);
    fuzz_assert(p.server_max_window_bits <= cfg.server_max_window_bits);
    struct ws_deflate *z = NULL;
    fuzz_assert(ws_deflate_new(&p, &cfg, &z) == 0);
    ws_deflate_free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t step = data[1];
    run_decoder(flags, step, data + 2, size - 2);
    run_inflate(flags, step, data + 2, size - 2);
    run_negotiate(flags, data + 2, size - 2);
    struct ws_deflate *tx = make(flags), *rx = make_rx(flags);
    check_round_trip(tx, rx, data + 2, size - 2 < MAX_MESSAGE ? size - 2 : MAX_MESSAGE);
    check_round_trip(tx, rx, data + 2, (size - 2) / 2); /* a second message: exercises context takeover */
    ws_deflate_free(tx);
    ws_deflate_free(rx);
    return 0;
}

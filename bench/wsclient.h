/*
 * bench/wsclient.h — the client side of RFC 6455 that ws/ (a server-side codec) does not provide: the opening
 * handshake request and the check of the server's 101 reply (§4.1), and a reader for server frames, which are never
 * masked (§5.1) and which ws/frame.h's decoder rightly refuses. Client frames are written with ws/frame.h's
 * ws_frame_client_encode(). No I/O, no allocation: bytes in, results out.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A random Sec-WebSocket-Key (base64 of 16 bytes, 24 characters) plus NUL. */
#define BENCH_WS_KEY_LEN 24

/*
 * Writes "GET path HTTP/1.1" with Host, Upgrade, Connection, Sec-WebSocket-Key (key, from bench_ws_key()),
 * Sec-WebSocket-Version: 13, Sec-WebSocket-Protocol: protocols (e.g. "v12.stomp") and, when deflate is true, an offer
 * of permessage-deflate. Returns the length, or 0 when cap is too small.
 */
size_t bench_ws_request(char *out, size_t cap, const char *host, const char *path, const char *key, const char *protocols,
                        bool deflate);
/* Fills key[0..24] with base64 of 16 bytes from `rnd` and a NUL. */
void bench_ws_key(char key[BENCH_WS_KEY_LEN + 1], uint64_t rnd[2]);

/*
 * Checks the server's reply in in[0..len): returns 1 while the blank line has not arrived, 0 for a "101" whose
 * Sec-WebSocket-Accept matches `key` (*consumed = the reply's length, what follows are frames; *deflate set when the
 * server accepted permessage-deflate), -1 otherwise with *reason (the status line, or what is wrong).
 */
int bench_ws_response(const char *in, size_t len, const char *key, size_t *consumed, bool *deflate, const char **reason);

/* One server frame, payload borrowed from the input. */
struct bench_ws_frame {
    uint8_t opcode;
    bool fin;
    bool rsv1;
    const uint8_t *payload;
    size_t len;
};

/*
 * Reads one whole frame at the start of in[0..len): 0 with *f and *consumed (header + payload), 1 when more bytes are
 * needed, -1 on a frame no server may send (masked, RSV2/RSV3, length over max_payload, 64-bit length with the MSB set)
 * with *reason.
 */
int bench_ws_frame_read(const uint8_t *in, size_t len, uint64_t max_payload, size_t *consumed, struct bench_ws_frame *f,
                        const char **reason);

/*
 * stomp/negotiate.h — STOMP version and heart-beat negotiation, and the heart-beat tracker (pure: time is passed in).
 *
 * Typical server flow on CONNECT/STOMP (STOMP 1.2 "Protocol Negotiation", "Heart-beating"):
 *     av = stomp_frame_header(&f, "accept-version");
 *     r = stomp_version_negotiate(av ? av->value : NULL, av ? av->value_len : 0, STOMP_VERSIONS_ALL, &v, &reason);
 *     if (r) → ERROR (message: reason, version: stomp_version_list_str(STOMP_VERSIONS_ALL)) + close
 *     hb = stomp_frame_header(&f, "heart-beat");
 *     r = stomp_heartbeat_parse(hb ? hb->value : NULL, hb ? hb->value_len : 0, &cx, &cy, &reason);  → ERROR on r
 *     stomp_heartbeat_negotiate(cx, cy, sx, sy, min_ms, &send_ms, &recv_ms);
 *     CONNECTED carries "version:<stomp_version_str(v)>" and "heart-beat:<send_ms>,<recv_ms>"
 *     stomp_parser_set_version(&parser, v);
 *     stomp_heartbeat_init(&tracker, send_ms, recv_ms, 200, now_ms);
 * Advertising the negotiated values (not sx,sy) makes the client compute the same intervals: the client sends every
 * max(cx, recv_ms) = recv_ms and expects every max(cy, send_ms) = send_ms.
 *
 * Then on every loop pass: stomp_heartbeat_received() when any byte came in, stomp_heartbeat_sent() when any byte went
 * out, stomp_heartbeat_tick() when the timer from stomp_heartbeat_next_deadline() fires.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stomp/error.h"
#include "stomp/frame.h"

/*
 * Pick the highest version listed in an `accept-version` value (comma-separated, e.g. "1.0,1.1,1.2") that is also in
 * `supported_mask` (STOMP_VERSION_BIT()s). `value == NULL` means the header is absent: STOMP 1.0. Blanks around a token
 * are ignored; unknown tokens ("1.3", "2.0", "") are ignored, as the spec lets a client list versions the server does
 * not know.
 * Returns 0 and *out, or STOMP_E_VERSION with *reason ("Supported protocol versions are 1.0,1.1,1.2" for the full
 * mask) when nothing is in common (an empty value included).
 */
STOMP_MUSTCHECK int stomp_version_negotiate(const char *value, size_t len, unsigned supported_mask, enum stomp_version *out,
                                            const char **reason);

/*
 * Comma-separated list of the versions in `mask`, lowest first ("1.0,1.1,1.2"), for the `version` header of an ERROR
 * frame after a failed negotiation. Static string; "" for an empty mask. Never NULL.
 */
const char *stomp_version_list_str(unsigned mask);

/*
 * Parse a `heart-beat` value "cx,cy": two non-negative decimal integers in milliseconds, no sign, no spaces, each
 * <= UINT32_MAX. `value == NULL` means the header is absent: 0,0 (no heart-beats).
 * Returns 0, or STOMP_E_PROTOCOL with *reason ("invalid heart-beat header") and *cx, *cy untouched.
 */
STOMP_MUSTCHECK int stomp_heartbeat_parse(const char *value, size_t len, uint32_t *cx, uint32_t *cy, const char **reason);

/*
 * STOMP 1.2 "Heart-beating": the client offers `cx` (it can send every cx ms; 0 = cannot) and `cy` (it wants to receive
 * every cy ms; 0 = does not want), the server has `sx`/`sy` in the same sense.
 *   *send_ms (server → client) = 0 if sx == 0 or cy == 0, else max(sx, cy, min_ms);
 *   *recv_ms (client → server) = 0 if cx == 0 or sy == 0, else max(cx, sy, min_ms).
 * `min_ms` is the server's floor: a client asking for 10 ms does not get 10 ms.
 */
void stomp_heartbeat_negotiate(uint32_t cx, uint32_t cy, uint32_t sx, uint32_t sy, uint32_t min_ms, uint32_t *send_ms,
                               uint32_t *recv_ms);

/* Heart-beat tracker for one connection. Embed it; fields are private. Times are milliseconds on any monotonic clock. */
struct stomp_heartbeat {
    uint64_t send_ms;         /* 0: we do not send heart-beats */
    uint64_t recv_timeout_ms; /* 0: we do not expect any; else recv_ms * tolerance_pct / 100 */
    uint64_t last_sent;
    uint64_t last_received;
};

/*
 * Start tracking at `now_ms` (counts as both last sent and last received). `tolerance_pct` scales the receive interval
 * into the silence allowed before STOMP_E_HEARTBEAT_TIMEOUT (200 = twice the interval, like RabbitMQ's 2-3x; values
 * below 100 are raised to 100, since the spec asks receivers to be lenient, never stricter).
 */
void stomp_heartbeat_init(struct stomp_heartbeat *hb, uint32_t send_ms, uint32_t recv_ms, unsigned tolerance_pct, uint64_t now_ms);
/* Anything (frame or heart-beat EOL) was written to the peer at now_ms. */
void stomp_heartbeat_sent(struct stomp_heartbeat *hb, uint64_t now_ms);
/* Anything (frame bytes or heart-beat EOL) arrived from the peer at now_ms. */
void stomp_heartbeat_received(struct stomp_heartbeat *hb, uint64_t now_ms);

/*
 * Check at now_ms. *send_beat = true when sending is on and nothing was sent for send_ms or more: the caller sends an
 * EOL ("\n") and calls stomp_heartbeat_sent(). Returns STOMP_E_HEARTBEAT_TIMEOUT (with *send_beat still set) when
 * receiving is on and now_ms >= last_received + recv_timeout_ms, else 0. A clock that went backwards counts as no time
 * elapsed.
 */
STOMP_MUSTCHECK int stomp_heartbeat_tick(struct stomp_heartbeat *hb, uint64_t now_ms, bool *send_beat);

/*
 * Earliest time at which stomp_heartbeat_tick() has something to do (the next beat to send or the receive deadline),
 * or UINT64_MAX when both directions are off.
 */
uint64_t stomp_heartbeat_next_deadline(const struct stomp_heartbeat *hb);

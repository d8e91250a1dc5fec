/*
 * bridge/peer.h — what warren can tell from a client's address string, the "host:port" form bridge/acceptor.c makes
 * (`1.2.3.4:5678`, `[::1]:5678`) and every log line and session carries. Pure: no I/O, no allocation.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * True when `peer` is a loopback address: 127.0.0.0/8, ::1, or an IPv4-mapped 127.x address (::ffff:127.0.0.1, what a
 * dual-stack listener on :: sees for an IPv4 loopback client). Anything else, including NULL, "?" and strings that do
 * not parse, is not loopback: the answer fails closed, since it decides whether a loopback-only user may log in
 * (conf loopback_users).
 */
bool peer_is_loopback(const char *peer);

/*
 * The bytes that stand for the client behind `peer`, for per-client accounting (bridge/throttle.c): an IPv4 address (or
 * an IPv4-mapped IPv6 one) is its 4 bytes; an IPv6 address its /64 prefix, 8 bytes (one subscriber's network: a client
 * holds as many addresses of it as it likes). Returns the length, 0 when `peer` does not parse.
 */
size_t peer_client_key(const char *peer, uint8_t out[16]);

/* The same from a socket address (the acceptor's per-address count, max_connections_per_ip). */
struct sockaddr;
size_t peer_addr_key(const struct sockaddr *sa, uint8_t out[16]);

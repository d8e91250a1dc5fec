/*
 * bridge/peer.h — what warren can tell from a client's address string, the "host:port" form bridge/acceptor.c makes
 * (`1.2.3.4:5678`, `[::1]:5678`) and every log line and session carries. Pure: no I/O, no allocation.
 */
#pragma once

#include <stdbool.h>

/*
 * True when `peer` is a loopback address: 127.0.0.0/8, ::1, or an IPv4-mapped 127.x address (::ffff:127.0.0.1, what a
 * dual-stack listener on :: sees for an IPv4 loopback client). Anything else, including NULL, "?" and strings that do
 * not parse, is not loopback: the answer fails closed, since it decides whether a loopback-only user may log in
 * (conf loopback_users).
 */
bool peer_is_loopback(const char *peer);

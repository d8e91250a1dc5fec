/*
 * stomp/error.h — result codes shared by every stomp/ function (frame parser, serialiser, negotiation, heart-beats).
 *
 * House convention (STYLE.md §3.4): 0 is success, a positive `enum stomp_result` is an expected, documented outcome (the
 * peer broke a rule, or "need more input"), and a negative errno means *we* failed (stomp/ itself never allocates, so in
 * practice only the positive codes occur). Functions that can fail because of peer input also set `*reason` to a static
 * string, written to be sent as-is as the `message` header of a STOMP ERROR frame; the connection is closed after that
 * ERROR (DESIGN.md: an ERROR frame is always followed by closing the connection).
 */
#pragma once

#if defined(__GNUC__)
#define STOMP_MUSTCHECK __attribute__((warn_unused_result))
#else
#define STOMP_MUSTCHECK
#endif

enum stomp_result {
    STOMP_OK = 0,
    STOMP_NEED_MORE = 1,           /* parser: no complete frame yet; grow the buffer and feed again */
    STOMP_HEARTBEAT = 2,           /* parser: *consumed bytes of EOLs (heart-beats) between frames; drop them, feed again */
    STOMP_E_PROTOCOL = 3,          /* malformed input (bad command, header, escape, body) → ERROR + close */
    STOMP_E_TOO_BIG = 4,           /* a struct stomp_limits bound was exceeded → ERROR + close */
    STOMP_E_VERSION = 5,           /* version negotiation: no common version → ERROR (version header) + close */
    STOMP_E_HEARTBEAT_TIMEOUT = 6, /* the peer was silent for longer than the agreed heart-beat interval allows → close */
    STOMP_E_NOSPACE = 7,           /* serialiser: the output buffer is too small; the needed size was reported */
    STOMP_E_COMMAND = 8,           /* parser: the command line is not a STOMP command → ERROR 'Bad command' + close */
};

/* Short static name of a result ("STOMP_E_PROTOCOL", "-ENOMEM", ...), for logs and tests. Never NULL. */
const char *stomp_error_str(int err);

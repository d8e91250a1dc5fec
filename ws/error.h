/*
 * ws/error.h — result codes shared by every ws/ function (handshake, frame codec, UTF-8, permessage-deflate).
 *
 * House convention (STYLE.md §3.4): 0 is success, a positive `enum ws_result` is an expected, documented outcome caused by
 * the peer (or "need more input"), and a negative errno (-ENOMEM, -ENOSPC) means *we* failed. Every function that returns
 * one of these also sets `*reason` to a static string suitable as a WebSocket close reason or an HTTP error body.
 * ws_error_close_code() maps a result to the RFC 6455 §7.4.1 close code to send before closing.
 */
#pragma once

#include <stdint.h>

#if defined(__GNUC__)
#define WS_MUSTCHECK __attribute__((warn_unused_result))
#else
#define WS_MUSTCHECK
#endif

enum ws_result {
    WS_OK = 0,
    WS_NEED_MORE = 1,  /* all input consumed, no complete unit yet: feed more bytes */
    WS_E_PROTOCOL = 2, /* RFC 6455 protocol violation by the peer → close 1002 */
    WS_E_UTF8 = 3,     /* text message or close reason is not valid UTF-8 → close 1007 */
    WS_E_PAYLOAD = 4,  /* payload data inconsistent with the message type (e.g. corrupt deflate stream) → close 1007 */
    WS_E_TOO_BIG = 5,  /* message (inflated size included) over max_message_bytes → close 1009 */
    WS_E_HTTP = 6,     /* handshake rejected: answer with req->status (ws/handshake.h) and close */
};

/* RFC 6455 §7.4.1 close codes used by ws/. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never sent on the wire: reported when a close frame carries no code */
    WS_CLOSE_ABNORMAL = 1006,  /* never sent on the wire */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
};

/*
 * Close code to send for a result: WS_E_PROTOCOL and WS_E_HTTP → 1002, WS_E_UTF8 and WS_E_PAYLOAD → 1007,
 * WS_E_TOO_BIG → 1009, any negative errno → 1011, 0 → 1000. WS_NEED_MORE is not an error; it maps to 1000.
 */
uint16_t ws_error_close_code(int err);

/* Short static name of a result ("WS_E_PROTOCOL", "-ENOMEM"...), for logs and tests. Never NULL. */
const char *ws_error_str(int err);

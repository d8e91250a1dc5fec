/*
 * ws/error.c — mapping of ws/ result codes to RFC 6455 §7.4.1 close codes and printable names.
 *
 * Kept apart from the codecs so that the handshake, the frame decoder and permessage-deflate share one table.
 */
#include "ws/error.h"

#include <errno.h>

uint16_t ws_error_close_code(int err)
{
    if (err < 0)
        return WS_CLOSE_INTERNAL;
    switch (err) {
    case WS_OK:
    case WS_NEED_MORE:
        return WS_CLOSE_NORMAL;
    case WS_E_PROTOCOL:
    case WS_E_HTTP:
        return WS_CLOSE_PROTOCOL;
    case WS_E_UTF8:
    case WS_E_PAYLOAD:
        return WS_CLOSE_BAD_DATA;
    case WS_E_TOO_BIG:
        return WS_CLOSE_TOO_BIG;
    }
    return WS_CLOSE_INTERNAL;
}

const char *ws_error_str(int err)
{
    switch (err) {
    case WS_OK:
        return "WS_OK";
    case WS_NEED_MORE:
        return "WS_NEED_MORE";
    case WS_E_PROTOCOL:
        return "WS_E_PROTOCOL";
    case WS_E_UTF8:
        return "WS_E_UTF8";
    case WS_E_PAYLOAD:
        return "WS_E_PAYLOAD";
    case WS_E_TOO_BIG:
        return "WS_E_TOO_BIG";
    case WS_E_HTTP:
        return "WS_E_HTTP";
    case -ENOMEM:
        return "-ENOMEM";
    case -ENOSPC:
        return "-ENOSPC";
    case -EINVAL:
        return "-EINVAL";
    case -EIO:
        return "-EIO";
    }
    return err < 0 ? "-errno" : "unknown";
}

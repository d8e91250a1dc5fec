/*
 * stomp/error.c — names of the stomp/ result codes, for logs and test output.
 */
#include "stomp/error.h"

#include <errno.h>

const char *stomp_error_str(int err)
{
    switch (err) {
    case STOMP_OK:
        return "STOMP_OK";
    case STOMP_NEED_MORE:
        return "STOMP_NEED_MORE";
    case STOMP_HEARTBEAT:
        return "STOMP_HEARTBEAT";
    case STOMP_E_PROTOCOL:
        return "STOMP_E_PROTOCOL";
    case STOMP_E_TOO_BIG:
        return "STOMP_E_TOO_BIG";
    case STOMP_E_VERSION:
        return "STOMP_E_VERSION";
    case STOMP_E_HEARTBEAT_TIMEOUT:
        return "STOMP_E_HEARTBEAT_TIMEOUT";
    case STOMP_E_NOSPACE:
        return "STOMP_E_NOSPACE";
    case STOMP_E_COMMAND:
        return "STOMP_E_COMMAND";
    case -ENOMEM:
        return "-ENOMEM";
    case -EINVAL:
        return "-EINVAL";
    default:
        return err < 0 ? "-errno" : "STOMP_E_?";
    }
}

/*
 * bridge/upstream-err.c — the names of enum upstream_err (bridge/upstream.h). Apart from the upstream so that the session,
 * which shows them in ERROR bodies, gets the same words over the real upstream and over its unit tests' fake.
 */
#include "bridge/upstream.h"

const char *upstream_err_str(enum upstream_err e)
{
    switch (e) {
    case UPSTREAM_OK:
        return "ok";
    case UPSTREAM_ERR_CHANNEL:
        return "channel closed by the broker";
    case UPSTREAM_ERR_CONNECTION:
        return "broker connection lost";
    case UPSTREAM_ERR_ACCESS_REFUSED:
        return "access refused";
    case UPSTREAM_ERR_UNREACHABLE:
        return "broker unreachable";
    case UPSTREAM_ERR_NACK:
        return "message refused by the broker";
    case UPSTREAM_ERR_NOMEM:
        return "out of memory";
    case UPSTREAM_ERR_CLOSED:
        return "channel closed";
    case UPSTREAM_ERR_LIMIT:
        return "too many broker connections";
    }
    return "unknown";
}

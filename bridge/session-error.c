/*
 * bridge/session-error.c — builds every ERROR frame from the table of bridge/session-errors.h, and fails the session:
 * ERROR, then close (STOMP 1.2 "ERROR": the server MUST then close the connection). Internal failures carry their
 * origin (dbus-broker's error_origin): the log line names the function and line that failed, the client sees
 * "Processing error".
 */
#include "bridge/session-int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bridge/log.h"

#define ERROR_BODY_MAX 1024

static const struct session_err_row rows[SESSION_ERR_COUNT] = {
#define SESSION_ERR_ROW(id, message, body, n, max) [SESSION_ERR_##id] = {#id, message, body, n, max},
    SESSION_ERRORS(SESSION_ERR_ROW)
#undef SESSION_ERR_ROW
};

const struct session_err_row *session_err_row(enum session_err e)
{
    return (unsigned)e < SESSION_ERR_COUNT ? &rows[e] : &rows[SESSION_ERR_INTERNAL];
}

struct session_arg session_arg_int(char *buf, size_t cap, long long v)
{
    int n = snprintf(buf, cap, "%lld", v);
    return (struct session_arg){buf, n > 0 ? (size_t)n : 0};
}

/* Expands template `t` with `args` (each cut at arg_max bytes when non-zero) into out (NUL-terminated, truncated at cap). */
static void expand(const char *t, const struct session_arg *args, size_t n, size_t arg_max, char *out, size_t cap)
{
    size_t o = 0;
    for (; *t && o + 1 < cap; t++) {
        unsigned i = t[0] == '%' && t[1] >= '1' && t[1] <= '4' ? (unsigned)(t[1] - '1') : 4;
        if (i >= n) {
            out[o++] = *t;
            continue;
        }
        size_t len = arg_max && args[i].n > arg_max ? arg_max : args[i].n;
        if (len > cap - 1 - o)
            len = cap - 1 - o;
        memcpy(out + o, args[i].p, len);
        o += len;
        t++;
    }
    out[o] = '\0';
}

enum session_rc session_error_frame(struct session *s, const struct session_arg *receipt, enum session_err e,
                                    const struct session_arg *args, size_t n, const struct stomp_header *extra)
{
    const struct session_err_row *row = session_err_row(e);
    char message[256], body[ERROR_BODY_MAX];
    assert(n == row->n_args);
    if (s->state == SESSION_ST_CLOSED)
        return SESSION_CLOSED;
    expand(row->message, args, n, row->arg_max, message, sizeof(message));
    expand(row->body, args, n, row->arg_max, body, sizeof(body));
    struct stomp_header h[5];
    size_t nh = 0;
    h[nh++] = session_hdr_n("message", message, strlen(message));
    h[nh++] = session_hdr_n("content-type", "text/plain", 10);
    h[nh++] =
        session_hdr_n("version", stomp_version_list_str(STOMP_VERSIONS_ALL), strlen(stomp_version_list_str(STOMP_VERSIONS_ALL)));
    if (extra)
        h[nh++] = *extra;
    size_t base = nh;
    if (receipt && receipt->p)
        h[nh++] = session_hdr_n("receipt-id", receipt->p, receipt->n);
    session_log(s, LOG_INFO, "ERROR %s: %.200s", message, body);
    /* A receipt a 1.0 client cannot be sent back (e.g. a LF) must not cost the ERROR itself. */
    if (session_send_frame(s, STOMP_CMD_ERROR, h, nh, body, strlen(body)) == -EINVAL && nh > base)
        (void)session_send_frame(s, STOMP_CMD_ERROR, h, base, body, strlen(body));
    session_close(s, message);
    return SESSION_CLOSED;
}

enum session_rc session_error(struct session *s, const struct stomp_frame *f, enum session_err e, const struct session_arg *args,
                              size_t n)
{
    const struct stomp_header *r = f ? stomp_frame_header(f, "receipt") : NULL;
    struct session_arg receipt = {r ? r->value : NULL, r ? r->value_len : 0};
    return session_error_frame(s, &receipt, e, args, n, NULL);
}

enum session_rc session_fatal_at(struct session *s, const char *what, int err, const char *func, int line)
{
    char detail[256];
    if (err < 0)
        snprintf(detail, sizeof(detail), "%s (%s)", what, strerror(-err));
    else
        snprintf(detail, sizeof(detail), "%s", what);
    session_log(s, LOG_WARN, "internal error in %s:%d: %s", func, line, detail);
    struct session_arg a = {detail, strlen(detail)};
    return session_error_frame(s, NULL, SESSION_ERR_INTERNAL, &a, 1, NULL);
}

/*
 * tests/unit/session-rig.c — the recording transport and set-up of tests/unit/session-rig.h.
 */
#include "session-rig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/log.h"

static int io_send(void *ud, const char *bytes, size_t len)
{
    struct rig *r = ud;
    if (r->send_fails)
        return -1;
    if (r->on_send)
        r->on_send(r, bytes, len);
    if (r->n_out == RIG_MAX_OUT) {
        free(r->out[0]);
        memmove(r->out, r->out + 1, (RIG_MAX_OUT - 1) * sizeof(r->out[0]));
        r->n_out--;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    r->out[r->n_out++] = copy;
    r->total_out++;
    return 0;
}

static size_t io_pending(void *ud)
{
    return ((struct rig *)ud)->pending;
}

static void io_pause_reading(void *ud, bool paused)
{
    ((struct rig *)ud)->paused = paused;
}

static void io_close(void *ud, const char *reason)
{
    struct rig *r = ud;
    r->closed = true;
    snprintf(r->close_reason, sizeof(r->close_reason), "%s", reason);
}

static void io_backlog(void *ud, bool pending)
{
    struct rig *r = ud;
    r->backlog = pending;
    r->backlog_calls++;
}

static const struct session_io rig_io = {
    .send = io_send,
    .pending = io_pending,
    .pause_reading = io_pause_reading,
    .close = io_close,
    .backlog = io_backlog,
};

void rig_init(struct rig *r)
{
    memset(r, 0, sizeof(*r));
    conf_init(&r->conf);
    log_set_level(getenv("WARREN_TEST_LOG") ? LOG_DEBUG : LOG_ERROR);
}

void rig_start(struct rig *r)
{
    static const struct session_env env0;
    struct session_env env = env0;
    r->up = r->shared_up ? r->shared_up : fake_upstream_new();
    env.up = r->up;
    env.fanout = r->fanout;
    env.conf = &r->conf;
    env.server_header = "warren/test";
    env.excl = r->excl;
    env.throttle = r->throttle;
    r->s = session_new(&env, &rig_io, r, r->peer ? r->peer : "127.0.0.1:1");
    if (!r->up || !r->s)
        abort();
}

void rig_clear(struct rig *r)
{
    for (size_t i = 0; i < r->n_out; i++)
        free(r->out[i]);
    r->n_out = 0;
}

void rig_deinit(struct rig *r)
{
    session_free(r->s);
    r->s = NULL;
    if (!r->shared_up)
        fake_upstream_free(r->up);
    r->up = NULL;
    rig_clear(r);
    conf_deinit(&r->conf);
}

void rig_feed_n(struct rig *r, const char *bytes, size_t len)
{
    /* session_feed() writes to what it is given (it parses in place): a private copy, as a WebSocket message is */
    char *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, bytes, len);
    (void)session_feed(r->s, copy, len);
    free(copy);
}

void rig_feed(struct rig *r, const char *bytes)
{
    rig_feed_n(r, bytes, strlen(bytes) + 1); /* the NUL ends the frame */
}

const char *rig_out(const struct rig *r, size_t i)
{
    return i < r->n_out ? r->out[i] : "";
}

const char *rig_last(const struct rig *r)
{
    return r->n_out ? r->out[r->n_out - 1] : "";
}

size_t rig_count(const struct rig *r, const char *cmd)
{
    size_t n = 0, l = strlen(cmd);
    for (size_t i = 0; i < r->n_out; i++)
        n += strncmp(r->out[i], cmd, l) == 0 && r->out[i][l] == '\n';
    return n;
}

bool frame_has(const char *f, const char *line)
{
    size_t l = strlen(line);
    const char *end = strstr(f, "\n\n");
    for (const char *p = strchr(f, '\n'); p && (!end || p < end); p = strchr(p + 1, '\n'))
        if (strncmp(p + 1, line, l) == 0 && (p[1 + l] == '\n' || p[1 + l] == '\0'))
            return true;
    return false;
}

void rig_connect(struct rig *r, const char *version, const char *heartbeat)
{
    char f[256];
    snprintf(f, sizeof(f), "CONNECT\naccept-version:%s\nheart-beat:%s\nlogin:guest\npasscode:guest\nhost:/\n\n", version,
             heartbeat);
    rig_feed(r, f);
    struct upstream_chan *ch = fake_last_chan(r->up);
    if (!ch)
        abort();
    fake_open(ch, NULL);
    fake_timer_run();
}

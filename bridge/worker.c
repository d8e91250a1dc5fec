/*
 * bridge/worker.c — one event loop on its own thread with its own server and upstream (bridge/worker.h).
 *
 * Commands from the main thread (stop, reload, the memory budget crossed) are posted under a mutex and announced with
 * event_active() on the worker's base, which libevent makes thread-safe once evthread_use_pthreads() ran (bridge/main.c does it
 * first); the worker's loop takes them on its own thread, so the server and the upstream are only ever touched there.
 */
#include "bridge/worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/log.h"
#include "bridge/server.h"
#include "bridge/upstream.h"
#include "conf/conf.h"

struct worker {
    unsigned id;
    struct event_base *base;
    struct upstream *up;
    struct server *srv;
    struct event *cmd_ev;
    pthread_t thread;
    bool started;
    bool stopping; /* loop thread: the graceful stop has begun */
    void (*exited)(void *arg);
    void *exited_arg;

    pthread_mutex_t lock; /* guards the command fields below */
    bool stop, stop_now;
    bool mem_changed; /* the group's mem_over changed: hold or release every connection's reading */
    unsigned grace_ms;
    struct conf *reload;         /* owned; NULL when none is pending */
    struct server_socket *socks; /* handed over by the acceptor, not adopted yet (bounded by the fd limit) */
    size_t n_socks, cap_socks;
};

static int upstream_open(struct worker *w, const struct conf *conf)
{
    struct upstream_config ucfg = {
        .brokers = conf->brokers.items,
        .n_brokers = conf->brokers.n,
        .heartbeat_s = (unsigned)conf->amqp_heartbeat_s,
        .channel_max = (unsigned)conf->amqp_channel_max,
        .frame_max_bytes = (unsigned)conf->amqp_frame_max_bytes,
        .connect_timeout_ms = (unsigned)conf->amqp_connect_timeout_ms,
        .reconnect_min_ms = (unsigned)conf->amqp_reconnect_min_ms,
        .reconnect_max_ms = (unsigned)conf->amqp_reconnect_max_ms,
        .idle_close_ms = (unsigned)conf->amqp_idle_close_ms,
        .auth_reuse_ms = (unsigned)conf->amqp_auth_reuse_ms,
        .write_timeout_ms = (unsigned)conf->amqp_write_timeout_ms,
        .max_connections = (unsigned)conf->amqp_max_connections,
        .max_connections_per_credential = (unsigned)conf->amqp_max_connections_per_credential,
        .product = "warren",
        .version = WARREN_VERSION,
    };
    int r = upstream_new(w->base, &ucfg, &w->up);
    if (r != 0)
        log_msg(LOG_ERROR, NULL, "cannot start the AMQP upstream");
    return r;
}

static void stop_done(void *arg)
{
    struct worker *w = arg;
    event_base_loopexit(w->base, NULL);
}

/* Adopts the sockets the acceptor handed over (swapped out under the lock, adopted outside it). */
static void adopt_all(struct worker *w, struct server_socket *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (w->stopping) {
            evutil_closesocket(v[i].fd);
            server_dropped(w->srv, v[i].ip);
        } else {
            server_adopt(w->srv, &v[i]);
        }
    }
    free(v);
}

/* The worker's loop takes what the main thread posted. */
static void on_cmd(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->lock);
    struct conf *reload = w->reload;
    bool stop = w->stop, now = w->stop_now;
    unsigned grace_ms = w->grace_ms;
    bool mem_changed = w->mem_changed;
    struct server_socket *socks = w->socks;
    size_t n_socks = w->n_socks;
    w->reload = NULL;
    w->mem_changed = false;
    w->socks = NULL;
    w->n_socks = w->cap_socks = 0;
    pthread_mutex_unlock(&w->lock);
    /* The reload first: main logs "configuration reloaded" once it is posted, so a socket handed over after that line
     * (and adopted in this same turn) must get the new configuration. A socket accepted just before the reload and not
     * adopted yet gets it too, which is harmless. */
    if (reload) {
        if (!w->stopping && server_conf_update(w->srv, reload) != 0)
            log_msg(LOG_ERROR, NULL, "worker %u: reload refused: out of memory; keeping the running configuration", w->id);
        conf_deinit(reload);
        free(reload);
    }
    adopt_all(w, socks, n_socks);
    if (mem_changed && !w->stopping)
        server_memory_changed(w->srv); /* reads the flag now: several changes since the last turn make one walk */
    if (now) {
        event_base_loopexit(w->base, NULL);
    } else if (stop && !w->stopping) {
        w->stopping = true;
        struct timeval grace = clock_timeval(grace_ms);
        event_base_loopexit(w->base, &grace);
        server_shutdown(w->srv, stop_done, w);
    }
}

int worker_new(unsigned id, const struct conf *conf, struct server_group *group, void (*exited)(void *arg), void *arg,
               struct worker **out)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->id = id;
    w->exited = exited;
    w->exited_arg = arg;
    pthread_mutex_init(&w->lock, NULL);
    int r = -ENOMEM;
    w->base = event_base_new();
    if (w->base)
        w->cmd_ev = event_new(w->base, -1, 0, on_cmd, w);
    if (!w->cmd_ev)
        log_msg(LOG_ERROR, NULL, "worker %u: cannot create its event loop", id);
    else if ((r = upstream_open(w, conf)) == 0)
        r = server_new(w->base, conf, w->up, group, &w->srv);
    if (r != 0) {
        worker_free(w);
        return r;
    }
    *out = w;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16]; /* the kernel's limit (TASK_COMM_LEN) */

    /* Named for top -H, perf and warren-bench's per-thread CPU (server_threads=): "warren-w0", "warren-w1", ... */
    snprintf(name, sizeof name, "warren-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    if (event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY) == -1)
        log_msg(LOG_ERROR, NULL, "worker %u: event loop failed", w->id);
    w->exited(w->exited_arg);
    return NULL;
}

int worker_start(struct worker *w)
{
    /* Signals are the main thread's: the worker (and the AMQP threads its upstream starts) never take them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return -r;
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w, bool now, unsigned grace_ms)
{
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    w->stop_now = w->stop_now || now;
    w->grace_ms = grace_ms;
    pthread_mutex_unlock(&w->lock);
    event_active(w->cmd_ev, 0, 0);
}

void worker_reload(struct worker *w, struct conf *conf)
{
    pthread_mutex_lock(&w->lock);
    struct conf *old = w->reload;
    w->reload = conf;
    pthread_mutex_unlock(&w->lock);
    if (old) {
        conf_deinit(old);
        free(old);
    }
    event_active(w->cmd_ev, 0, 0);
}

void worker_memory_changed(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->mem_changed = true;
    pthread_mutex_unlock(&w->lock);
    event_active(w->cmd_ev, 0, 0);
}

int worker_adopt(struct worker *w, const struct server_socket *s)
{
    pthread_mutex_lock(&w->lock);
    if (w->n_socks == w->cap_socks) {
        size_t cap = w->cap_socks ? w->cap_socks * 2 : 16;
        struct server_socket *v = realloc(w->socks, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&w->lock);
            return -ENOMEM;
        }
        w->socks = v;
        w->cap_socks = cap;
    }
    w->socks[w->n_socks++] = *s;
    server_handed(w->srv);
    pthread_mutex_unlock(&w->lock);
    event_active(w->cmd_ev, 0, 0);
    return 0;
}

size_t worker_load(struct worker *w)
{
    return server_load(w->srv);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    for (size_t i = 0; i < w->n_socks; i++) { /* handed over after the loop ended */
        evutil_closesocket(w->socks[i].fd);
        server_dropped(w->srv, w->socks[i].ip);
    }
    free(w->socks);
    server_free(w->srv);
    upstream_free(w->up);
    if (w->cmd_ev)
        event_free(w->cmd_ev);
    if (w->base)
        event_base_free(w->base);
    if (w->reload) {
        conf_deinit(w->reload);
        free(w->reload);
    }
    pthread_mutex_destroy(&w->lock);
    free(w);
}

unsigned worker_count(const struct conf *conf)
{
    if (conf->workers > 0)
        return (unsigned)conf->workers;
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)(n > 256 ? 256 : n) : 1;
}

/*
 * bridge/main.c — warren's entry point: command line, configuration, signals, and the workers.
 *
 *     warren [-c FILE] [-o key=value ...] [-t] [-h] [-V] [--help-config]
 *
 * The configuration is the defaults, then FILE, then each -o in order (later wins); it is validated before anything
 * binds. Startup errors are fatal (exit 1 with a message). SIGHUP reloads: the configuration is built again the same way
 * (defaults, each -c FILE read again, each -o, validation) and, when it is valid and differs from the running one only in
 * reloadable keys (conf_reload_check()), it applies to connections accepted from then on (open ones keep theirs, see
 * server_conf_update()) and log_level applies at once; otherwise an ERROR names the reason (file:line: key: reason, or
 * the restart-only key that changed) and the running configuration stays. SIGINT/SIGTERM shut down gracefully: the
 * listeners close, every WebSocket client of every worker gets close 1001 (going away), and each worker's loop stops once
 * its clients are gone or after MAIN_SHUTDOWN_GRACE_MS, whichever comes first (a second signal stops them at once). Then what is
 * left is freed, the AMQP connections are closed and their threads joined, so a clean exit is leak-free under ASan.
 *
 * Threads: the main thread owns the signals, the configuration and the listeners (bridge/acceptor.h); it creates
 * `workers` workers (bridge/worker.h), each an event loop with its own upstream and its own clients, hands every
 * accepted socket to the least loaded one, and otherwise only posts them commands (stop, reload, memory).
 *
 * The memory budget (bridge/memory.h) is watched here too: RSS every MAIN_MEMORY_SAMPLE_MS; at the budget the
 * acceptor refuses every new connection (server_group.mem_over) and every worker holds its connections' reading
 * (worker_memory_changed()), until RSS falls to MEMORY_LOW_WATER_PCT of it; each crossing is logged once.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bridge/acceptor.h"
#include "bridge/clock.h"
#include "bridge/log.h"
#include "bridge/memory.h"
#include "bridge/server.h"
#include "bridge/throttle.h"
#include "bridge/worker.h"
#include "conf/conf.h"

/* Longest wait for clients to finish their close handshake on SIGINT/SIGTERM. */
#define MAIN_SHUTDOWN_GRACE_MS 2000

/* How often RSS is compared with the memory budget, and how often at most the allocator is asked to trim near it. */
#define MAIN_MEMORY_SAMPLE_MS 50
#define MAIN_MEMORY_TRIM_MS   250

/* One source of the configuration, in command-line order: -c FILE ('c') or -o key=value ('o'); `arg` points into argv. */
struct main_src {
    char opt;
    const char *arg;
};

/* How the configuration is built: again at each reload. */
struct main_srcs {
    struct main_src *v;
    size_t n;
};

/* The running process, as the main thread's signal handlers see it. */
struct main_ctx {
    struct event_base *base; /* the main thread's loop: signals, and the workers' exits */
    struct worker **workers;
    unsigned n_workers;
    struct server_group group;
    struct acceptor *acc;
    struct event *exit_ev; /* a worker's loop ended */
    atomic_uint n_exited;  /* workers whose loop ended */
    const struct main_srcs *srcs;
    const struct conf *boot; /* the startup configuration: its restart-only keys are the running ones */
    bool stopping;
    /* the memory budget (bridge/memory.h): RSS sampled every MAIN_MEMORY_SAMPLE_MS while there is one */
    struct event *mem_ev;
    int statm_fd;
    struct memory_gauge mem;
    uint64_t last_trim_ms;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: warren [-c FILE] [-o key=value ...] [-t] [-h] [-V] [--help-config]\n"
               "  -c FILE        read the configuration file FILE (see conf/warren.conf)\n"
               "  -o key=value   set one configuration key (after the file; repeatable)\n"
               "  -t             check the configuration and exit\n"
               "  (SIGHUP reloads FILE and the -o options; SIGINT/SIGTERM stop gracefully)\n"
               "  -V             print the version and exit\n"
               "  --help-config  list every configuration key with its default\n");
}

static void help_config(void)
{
    size_t n = 0;
    const struct conf_key *keys = conf_keys(&n);
    for (size_t i = 0; i < n; i++)
        printf("%-34s %-6s default %-18s %s\n", keys[i].name, conf_type_str(keys[i].type),
               keys[i].def && keys[i].def[0] ? keys[i].def : "\"\"", keys[i].doc);
}

/* Sets one `-o key=value`. Returns 0, or -1 with err filled. */
static int conf_set_option(struct conf *conf, const char *opt, char *err, size_t errlen)
{
    char key[128];
    const char *eq = strchr(opt, '=');
    if (!eq) {
        snprintf(err, errlen, "-o %s: expected key=value", opt);
        return -1;
    }
    snprintf(key, sizeof(key), "%.*s", (int)(eq - opt), opt);
    char why[480];
    if (conf_set(conf, key, eq + 1, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "-o: %s", why);
        return -1;
    }
    return 0;
}

/* Builds `conf` (not initialised yet) from the defaults and `srcs`, then validates it. Returns 0, or -1 with err filled. */
static int conf_build(const struct main_srcs *srcs, struct conf *conf, char *err, size_t errlen)
{
    conf_init(conf);
    for (size_t i = 0; i < srcs->n; i++) {
        const struct main_src *src = &srcs->v[i];
        if (src->opt == 'c' ? conf_load_file(conf, src->arg, err, errlen) != 0 : conf_set_option(conf, src->arg, err, errlen) != 0)
            goto fail;
    }
    if (conf_validate(conf, err, errlen) == 0)
        return 0;
fail:
    conf_deinit(conf);
    return -1;
}

/* Records -c and -o in order into srcs (room for argc entries); returns 0, 1 when the caller should exit 0 (-h, -V...),
 * or -1 on error. */
static int parse_args(int argc, char **argv, struct main_srcs *srcs, bool *check_only)
{
    static const struct option longopts[] = {{"help-config", no_argument, NULL, 'K'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:o:thV", longopts, NULL)) != -1) {
        if (opt == 'c' || opt == 'o') {
            srcs->v[srcs->n++] = (struct main_src){.opt = (char)opt, .arg = optarg};
        } else if (opt == 't') {
            *check_only = true;
        } else if (opt == 'V') {
            printf("warren %s\n", WARREN_VERSION);
            return 1;
        } else if (opt == 'K') {
            help_config();
            return 1;
        } else if (opt == 'h') {
            usage(stdout);
            return 1;
        } else {
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* A worker's thread, last thing: once every worker is done, the main loop ends. */
static void worker_exited(void *arg)
{
    struct main_ctx *m = arg;
    atomic_fetch_add(&m->n_exited, 1);
    event_active(m->exit_ev, 0, 0);
}

static void stop_all(struct main_ctx *m, bool now)
{
    if (!m->stopping) {
        m->stopping = true;
        acceptor_close(m->acc);
    }
    for (unsigned i = 0; i < m->n_workers; i++)
        worker_stop(m->workers[i], now, MAIN_SHUTDOWN_GRACE_MS);
}

static void on_worker_exit(evutil_socket_t fd, short what, void *arg)
{
    struct main_ctx *m = arg;
    if (!m->stopping) { /* a worker's loop failed on its own: the process cannot serve as it should */
        log_msg(LOG_ERROR, NULL, "a worker stopped unexpectedly; shutting down");
        stop_all(m, false);
    }
    if (atomic_load(&m->n_exited) == m->n_workers)
        event_base_loopexit(m->base, NULL);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* The memory budget */

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* The gauge crossed the budget (or the low-water mark): one log line, the flag, and every worker told. */
static void memory_changed(struct main_ctx *m, enum memory_change ch, uint64_t rss)
{
    if (ch == MEMORY_SAME)
        return;
    atomic_store(&m->group.mem_over, ch == MEMORY_OVER);
    if (ch == MEMORY_OVER)
        log_msg(LOG_WARN, NULL,
                "memory: RSS %.1f MiB reached the budget of %.1f MiB: refusing new connections (HTTP 503) and pausing "
                "reading from clients",
                mib(rss), mib(m->mem.budget));
    else
        log_msg(LOG_INFO, NULL,
                "memory: RSS %.1f MiB, back under %.1f MiB (%d %% of the budget): accepting and reading again; %lu "
                "connections refused meanwhile",
                mib(rss), mib(m->mem.low), MEMORY_LOW_WATER_PCT, m->acc ? acceptor_memory_refusals(m->acc) : 0);
    for (unsigned i = 0; i < m->n_workers; i++)
        worker_memory_changed(m->workers[i]);
}

/*
 * One sample. Near the line (about to go over, or over and not yet back to the low-water mark) the allocator gives its
 * free pages back first, at most every MAIN_MEMORY_TRIM_MS, so that RSS is what is in use (bridge/memory.c).
 */
static void memory_tick(evutil_socket_t fd, short what, void *arg)
{
    struct main_ctx *m = arg;
    uint64_t rss = memory_rss(m->statm_fd);
    uint64_t now = clock_now_ms();
    bool near = m->mem.over ? rss > m->mem.low : rss >= m->mem.budget;
    if (near && now - m->last_trim_ms >= MAIN_MEMORY_TRIM_MS) {
        memory_trim();
        m->last_trim_ms = now;
        rss = memory_rss(m->statm_fd);
    }
    memory_changed(m, memory_gauge_update(&m->mem, rss), rss);
}

/* The budget of `conf` (startup, reload): logged, applied to the gauge at once, sampled while there is one. */
static void memory_apply(struct main_ctx *m, const struct conf *conf)
{
    struct memory_budget b = memory_budget_get(conf->max_memory_bytes, conf->max_memory_pct);
    if (b.bytes == 0)
        log_msg(LOG_INFO, NULL, "max_memory_bytes: no memory budget (%s)", b.from);
    else if (b.machine)
        log_msg(LOG_INFO, NULL, "max_memory_bytes: %.1f MiB, %d %% of %s (%.1f MiB)", mib(b.bytes), conf->max_memory_pct, b.from,
                mib(b.machine));
    else
        log_msg(LOG_INFO, NULL, "max_memory_bytes: %.1f MiB", mib(b.bytes));
    if (b.bytes && m->statm_fd == -1) {
        log_msg(LOG_WARN, NULL, "max_memory_bytes: cannot read /proc/self/statm; no memory budget");
        b.bytes = 0;
    }
    memory_gauge_set(&m->mem, b.bytes);
    if (b.bytes == 0) {
        evtimer_del(m->mem_ev);
        memory_changed(m, memory_gauge_update(&m->mem, 0), memory_rss(m->statm_fd)); /* no budget: never over */
        return;
    }
    struct timeval tv = clock_timeval(MAIN_MEMORY_SAMPLE_MS);
    event_add(m->mem_ev, &tv);
    memory_tick(-1, 0, m);
}

/* ------------------------------------------------------------------------------------------------------------------ */

/* The acceptor's socket goes to the worker holding the fewest (the first of them on a tie). */
static void dispatch(void *arg, const struct server_socket *s)
{
    struct main_ctx *m = arg;
    struct worker *best = m->workers[0];
    for (unsigned i = 1; i < m->n_workers; i++)
        if (worker_load(m->workers[i]) < worker_load(best))
            best = m->workers[i];
    if (worker_adopt(best, s) != 0) {
        log_msg(LOG_ERROR, s->peer, "out of memory handing a connection to a worker");
        evutil_closesocket(s->fd);
        atomic_fetch_sub(&m->group.conns, 1);
        server_ip_release(s->ip);
    }
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_ctx *m = arg;
    bool now = m->stopping;
    if (now)
        log_msg(LOG_INFO, NULL, "signal %d: stopping now", (int)sig);
    else
        log_msg(LOG_INFO, NULL, "signal %d: shutting down (%zu clients)", (int)sig, (size_t)atomic_load(&m->group.conns));
    stop_all(m, now);
}

/* `n` heap copies of `conf`, all or none (NULL when out of memory). */
static struct conf **conf_copies_new(const struct conf *conf, unsigned n)
{
    struct conf **v = calloc(n, sizeof(*v));
    unsigned made = 0;
    for (; v && made < n; made++) {
        struct conf *c = malloc(sizeof(*c));
        if (!c || conf_copy(c, conf) != 0) { /* conf_copy() frees what it copied when it fails */
            free(c);
            break;
        }
        v[made] = c;
    }
    if (v && made == n)
        return v;
    for (unsigned i = 0; v && i < made; i++) {
        conf_deinit(v[i]);
        free(v[i]);
    }
    free(v);
    return NULL;
}

/* SIGHUP: build the configuration again; apply it to new connections, or keep the running one and say why. */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_ctx *m = arg;
    struct conf next;
    char err[512];
    const struct conf_key *changed = NULL;
    if (m->stopping)
        return;
    if (conf_build(m->srcs, &next, err, sizeof(err)) != 0) {
        log_msg(LOG_ERROR, NULL, "reload refused: %s; keeping the running configuration", err);
        return;
    }
    /* Accepted reloads never change a restart-only key, so comparing with the startup configuration is enough. */
    if (conf_reload_check(m->boot, &next, &changed) != 0) {
        log_msg(LOG_ERROR, NULL, "reload refused: %s changed, which needs a restart; keeping the running configuration",
                changed ? changed->name : "?");
        conf_deinit(&next);
        return;
    }
    /* Every worker's copy is made before any is posted: a reload applies everywhere or nowhere. */
    struct conf **copies = conf_copies_new(&next, m->n_workers);
    if (!copies) {
        log_msg(LOG_ERROR, NULL, "reload refused: out of memory; keeping the running configuration");
    } else {
        acceptor_conf_update(m->acc, &next);
        memory_apply(m, &next);
        for (unsigned i = 0; i < m->n_workers; i++)
            worker_reload(m->workers[i], copies[i]); /* each worker takes its copy over */
        free(copies);
        log_msg(LOG_INFO, NULL, "configuration reloaded");
        log_set_level((enum log_level)next.log_level);
    }
    conf_deinit(&next);
}

/* Creates every worker, binding every listener, before any of them starts: a bad port or certificate fails the start. */
static int workers_create(struct main_ctx *m, const struct conf *conf)
{
    m->n_workers = worker_count(conf);
    m->workers = calloc(m->n_workers, sizeof(*m->workers));
    if (!m->workers) {
        log_msg(LOG_ERROR, NULL, "out of memory creating %u workers", m->n_workers);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < m->n_workers; i++) {
        int r = worker_new(i, conf, &m->group, worker_exited, m, &m->workers[i]);
        if (r != 0)
            return r;
    }
    return 0;
}

static void workers_free(struct main_ctx *m)
{
    for (unsigned i = 0; m->workers && i < m->n_workers; i++)
        worker_free(m->workers[i]);
    free(m->workers);
}

static int run(const struct conf *conf, const struct main_srcs *srcs)
{
    int rc = 1;
    struct main_ctx m = {.srcs = srcs, .boot = conf, .statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)};
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL;
    unsigned started = 0;

    m.base = event_base_new();
    if (!m.base || !(m.exit_ev = event_new(m.base, -1, 0, on_worker_exit, &m)) ||
        !(m.mem_ev = event_new(m.base, -1, EV_PERSIST, memory_tick, &m))) {
        log_msg(LOG_ERROR, NULL, "cannot create the main event loop");
        goto out;
    }
    if (throttle_new(&m.group.login_throttle) != 0) {
        log_msg(LOG_ERROR, NULL, "out of memory");
        goto out;
    }
    if (workers_create(&m, conf) != 0 || acceptor_new(m.base, conf, &m.group, dispatch, &m, &m.acc) != 0)
        goto out; /* logged where it failed */
    sigint = evsignal_new(m.base, SIGINT, stop_cb, &m);
    sigterm = evsignal_new(m.base, SIGTERM, stop_cb, &m);
    sighup = evsignal_new(m.base, SIGHUP, reload_cb, &m);
    if (!sigint || !sigterm || !sighup || evsignal_add(sigint, NULL) != 0 || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sighup, NULL) != 0)
        goto out;
    for (; started < m.n_workers; started++)
        if (worker_start(m.workers[started]) != 0)
            goto out;
    memory_apply(&m, conf);
    log_msg(LOG_INFO, NULL, "warren %s ready; %u worker%s; brokers %s%s", WARREN_VERSION, m.n_workers, m.n_workers == 1 ? "" : "s",
            conf->brokers.n ? conf->brokers.items[0] : "", conf->brokers.n > 1 ? ", ..." : "");
    rc = event_base_loop(m.base, EVLOOP_NO_EXIT_ON_EMPTY) == -1 ? 1 : 0;

out:
    /* Workers that started and were not stopped by a signal (a failed start) stop now, before they are joined. */
    for (unsigned i = 0; i < started && atomic_load(&m.n_exited) < started; i++)
        worker_stop(m.workers[i], true, 0);
    workers_free(&m); /* first: freeing their connections gives their addresses' counts back to the acceptor */
    acceptor_free(m.acc);
    throttle_free(m.group.login_throttle); /* after the workers: their sessions used it */
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (sighup)
        event_free(sighup);
    if (m.exit_ev)
        event_free(m.exit_ev);
    if (m.mem_ev)
        event_free(m.mem_ev);
    if (m.statm_fd != -1)
        close(m.statm_fd);
    if (m.base)
        event_base_free(m.base);
    return rc;
}

int main(int argc, char **argv)
{
    struct conf conf;
    char err[512];
    bool check_only = false;
    struct main_srcs srcs = {.v = calloc((size_t)argc + 1, sizeof(struct main_src))};
    if (!srcs.v)
        return 1;
    int r = parse_args(argc, argv, &srcs, &check_only);
    if (r == 0 && conf_build(&srcs, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "warren: %s\n", err);
        r = -1;
    }
    if (r != 0 || check_only) {
        if (r == 0) {
            printf("warren: configuration OK\n");
            conf_deinit(&conf);
        }
        free(srcs.v);
        return r < 0 ? 1 : 0;
    }
    log_set_level((enum log_level)conf.log_level);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    if (evthread_use_pthreads() != 0)
        fprintf(stderr, "warren: libevent has no pthreads support\n");
    else
        rc = run(&conf, &srcs);
    conf_deinit(&conf);
    free(srcs.v);
    libevent_global_shutdown();
    return rc;
}

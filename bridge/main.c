/*
 * bridge/main.c — warren's entry point: command line, configuration, signals, and the event loop.
 *
 *     warren [-c FILE] [-o key=value ...] [-t] [-h] [-V] [--help-config]
 *
 * The configuration is the defaults, then FILE, then each -o in order (later wins); it is validated before anything
 * binds. Startup errors are fatal (exit 1 with a message). SIGHUP reloads: the configuration is built again the same way
 * (defaults, each -c FILE read again, each -o, validation) and, when it is valid and differs from the running one only in
 * reloadable keys (conf_reload_check()), it applies to connections accepted from then on (open ones keep theirs, see
 * server_conf_update()) and log_level applies at once; otherwise an ERROR names the reason (file:line: key: reason, or
 * the restart-only key that changed) and the running configuration stays. SIGINT/SIGTERM shut down gracefully: the listeners close,
 * every WebSocket client gets close 1001 (going away), and the loop stops once they are gone or after
 * MAIN_SHUTDOWN_GRACE_MS, whichever comes first (a second signal stops it at once). Then what is left is freed, the AMQP
 * connections are closed and their threads joined, so a clean exit is leak-free under ASan.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bridge/clock.h"
#include "bridge/log.h"
#include "bridge/server.h"
#include "bridge/upstream.h"
#include "conf/conf.h"

/* Longest wait for clients to finish their close handshake on SIGINT/SIGTERM. */
#define MAIN_SHUTDOWN_GRACE_MS 2000

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

/* What the signal handlers need. */
struct main_stop {
    struct event_base *base;
    struct server *srv;
    const struct main_srcs *srcs;
    const struct conf *boot; /* the startup configuration: its restart-only keys are the running ones */
    bool stopping;
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

static void stop_done(void *arg)
{
    struct main_stop *st = arg;
    event_base_loopexit(st->base, NULL);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_stop *st = arg;
    if (st->stopping) {
        log_msg(LOG_INFO, NULL, "signal %d: stopping now", (int)sig);
        event_base_loopexit(st->base, NULL);
        return;
    }
    st->stopping = true;
    log_msg(LOG_INFO, NULL, "signal %d: shutting down (%zu clients)", (int)sig, server_client_count(st->srv));
    struct timeval grace = clock_timeval(MAIN_SHUTDOWN_GRACE_MS);
    event_base_loopexit(st->base, &grace);
    server_shutdown(st->srv, stop_done, st);
}

/* SIGHUP: build the configuration again; apply it to new connections, or keep the running one and say why. */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_stop *st = arg;
    struct conf next;
    char err[512];
    const struct conf_key *changed = NULL;
    if (st->stopping)
        return;
    if (conf_build(st->srcs, &next, err, sizeof(err)) != 0) {
        log_msg(LOG_ERROR, NULL, "reload refused: %s; keeping the running configuration", err);
        return;
    }
    /* Accepted reloads never change a restart-only key, so comparing with the startup configuration is enough. */
    if (conf_reload_check(st->boot, &next, &changed) != 0) {
        log_msg(LOG_ERROR, NULL, "reload refused: %s changed, which needs a restart; keeping the running configuration",
                changed ? changed->name : "?");
    } else if (server_conf_update(st->srv, &next) != 0) {
        log_msg(LOG_ERROR, NULL, "reload refused: out of memory; keeping the running configuration");
    } else {
        log_msg(LOG_INFO, NULL, "configuration reloaded");
        log_set_level((enum log_level)next.log_level);
    }
    conf_deinit(&next);
}

static int run(const struct conf *conf, const struct main_srcs *srcs)
{
    int rc = 1;
    struct event_base *base = NULL;
    struct upstream *up = NULL;
    struct server *srv = NULL;
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL;
    struct main_stop st = {0};
    const char *const *brokers = conf->brokers.items;
    struct upstream_config ucfg = {
        .brokers = brokers,
        .n_brokers = conf->brokers.n,
        .heartbeat_s = (unsigned)conf->amqp_heartbeat_s,
        .channel_max = (unsigned)conf->amqp_channel_max,
        .frame_max_bytes = (unsigned)conf->amqp_frame_max_bytes,
        .connect_timeout_ms = (unsigned)conf->amqp_connect_timeout_ms,
        .reconnect_min_ms = (unsigned)conf->amqp_reconnect_min_ms,
        .reconnect_max_ms = (unsigned)conf->amqp_reconnect_max_ms,
        .idle_close_ms = (unsigned)conf->amqp_idle_close_ms,
        .product = "warren",
        .version = WARREN_VERSION,
    };

    base = event_base_new();
    if (!base)
        goto out;
    if (upstream_new(base, &ucfg, &up) != 0) {
        log_msg(LOG_ERROR, NULL, "cannot start the AMQP upstream");
        goto out;
    }
    if (server_new(base, conf, up, &srv) != 0)
        goto out;
    st = (struct main_stop){.base = base, .srv = srv, .srcs = srcs, .boot = conf};
    sigint = evsignal_new(base, SIGINT, stop_cb, &st);
    sigterm = evsignal_new(base, SIGTERM, stop_cb, &st);
    sighup = evsignal_new(base, SIGHUP, reload_cb, &st);
    if (!sigint || !sigterm || !sighup || evsignal_add(sigint, NULL) != 0 || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sighup, NULL) != 0)
        goto out;
    log_msg(LOG_INFO, NULL, "warren %s ready; brokers %s%s", WARREN_VERSION, conf->brokers.n ? conf->brokers.items[0] : "",
            conf->brokers.n > 1 ? ", ..." : "");
    rc = event_base_dispatch(base) == -1 ? 1 : 0;

out:
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (sighup)
        event_free(sighup);
    server_free(srv);
    upstream_free(up);
    if (base)
        event_base_free(base);
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

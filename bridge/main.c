/*
 * bridge/main.c — warren's entry point: command line, configuration, signals, and the event loop.
 *
 *     warren [-c FILE] [-o key=value ...] [-t] [-h] [-V] [--help-config]
 *
 * The configuration is the defaults, then FILE, then each -o in order (later wins); it is validated before anything
 * binds. Startup errors are fatal (exit 1 with a message). SIGINT/SIGTERM shut down gracefully: the listeners close,
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

#include "bridge/log.h"
#include "bridge/server.h"
#include "bridge/upstream.h"
#include "conf/conf.h"

/* Longest wait for clients to finish their close handshake on SIGINT/SIGTERM. */
#define MAIN_SHUTDOWN_GRACE_MS 2000

/* What the signal handler needs. */
struct main_stop {
    struct event_base *base;
    struct server *srv;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: warren [-c FILE] [-o key=value ...] [-t] [-h] [-V] [--help-config]\n"
               "  -c FILE        read the configuration file FILE (see conf/warren.conf)\n"
               "  -o key=value   set one configuration key (after the file; repeatable)\n"
               "  -t             check the configuration and exit\n"
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

/* Applies -c and -o in order; returns 0, 1 when the caller should exit 0 (-h, -V...), or -1 on error. */
static int parse_args(int argc, char **argv, struct conf *conf, bool *check_only)
{
    static const struct option longopts[] = {{"help-config", no_argument, NULL, 'K'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    char err[512];
    int opt;
    while ((opt = getopt_long(argc, argv, "c:o:thV", longopts, NULL)) != -1) {
        if (opt == 'c' && conf_load_file(conf, optarg, err, sizeof(err)) != 0) {
            fprintf(stderr, "warren: %s\n", err);
            return -1;
        } else if (opt == 'o') {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "warren: -o %s: expected key=value\n", optarg);
                return -1;
            }
            *eq = '\0';
            int r = conf_set(conf, optarg, eq + 1, err, sizeof(err));
            *eq = '=';
            if (r != 0) {
                fprintf(stderr, "warren: -o: %s\n", err);
                return -1;
            }
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
        } else if (opt != 'c') {
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return -1;
    }
    if (conf_validate(conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "warren: %s\n", err);
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
    struct timeval grace = {MAIN_SHUTDOWN_GRACE_MS / 1000, (MAIN_SHUTDOWN_GRACE_MS % 1000) * 1000};
    event_base_loopexit(st->base, &grace);
    server_shutdown(st->srv, stop_done, st);
}

static int run(const struct conf *conf)
{
    int rc = 1;
    struct event_base *base = NULL;
    struct upstream *up = NULL;
    struct server *srv = NULL;
    struct event *sigint = NULL, *sigterm = NULL;
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
    st = (struct main_stop){.base = base, .srv = srv};
    sigint = evsignal_new(base, SIGINT, stop_cb, &st);
    sigterm = evsignal_new(base, SIGTERM, stop_cb, &st);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) != 0 || evsignal_add(sigterm, NULL) != 0)
        goto out;
    log_msg(LOG_INFO, NULL, "warren %s ready; brokers %s%s", WARREN_VERSION, conf->brokers.n ? conf->brokers.items[0] : "",
            conf->brokers.n > 1 ? ", ..." : "");
    rc = event_base_dispatch(base) == -1 ? 1 : 0;

out:
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    server_free(srv);
    upstream_free(up);
    if (base)
        event_base_free(base);
    return rc;
}

int main(int argc, char **argv)
{
    struct conf conf;
    bool check_only = false;
    conf_init(&conf);
    int r = parse_args(argc, argv, &conf, &check_only);
    if (r != 0 || check_only) {
        if (r == 0)
            printf("warren: configuration OK\n");
        conf_deinit(&conf);
        return r < 0 ? 1 : 0;
    }
    log_set_level((enum log_level)conf.log_level);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "warren: libevent has no pthreads support\n");
        conf_deinit(&conf);
        return 1;
    }
    int rc = run(&conf);
    conf_deinit(&conf);
    libevent_global_shutdown();
    return rc;
}

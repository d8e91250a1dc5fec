/*
 * bench/amqp.c — warren-bench-amqp: the native AMQP 0-9-1 side of the comparison (rabbitmq-c, one connection and one
 * thread per publisher and per consumer), so scripts/bench can show what the broker itself does on this machine with
 * the same window, body size and result line as warren-bench. No STOMP, no WebSocket: the physical limit that any
 * STOMP bridge in front of the same broker is measured against.
 *
 * Scenarios: fanout (P publishers → amq.topic with one routing key → S exclusive queues, one per consumer, no-ack) and
 * queue (P → one queue → C competing consumers, --ack auto (no-ack) or client-individual (basic.ack per message, with
 * basic.qos --prefetch), or batch (manual acks, one basic.ack multiple for what one read brought: what warren does for
 * STOMP ack:auto)). --confirm puts publishers in confirm mode (confirm.select; the acks are read and dropped), as
 * warren's are; with --ack batch and --prefetch it is the broker doing for a native client what it does for warren.
 * Closed loop (--window messages in flight per publisher; a fan-out message is in flight until
 * every consumer has it) or open loop (--rate). Bodies are warren-bench's ("pub:seq:ns;" padded to --size).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifdef WARREN_RABBITMQ_C_NEW_HEADERS
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#include "bench/stats.h"

enum phase {
    PH_SETUP = 0,
    PH_RUN = 1,
    PH_DRAIN = 2,
    PH_DONE = 3,
};

struct slot {
    uint64_t seq;
    uint32_t remaining;
};

struct pub {
    pthread_t th;
    unsigned idx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t inflight;
    struct slot *slots;
    _Atomic uint64_t sent;
    struct bench_seen seen; /* queue: under mu */
};

struct sub {
    pthread_t th;
    unsigned idx;
    struct bench_hist hist;
    struct bench_seen *seen; /* fanout: one per publisher */
    uint64_t errors;
};

struct amqp_bench {
    const char *host, *user, *pass, *vhost;
    int port;
    bool fanout, manual_ack, batch_ack, confirm;
    unsigned pubs, subs, window, prefetch, size;
    double rate, duration, drain;
    int broker_pid;
    const char *label;
    char key[64]; /* routing key / queue name */
    _Atomic int phase;
    _Atomic unsigned ready;
    _Atomic uint64_t recv_run, recv_total, sent_run;
    _Atomic uint64_t errors;
    uint64_t t_run;
    struct pub *p;
    struct sub *s;
};

static int rpc_ok(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "warren-bench-amqp: %s failed (reply type %d)\n", what, (int)r.reply_type);
    return -1;
}

static amqp_connection_state_t open_conn(struct amqp_bench *b)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, b->host, b->port) != AMQP_STATUS_OK) {
        fprintf(stderr, "warren-bench-amqp: cannot connect to %s:%d\n", b->host, b->port);
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_rpc_reply_t r = amqp_login(c, b->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, b->user, b->pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "warren-bench-amqp: login failed\n");
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_channel_open(c, 1);
    if (rpc_ok(c, "channel.open") != 0) {
        amqp_destroy_connection(c);
        return NULL;
    }
    return c;
}

static void close_conn(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000u), .tv_nsec = (long)(t_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int publish(struct amqp_bench *b, amqp_connection_state_t c, struct pub *p, char *body, uint64_t t_ns)
{
    uint64_t seq = atomic_load(&p->sent);
    int n = snprintf(body, b->size + 64, "%u:%llu:%llu;", p->idx, (unsigned long long)seq, (unsigned long long)t_ns);
    size_t len = (size_t)n;
    if (len < b->size) {
        memset(body + len, '.', b->size - len);
        len = b->size;
    }
    if (b->window && b->rate <= 0) {
        pthread_mutex_lock(&p->mu);
        struct slot *s = &p->slots[seq % b->window];
        s->seq = seq;
        s->remaining = b->fanout ? b->subs : 1;
        p->inflight++;
        pthread_mutex_unlock(&p->mu);
    }
    amqp_bytes_t bb = {.len = len, .bytes = body};
    int r = amqp_basic_publish(c, 1, amqp_cstring_bytes(b->fanout ? "amq.topic" : ""), amqp_cstring_bytes(b->key), 0, 0, NULL, bb);
    if (r != AMQP_STATUS_OK) {
        fprintf(stderr, "warren-bench-amqp: basic.publish: %s\n", amqp_error_string2(r));
        return -1;
    }
    atomic_fetch_add(&p->sent, 1);
    atomic_fetch_add(&b->sent_run, 1);
    if (b->confirm) {
        /* The broker's basic.acks: read what came, without waiting (the window is end to end, as without --confirm). */
        struct timeval zero = {0, 0};
        amqp_frame_t f;
        while (amqp_simple_wait_frame_noblock(c, &f, &zero) == AMQP_STATUS_OK) {
        }
        amqp_maybe_release_buffers(c);
    }
    return 0;
}

static struct amqp_bench *g_bench; /* the threads' shared run (one per process) */

static void *pub_main(void *arg)
{
    struct pub *p = arg;
    struct amqp_bench *b = g_bench;
    amqp_connection_state_t c = open_conn(b);
    char *body = malloc(b->size + 64);
    if (!c || !body) {
        atomic_fetch_add(&b->errors, 1);
        free(body);
        if (c)
            close_conn(c);
        atomic_fetch_add(&b->ready, 1);
        return NULL;
    }
    if (b->confirm && (!amqp_confirm_select(c, 1) || rpc_ok(c, "confirm.select") != 0))
        atomic_fetch_add(&b->errors, 1);
    atomic_fetch_add(&b->ready, 1);
    while (atomic_load(&b->phase) == PH_SETUP)
        usleep(1000);
    double per_pub = b->rate / b->pubs;
    while (atomic_load(&b->phase) == PH_RUN) {
        if (b->rate > 0) {
            uint64_t at = b->t_run + (uint64_t)((double)atomic_load(&p->sent) * 1e9 / per_pub);
            sleep_until(at);
            if (publish(b, c, p, body, at) != 0)
                break;
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (p->inflight >= b->window && atomic_load(&b->phase) == PH_RUN) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        pthread_mutex_unlock(&p->mu);
        if (atomic_load(&b->phase) != PH_RUN)
            break;
        if (publish(b, c, p, body, bench_now_ns()) != 0) {
            atomic_fetch_add(&b->errors, 1);
            break;
        }
    }
    while (atomic_load(&b->phase) != PH_DONE)
        usleep(10000);
    free(body);
    close_conn(c);
    return NULL;
}

static int parse_body(const char *s, size_t len, unsigned *pub, uint64_t *seq, uint64_t *t)
{
    char tmp[72];
    size_t n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    unsigned long long a, c;
    if (sscanf(tmp, "%u:%llu:%llu;", pub, &a, &c) != 3)
        return -1;
    *seq = a;
    *t = c;
    return 0;
}

static void delivered(struct amqp_bench *b, struct sub *s, const amqp_bytes_t *body)
{
    uint64_t now = bench_now_ns(), seq, t;
    unsigned pub;
    if (parse_body(body->bytes, body->len, &pub, &seq, &t) != 0 || pub >= b->pubs) {
        s->errors++;
        return;
    }
    struct pub *p = &b->p[pub];
    int fresh;
    if (b->fanout) {
        fresh = bench_seen_add(&s->seen[pub], seq);
    } else {
        pthread_mutex_lock(&p->mu);
        fresh = bench_seen_add(&p->seen, seq);
        pthread_mutex_unlock(&p->mu);
    }
    if (fresh <= 0)
        return;
    atomic_fetch_add(&b->recv_total, 1);
    if (atomic_load(&b->phase) == PH_RUN)
        atomic_fetch_add(&b->recv_run, 1);
    bench_hist_add(&s->hist, now > t ? now - t : 0);
    if (b->rate > 0)
        return;
    pthread_mutex_lock(&p->mu);
    struct slot *sl = &p->slots[seq % b->window];
    if (sl->seq == seq && sl->remaining > 0 && --sl->remaining == 0) {
        p->inflight--;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

static int sub_setup(struct amqp_bench *b, amqp_connection_state_t c)
{
    amqp_bytes_t q;
    if (b->fanout) {
        amqp_queue_declare_ok_t *ok = amqp_queue_declare(c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
        if (rpc_ok(c, "queue.declare") != 0 || !ok)
            return -1;
        q = amqp_bytes_malloc_dup(ok->queue);
        amqp_queue_bind(c, 1, q, amqp_cstring_bytes("amq.topic"), amqp_cstring_bytes(b->key), amqp_empty_table);
        if (rpc_ok(c, "queue.bind") != 0)
            return -1;
    } else {
        amqp_queue_declare(c, 1, amqp_cstring_bytes(b->key), 0, 0, 0, 0, amqp_empty_table);
        if (rpc_ok(c, "queue.declare") != 0)
            return -1;
        q = amqp_bytes_malloc_dup(amqp_cstring_bytes(b->key));
    }
    if (b->prefetch) {
        amqp_basic_qos(c, 1, 0, (uint16_t)(b->prefetch > 65535 ? 65535 : b->prefetch), 0);
        if (rpc_ok(c, "basic.qos") != 0)
            return -1;
    }
    amqp_basic_consume(c, 1, q, amqp_empty_bytes, 0, b->manual_ack ? 0 : 1, 0, amqp_empty_table);
    amqp_bytes_free(q);
    return rpc_ok(c, "basic.consume");
}

static void *sub_main(void *arg)
{
    struct sub *s = arg;
    struct amqp_bench *b = g_bench;
    amqp_connection_state_t c = open_conn(b);
    if (!c || sub_setup(b, c) != 0) {
        atomic_fetch_add(&b->errors, 1);
        atomic_fetch_add(&b->ready, 1);
        if (c)
            amqp_destroy_connection(c);
        return NULL;
    }
    atomic_fetch_add(&b->ready, 1);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 50000};
    while (atomic_load(&b->phase) != PH_DONE) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            if (atomic_load(&b->phase) != PH_DONE) {
                fprintf(stderr, "warren-bench-amqp: consume failed (%d)\n", (int)r.reply_type);
                s->errors++;
            }
            break;
        }
        delivered(b, s, &env.message.body);
        bool burst_end = !amqp_data_in_buffer(c) && !amqp_frames_enqueued(c);
        if (b->manual_ack && (!b->batch_ack || burst_end) && amqp_basic_ack(c, 1, env.delivery_tag, b->batch_ack) != 0)
            s->errors++;
        amqp_destroy_envelope(&env);
    }
    close_conn(c);
    return NULL;
}

static bool all_in(struct amqp_bench *b)
{
    uint64_t exp = 0;
    for (unsigned i = 0; i < b->pubs; i++)
        exp += atomic_load(&b->p[i].sent) * (b->fanout ? b->subs : 1);
    return atomic_load(&b->recv_total) >= exp;
}

static void usage(void)
{
    fprintf(stderr, "usage: warren-bench-amqp --host H --port P [--user U --pass P --vhost V] [--scenario fanout|queue]\n"
                    "       [--pubs N] [--subs N] [--window N | --rate R] [--size B] [--duration S] [--drain S]\n"
                    "       [--ack auto|client-individual|batch] [--prefetch N] [--confirm] [--broker-pid PID]\n"
                    "       [--label TEXT]\n");
}

static int parse_args(struct amqp_bench *b, int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'},       {"port", 1, 0, 'P'},     {"user", 1, 0, 'u'},    {"pass", 1, 0, 'w'},   {"vhost", 1, 0, 'v'},
        {"scenario", 1, 0, 's'},   {"pubs", 1, 0, 'p'},     {"subs", 1, 0, 'c'},    {"window", 1, 0, 'W'}, {"rate", 1, 0, 'r'},
        {"size", 1, 0, 'z'},       {"duration", 1, 0, 'd'}, {"drain", 1, 0, 'D'},   {"ack", 1, 0, 'a'},    {"prefetch", 1, 0, 'f'},
        {"broker-pid", 1, 0, 'b'}, {"label", 1, 0, 'l'},    {"confirm", 0, 0, 'C'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            b->host = optarg;
            break;
        case 'P':
            b->port = atoi(optarg);
            break;
        case 'u':
            b->user = optarg;
            break;
        case 'w':
            b->pass = optarg;
            break;
        case 'v':
            b->vhost = optarg;
            break;
        case 's':
            if (strcmp(optarg, "fanout") == 0)
                b->fanout = true;
            else if (strcmp(optarg, "queue") == 0)
                b->fanout = false;
            else
                return -1;
            break;
        case 'p':
            b->pubs = (unsigned)atoi(optarg);
            break;
        case 'c':
            b->subs = (unsigned)atoi(optarg);
            break;
        case 'W':
            b->window = (unsigned)atoi(optarg);
            break;
        case 'r':
            b->rate = strtod(optarg, NULL);
            break;
        case 'z':
            b->size = (unsigned)atoi(optarg);
            break;
        case 'd':
            b->duration = strtod(optarg, NULL);
            break;
        case 'D':
            b->drain = strtod(optarg, NULL);
            break;
        case 'a':
            b->manual_ack = strcmp(optarg, "auto") != 0;
            b->batch_ack = strcmp(optarg, "batch") == 0;
            break;
        case 'C':
            b->confirm = true;
            break;
        case 'f':
            b->prefetch = (unsigned)atoi(optarg);
            break;
        case 'b':
            b->broker_pid = atoi(optarg);
            break;
        case 'l':
            b->label = optarg;
            break;
        default:
            return -1;
        }
    }
    if (optind != argc || !b->port || !b->pubs || !b->subs || !b->window || b->duration <= 0)
        return -1;
    return 0;
}

static void report(struct amqp_bench *b, double secs, double self, double broker_cpu)
{
    struct bench_hist h;
    bench_hist_reset(&h);
    uint64_t unique = 0, dup = 0, exp = 0, errors = atomic_load(&b->errors);
    for (unsigned i = 0; i < b->pubs; i++) {
        exp += atomic_load(&b->p[i].sent) * (b->fanout ? b->subs : 1);
        unique += b->p[i].seen.unique;
        dup += b->p[i].seen.dup;
    }
    for (unsigned i = 0; i < b->subs; i++) {
        bench_hist_merge(&h, &b->s[i].hist);
        errors += b->s[i].errors;
        if (b->fanout)
            for (unsigned k = 0; k < b->pubs; k++) {
                unique += b->s[i].seen[k].unique;
                dup += b->s[i].seen[k].dup;
            }
    }
    struct bench_result r;
    bench_result_init(&r, b->fanout ? "fanout" : "queue");
    if (b->label)
        bench_result_str(&r, "label", b->label);
    bench_result_str(&r, "transport", "amqp");
    bench_result_u64(&r, "pubs", b->pubs);
    bench_result_u64(&r, "subs", b->subs);
    bench_result_u64(&r, "size", b->size);
    if (b->rate > 0)
        bench_result_f(&r, "target_rate", b->rate, 0);
    else
        bench_result_u64(&r, "window", b->window);
    if (!b->fanout) {
        bench_result_str(&r, "ack", b->manual_ack ? "client-individual" : "auto");
        bench_result_u64(&r, "prefetch", b->prefetch);
    }
    uint64_t recv = atomic_load(&b->recv_run), sent = atomic_load(&b->sent_run);
    bench_result_f(&r, "duration_s", secs, 2);
    bench_result_u64(&r, "sent", sent);
    bench_result_u64(&r, "recv", recv);
    bench_result_f(&r, "rate", secs > 0 ? (double)recv / secs : 0, 1);
    bench_result_f(&r, "msg_rate", secs > 0 ? (double)sent / secs : 0, 1);
    bench_result_hist(&r, "", &h);
    bench_result_u64(&r, "loss", exp > unique ? exp - unique : 0);
    bench_result_u64(&r, "dup", dup);
    bench_result_u64(&r, "errors", errors);
    bench_result_f(&r, "cpu_self", self, 3);
    bench_result_f(&r, "cpu_self_pct", secs > 0 ? self / secs * 100 : 0, 1);
    if (b->broker_pid)
        bench_result_f(&r, "cpu_broker", broker_cpu, 3);
    bench_result_print(&r);
}

int main(int argc, char **argv)
{
    static struct amqp_bench b = {.host = "127.0.0.1",
                                  .user = "guest",
                                  .pass = "guest",
                                  .vhost = "/",
                                  .fanout = true,
                                  .pubs = 1,
                                  .subs = 1,
                                  .window = 64,
                                  .size = 100,
                                  .duration = 10,
                                  .drain = 5};
    if (parse_args(&b, argc, argv) != 0) {
        usage();
        return 2;
    }
    g_bench = &b;
    snprintf(b.key, sizeof(b.key), "bench-amqp-%d-%llx", (int)getpid(), (unsigned long long)(bench_now_ns() & 0xffffff));
    b.p = calloc(b.pubs, sizeof(*b.p));
    b.s = calloc(b.subs, sizeof(*b.s));
    if (!b.p || !b.s)
        return 1;
    for (unsigned i = 0; i < b.pubs; i++) {
        b.p[i].idx = i;
        pthread_mutex_init(&b.p[i].mu, NULL);
        pthread_cond_init(&b.p[i].cv, NULL);
        b.p[i].slots = calloc(b.window, sizeof(struct slot));
        if (!b.p[i].slots)
            return 1;
        for (unsigned k = 0; k < b.window; k++)
            b.p[i].slots[k].seq = UINT64_MAX;
    }
    /* consumers first: their queues must exist before anything is published */
    for (unsigned i = 0; i < b.subs; i++) {
        b.s[i].idx = i;
        bench_hist_reset(&b.s[i].hist);
        if (b.fanout && !(b.s[i].seen = calloc(b.pubs, sizeof(struct bench_seen))))
            return 1;
        pthread_create(&b.s[i].th, NULL, sub_main, &b.s[i]);
    }
    while (atomic_load(&b.ready) < b.subs)
        usleep(1000);
    for (unsigned i = 0; i < b.pubs; i++)
        pthread_create(&b.p[i].th, NULL, pub_main, &b.p[i]);
    while (atomic_load(&b.ready) < b.subs + b.pubs)
        usleep(1000);
    int rc = atomic_load(&b.errors) ? 1 : 0;
    double self0 = bench_self_cpu(), bcpu0 = b.broker_pid ? bench_proc_cpu(b.broker_pid) : 0;
    b.t_run = bench_now_ns();
    atomic_store(&b.phase, rc ? PH_DONE : PH_RUN);
    if (!rc)
        sleep_until(b.t_run + (uint64_t)(b.duration * 1e9));
    uint64_t t_stop = bench_now_ns();
    double self1 = bench_self_cpu(), bcpu1 = b.broker_pid ? bench_proc_cpu(b.broker_pid) : 0;
    atomic_store(&b.phase, rc ? PH_DONE : PH_DRAIN);
    uint64_t drain_end = t_stop + (uint64_t)(b.drain * 1e9);
    while (!rc && !all_in(&b) && bench_now_ns() < drain_end)
        usleep(2000);
    atomic_store(&b.phase, PH_DONE);
    for (unsigned i = 0; i < b.pubs; i++)
        pthread_join(b.p[i].th, NULL);
    for (unsigned i = 0; i < b.subs; i++)
        pthread_join(b.s[i].th, NULL);
    if (!b.fanout) {
        amqp_connection_state_t c = open_conn(&b);
        if (c) {
            amqp_queue_delete(c, 1, amqp_cstring_bytes(b.key), 0, 0);
            close_conn(c);
        }
    }
    report(&b, (double)(t_stop - b.t_run) / 1e9, self1 - self0, bcpu1 - bcpu0);
    return rc || !all_in(&b) ? 1 : 0;
}

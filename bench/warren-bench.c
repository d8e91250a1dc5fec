/*
 * bench/warren-bench.c — a STOMP 1.2 load generator over WebSocket (RFC 6455 client side, `v12.stomp`) or raw TCP,
 * for any STOMP server: warren, RabbitMQ's Web-STOMP, others. One process, one epoll loop, non-blocking sockets with
 * TCP_NODELAY, at most one write per connection per loop turn (everything a turn produces for a connection is
 * coalesced in its output buffer and flushed at the end of the turn).
 *
 * Scenarios (--scenario):
 *   fanout    P publishers → S subscribers of one /topic/ (or --dest, e.g. /exchange/...), ack:auto;
 *   queue     P publishers → C competing consumers of one /queue/ (--ack auto|client-individual, --prefetch N);
 *   receipts  queue, every SEND carrying a receipt: the window counts unanswered receipts, latency is SEND → RECEIPT;
 *   reqreply  P requesters → C responders over a /queue/, replies through reply-to:/temp-queue/;
 *   idle      N sessions with one subscription each, connected (--connect-concurrency at a time) and held;
 *   churn     C concurrent CONNECT / DISCONNECT(receipt) cycles, a new TCP connection each.
 * Closed loop (--window W messages in flight per publisher: a fan-out message is in flight until every subscriber has
 * it) or open loop (--rate R messages/s over all publishers, sent on schedule whatever the server does; the latency is
 * then measured from the scheduled time, so a stalled server cannot hide its queueing).
 *
 * Bodies carry "publisher:sequence:CLOCK_MONOTONIC ns;" padded to --size bytes: end-to-end latency comes from the body,
 * loss and duplicates from a bitmap of sequence numbers per publisher (per subscriber and publisher for fan-out).
 * One RESULT line on stdout (see doc/performance.md for its fields); progress lines and errors on stderr. Exit status 0
 * when the run completed without loss, duplicates or errors, 1 otherwise, 2 for usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bench/stats.h"
#include "bench/wsclient.h"
#include "stomp/frame.h"
#include "ws/frame.h"

/* ---------------------------------------------------------------------------------------------------------------- */
/* Options */

enum scenario {
    SC_FANOUT = 0,
    SC_QUEUE = 1,
    SC_RECEIPTS = 2,
    SC_REQREPLY = 3,
    SC_IDLE = 4,
    SC_CHURN = 5,
};
static const char *const scenario_names[] = {"fanout", "queue", "receipts", "reqreply", "idle", "churn"};

struct opts {
    enum scenario scenario;
    bool tcp; /* raw STOMP over TCP instead of WebSocket */
    char host[256];
    char port[16];
    char path[256];
    const char *login, *passcode, *vhost;
    const char *dest;
    const char *ack;
    unsigned pubs, subs, sessions, window, prefetch, size, conc;
    double rate;     /* messages/s over all publishers; 0: closed loop */
    double duration; /* seconds of measurement (idle: of holding) */
    double drain;    /* seconds allowed after the measurement for in-flight messages */
    double setup_timeout;
    bool deflate, progress, quiet;
    struct bench_proc procs[BENCH_MAX_PIDS];
    int nprocs;
    const char *gc_cmd;
    const char *label;
};

/* ---------------------------------------------------------------------------------------------------------------- */
/* Buffers and connections */

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

enum role {
    ROLE_PUB = 0, /* publisher / requester */
    ROLE_SUB = 1, /* subscriber / consumer / responder / idle session */
    ROLE_CHURN = 2,
};

enum cstate {
    CS_FREE = 0,
    CS_TCP = 1,       /* connect() in progress */
    CS_UPGRADE = 2,   /* HTTP upgrade sent, waiting for 101 */
    CS_CONNECT = 3,   /* STOMP CONNECT sent */
    CS_SUBSCRIBE = 4, /* SUBSCRIBE sent with a receipt */
    CS_READY = 5,
    CS_BYE = 6, /* DISCONNECT sent (churn) */
};

#define MAX_HEADERS 32

struct conn {
    int fd;
    unsigned idx; /* publisher index (ROLE_PUB) or subscriber index (ROLE_SUB) */
    enum role role;
    enum cstate state;
    bool dirty;    /* on the flush list */
    bool epollout; /* EPOLLOUT armed */
    char key[BENCH_WS_KEY_LEN + 1];
    struct buf in;    /* raw bytes read */
    struct buf stomp; /* STOMP stream (WebSocket payloads; the raw bytes with --tcp) */
    struct buf out;
    struct stomp_parser parser;
    struct stomp_header hdrs[MAX_HEADERS];
    uint64_t t_start;          /* churn: start of the cycle */
    struct bench_seen *seen;   /* fanout subscriber: one per publisher */
    struct conn *next_dirty;   /* flush list */
    struct conn *next_pending; /* not yet started (idle, churn) */
};

struct slot {
    uint64_t seq;
    uint64_t t_ns;
    uint32_t remaining;
};

struct pub {
    struct conn *c;
    uint64_t sent;
    uint64_t inflight;
    uint64_t answered; /* receipts / replies */
    struct slot *slots;
    struct bench_seen seen; /* queue-like scenarios: deliveries of this publisher's messages */
    bool pump_pending;
    struct pub *next_pump;
};

enum phase {
    PH_SETUP = 0,
    PH_RUN = 1,
    PH_DRAIN = 2,
    PH_DONE = 3,
};

struct bench {
    struct opts o;
    int ep;
    struct addrinfo *ai;
    uint64_t rnd;
    enum phase phase;
    char dest[512];
    char stamp[64]; /* unique part of destination names */
    struct conn *conns;
    unsigned nconns;
    struct pub *pubs;
    unsigned npubs, nsubs;
    unsigned ready; /* sessions set up */
    unsigned expect_per_msg;
    struct conn *dirty;
    struct pub *pump;
    struct conn *pending; /* idle/churn: not yet connecting */
    unsigned connecting;  /* idle/churn: in the handshake */
    uint64_t t_setup, t_run, t_stop, t_end, next_progress;
    /* counts */
    uint64_t recv_run;   /* deliveries (or receipts, cycles) during the run phase */
    uint64_t recv_total; /* everything, drain included */
    uint64_t sent_run;
    uint64_t errors;
    uint64_t cycles;
    uint64_t compressed; /* WebSocket messages with RSV1 (permessage-deflate), not inflated */
    struct bench_hist hist;
    /* figures of other processes */
    double cpu_run0[BENCH_MAX_PIDS], cpu_run1[BENCH_MAX_PIDS];
    struct bench_tasks tasks0[BENCH_MAX_PIDS], tasks1[BENCH_MAX_PIDS];
    long rss0[BENCH_MAX_PIDS], rss1[BENCH_MAX_PIDS];
    double self0, self1;
    struct buf scratch; /* one serialised STOMP frame */
    char *body;         /* one message body (--size + room for the stamp) */
    size_t body_cap;
    int tfd;      /* timerfd: open-loop send times, to the nanosecond */
    bool stopped; /* stop_run() done */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t rnd_next(struct bench *b)
{
    /* xorshift64*: masks and keys need to vary, not to be secret */
    b->rnd ^= b->rnd >> 12;
    b->rnd ^= b->rnd << 25;
    b->rnd ^= b->rnd >> 27;
    return b->rnd * 2685821657736338717ull;
}

static void fail_conn(struct bench *b, struct conn *c, const char *what, const char *detail);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Output: frames are appended to c->out and written once per loop turn. */

static void mark_dirty(struct bench *b, struct conn *c)
{
    if (!c->dirty && c->fd >= 0) {
        c->dirty = true;
        c->next_dirty = b->dirty;
        b->dirty = c;
    }
}

/* Wraps payload (a STOMP frame, or bytes of the handshake when raw) for the transport and queues it. */
static int queue_bytes(struct bench *b, struct conn *c, const char *data, size_t len, bool raw)
{
    if (raw || b->o.tcp) {
        if (buf_reserve(&c->out, len) != 0)
            return -ENOMEM;
        memcpy(c->out.data + c->out.len, data, len);
        c->out.len += len;
    } else {
        if (buf_reserve(&c->out, len + WS_FRAME_HEADER_MAX_MASKED) != 0)
            return -ENOMEM;
        uint64_t r = rnd_next(b);
        uint8_t mask[4];
        memcpy(mask, &r, 4);
        size_t n = ws_frame_client_encode((uint8_t *)c->out.data + c->out.len, c->out.cap - c->out.len, WS_OP_TEXT, true, 0, mask,
                                          (const uint8_t *)data, len);
        if (n == 0)
            return -ENOSPC;
        c->out.len += n;
    }
    mark_dirty(b, c);
    return 0;
}

/* Serialises a STOMP 1.2 frame (headers as name/value pairs, NULL-terminated) and queues it. */
static int send_frame(struct bench *b, struct conn *c, enum stomp_cmd cmd, const char *const *kv, const char *body, size_t body_len)
{
    struct stomp_header h[MAX_HEADERS];
    size_t n = 0;
    for (; kv[2 * n] && n < MAX_HEADERS; n++) {
        h[n].name = kv[2 * n];
        h[n].name_len = strlen(kv[2 * n]);
        h[n].value = kv[2 * n + 1];
        h[n].value_len = strlen(kv[2 * n + 1]);
    }
    struct stomp_frame f = {.cmd = cmd, .headers = h, .n_headers = n, .body = body, .body_len = body_len};
    size_t len = 0;
    const char *reason = NULL;
    int r = stomp_frame_write(&f, STOMP_V1_2, 0, b->scratch.data, b->scratch.cap, &len, &reason);
    if (r == STOMP_E_NOSPACE) {
        if (buf_reserve(&b->scratch, len + 64) != 0)
            return -ENOMEM;
        r = stomp_frame_write(&f, STOMP_V1_2, 0, b->scratch.data, b->scratch.cap, &len, &reason);
    }
    if (r != 0) {
        fprintf(stderr, "warren-bench: cannot write a %s frame: %s\n", stomp_cmd_str(cmd), reason ? reason : "?");
        return -EINVAL;
    }
    return queue_bytes(b, c, b->scratch.data, len, false);
}

static void flush_conn(struct bench *b, struct conn *c)
{
    while (c->out.len > 0) {
        ssize_t n = write(c->fd, c->out.data, c->out.len);
        if (n > 0) {
            buf_drop(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        fail_conn(b, c, "write", strerror(errno));
        return;
    }
    bool want = c->out.len > 0 || c->state == CS_TCP;
    if (want != c->epollout) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->epollout = want;
    }
}

static void flush_all(struct bench *b)
{
    while (b->dirty) {
        struct conn *c = b->dirty;
        b->dirty = c->next_dirty;
        c->dirty = false;
        if (c->fd >= 0 && c->state != CS_TCP)
            flush_conn(b, c);
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Connection set-up */

static int conn_open(struct bench *b, struct conn *c)
{
    c->fd = socket(b->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fprintf(stderr, "warren-bench: socket: %s (raise the descriptor limit: ulimit -n)\n", strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, b->ai->ai_addr, b->ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        int e = errno;
        fprintf(stderr, "warren-bench: connect: %s\n", strerror(e));
        close(c->fd);
        c->fd = -1;
        return -e;
    }
    c->state = CS_TCP;
    c->in.len = c->stomp.len = c->out.len = 0;
    stomp_parser_init(&c->parser, NULL, c->hdrs, MAX_HEADERS);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->epollout = true;
    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        return -e;
    }
    c->t_start = bench_now_ns();
    return 0;
}

static void conn_close(struct bench *b, struct conn *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(b->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = CS_FREE;
    c->epollout = false;
    c->in.len = c->stomp.len = c->out.len = 0;
}

static void send_connect(struct bench *b, struct conn *c)
{
    const char *kv[] = {"accept-version", "1.2",         "host",       b->o.vhost, "login", b->o.login,
                        "passcode",       b->o.passcode, "heart-beat", "0,0",      NULL};
    c->state = CS_CONNECT;
    if (send_frame(b, c, STOMP_CMD_CONNECT, kv, NULL, 0) != 0)
        fail_conn(b, c, "CONNECT", "cannot queue");
}

/* The TCP connection is up: start the WebSocket upgrade, or STOMP right away with --tcp. */
static void on_tcp_connected(struct bench *b, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        fail_conn(b, c, "connect", strerror(err ? err : errno));
        return;
    }
    if (b->o.tcp) {
        send_connect(b, c);
        return;
    }
    uint64_t r[2] = {rnd_next(b), rnd_next(b)};
    bench_ws_key(c->key, r);
    char req[1024], host[300];
    snprintf(host, sizeof(host), "%s:%s", b->o.host, b->o.port);
    size_t n = bench_ws_request(req, sizeof(req), host, b->o.path, c->key, "v12.stomp", b->o.deflate);
    c->state = CS_UPGRADE;
    if (n == 0 || queue_bytes(b, c, req, n, true) != 0)
        fail_conn(b, c, "upgrade", "cannot build the request");
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Scenario logic */

static bool closed_loop(const struct bench *b)
{
    return b->o.rate <= 0;
}

static const char *sub_dest(struct bench *b, struct conn *c, char *tmp, size_t cap)
{
    if (b->o.scenario == SC_IDLE && !b->o.dest) {
        snprintf(tmp, cap, "%s.%u", b->dest, c->idx);
        return tmp;
    }
    return b->dest;
}

static void send_subscribe(struct bench *b, struct conn *c)
{
    char d[600], pf[16];
    const char *ack = (b->o.scenario == SC_QUEUE || b->o.scenario == SC_RECEIPTS) ? b->o.ack : "auto";
    snprintf(pf, sizeof(pf), "%u", b->o.prefetch);
    const char *kv[] = {"id",
                        "0",
                        "destination",
                        sub_dest(b, c, d, sizeof(d)),
                        "ack",
                        ack,
                        "receipt",
                        "sub",
                        b->o.prefetch ? "prefetch-count" : NULL,
                        pf,
                        NULL};
    c->state = CS_SUBSCRIBE;
    if (send_frame(b, c, STOMP_CMD_SUBSCRIBE, kv, NULL, 0) != 0)
        fail_conn(b, c, "SUBSCRIBE", "cannot queue");
}

static void sample_procs(struct bench *b, double *cpu, struct bench_tasks *tasks)
{
    for (int i = 0; i < b->o.nprocs; i++) {
        cpu[i] = bench_proc_cpu(b->o.procs[i].pid);
        if (tasks)
            bench_tasks_read(b->o.procs[i].pid, &tasks[i]);
    }
}

static void sample_rss(struct bench *b, long *rss)
{
    if (b->o.nprocs == 0)
        return;
    if (b->o.gc_cmd && system(b->o.gc_cmd) != 0)
        fprintf(stderr, "warren-bench: --gc-cmd failed\n");
    for (int i = 0; i < b->o.nprocs; i++) {
        long hwm;
        bench_proc_mem(b->o.procs[i].pid, &rss[i], &hwm);
    }
}

static void schedule_pump(struct bench *b, struct pub *p)
{
    if (!p->pump_pending) {
        p->pump_pending = true;
        p->next_pump = b->pump;
        b->pump = p;
    }
}

static void start_run(struct bench *b)
{
    b->phase = PH_RUN;
    if (b->o.scenario == SC_IDLE) {
        /* connect rate is measured over the set-up; memory after it; then idle CPU over the hold */
        sample_rss(b, b->rss1);
    }
    b->t_run = bench_now_ns();
    b->t_stop = b->t_run + (uint64_t)(b->o.duration * 1e9);
    b->next_progress = b->t_run + 1000000000u;
    b->self0 = bench_self_cpu();
    sample_procs(b, b->cpu_run0, b->tasks0);
    for (unsigned i = 0; i < b->npubs; i++)
        schedule_pump(b, &b->pubs[i]);
}

static void session_ready(struct bench *b, struct conn *c)
{
    c->state = CS_READY;
    b->ready++;
    if (b->o.scenario == SC_IDLE && b->connecting > 0)
        b->connecting--;
    if (b->phase == PH_SETUP && b->ready == b->nconns)
        start_run(b);
}

/* Body: "pub:seq:t_ns;" then '.' up to --size bytes. */
static size_t make_body(struct bench *b, unsigned pub, uint64_t seq, uint64_t t_ns, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%u:%llu:%llu;", pub, (unsigned long long)seq, (unsigned long long)t_ns);
    size_t len = n > 0 ? (size_t)n : 0;
    if (len < b->o.size && b->o.size <= cap) {
        memset(out + len, '.', b->o.size - len);
        len = b->o.size;
    }
    return len;
}

/* Reads a decimal number ending at `stop` from *p (advanced past the stop byte). */
static int parse_num(const char **p, const char *end, char stop, uint64_t *v)
{
    const char *q = *p;
    uint64_t n = 0;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    while (q < end && *q >= '0' && *q <= '9' && n < UINT64_MAX / 10)
        n = n * 10 + (uint64_t)(*q++ - '0');
    if (q >= end || *q != stop)
        return -1;
    *p = q + 1;
    *v = n;
    return 0;
}

static int parse_body(const char *body, size_t len, unsigned *pub, uint64_t *seq, uint64_t *t_ns)
{
    const char *p = body, *end = body + len;
    uint64_t pv;
    if (parse_num(&p, end, ':', &pv) != 0 || pv > UINT_MAX || parse_num(&p, end, ':', seq) != 0 ||
        parse_num(&p, end, ';', t_ns) != 0)
        return -1;
    *pub = (unsigned)pv;
    return 0;
}

static int send_one(struct bench *b, struct pub *p, uint64_t t_ns)
{
    uint64_t seq = p->sent;
    size_t len = make_body(b, (unsigned)(p - b->pubs), seq, t_ns, b->body, b->body_cap);
    char rc[24];
    snprintf(rc, sizeof(rc), "%llu", (unsigned long long)seq);
    const char *kv_send[] = {
        "destination", b->dest, "content-type", "text/plain", b->o.scenario == SC_RECEIPTS ? "receipt" : NULL, rc, NULL};
    const char *kv_req[] = {"destination", b->dest, "reply-to", "/temp-queue/r", NULL};
    int r = send_frame(b, p->c, STOMP_CMD_SEND, b->o.scenario == SC_REQREPLY ? kv_req : kv_send, b->body, len);
    if (r != 0)
        return r;
    if (closed_loop(b)) {
        struct slot *s = &p->slots[seq % b->o.window];
        s->seq = seq;
        s->t_ns = t_ns;
        s->remaining = b->expect_per_msg;
        p->inflight++;
    }
    p->sent++;
    b->sent_run++;
    return 0;
}

/* Sends what the publisher may: up to the window (closed loop) or what is due (open loop). */
static void pump(struct bench *b, struct pub *p, uint64_t now)
{
    if (b->phase != PH_RUN || !p->c || p->c->state != CS_READY)
        return;
    if (closed_loop(b)) {
        while (p->inflight < b->o.window)
            if (send_one(b, p, bench_now_ns()) != 0)
                break;
        return;
    }
    double per_pub = b->o.rate / b->npubs;
    uint64_t due = (uint64_t)((double)(now - b->t_run) / 1e9 * per_pub) + 1;
    /* the server does not read what we send: do not queue without bound (the latency shows it anyway) */
    while (p->sent < due && p->c->out.len < (8u << 20))
        if (send_one(b, p, b->t_run + (uint64_t)((double)p->sent * 1e9 / per_pub)) != 0)
            break;
}

/* Open loop: the timerfd fires at the next scheduled send of any publisher. */
static void arm_timer(struct bench *b)
{
    if (closed_loop(b) || b->phase != PH_RUN || b->npubs == 0)
        return;
    uint64_t least = UINT64_MAX;
    for (unsigned i = 0; i < b->npubs; i++)
        if (b->pubs[i].sent < least)
            least = b->pubs[i].sent;
    uint64_t at = b->t_run + (uint64_t)((double)least * 1e9 / (b->o.rate / b->npubs));
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at / 1000000000u), .tv_nsec = (long)(at % 1000000000u)}};
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(b->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* One more delivery/receipt/reply for publisher pub's message seq (closed loop: free its slot when complete). */
static void complete(struct bench *b, unsigned pub, uint64_t seq)
{
    if (pub >= b->npubs)
        return;
    struct pub *p = &b->pubs[pub];
    if (!closed_loop(b))
        return;
    struct slot *s = &p->slots[seq % b->o.window];
    if (s->seq != seq || s->remaining == 0)
        return;
    if (--s->remaining == 0) {
        p->inflight--;
        schedule_pump(b, p);
    }
}

static void count_recv(struct bench *b)
{
    b->recv_total++;
    if (b->phase == PH_RUN)
        b->recv_run++;
}

static void on_message(struct bench *b, struct conn *c, const struct stomp_frame *f)
{
    uint64_t now = bench_now_ns();
    unsigned pub;
    uint64_t seq, t;
    if (c->role == ROLE_SUB && b->o.scenario == SC_REQREPLY) {
        /* responder: answer to reply-to with the same body */
        const struct stomp_header *rt = stomp_frame_header(f, "reply-to");
        if (!rt)
            return;
        char d[512];
        snprintf(d, sizeof(d), "%.*s", (int)rt->value_len, rt->value);
        const char *kv[] = {"destination", d, NULL};
        if (send_frame(b, c, STOMP_CMD_SEND, kv, f->body, f->body_len) != 0)
            fail_conn(b, c, "reply", "cannot queue");
        return;
    }
    if (parse_body(f->body, f->body_len, &pub, &seq, &t) != 0 || pub >= b->npubs) {
        b->errors++;
        fprintf(stderr, "warren-bench: a MESSAGE whose body is not one of ours\n");
        return;
    }
    if (b->o.scenario == SC_QUEUE || b->o.scenario == SC_RECEIPTS) {
        const struct stomp_header *ack = stomp_frame_header(f, "ack");
        if (strcmp(b->o.ack, "auto") != 0 && ack) {
            char id[256];
            snprintf(id, sizeof(id), "%.*s", (int)ack->value_len, ack->value);
            const char *kv[] = {"id", id, NULL};
            if (send_frame(b, c, STOMP_CMD_ACK, kv, NULL, 0) != 0)
                fail_conn(b, c, "ACK", "cannot queue");
        }
    }
    struct bench_seen *seen = b->o.scenario == SC_FANOUT ? &c->seen[pub] : &b->pubs[pub].seen;
    int fresh = bench_seen_add(seen, seq);
    if (fresh < 0) {
        b->errors++;
        return;
    }
    if (b->o.scenario == SC_RECEIPTS)
        return; /* deliveries count for loss only; the rate, latency and window come from the receipts */
    if (!fresh)
        return;
    count_recv(b);
    if (b->phase == PH_RUN || b->phase == PH_DRAIN)
        bench_hist_add(&b->hist, now > t ? now - t : 0);
    complete(b, pub, seq);
}

/*
 * churn: the session is over, by the RECEIPT of our DISCONNECT or by the server closing the connection cleanly after it
 * (Web-STOMP closes the WebSocket with 1000 without sending the receipt).
 */
static void cycle_done(struct bench *b, struct conn *c)
{
    uint64_t now = bench_now_ns();
    if (b->phase == PH_RUN) {
        bench_hist_add(&b->hist, now - c->t_start);
        b->recv_run++;
    }
    b->recv_total++;
    conn_close(b, c);
    b->connecting--;
    if (b->phase == PH_SETUP)
        start_run(b); /* the warm-up cycle (the server's first login for these credentials) is not timed */
    if (b->phase == PH_RUN) {
        c->next_pending = b->pending;
        b->pending = c;
    }
}

static void on_receipt(struct bench *b, struct conn *c, const struct stomp_frame *f)
{
    const struct stomp_header *id = stomp_frame_header(f, "receipt-id");
    if (!id)
        return;
    if (c->state == CS_SUBSCRIBE && stomp_header_value_is(id, "sub")) {
        session_ready(b, c);
        return;
    }
    if (c->state == CS_BYE && stomp_header_value_is(id, "bye")) {
        cycle_done(b, c);
        return;
    }
    if (b->o.scenario == SC_RECEIPTS && c->role == ROLE_PUB) {
        char tmp[24];
        snprintf(tmp, sizeof(tmp), "%.*s", (int)(id->value_len < 23 ? id->value_len : 23), id->value);
        uint64_t seq = strtoull(tmp, NULL, 10);
        struct pub *p = &b->pubs[c->idx];
        if (closed_loop(b)) {
            struct slot *s = &p->slots[seq % b->o.window];
            if (s->seq == seq && s->remaining > 0) {
                bench_hist_add(&b->hist, bench_now_ns() - s->t_ns);
                count_recv(b);
            }
        } else {
            count_recv(b);
        }
        p->answered++;
        complete(b, c->idx, seq);
    }
}

static void on_reply(struct bench *b, struct conn *c, const struct stomp_frame *f)
{
    unsigned pub;
    uint64_t seq, t;
    if (parse_body(f->body, f->body_len, &pub, &seq, &t) != 0 || pub != c->idx) {
        b->errors++;
        return;
    }
    int fresh = bench_seen_add(&b->pubs[pub].seen, seq);
    if (fresh <= 0)
        return;
    count_recv(b);
    bench_hist_add(&b->hist, bench_now_ns() - t);
    complete(b, pub, seq);
}

static void on_connected(struct bench *b, struct conn *c)
{
    stomp_parser_set_version(&c->parser, STOMP_V1_2);
    if (c->role == ROLE_CHURN) {
        const char *kv[] = {"receipt", "bye", NULL};
        c->state = CS_BYE;
        if (send_frame(b, c, STOMP_CMD_DISCONNECT, kv, NULL, 0) != 0)
            fail_conn(b, c, "DISCONNECT", "cannot queue");
        return;
    }
    if (c->role == ROLE_SUB) {
        send_subscribe(b, c);
        return;
    }
    session_ready(b, c);
}

static void on_frame(struct bench *b, struct conn *c, const struct stomp_frame *f)
{
    switch (f->cmd) {
    case STOMP_CMD_CONNECTED:
        if (c->state == CS_CONNECT)
            on_connected(b, c);
        break;
    case STOMP_CMD_MESSAGE:
        if (c->role == ROLE_PUB && b->o.scenario == SC_REQREPLY)
            on_reply(b, c, f);
        else
            on_message(b, c, f);
        break;
    case STOMP_CMD_RECEIPT:
        on_receipt(b, c, f);
        break;
    case STOMP_CMD_ERROR: {
        const struct stomp_header *m = stomp_frame_header(f, "message");
        char msg[300];
        snprintf(msg, sizeof(msg), "%.*s", m ? (int)m->value_len : 0, m ? m->value : "");
        fail_conn(b, c, "ERROR frame", msg);
        break;
    }
    default:
        break;
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Input */

static void feed_stomp(struct bench *b, struct conn *c)
{
    size_t off = 0;
    while (c->fd >= 0 && off < c->stomp.len) {
        size_t used = 0;
        struct stomp_frame f;
        const char *reason = NULL;
        int r = stomp_parser_feed(&c->parser, c->stomp.data + off, c->stomp.len - off, &used, &f, &reason);
        if (r == STOMP_NEED_MORE)
            break;
        if (r == STOMP_HEARTBEAT) {
            off += used;
            continue;
        }
        if (r != 0) {
            fail_conn(b, c, "STOMP", reason ? reason : "bad frame");
            return;
        }
        on_frame(b, c, &f);
        off += used;
    }
    if (c->fd >= 0)
        buf_drop(&c->stomp, off);
}

/* WebSocket: complete frames from c->in → payloads onto c->stomp; pings answered; a close ends the connection. */
static void feed_ws(struct bench *b, struct conn *c)
{
    size_t off = 0;
    if (c->state == CS_UPGRADE) {
        size_t used = 0;
        bool deflate = false;
        const char *reason = NULL;
        int r = bench_ws_response(c->in.data, c->in.len, c->key, &used, &deflate, &reason);
        if (r == 1)
            return;
        if (r < 0) {
            char line[120];
            snprintf(line, sizeof(line), "%s (%.*s)", reason, (int)strcspn(c->in.data, "\r\n") % 80, c->in.data);
            fail_conn(b, c, "upgrade", line);
            return;
        }
        off = used;
        send_connect(b, c);
    }
    while (off < c->in.len) {
        struct bench_ws_frame f;
        size_t used = 0;
        const char *reason = NULL;
        int r = bench_ws_frame_read((const uint8_t *)c->in.data + off, c->in.len - off, 64u << 20, &used, &f, &reason);
        if (r == 1)
            break;
        if (r < 0) {
            fail_conn(b, c, "WebSocket", reason);
            return;
        }
        off += used;
        if (f.opcode == WS_OP_PING) {
            uint8_t pong[WS_CONTROL_FRAME_MAX + 8];
            uint64_t m = rnd_next(b);
            size_t n = ws_frame_client_encode(pong, sizeof(pong), WS_OP_PONG, true, 0, (const uint8_t *)&m, f.payload, f.len);
            if (n)
                queue_bytes(b, c, (const char *)pong, n, true);
        } else if (f.opcode == WS_OP_CLOSE) {
            /* what came before the close first: a RECEIPT for our DISCONNECT ends the connection cleanly */
            if (c->stomp.len > 0)
                feed_stomp(b, c);
            if (c->fd < 0)
                return;
            if (c->state == CS_BYE) {
                cycle_done(b, c);
                return;
            }
            char why[160];
            unsigned code = f.len >= 2 ? (unsigned)f.payload[0] << 8 | f.payload[1] : 1005;
            snprintf(why, sizeof(why), "close %u %.*s", code, f.len > 2 ? (int)(f.len - 2) : 0, (const char *)f.payload + 2);
            fail_conn(b, c, "WebSocket", why);
            return;
        } else if (f.opcode <= WS_OP_BINARY) {
            if (f.rsv1) {
                b->compressed++; /* permessage-deflate: counted, not inflated (see --deflate) */
                continue;
            }
            if (buf_reserve(&c->stomp, f.len) != 0) {
                fail_conn(b, c, "memory", "out of memory");
                return;
            }
            memcpy(c->stomp.data + c->stomp.len, f.payload, f.len);
            c->stomp.len += f.len;
        }
    }
    buf_drop(&c->in, off);
    if (c->stomp.len > 0)
        feed_stomp(b, c);
}

static void on_readable(struct bench *b, struct conn *c)
{
    struct buf *dst = b->o.tcp && c->state != CS_UPGRADE ? &c->stomp : &c->in;
    if (buf_reserve(dst, 65536) != 0) {
        fail_conn(b, c, "memory", "out of memory");
        return;
    }
    ssize_t n = read(c->fd, dst->data + dst->len, dst->cap - dst->len);
    if (n == 0 && c->state == CS_BYE) {
        cycle_done(b, c);
        return;
    }
    if (n == 0) {
        fail_conn(b, c, "read", "the server closed the connection");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            fail_conn(b, c, "read", strerror(errno));
        return;
    }
    dst->len += (size_t)n;
    if (b->o.tcp)
        feed_stomp(b, c);
    else
        feed_ws(b, c);
}

static void fail_conn(struct bench *b, struct conn *c, const char *what, const char *detail)
{
    if (c->fd < 0)
        return;
    if (c->role == ROLE_CHURN || (b->o.scenario == SC_IDLE && c->state != CS_READY))
        b->connecting--;
    b->errors++;
    if (b->errors <= 10)
        fprintf(stderr, "warren-bench: %s %u: %s: %s\n", c->role == ROLE_PUB ? "publisher" : "session", c->idx, what,
                detail ? detail : "");
    conn_close(b, c);
    if (b->phase == PH_SETUP)
        b->phase = PH_DONE; /* a broken set-up measures nothing */
    if (c->role == ROLE_CHURN && b->phase == PH_RUN) {
        c->next_pending = b->pending; /* keep --conc cycles going */
        b->pending = c;
    }
}

/* idle and churn: open connections up to --connect-concurrency at a time. */
static void start_pending(struct bench *b)
{
    while (b->pending && b->connecting < b->o.conc) {
        struct conn *c = b->pending;
        b->pending = c->next_pending;
        if (conn_open(b, c) != 0) {
            b->errors++;
            b->phase = b->phase == PH_SETUP ? PH_DONE : b->phase;
            return;
        }
        b->connecting++;
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Run */

static uint64_t expected_total(const struct bench *b, uint64_t *unique, uint64_t *dup)
{
    uint64_t exp = 0;
    *unique = *dup = 0;
    for (unsigned i = 0; i < b->npubs; i++) {
        exp += b->pubs[i].sent * (b->o.scenario == SC_FANOUT ? b->nsubs : 1);
        *unique += b->pubs[i].seen.unique;
        *dup += b->pubs[i].seen.dup;
    }
    if (b->o.scenario == SC_FANOUT)
        for (unsigned i = 0; i < b->nconns; i++)
            if (b->conns[i].role == ROLE_SUB && b->conns[i].seen)
                for (unsigned p = 0; p < b->npubs; p++) {
                    *unique += b->conns[i].seen[p].unique;
                    *dup += b->conns[i].seen[p].dup;
                }
    return exp;
}

static bool all_answered(const struct bench *b)
{
    if (b->o.scenario == SC_CHURN)
        return b->connecting == 0;
    if (b->o.scenario == SC_IDLE)
        return true;
    uint64_t u, d;
    uint64_t exp = expected_total(b, &u, &d);
    if (b->o.scenario == SC_RECEIPTS)
        for (unsigned i = 0; i < b->npubs; i++)
            if (b->pubs[i].answered < b->pubs[i].sent)
                return false;
    return u >= exp;
}

static void stop_run(struct bench *b, uint64_t now)
{
    b->phase = PH_DRAIN;
    b->stopped = true;
    b->t_stop = now;
    b->self1 = bench_self_cpu();
    sample_procs(b, b->cpu_run1, b->tasks1);
    b->t_end = now + (uint64_t)(b->o.drain * 1e9);
}

static void progress(struct bench *b, uint64_t now)
{
    double t = (double)(now - b->t_run) / 1e9;
    uint64_t inflight = 0;
    for (unsigned i = 0; i < b->npubs; i++)
        inflight += b->pubs[i].inflight;
    fprintf(stderr, "warren-bench: %s t=%.0fs sent=%llu recv=%llu rate=%.0f/s inflight=%llu p99_us=%.0f cpu_self=%.0f%%\n",
            scenario_names[b->o.scenario], t, (unsigned long long)b->sent_run, (unsigned long long)b->recv_run,
            t > 0 ? (double)b->recv_run / t : 0.0, (unsigned long long)inflight, (double)bench_hist_quantile(&b->hist, 0.99) / 1e3,
            t > 0 ? (bench_self_cpu() - b->self0) / t * 100 : 0.0);
}

static int next_timeout_ms(struct bench *b, uint64_t now)
{
    uint64_t next = now + 1000000000u;
    if (b->phase == PH_SETUP)
        next = b->t_setup + (uint64_t)(b->o.setup_timeout * 1e9);
    if (b->phase == PH_RUN) {
        if (b->t_stop < next)
            next = b->t_stop;
        if (b->next_progress < next)
            next = b->next_progress;
    }
    if (b->phase == PH_DRAIN && b->t_end < next)
        next = b->t_end;
    if (next <= now)
        return 0;
    uint64_t ms = (next - now + 999999) / 1000000;
    return (int)(ms > 1000 ? 1000 : ms);
}

static void timers(struct bench *b, uint64_t now)
{
    if (interrupted && b->phase < PH_DRAIN) {
        if (b->phase == PH_RUN)
            stop_run(b, now);
        else
            b->phase = PH_DONE;
    }
    if (b->phase == PH_SETUP && now > b->t_setup + (uint64_t)(b->o.setup_timeout * 1e9)) {
        fprintf(stderr, "warren-bench: only %u of %u sessions ready after %.0f s\n", b->ready, b->nconns, b->o.setup_timeout);
        b->errors++;
        b->phase = PH_DONE;
    }
    if (b->phase == PH_RUN) {
        if (now >= b->next_progress) {
            if (b->o.progress)
                progress(b, now);
            b->next_progress += 1000000000u;
        }
        if (now >= b->t_stop)
            stop_run(b, now);
    }
    if (b->phase == PH_DRAIN && (now >= b->t_end || all_answered(b)))
        b->phase = PH_DONE;
}

static void loop(struct bench *b)
{
    struct epoll_event evs[256];
    while (b->phase != PH_DONE) {
        uint64_t now = bench_now_ns();
        arm_timer(b);
        int n = epoll_wait(b->ep, evs, 256, next_timeout_ms(b, now));
        if (n < 0 && errno != EINTR) {
            perror("warren-bench: epoll_wait");
            b->errors++;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                uint64_t ticks;
                if (read(b->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                    b->errors++;
                for (unsigned k = 0; k < b->npubs; k++)
                    schedule_pump(b, &b->pubs[k]);
                continue;
            }
            if (c->fd < 0)
                continue;
            if (c->state == CS_TCP && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                on_tcp_connected(b, c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(b, c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT) && c->out.len > 0)
                mark_dirty(b, c);
        }
        now = bench_now_ns();
        timers(b, now);
        if (b->o.scenario == SC_CHURN && b->phase == PH_RUN)
            start_pending(b);
        if (b->o.scenario == SC_IDLE && b->phase == PH_SETUP)
            start_pending(b);
        while (b->pump) {
            struct pub *p = b->pump;
            b->pump = p->next_pump;
            p->pump_pending = false;
            pump(b, p, now);
        }
        flush_all(b);
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Set-up and report */

static int setup(struct bench *b)
{
    struct opts *o = &b->o;
    snprintf(b->stamp, sizeof(b->stamp), "bench-%d-%llx", (int)getpid(), (unsigned long long)(rnd_next(b) & 0xffffff));
    if (o->dest)
        snprintf(b->dest, sizeof(b->dest), "%s", o->dest);
    else if (o->scenario == SC_FANOUT || o->scenario == SC_IDLE)
        snprintf(b->dest, sizeof(b->dest), "/topic/%s", b->stamp);
    else
        snprintf(b->dest, sizeof(b->dest), "/queue/%s", b->stamp);
    switch (o->scenario) {
    case SC_IDLE:
        b->npubs = 0;
        b->nsubs = o->sessions;
        break;
    case SC_CHURN:
        b->npubs = 0;
        b->nsubs = 0;
        break;
    default:
        b->npubs = o->pubs;
        b->nsubs = o->subs;
    }
    b->expect_per_msg = o->scenario == SC_FANOUT ? b->nsubs : 1;
    b->nconns = o->scenario == SC_CHURN ? o->conc : b->npubs + b->nsubs;
    b->conns = calloc(b->nconns ? b->nconns : 1, sizeof(*b->conns));
    b->pubs = calloc(b->npubs ? b->npubs : 1, sizeof(*b->pubs));
    b->body_cap = o->size + 64;
    b->body = malloc(b->body_cap);
    if (!b->conns || !b->pubs || !b->body || buf_reserve(&b->scratch, o->size + 4096) != 0)
        return -ENOMEM;
    for (unsigned i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        c->fd = -1;
        if (o->scenario == SC_CHURN) {
            c->role = ROLE_CHURN;
            c->idx = i;
        } else if (i < b->npubs) {
            c->role = ROLE_PUB;
            c->idx = i;
            b->pubs[i].c = c;
            if (closed_loop(b)) {
                b->pubs[i].slots = calloc(o->window, sizeof(struct slot));
                if (!b->pubs[i].slots)
                    return -ENOMEM;
                for (unsigned s = 0; s < o->window; s++)
                    b->pubs[i].slots[s].seq = UINT64_MAX;
            }
        } else {
            c->role = ROLE_SUB;
            c->idx = i - b->npubs;
            if (o->scenario == SC_FANOUT) {
                c->seen = calloc(b->npubs, sizeof(*c->seen));
                if (!c->seen)
                    return -ENOMEM;
            }
        }
    }
    b->t_setup = bench_now_ns();
    if (o->scenario == SC_IDLE) {
        sample_rss(b, b->rss0);
        b->t_setup = bench_now_ns();
    }
    if (o->scenario == SC_IDLE || o->scenario == SC_CHURN) {
        for (unsigned i = b->nconns; i-- > 0;) {
            b->conns[i].next_pending = b->pending;
            b->pending = &b->conns[i];
        }
        if (o->scenario == SC_CHURN) {
            unsigned conc = o->conc;
            o->conc = 1; /* one warm-up cycle first, see cycle_done() */
            start_pending(b);
            o->conc = conc;
        } else {
            start_pending(b);
        }
        return b->phase == PH_DONE ? -EIO : 0;
    }
    for (unsigned i = 0; i < b->nconns; i++)
        if (conn_open(b, &b->conns[i]) != 0)
            return -EIO;
    return 0;
}

static void report(struct bench *b)
{
    struct opts *o = &b->o;
    struct bench_result r;
    bench_result_init(&r, scenario_names[o->scenario]);
    if (o->label)
        bench_result_str(&r, "label", o->label);
    bench_result_str(&r, "transport", o->tcp ? "tcp" : "ws");
    double secs = b->t_stop > b->t_run ? (double)(b->t_stop - b->t_run) / 1e9 : 0;
    double self = b->self1 - b->self0;
    uint64_t unique = 0, dup = 0, exp = expected_total(b, &unique, &dup);
    uint64_t loss = exp > unique ? exp - unique : 0;
    if (o->scenario == SC_RECEIPTS)
        for (unsigned i = 0; i < b->npubs; i++)
            loss += b->pubs[i].sent - (b->pubs[i].answered < b->pubs[i].sent ? b->pubs[i].answered : b->pubs[i].sent);
    if (o->scenario == SC_IDLE) {
        double setup_s = (double)(b->t_run - b->t_setup) / 1e9;
        bench_result_u64(&r, "sessions", b->ready);
        bench_result_f(&r, "connect_rate", setup_s > 0 ? b->ready / setup_s : 0, 1);
        bench_result_f(&r, "hold_s", secs, 2);
    } else if (o->scenario == SC_CHURN) {
        bench_result_u64(&r, "conc", o->conc);
        bench_result_u64(&r, "cycles", b->recv_run);
        bench_result_f(&r, "duration_s", secs, 2);
        bench_result_f(&r, "rate", secs > 0 ? (double)b->recv_run / secs : 0, 1);
        bench_result_hist(&r, "", &b->hist);
    } else {
        bench_result_u64(&r, "pubs", b->npubs);
        bench_result_u64(&r, "subs", b->nsubs);
        bench_result_u64(&r, "size", o->size);
        if (closed_loop(b))
            bench_result_u64(&r, "window", o->window);
        else
            bench_result_f(&r, "target_rate", o->rate, 0);
        if (o->scenario == SC_QUEUE || o->scenario == SC_RECEIPTS) {
            bench_result_str(&r, "ack", o->ack);
            bench_result_u64(&r, "prefetch", o->prefetch);
        }
        bench_result_f(&r, "duration_s", secs, 2);
        bench_result_u64(&r, "sent", b->sent_run);
        bench_result_u64(&r, "recv", b->recv_run);
        bench_result_f(&r, "rate", secs > 0 ? (double)b->recv_run / secs : 0, 1);
        bench_result_f(&r, "msg_rate", secs > 0 ? (double)b->sent_run / secs : 0, 1);
        bench_result_hist(&r, "", &b->hist);
        bench_result_u64(&r, "loss", loss);
        bench_result_u64(&r, "dup", dup);
    }
    bench_result_u64(&r, "errors", b->errors);
    if (b->compressed)
        bench_result_u64(&r, "compressed", b->compressed);
    bench_result_f(&r, "cpu_self", self, 3);
    bench_result_f(&r, "cpu_self_pct", secs > 0 ? self / secs * 100 : 0, 1);
    for (int i = 0; i < o->nprocs; i++) {
        char key[64];
        const char *role = o->procs[i].role;
        double cpu = b->cpu_run1[i] - b->cpu_run0[i];
        snprintf(key, sizeof(key), "cpu_%s", role);
        bench_result_f(&r, key, cpu, 3);
        if (o->scenario == SC_IDLE) {
            snprintf(key, sizeof(key), "idle_cpu_pct_%s", role);
            bench_result_f(&r, key, secs > 0 ? cpu / secs * 100 : 0, 2);
            snprintf(key, sizeof(key), "rss_kb_%s", role);
            bench_result_u64(&r, key, (uint64_t)(b->rss1[i] > 0 ? b->rss1[i] : 0));
            snprintf(key, sizeof(key), "kb_per_session_%s", role);
            bench_result_f(&r, key, b->ready ? (double)(b->rss1[i] - b->rss0[i]) / b->ready : 0, 2);
        }
        int threads = bench_proc_threads(o->procs[i].pid);
        snprintf(key, sizeof(key), "threads_%s", role);
        bench_result_u64(&r, key, (uint64_t)(threads > 0 ? threads : 0));
    }
    /* how the server's work spread over its threads (warren's workers) */
    for (int i = 0; i < o->nprocs; i++)
        if (strcmp(o->procs[i].role, "server") == 0) {
            bench_tasks_format(&b->tasks0[i], &b->tasks1[i], o->procs[i].role, r.line, sizeof(r.line));
            r.len = strlen(r.line);
        }
    bench_result_print(&r);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* Command line */

static void usage(FILE *f)
{
    fprintf(f, "usage: warren-bench --url ws://HOST:PORT/PATH | tcp://HOST:PORT [options]\n"
               "  --scenario fanout|queue|receipts|reqreply|idle|churn   (default fanout)\n"
               "  --pubs N, --subs N       publishers (requesters) and subscribers (consumers, responders); default 1, 1\n"
               "  --sessions N             idle: sessions to hold (default 1000)\n"
               "  --conc N                 churn: concurrent cycles (default 4); idle: handshakes at a time (default 64)\n"
               "  --window N               closed loop: messages in flight per publisher (default 64)\n"
               "  --rate R                 open loop: R messages/s over all publishers (latency from the schedule)\n"
               "  --size B                 body bytes (default 100)\n"
               "  --duration S             measured seconds (idle: held seconds), default 10\n"
               "  --drain S                seconds allowed for in-flight messages after the run (default 5)\n"
               "  --ack MODE, --prefetch N queue/receipts: auto|client|client-individual, prefetch-count header\n"
               "  --dest D                 destination instead of a fresh /topic/bench-... or /queue/bench-...\n"
               "  --login L --passcode P --vhost V   credentials (default guest, guest, /)\n"
               "  --deflate                offer permessage-deflate\n"
               "  --server-pid PID, --broker-pid PID   processes whose CPU (and, idle, RSS per session) to report\n"
               "  --gc-cmd CMD             shell command run before each memory reading (e.g. a broker GC)\n"
               "  --setup-timeout S        seconds allowed to set up all sessions (default 120)\n"
               "  --label TEXT             copied into the RESULT line\n"
               "  --progress               a progress line on stderr every second (default on for --duration >= 5)\n");
}

static int parse_url(struct opts *o, const char *url)
{
    const char *p;
    if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        o->tcp = false;
    } else if (strncmp(url, "tcp://", 6) == 0) {
        p = url + 6;
        o->tcp = true;
    } else {
        return -1;
    }
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof(o->host))
        return -1;
    snprintf(o->host, sizeof(o->host), "%.*s", (int)(colon - p), p);
    size_t plen = slash ? (size_t)(slash - colon - 1) : strlen(colon + 1);
    if (plen == 0 || plen >= sizeof(o->port))
        return -1;
    snprintf(o->port, sizeof(o->port), "%.*s", (int)plen, colon + 1);
    snprintf(o->path, sizeof(o->path), "%s", slash ? slash : "/ws");
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    enum {
        O_URL = 256,
        O_SC,
        O_PUBS,
        O_SUBS,
        O_SESS,
        O_CONC,
        O_WIN,
        O_RATE,
        O_SIZE,
        O_DUR,
        O_DRAIN,
        O_ACK,
        O_PF,
        O_DEST,
        O_LOGIN,
        O_PASS,
        O_VHOST,
        O_DEFL,
        O_SPID,
        O_BPID,
        O_GC,
        O_SETUP,
        O_LABEL,
        O_PROG,
        O_HELP
    };
    static const struct option lo[] = {{"url", 1, 0, O_URL},         {"scenario", 1, 0, O_SC},
                                       {"pubs", 1, 0, O_PUBS},       {"subs", 1, 0, O_SUBS},
                                       {"sessions", 1, 0, O_SESS},   {"conc", 1, 0, O_CONC},
                                       {"window", 1, 0, O_WIN},      {"rate", 1, 0, O_RATE},
                                       {"size", 1, 0, O_SIZE},       {"duration", 1, 0, O_DUR},
                                       {"drain", 1, 0, O_DRAIN},     {"ack", 1, 0, O_ACK},
                                       {"prefetch", 1, 0, O_PF},     {"dest", 1, 0, O_DEST},
                                       {"login", 1, 0, O_LOGIN},     {"passcode", 1, 0, O_PASS},
                                       {"vhost", 1, 0, O_VHOST},     {"deflate", 0, 0, O_DEFL},
                                       {"server-pid", 1, 0, O_SPID}, {"broker-pid", 1, 0, O_BPID},
                                       {"gc-cmd", 1, 0, O_GC},       {"setup-timeout", 1, 0, O_SETUP},
                                       {"label", 1, 0, O_LABEL},     {"progress", 0, 0, O_PROG},
                                       {"help", 0, 0, O_HELP},       {0, 0, 0, 0}};
    bool have_url = false, conc_set = false, prog_set = false;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_URL:
            if (parse_url(o, optarg) != 0) {
                fprintf(stderr, "warren-bench: --url must be ws://HOST:PORT[/PATH] or tcp://HOST:PORT\n");
                return -1;
            }
            have_url = true;
            break;
        case O_SC: {
            bool found = false;
            for (unsigned i = 0; i < sizeof(scenario_names) / sizeof(scenario_names[0]); i++)
                if (strcmp(optarg, scenario_names[i]) == 0) {
                    o->scenario = (enum scenario)i;
                    found = true;
                }
            if (!found) {
                fprintf(stderr, "warren-bench: unknown scenario '%s'\n", optarg);
                return -1;
            }
            break;
        }
        case O_PUBS:
            o->pubs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_SUBS:
            o->subs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_SESS:
            o->sessions = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_CONC:
            o->conc = (unsigned)strtoul(optarg, NULL, 10);
            conc_set = true;
            break;
        case O_WIN:
            o->window = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_RATE:
            o->rate = strtod(optarg, NULL);
            break;
        case O_SIZE:
            o->size = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_DUR:
            o->duration = strtod(optarg, NULL);
            break;
        case O_DRAIN:
            o->drain = strtod(optarg, NULL);
            break;
        case O_ACK:
            o->ack = optarg;
            break;
        case O_PF:
            o->prefetch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_DEST:
            o->dest = optarg;
            break;
        case O_LOGIN:
            o->login = optarg;
            break;
        case O_PASS:
            o->passcode = optarg;
            break;
        case O_VHOST:
            o->vhost = optarg;
            break;
        case O_DEFL:
            o->deflate = true;
            break;
        case O_SPID:
        case O_BPID:
            if (o->nprocs >= BENCH_MAX_PIDS)
                return -1;
            o->procs[o->nprocs].pid = atoi(optarg);
            o->procs[o->nprocs].role = c == O_SPID ? "server" : "broker";
            o->nprocs++;
            break;
        case O_GC:
            o->gc_cmd = optarg;
            break;
        case O_SETUP:
            o->setup_timeout = strtod(optarg, NULL);
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_PROG:
            o->progress = true;
            prog_set = true;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (!have_url || optind != argc) {
        usage(stderr);
        return -1;
    }
    if (!conc_set)
        o->conc = o->scenario == SC_IDLE ? 64 : 4;
    if (!prog_set)
        o->progress = o->duration >= 5;
    if (o->window == 0 || o->conc == 0 || o->duration <= 0 || (o->scenario <= SC_REQREPLY && (o->pubs == 0 || o->subs == 0))) {
        fprintf(stderr, "warren-bench: --window, --conc, --duration, --pubs and --subs must be positive\n");
        return -1;
    }
    for (const char *p = o->label; p && *p; p++)
        if (*p == ' ' || *p == '=') {
            fprintf(stderr, "warren-bench: --label may not contain spaces or '='\n");
            return -1;
        }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench b; /* large (histogram); one per process */
    b.o = (struct opts){.scenario = SC_FANOUT,
                        .login = "guest",
                        .passcode = "guest",
                        .vhost = "/",
                        .ack = "auto",
                        .pubs = 1,
                        .subs = 1,
                        .sessions = 1000,
                        .window = 64,
                        .size = 100,
                        .duration = 10,
                        .drain = 5,
                        .setup_timeout = 120};
    if (parse_args(&b.o, argc, argv) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    b.rnd = bench_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int r = getaddrinfo(b.o.host, b.o.port, &hints, &b.ai);
    if (r != 0) {
        fprintf(stderr, "warren-bench: %s:%s: %s\n", b.o.host, b.o.port, gai_strerror(r));
        return 1;
    }
    b.ep = epoll_create1(EPOLL_CLOEXEC);
    if (b.ep < 0) {
        perror("warren-bench: epoll_create1");
        return 1;
    }
    b.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (b.tfd < 0 || epoll_ctl(b.ep, EPOLL_CTL_ADD, b.tfd, &tev) != 0) {
        perror("warren-bench: timerfd");
        return 1;
    }
    bench_hist_reset(&b.hist);
    if (setup(&b) != 0) {
        fprintf(stderr, "warren-bench: set-up failed\n");
        return 1;
    }
    loop(&b);
    if (b.t_run == 0) {
        fprintf(stderr, "warren-bench: the run never started (%u of %u sessions ready)\n", b.ready, b.nconns);
        return 1;
    }
    if (!b.stopped)
        stop_run(&b, bench_now_ns());
    report(&b);
    uint64_t u, d, exp = expected_total(&b, &u, &d);
    return b.errors == 0 && d == 0 && u >= exp ? 0 : 1;
}

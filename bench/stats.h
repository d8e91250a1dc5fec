/*
 * bench/stats.h — what warren-bench and warren-bench-amqp measure and how they report it: a latency histogram
 * (log-linear buckets, ~1.6 % precision, fixed size, no allocation per sample), a sequence-number tracker for loss and
 * duplicates, /proc readings of other processes (CPU ticks, VmRSS/VmHWM, per-thread CPU) and the RESULT line.
 *
 * Nothing here knows STOMP, WebSocket or AMQP: both generators share it so their result lines mean the same thing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* CLOCK_MONOTONIC in nanoseconds (the timestamps written into bodies: sender and receiver are one process). */
uint64_t bench_now_ns(void);
/* This process's user + system CPU seconds (getrusage RUSAGE_SELF). */
double bench_self_cpu(void);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Latency histogram: values in nanoseconds, 64 sub-buckets per power of two, up to 2^40 ns (~18 minutes). */

#define BENCH_HIST_SUB   64
#define BENCH_HIST_MAXP2 40
#define BENCH_HIST_SLOTS (BENCH_HIST_SUB * (BENCH_HIST_MAXP2 - 5))

struct bench_hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint32_t slot[BENCH_HIST_SLOTS];
};

void bench_hist_reset(struct bench_hist *h);
void bench_hist_add(struct bench_hist *h, uint64_t ns);
/* Adds every sample of `from` to `into` (several threads keep their own histogram). */
void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from);
/* The value at quantile q (0..1), in nanoseconds, the upper edge of its bucket; 0 when empty. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Sequence numbers seen from one publisher: a growable bitmap. */

struct bench_seen {
    uint64_t *bits;
    uint64_t nbits; /* capacity */
    uint64_t unique;
    uint64_t dup;
};

/* Records seq; returns 1 when new, 0 when a duplicate, -ENOMEM. */
int bench_seen_add(struct bench_seen *s, uint64_t seq);
void bench_seen_deinit(struct bench_seen *s);

/* ---------------------------------------------------------------------------------------------------------------- */
/* Other processes (the server under test, the broker) from /proc. */

#define BENCH_MAX_PIDS 8

struct bench_proc {
    int pid;
    const char *role; /* "server" or "broker": the prefix of its RESULT fields */
};

/* utime + stime of pid in seconds, -1 when unreadable. */
double bench_proc_cpu(int pid);
/* VmRSS and VmHWM of pid in kB (-1 when unreadable). */
int bench_proc_mem(int pid, long *rss_kb, long *hwm_kb);
/* Number of threads of pid (the Threads: line), -1 when unreadable. */
int bench_proc_threads(int pid);

/* Per-thread CPU of one process, to show how work spreads over warren's workers. */
#define BENCH_MAX_TASKS 64
struct bench_tasks {
    int n;
    int tid[BENCH_MAX_TASKS];
    char name[BENCH_MAX_TASKS][20];
    double cpu[BENCH_MAX_TASKS];
};
/* Reads /proc/pid/task/ * /stat. Returns the number of threads read (at most BENCH_MAX_TASKS), -1 on error. */
int bench_tasks_read(int pid, struct bench_tasks *t);
/*
 * Appends " <prefix>_threads=name/tid:cpu,..." to out for the threads whose CPU grew by at least 0.01 s between a and b
 * (same pid), busiest first.
 */
void bench_tasks_format(const struct bench_tasks *a, const struct bench_tasks *b, const char *prefix, char *out, size_t cap);

/* ---------------------------------------------------------------------------------------------------------------- */
/* The RESULT line: "RESULT key=value key=value ...", built field by field, printed on stdout in one write. */

struct bench_result {
    char line[4096];
    size_t len;
};

void bench_result_init(struct bench_result *r, const char *scenario);
void bench_result_str(struct bench_result *r, const char *key, const char *value);
void bench_result_u64(struct bench_result *r, const char *key, uint64_t v);
void bench_result_f(struct bench_result *r, const char *key, double v, int decimals);
/* p50_us p90_us p99_us p999_us max_us mean_us from h (prefix "" or e.g. "e2e_"). */
void bench_result_hist(struct bench_result *r, const char *prefix, const struct bench_hist *h);
/* Prints the line (and a newline) on stdout and flushes. */
void bench_result_print(struct bench_result *r);

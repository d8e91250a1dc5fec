/*
 * bench/stats.c — histogram, sequence tracking, /proc readings and the RESULT line of the load generators
 * (bench/stats.h).
 */
#include "bench/stats.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_self_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------------------------------------------------------- */

void bench_hist_reset(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
}

/* Values below 64 ns get one bucket each; above, power of two p (6..39) is split in 64 linear sub-buckets. */
static unsigned hist_index(uint64_t v)
{
    if (v < BENCH_HIST_SUB)
        return (unsigned)v;
    unsigned p = 63u - (unsigned)__builtin_clzll(v);
    if (p >= BENCH_HIST_MAXP2)
        return BENCH_HIST_SLOTS - 1;
    unsigned sub = (unsigned)(v >> (p - 6)) & (BENCH_HIST_SUB - 1);
    return (p - 5) * BENCH_HIST_SUB + sub;
}

static uint64_t hist_upper(unsigned i)
{
    if (i < BENCH_HIST_SUB)
        return i;
    unsigned p = i / BENCH_HIST_SUB + 5, sub = i % BENCH_HIST_SUB;
    return ((uint64_t)(BENCH_HIST_SUB + sub + 1) << (p - 6)) - 1;
}

void bench_hist_add(struct bench_hist *h, uint64_t ns)
{
    h->count++;
    h->sum += ns;
    if (ns > h->max)
        h->max = ns;
    h->slot[hist_index(ns)]++;
}

void bench_hist_merge(struct bench_hist *into, const struct bench_hist *from)
{
    into->count += from->count;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
    for (unsigned i = 0; i < BENCH_HIST_SLOTS; i++)
        into->slot[i] += from->slot[i];
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5);
    if (want < 1)
        want = 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < BENCH_HIST_SLOTS; i++) {
        acc += h->slot[i];
        if (acc >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

/* ---------------------------------------------------------------------------------------------------------------- */

int bench_seen_add(struct bench_seen *s, uint64_t seq)
{
    if (seq >= s->nbits) {
        uint64_t n = s->nbits ? s->nbits : 4096;
        while (n <= seq)
            n *= 2;
        uint64_t *b = realloc(s->bits, n / 8);
        if (!b)
            return -ENOMEM;
        memset((uint8_t *)b + s->nbits / 8, 0, (n - s->nbits) / 8);
        s->bits = b;
        s->nbits = n;
    }
    uint64_t bit = 1ull << (seq % 64);
    if (s->bits[seq / 64] & bit) {
        s->dup++;
        return 0;
    }
    s->bits[seq / 64] |= bit;
    s->unique++;
    return 1;
}

void bench_seen_deinit(struct bench_seen *s)
{
    free(s->bits);
    memset(s, 0, sizeof(*s));
}

/* ---------------------------------------------------------------------------------------------------------------- */

/* Fields 14 and 15 (utime, stime) of a stat line, counted after the ')' that ends the command name. */
static double stat_cpu(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

double bench_proc_cpu(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    return stat_cpu(path);
}

static long status_field(int pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t nl = strlen(name);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, name, nl) == 0 && line[nl] == ':') {
            v = strtol(line + nl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

int bench_proc_mem(int pid, long *rss_kb, long *hwm_kb)
{
    *rss_kb = status_field(pid, "VmRSS");
    *hwm_kb = status_field(pid, "VmHWM");
    return *rss_kb < 0 ? -1 : 0;
}

int bench_proc_threads(int pid)
{
    return (int)status_field(pid, "Threads");
}

int bench_tasks_read(int pid, struct bench_tasks *t)
{
    char path[96];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    t->n = 0;
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) && t->n < BENCH_MAX_TASKS) {
        int tid = atoi(e->d_name);
        if (tid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
        double cpu = stat_cpu(path);
        if (cpu < 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", pid, tid);
        char name[20] = "?";
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(name, sizeof(name), f))
                name[strcspn(name, "\n")] = '\0';
            fclose(f);
        }
        for (char *c = name; *c; c++)
            if (*c == ' ' || *c == ',' || *c == ':' || *c == '=')
                *c = '_';
        t->tid[t->n] = tid;
        snprintf(t->name[t->n], sizeof(t->name[t->n]), "%s", name);
        t->cpu[t->n] = cpu;
        t->n++;
    }
    closedir(d);
    return t->n;
}

void bench_tasks_format(const struct bench_tasks *a, const struct bench_tasks *b, const char *prefix, char *out, size_t cap)
{
    double grew[BENCH_MAX_TASKS];
    int idx[BENCH_MAX_TASKS], n = 0;
    for (int i = 0; i < b->n; i++) {
        double before = 0;
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i])
                before = a->cpu[j];
        if (b->cpu[i] - before >= 0.01) {
            grew[n] = b->cpu[i] - before;
            idx[n++] = i;
        }
    }
    /* busiest first (insertion sort: a few dozen threads) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && grew[j] > grew[j - 1]; j--) {
            double g = grew[j];
            grew[j] = grew[j - 1];
            grew[j - 1] = g;
            int x = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = x;
        }
    size_t len = strlen(out);
    if (n == 0 || len + 1 >= cap)
        return;
    int w = snprintf(out + len, cap - len, " %s_threads=", prefix);
    if (w < 0 || (size_t)w >= cap - len)
        return;
    len += (size_t)w;
    for (int i = 0; i < n && len + 1 < cap; i++) {
        w = snprintf(out + len, cap - len, "%s%s/%d:%.2f", i ? "," : "", b->name[idx[i]], b->tid[idx[i]], grew[i]);
        if (w < 0 || (size_t)w >= cap - len)
            break;
        len += (size_t)w;
    }
}

/* ---------------------------------------------------------------------------------------------------------------- */

static void result_add(struct bench_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void result_add(struct bench_result *r, const char *fmt, ...)
{
    if (r->len + 1 >= sizeof(r->line))
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(r->line + r->len, sizeof(r->line) - r->len, fmt, ap);
    va_end(ap);
    if (w > 0)
        r->len = r->len + (size_t)w < sizeof(r->line) ? r->len + (size_t)w : sizeof(r->line) - 1;
}

void bench_result_init(struct bench_result *r, const char *scenario)
{
    r->len = 0;
    r->line[0] = '\0';
    result_add(r, "RESULT scenario=%s", scenario);
}

void bench_result_str(struct bench_result *r, const char *key, const char *value)
{
    result_add(r, " %s=%s", key, value);
}

void bench_result_u64(struct bench_result *r, const char *key, uint64_t v)
{
    result_add(r, " %s=%llu", key, (unsigned long long)v);
}

void bench_result_f(struct bench_result *r, const char *key, double v, int decimals)
{
    result_add(r, " %s=%.*f", key, decimals, v);
}

void bench_result_hist(struct bench_result *r, const char *prefix, const struct bench_hist *h)
{
    static const struct {
        const char *name;
        double q;
    } qs[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p999", 0.999}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
        result_add(r, " %s%s_us=%.1f", prefix, qs[i].name, (double)bench_hist_quantile(h, qs[i].q) / 1e3);
    result_add(r, " %smax_us=%.1f", prefix, (double)h->max / 1e3);
    result_add(r, " %smean_us=%.1f", prefix, h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0);
}

void bench_result_print(struct bench_result *r)
{
    fprintf(stdout, "%s\n", r->line);
    fflush(stdout);
}

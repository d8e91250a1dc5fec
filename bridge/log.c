/*
 * bridge/log.c — see log.h. Formats into a stack buffer and writes it with a single write(2), so lines from the client
 * loop and the AMQP threads never interleave mid-line. Lines longer than the buffer are truncated with "...".
 */
#include "bridge/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level_cur = LOG_INFO;

void log_set_level(enum log_level lvl)
{
    atomic_store(&log_level_cur, (int)lvl);
}

int log_enabled(enum log_level lvl)
{
    return (int)lvl <= atomic_load(&log_level_cur);
}

const char *log_level_str(enum log_level lvl)
{
    switch (lvl) {
    case LOG_ERROR:
        return "ERROR";
    case LOG_WARN:
        return "WARN";
    case LOG_INFO:
        return "INFO";
    case LOG_DEBUG:
        return "DEBUG";
    }
    return "?";
}

void log_vmsg(enum log_level lvl, const char *prefix, const char *fmt, va_list ap)
{
    if (!log_enabled(lvl))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    int k = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s%s%s", ts.tv_nsec / 1000000, log_level_str(lvl), prefix ? "[" : "",
                     prefix ? prefix : "", prefix ? "] " : "");
    if (k > 0)
        n += (size_t)k < sizeof(line) - n ? (size_t)k : sizeof(line) - n - 1;
    k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (k > 0)
        n += (size_t)k < sizeof(line) - n ? (size_t)k : sizeof(line) - n - 1;
    if (n >= sizeof(line) - 1)
        memcpy(line + sizeof(line) - 5, "...", 3), n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_msg(enum log_level lvl, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, prefix, fmt, ap);
    va_end(ap);
}

/*
 * bridge/log.c — see log.h. Formats into a stack buffer and writes it with a single write(2), so lines from the client
 * loop and the AMQP threads never interleave mid-line. Lines longer than the buffer are truncated with "...". The prefix
 * and the formatted message are escaped (log_escape()), so a line is always exactly one line of printable ASCII.
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

size_t log_escape(char *out, size_t cap, const char *in, size_t len, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0, i = 0;
    if (cap == 0) {
        if (consumed)
            *consumed = 0;
        return 0;
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        char e[4];
        size_t k = 0;
        if (c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            e[k++] = '\\';
            e[k++] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : '\\';
        } else if (c < 0x20 || c >= 0x7f) {
            e[k++] = '\\';
            e[k++] = 'x';
            e[k++] = hex[c >> 4];
            e[k++] = hex[c & 15];
        } else {
            e[k++] = (char)c;
        }
        if (n + k >= cap)
            break; /* never half an escape */
        memcpy(out + n, e, k);
        n += k;
    }
    out[n] = '\0';
    if (consumed)
        *consumed = i;
    return n;
}

void log_vmsg(enum log_level lvl, const char *prefix, const char *fmt, va_list ap)
{
    if (!log_enabled(lvl))
        return;
    char line[2048], msg[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000, log_level_str(lvl));
    /* Everything after the level may carry a peer's bytes (header values and user names in the message, the address in
     * the prefix): it is escaped here, once for every caller, so no input can end the line or forge another one. */
    if (prefix) {
        line[n++] = '[';
        n += log_escape(line + n, LOG_PREFIX_MAX, prefix, strlen(prefix), NULL);
        line[n++] = ']';
        line[n++] = ' ';
    }
    int k = vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t len = k < 0 ? 0 : (size_t)k < sizeof(msg) ? (size_t)k : sizeof(msg) - 1;
    size_t used = 0;
    n += log_escape(line + n, sizeof(line) - n - 4, msg, len, &used); /* room for "..." and the newline */
    if (used < len || (k > 0 && (size_t)k >= sizeof(msg))) {
        memcpy(line + n, "...", 3);
        n += 3;
    }
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

/*
 * bridge/log.h — warren's log lines (pgbouncer's slog_*): one line per event on stderr, with a level and the identity of
 * the connection it concerns as a prefix, e.g.
 *     2026-11-26T15:40:01.123Z INFO [127.0.0.1:51234 session-Ab3x] missed client heart-beats, closing
 * Codecs never log; only bridge/ does. The level filter is process-wide (set once at startup, read on every call).
 * Safe to call from any thread (each line is written with one write(2)).
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

/* Bytes of a (escaped) prefix shown at most, the brackets aside. */
#define LOG_PREFIX_MAX 256

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN = 1,
    LOG_INFO = 2,
    LOG_DEBUG = 3,
};

/* Sets the most verbose level written (LOG_INFO by default). */
void log_set_level(enum log_level lvl);
/* True when `lvl` would be written: test it before building expensive arguments. */
int log_enabled(enum log_level lvl);
const char *log_level_str(enum log_level lvl);

/*
 * Writes `in[0..len)` to `out` (capacity `cap`, NUL included; 0 writes nothing) with every byte that is not printable
 * ASCII escaped: `\n`, `\r`, `\t`, `\\` for those four, `\xHH` for other controls, DEL and every byte >= 0x80 (so no
 * terminal escape, Unicode line separator or overlong encoding gets through either). Stops before an escape that
 * would not fit, never in the middle of one. Returns the bytes written (NUL excluded); *consumed (may be NULL) gets the
 * input bytes that made it.
 */
size_t log_escape(char *out, size_t cap, const char *in, size_t len, size_t *consumed);

/* Writes one line; `prefix` (may be NULL) is the connection identity shown in brackets. A trailing newline is added.
 * Both `prefix` and the formatted message are passed through log_escape(): callers may give them peer-controlled bytes
 * (header values, logins, destinations) as they are. */
void log_msg(enum log_level lvl, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level lvl, const char *prefix, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

/*
 * conf/parse.c — the config file format: `key = value` lines, `#` comments, optional double-quoted values.
 *
 * The syntax is the one of conf/conf.h's file comment; it is deliberately small (redis.conf / pgbouncer.ini without
 * sections) so that a sample file can document itself line by line. A load is all or nothing: lines are applied to a
 * private copy of the config, which replaces the caller's only when every line was accepted, so a failed reload leaves
 * the running config untouched (STYLE.md §3.4). Errors name the place first, `file:line: key: reason`, like a compiler.
 */
#include "conf/conf.h"
#include "conf/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest file conf_load_file() reads: a config is a few kilobytes; anything near this is a mistake. */
#define CONF_FILE_MAX (1024 * 1024)

/* Where we are, for messages. */
struct where {
    const char *name;
    unsigned long line;
    char *err;
    size_t errlen;
};

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_key_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
}

static size_t skip_blanks(const char *s, size_t i, size_t n)
{
    while (i < n && is_blank(s[i]))
        i++;
    return i;
}

/*
 * A quoted value starting at s[i] == '"': unescapes \" and \\ (any other backslash is kept) into out (at least n - i
 * bytes), and checks that only blanks or a comment follow the closing quote.
 */
static int parse_quoted(const char *s, size_t i, size_t n, char *out, size_t *out_len, const char **reason)
{
    size_t o = 0;
    for (i++; i < n && s[i] != '"'; i++) {
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\'))
            i++;
        out[o++] = s[i];
    }
    if (i >= n) {
        *reason = "unterminated quoted value";
        return CONF_E_INVALID;
    }
    i = skip_blanks(s, i + 1, n);
    if (i < n && s[i] != '#') {
        *reason = "text after the closing quote";
        return CONF_E_INVALID;
    }
    *out_len = o;
    return 0;
}

/* An unquoted value: up to a '#' that starts the value or follows a blank, trailing blanks trimmed. */
static size_t unquoted_len(const char *s, size_t i, size_t n)
{
    size_t end = i;
    while (end < n && !(s[end] == '#' && (end == i || is_blank(s[end - 1]))))
        end++;
    while (end > i && is_blank(s[end - 1]))
        end--;
    return end - i;
}

static int set_from_line(struct conf *c, const struct where *w, const struct conf_key *k, const char *s, size_t n)
{
    const char *reason = NULL;
    union conf_value v;
    char why[256];
    int r = conf_value_parse(k, s, n, &v, &reason);
    if (r == -ENOMEM) {
        conf_errf(w->err, w->errlen, "%s:%lu: %s: out of memory", w->name, w->line, k->name);
        return r;
    }
    if (r != 0) {
        conf_reason_format(k, reason, why, sizeof(why));
        conf_errf(w->err, w->errlen, "%s:%lu: %s: %s", w->name, w->line, k->name, why);
        return r;
    }
    conf_value_store(c, k, &v);
    return 0;
}

/* Applies the value part (from s[i]) of a line whose key is `k`. */
static int parse_value(struct conf *c, const struct where *w, const struct conf_key *k, const char *s, size_t i, size_t n)
{
    const char *reason = NULL;
    size_t len;
    char *buf;
    int r;

    if (i >= n || s[i] != '"')
        return set_from_line(c, w, k, s + i, unquoted_len(s, i, n));
    buf = malloc(n - i);
    if (!buf) {
        conf_errf(w->err, w->errlen, "%s:%lu: %s: out of memory", w->name, w->line, k->name);
        return -ENOMEM;
    }
    r = parse_quoted(s, i, n, buf, &len, &reason);
    if (r != 0)
        conf_errf(w->err, w->errlen, "%s:%lu: %s: %s", w->name, w->line, k->name, reason);
    else
        r = set_from_line(c, w, k, buf, len);
    free(buf);
    return r;
}

static int parse_line(struct conf *c, const struct where *w, const char *s, size_t n)
{
    char key[64];
    size_t i = skip_blanks(s, 0, n), key_start = i;
    const struct conf_key *k;

    if (i == n || s[i] == '#')
        return 0;
    if (memchr(s, '\0', n)) {
        conf_errf(w->err, w->errlen, "%s:%lu: NUL byte in line", w->name, w->line);
        return CONF_E_INVALID;
    }
    while (i < n && is_key_char(s[i]))
        i++;
    if (i == key_start) {
        conf_errf(w->err, w->errlen, "%s:%lu: expected `key = value`", w->name, w->line);
        return CONF_E_INVALID;
    }
    snprintf(key, sizeof(key), "%.*s", (int)(i - key_start), s + key_start);
    k = i - key_start < sizeof(key) ? conf_key_find(key) : NULL;
    if (!k) {
        conf_errf(w->err, w->errlen, "%s:%lu: %s: unknown key", w->name, w->line, key);
        return CONF_E_INVALID;
    }
    i = skip_blanks(s, i, n);
    if (i == n || s[i] != '=') {
        conf_errf(w->err, w->errlen, "%s:%lu: %s: expected '=' after the key", w->name, w->line, key);
        return CONF_E_INVALID;
    }
    return parse_value(c, w, k, s, skip_blanks(s, i + 1, n), n);
}

static int apply_lines(struct conf *c, const struct where *where, const char *buf, size_t len)
{
    struct where w = *where;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len, n = end - pos;
        int r;
        w.line++;
        if (n > 0 && buf[pos + n - 1] == '\r')
            n--;
        r = parse_line(c, &w, buf + pos, n);
        if (r != 0)
            return r;
        pos = end + 1;
    }
    return 0;
}

int conf_load_buffer(struct conf *c, const char *name, const char *buf, size_t len, char *err, size_t errlen)
{
    struct where w = {.name = name ? name : "<config>", .line = 0, .err = err, .errlen = errlen};
    struct conf tmp;
    int r = conf_copy(&tmp, c);
    if (r < 0) {
        conf_errf(err, errlen, "%s: out of memory", w.name);
        return r;
    }
    r = apply_lines(&tmp, &w, buf, len);
    if (r != 0) {
        conf_deinit(&tmp);
        return r;
    }
    conf_deinit(c);
    *c = tmp;
    return 0;
}

/* Reads all of `path` into a heap buffer, at most CONF_FILE_MAX bytes. */
static int read_file(const char *path, char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len;
    int r;

    if (!f)
        return -errno;
    buf = malloc(CONF_FILE_MAX + 1);
    if (!buf) {
        r = -ENOMEM;
        goto fail;
    }
    len = fread(buf, 1, CONF_FILE_MAX + 1, f);
    if (ferror(f)) {
        r = errno ? -errno : -EIO;
        goto fail;
    }
    if (len > CONF_FILE_MAX) {
        r = -EFBIG;
        goto fail;
    }
    fclose(f);
    *out = buf;
    *out_len = len;
    return 0;
fail:
    free(buf);
    fclose(f);
    return r;
}

int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int r;

    errno = 0;
    r = read_file(path, &buf, &len);
    if (r < 0) {
        conf_errf(err, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    r = conf_load_buffer(c, path, buf, len, err, errlen);
    free(buf);
    return r;
}

/*
 * conf/conf.c — values: parsing one value by key type, storing it into struct conf, copying, comparing and printing it.
 *
 * Every function here walks the key table of conf/keys.c and reaches the field through the row's offset, so adding a
 * key is one table row plus one struct field. Defaults are static: a string field holding its default points at the
 * table's literal and a list at the table's pre-split array, which is why conf_init() allocates nothing. A value set
 * later is a heap copy; "owned" simply means "not the default's pointer", and only owned values are freed. A list is
 * one allocation: the pointer array followed by the strings it points into.
 *
 * The file format lives in conf/parse.c.
 */
#include "conf/conf.h"
#include "conf/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *conf_type_str(enum conf_type t)
{
    static const char *const names[] = {"string", "int", "bool", "enum", "size", "list"};
    if ((unsigned)t < sizeof(names) / sizeof(names[0]))
        return names[t];
    return "?";
}

const char *conf_ws_frame_str(enum conf_ws_frame f)
{
    switch (f) {
    case CONF_WS_FRAME_TEXT:
        return "text";
    case CONF_WS_FRAME_BINARY:
        return "binary";
    }
    return "?";
}

const char *conf_log_level_str(enum conf_log_level l)
{
    switch (l) {
    case CONF_LOG_ERROR:
        return "error";
    case CONF_LOG_WARN:
        return "warn";
    case CONF_LOG_INFO:
        return "info";
    case CONF_LOG_DEBUG:
        return "debug";
    }
    return "?";
}

const struct conf_key *conf_key_find(const char *name)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(k[i].name, name) == 0)
            return &k[i];
    return NULL;
}

void conf_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Field access through the table's offsets. */

static void *field(const struct conf *c, const struct conf_key *k)
{
    return (char *)c + k->offset;
}

/* Loads the field of `k` into the union (enums go through memcpy: keys.c checks they are int-sized). */
static void value_get(const struct conf *c, const struct conf_key *k, union conf_value *v)
{
    void *p = field(c, k);
    switch (k->type) {
    case CONF_T_STRING:
        memcpy(&v->s, p, sizeof(v->s));
        break;
    case CONF_T_INT:
    case CONF_T_ENUM:
        memcpy(&v->i, p, sizeof(v->i));
        break;
    case CONF_T_BOOL:
        memcpy(&v->b, p, sizeof(v->b));
        break;
    case CONF_T_SIZE:
        memcpy(&v->z, p, sizeof(v->z));
        break;
    case CONF_T_LIST:
        memcpy(&v->l, p, sizeof(v->l));
        break;
    }
}

static void value_put(struct conf *c, const struct conf_key *k, const union conf_value *v)
{
    void *p = field(c, k);
    switch (k->type) {
    case CONF_T_STRING:
        memcpy(p, &v->s, sizeof(v->s));
        break;
    case CONF_T_INT:
    case CONF_T_ENUM:
        memcpy(p, &v->i, sizeof(v->i));
        break;
    case CONF_T_BOOL:
        memcpy(p, &v->b, sizeof(v->b));
        break;
    case CONF_T_SIZE:
        memcpy(p, &v->z, sizeof(v->z));
        break;
    case CONF_T_LIST:
        memcpy(p, &v->l, sizeof(v->l));
        break;
    }
}

/* The default as a value; for strings and lists it points at the table's static storage. */
static void value_default(const struct conf_key *k, union conf_value *v)
{
    const char *reason;
    memset(v, 0, sizeof(*v));
    switch (k->type) {
    case CONF_T_STRING:
        v->s = k->def;
        break;
    case CONF_T_LIST:
        v->l.items = k->def_items;
        v->l.n = k->def_n;
        break;
    default:
        /* Scalars parse from the default text; test-conf.c checks every default parses. */
        (void)conf_value_parse(k, k->def, strlen(k->def), v, &reason);
        break;
    }
}

void conf_value_free(const struct conf_key *k, union conf_value *v)
{
    if (k->type == CONF_T_STRING && v->s != k->def)
        free((char *)v->s);
    else if (k->type == CONF_T_LIST && v->l.items != k->def_items)
        free((void *)v->l.items);
}

void conf_value_store(struct conf *c, const struct conf_key *k, union conf_value *v)
{
    union conf_value old;
    value_get(c, k, &old);
    conf_value_free(k, &old);
    value_put(c, k, v);
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Lifecycle. */

void conf_init(struct conf *c)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < n; i++) {
        union conf_value v;
        value_default(&k[i], &v);
        value_put(c, &k[i], &v);
    }
}

void conf_deinit(struct conf *c)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    for (size_t i = 0; i < n; i++) {
        union conf_value v;
        value_get(c, &k[i], &v);
        conf_value_free(&k[i], &v);
    }
    conf_init(c);
}

/* A fresh heap list holding copies of items[0..n). NULL items when n == 0. */
static int list_build(const char *const *items, const size_t *lens, size_t n, struct conf_list *out)
{
    size_t total = n * sizeof(char *);
    char **ptrs;
    char *s;

    out->items = NULL;
    out->n = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i] + 1;
    ptrs = malloc(total);
    if (!ptrs)
        return -ENOMEM;
    s = (char *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        memcpy(s, items[i], lens[i]);
        s[lens[i]] = '\0';
        ptrs[i] = s;
        s += lens[i] + 1;
    }
    out->items = (const char *const *)ptrs;
    out->n = n;
    return 0;
}

static int value_dup(const struct conf_key *k, const union conf_value *src, union conf_value *dst)
{
    *dst = *src;
    if (k->type == CONF_T_STRING && src->s != k->def) {
        dst->s = strdup(src->s);
        return dst->s ? 0 : -ENOMEM;
    }
    if (k->type == CONF_T_LIST && src->l.items != k->def_items) {
        size_t *lens = calloc(src->l.n ? src->l.n : 1, sizeof(*lens));
        int r;
        if (!lens)
            return -ENOMEM;
        for (size_t i = 0; i < src->l.n; i++)
            lens[i] = strlen(src->l.items[i]);
        r = list_build(src->l.items, lens, src->l.n, &dst->l);
        free(lens);
        return r;
    }
    return 0;
}

int conf_copy(struct conf *dst, const struct conf *src)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    conf_init(dst);
    for (size_t i = 0; i < n; i++) {
        union conf_value v, copy;
        int r;
        value_get(src, &k[i], &v);
        r = value_dup(&k[i], &v, &copy);
        if (r < 0) {
            conf_deinit(dst);
            return r;
        }
        value_put(dst, &k[i], &copy);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Parsing one value. */

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Unsigned decimal digits of s[0..n) into *out; false on no digits, a non-digit or overflow. */
static bool parse_digits(const char *s, size_t n, unsigned long long *out)
{
    unsigned long long v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int parse_int(const struct conf_key *k, const char *s, size_t n, union conf_value *v, const char **reason)
{
    bool neg = n > 0 && s[0] == '-';
    size_t skip = n > 0 && (s[0] == '-' || s[0] == '+');
    unsigned long long u;
    long long x;

    if (!parse_digits(s + skip, n - skip, &u) || u > (unsigned long long)LLONG_MAX) {
        *reason = "not an integer";
        return CONF_E_INVALID;
    }
    x = neg ? -(long long)u : (long long)u;
    if (x < k->min || x > k->max) {
        *reason = "out of range";
        return CONF_E_INVALID;
    }
    v->i = (int)x;
    return 0;
}

static int parse_size(const struct conf_key *k, const char *s, size_t n, union conf_value *v, const char **reason)
{
    unsigned long long u, mult = 1;
    if (n > 0) {
        switch (s[n - 1]) {
        case 'k':
        case 'K':
            mult = 1024ULL;
            break;
        case 'm':
        case 'M':
            mult = 1024ULL * 1024;
            break;
        case 'g':
        case 'G':
            mult = 1024ULL * 1024 * 1024;
            break;
        }
        if (mult != 1)
            n--;
    }
    if (!parse_digits(s, n, &u)) {
        *reason = "not a size (bytes, or a number with a k, m or g suffix)";
        return CONF_E_INVALID;
    }
    if (u > ULLONG_MAX / mult || u * mult < (unsigned long long)k->min || u * mult > (unsigned long long)k->max ||
        u * mult > SIZE_MAX) {
        *reason = "out of range";
        return CONF_E_INVALID;
    }
    v->z = (size_t)(u * mult);
    return 0;
}

static bool word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static int parse_bool(const char *s, size_t n, union conf_value *v, const char **reason)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (word_is(s, n, yes[i]) || word_is(s, n, no[i])) {
            v->b = word_is(s, n, yes[i]);
            return 0;
        }
    }
    *reason = "not a boolean (true/false, yes/no, on/off, 1/0)";
    return CONF_E_INVALID;
}

static int parse_enum(const struct conf_key *k, const char *s, size_t n, union conf_value *v, const char **reason)
{
    for (int i = 0; k->enum_names[i]; i++) {
        if (word_is(s, n, k->enum_names[i])) {
            v->i = i;
            return 0;
        }
    }
    *reason = "not one of the allowed names";
    return CONF_E_INVALID;
}

static int parse_string(const char *s, size_t n, union conf_value *v, const char **reason)
{
    char *copy;
    if (memchr(s, '\0', n)) {
        *reason = "contains a NUL byte";
        return CONF_E_INVALID;
    }
    copy = malloc(n + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, s, n);
    copy[n] = '\0';
    v->s = copy;
    return 0;
}

/* Splits on ',', trims blanks around each item and drops empty ones. */
static int parse_list(const char *s, size_t n, union conf_value *v, const char **reason)
{
    size_t count = 1, used = 0;
    const char **items;
    size_t *lens;
    int r = -ENOMEM;

    if (memchr(s, '\0', n)) {
        *reason = "contains a NUL byte";
        return CONF_E_INVALID;
    }
    for (size_t i = 0; i < n; i++)
        count += s[i] == ',';
    items = calloc(count, sizeof(*items));
    lens = calloc(count, sizeof(*lens));
    if (!items || !lens)
        goto out;
    for (size_t start = 0; start <= n;) {
        const char *comma = memchr(s + start, ',', n - start);
        size_t end = comma ? (size_t)(comma - s) : n, a = start, b = end;
        while (a < b && is_blank(s[a]))
            a++;
        while (b > a && is_blank(s[b - 1]))
            b--;
        if (b > a) {
            items[used] = s + a;
            lens[used++] = b - a;
        }
        start = end + 1;
    }
    r = list_build(items, lens, used, &v->l);
out:
    free(items);
    free(lens);
    return r;
}

int conf_value_parse(const struct conf_key *k, const char *s, size_t n, union conf_value *v, const char **reason)
{
    memset(v, 0, sizeof(*v));
    switch (k->type) {
    case CONF_T_STRING:
        return parse_string(s, n, v, reason);
    case CONF_T_INT:
        return parse_int(k, s, n, v, reason);
    case CONF_T_BOOL:
        return parse_bool(s, n, v, reason);
    case CONF_T_ENUM:
        return parse_enum(k, s, n, v, reason);
    case CONF_T_SIZE:
        return parse_size(k, s, n, v, reason);
    case CONF_T_LIST:
        return parse_list(s, n, v, reason);
    }
    *reason = "unknown key type";
    return CONF_E_INVALID;
}

/* Appends the detail a bare reason lacks: the range, or the allowed names. */
void conf_reason_format(const struct conf_key *k, const char *reason, char *buf, size_t len)
{
    size_t used;
    snprintf(buf, len, "%s", reason);
    used = strlen(buf);
    if ((k->type == CONF_T_INT || k->type == CONF_T_SIZE) && strcmp(reason, "out of range") == 0) {
        snprintf(buf + used, len - used, " (%lld..%lld)", k->min, k->max);
    } else if (k->type == CONF_T_ENUM) {
        for (int i = 0; k->enum_names[i] && used < len; i++) {
            snprintf(buf + used, len - used, "%s%s", i ? "|" : " (", k->enum_names[i]);
            used += strlen(buf + used);
        }
        if (used < len)
            snprintf(buf + used, len - used, ")");
    }
}

int conf_set(struct conf *c, const char *key, const char *value, char *err, size_t errlen)
{
    const struct conf_key *k = conf_key_find(key);
    const char *reason = NULL;
    union conf_value v;
    char why[256];
    int r;

    if (!k) {
        conf_errf(err, errlen, "%s: unknown key", key);
        return CONF_E_INVALID;
    }
    r = conf_value_parse(k, value, strlen(value), &v, &reason);
    if (r == -ENOMEM) {
        conf_errf(err, errlen, "%s: out of memory", key);
        return r;
    }
    if (r != 0) {
        conf_reason_format(k, reason, why, sizeof(why));
        conf_errf(err, errlen, "%s: %s", key, why);
        return r;
    }
    conf_value_store(c, k, &v);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------ */
/* Comparing and printing. */

static bool value_equal(const struct conf_key *k, const union conf_value *a, const union conf_value *b)
{
    switch (k->type) {
    case CONF_T_STRING:
        return strcmp(a->s, b->s) == 0;
    case CONF_T_INT:
    case CONF_T_ENUM:
        return a->i == b->i;
    case CONF_T_BOOL:
        return a->b == b->b;
    case CONF_T_SIZE:
        return a->z == b->z;
    case CONF_T_LIST:
        if (a->l.n != b->l.n)
            return false;
        for (size_t i = 0; i < a->l.n; i++)
            if (strcmp(a->l.items[i], b->l.items[i]) != 0)
                return false;
        return true;
    }
    return false;
}

int conf_reload_check(const struct conf *old, const struct conf *new, const struct conf_key **changed)
{
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    for (size_t i = 0; i < n; i++) {
        union conf_value a, b;
        if (k[i].flags & CONF_F_RELOADABLE)
            continue;
        value_get(old, &k[i], &a);
        value_get(new, &k[i], &b);
        if (!value_equal(&k[i], &a, &b)) {
            if (changed)
                *changed = &k[i];
            return CONF_E_NO_RELOAD;
        }
    }
    return 0;
}

static const char *enum_name(const struct conf_key *k, int i)
{
    for (int j = 0; k->enum_names[j]; j++)
        if (j == i)
            return k->enum_names[j];
    return "?";
}

static int format_list(const struct conf_list *l, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? "," : "", l->items[i]);
        if (w < 0 || (size_t)w >= len - used)
            return -ENOSPC;
        used += (size_t)w;
    }
    return 0;
}

int conf_value_format(const struct conf *c, const struct conf_key *k, char *buf, size_t len)
{
    union conf_value v;
    int w = 0;
    if (len == 0)
        return -ENOSPC;
    value_get(c, k, &v);
    switch (k->type) {
    case CONF_T_STRING:
        w = snprintf(buf, len, "%s", v.s);
        break;
    case CONF_T_INT:
        w = snprintf(buf, len, "%d", v.i);
        break;
    case CONF_T_ENUM:
        w = snprintf(buf, len, "%s", enum_name(k, v.i));
        break;
    case CONF_T_BOOL:
        w = snprintf(buf, len, "%s", v.b ? "true" : "false");
        break;
    case CONF_T_SIZE:
        w = snprintf(buf, len, "%zu", v.z);
        break;
    case CONF_T_LIST:
        return format_list(&v.l, buf, len);
    }
    return w < 0 || (size_t)w >= len ? -ENOSPC : 0;
}

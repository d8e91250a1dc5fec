/*
 * conf/internal.h — what conf.c (values), parse.c (file format) and validate.c (cross-key checks) share. Not installed,
 * not for other modules.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* One value of any key type, as parsed and before it is stored into struct conf. */
union conf_value {
    const char *s;
    int i;
    bool b;
    size_t z;
    struct conf_list l;
};

/*
 * Parses s[0..n) as a value of key `k` into *v (heap copies for strings and lists). Returns 0, CONF_E_INVALID with
 * *reason set to a static string, or -ENOMEM.
 */
int conf_value_parse(const struct conf_key *k, const char *s, size_t n, union conf_value *v, const char **reason);
/* Frees what *v owns (nothing when it points at the key's static default). */
void conf_value_free(const struct conf_key *k, union conf_value *v);
/* Moves *v into c's field for `k`, freeing the value it replaces. */
void conf_value_store(struct conf *c, const struct conf_key *k, union conf_value *v);
/* `reason` plus its detail for `k` (the range, or the allowed names), into buf. */
void conf_reason_format(const struct conf_key *k, const char *reason, char *buf, size_t len);
/* snprintf into err when err != NULL && errlen > 0. */
void conf_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

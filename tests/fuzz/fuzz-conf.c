/*
 * tests/fuzz/fuzz-conf.c — arbitrary bytes as a config file (conf_load_buffer), then everything a loaded config goes
 * through: validation, printing every key, a deep copy and a reload check. Also feeds the input to conf_set() as
 * "key=value" (the -o path). Leaks, over-reads and double frees are what the sanitizers look for here; conf/ must
 * reject bad input with CONF_E_INVALID and a message, never crash.
 */
#include "conf/conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void exercise(const struct conf *c)
{
    char err[256], buf[4096];
    size_t n;
    const struct conf_key *k = conf_keys(&n);
    struct conf copy;

    int r = conf_validate(c, err, sizeof(err));
    for (size_t i = 0; i < n; i++)
        (void)conf_value_format(c, &k[i], buf, sizeof(buf));
    if (conf_copy(&copy, c) == 0) {
        r |= conf_reload_check(c, &copy, NULL);
        conf_deinit(&copy);
    }
    (void)r;
}

/* The input as "key=value" for conf_set(), NUL bytes and all (the key stops at the first NUL). */
static void set_option(const uint8_t *data, size_t size)
{
    char err[256], *s = malloc(size + 1), *eq;
    struct conf c;

    if (!s)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    eq = strchr(s, '=');
    if (eq) {
        *eq = '\0';
        conf_init(&c);
        if (conf_set(&c, s, eq + 1, err, sizeof(err)) == 0)
            exercise(&c);
        conf_deinit(&c);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct conf c;

    conf_init(&c);
    if (conf_load_buffer(&c, "fuzz.conf", (const char *)data, size, err, sizeof(err)) == 0)
        exercise(&c);
    conf_deinit(&c);
    set_option(data, size);
    return 0;
}

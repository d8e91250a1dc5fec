/*
 * tests/unit/test-bridge-memory.c — bridge/memory.h: the budget derived from the machine (MemTotal, cgroup v1 and v2
 * limits, the percentage, a configured value winning), the parsers of /proc/meminfo, memory.max and /proc/self/statm on
 * real and broken texts, the gauge's hysteresis (over at the budget, under only at the low-water mark, a budget
 * removed while over), and this process's own RSS, read twice from one descriptor.
 */
#include "bridge/memory.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define MIB (1024ull * 1024)

static void test_parse(void)
{
    CHECK_EQ_INT(memory_parse_meminfo("MemTotal:       24683584 kB\nMemFree:  1 kB\n"), 24683584ull * 1024);
    CHECK_EQ_INT(memory_parse_meminfo("MemFree:  1 kB\nMemTotal: 2048 kB\n"), 2048 * 1024);
    CHECK_EQ_INT(memory_parse_meminfo("XMemTotal: 2048 kB\n"), 0);
    CHECK_EQ_INT(memory_parse_meminfo("MemTotal: kB\n"), 0);
    CHECK_EQ_INT(memory_parse_meminfo(""), 0);
    CHECK_EQ_INT(memory_parse_cgroup_limit("max\n"), 0);
    CHECK_EQ_INT(memory_parse_cgroup_limit("536870912\n"), 536870912);
    CHECK_EQ_INT(memory_parse_cgroup_limit("9223372036854771712\n"), 0); /* v1: no limit */
    CHECK_EQ_INT(memory_parse_cgroup_limit("0\n"), 0);
    CHECK_EQ_INT(memory_parse_cgroup_limit("junk"), 0);
    CHECK_EQ_INT(memory_parse_statm("5000 1200 300 10 0 900 0\n", 4096), 1200 * 4096);
    CHECK_EQ_INT(memory_parse_statm("5000\n", 4096), 0);
    CHECK_EQ_INT(memory_parse_statm("", 4096), 0);
}

static void test_budget(void)
{
    struct memory_budget b = memory_budget_for(64 * MIB, 50, 1024 * MIB, 0);
    CHECK_EQ_INT(b.bytes, 64 * MIB);
    CHECK(strcmp(b.from, "max_memory_bytes") == 0);
    b = memory_budget_for(0, 50, 1000 * MIB, 0);
    CHECK_EQ_INT(b.bytes, 500 * MIB);
    CHECK_EQ_INT(b.machine, 1000 * MIB);
    CHECK(strcmp(b.from, "MemTotal") == 0);
    b = memory_budget_for(0, 50, 1000 * MIB, 400 * MIB); /* the cgroup is smaller: it decides */
    CHECK_EQ_INT(b.bytes, 200 * MIB);
    CHECK(strcmp(b.from, "the cgroup memory limit") == 0);
    b = memory_budget_for(0, 50, 1000 * MIB, 4000 * MIB); /* a cgroup above the machine does not */
    CHECK_EQ_INT(b.bytes, 500 * MIB);
    b = memory_budget_for(0, 0, 1000 * MIB, 400 * MIB);
    CHECK_EQ_INT(b.bytes, 0);
    CHECK(strcmp(b.from, "off") == 0);
    b = memory_budget_for(0, 50, 0, 0);
    CHECK_EQ_INT(b.bytes, 0);
    CHECK(strcmp(b.from, "unknown") == 0);
    b = memory_budget_for(0, 100, 0, 300 * MIB);
    CHECK_EQ_INT(b.bytes, 300 * MIB);
    /* This machine: some budget, below what it has. */
    b = memory_budget_get(0, 50);
    CHECK(b.bytes > 0 && b.bytes <= b.machine / 2);
}

static void test_gauge(void)
{
    struct memory_gauge g = {0};
    memory_gauge_set(&g, 100 * MIB);
    CHECK_EQ_INT(g.low, 90 * MIB);
    CHECK_EQ_INT(memory_gauge_update(&g, 99 * MIB), MEMORY_SAME);
    CHECK_EQ_INT(memory_gauge_update(&g, 100 * MIB), MEMORY_OVER);
    CHECK(g.over);
    CHECK_EQ_INT(memory_gauge_update(&g, 200 * MIB), MEMORY_SAME);
    CHECK_EQ_INT(memory_gauge_update(&g, 95 * MIB), MEMORY_SAME); /* under the budget, above the low-water mark */
    CHECK_EQ_INT(memory_gauge_update(&g, 99 * MIB), MEMORY_SAME);
    CHECK_EQ_INT(memory_gauge_update(&g, 90 * MIB), MEMORY_UNDER);
    CHECK(!g.over);
    CHECK_EQ_INT(memory_gauge_update(&g, 95 * MIB), MEMORY_SAME);
    CHECK_EQ_INT(memory_gauge_update(&g, 100 * MIB), MEMORY_OVER);
    memory_gauge_set(&g, 0); /* a reload removes the budget while over */
    CHECK_EQ_INT(memory_gauge_update(&g, 500 * MIB), MEMORY_UNDER);
    CHECK_EQ_INT(memory_gauge_update(&g, 500 * MIB), MEMORY_SAME);
    memory_gauge_set(&g, 400 * MIB); /* a reload lowers it under what is in use: over at the next sample */
    CHECK_EQ_INT(memory_gauge_update(&g, 500 * MIB), MEMORY_OVER);
    CHECK_EQ_INT(memory_gauge_update(&g, 0), MEMORY_UNDER); /* a failed read (0) never keeps it over */
    CHECK(strcmp(memory_change_str(MEMORY_OVER), "over") == 0);
}

static void test_rss(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    CHECK(fd != -1);
    uint64_t a = memory_rss(fd);
    size_t n = 32 * MIB;
    char *p = malloc(n);
    CHECK(p != NULL);
    memset(p, 1, n);
    uint64_t b = memory_rss(fd); /* the same descriptor, read again from offset 0 */
    CHECK(a > 0);
    CHECK(b >= a + n / 2);
    free(p);
    memory_trim();
    close(fd);
}

int main(void)
{
    RUN(test_parse);
    RUN(test_budget);
    RUN(test_gauge);
    RUN(test_rss);
    return harness_done();
}

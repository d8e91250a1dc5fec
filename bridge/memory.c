/*
 * bridge/memory.c — the memory budget: the machine's memory, the process's RSS, and the gauge (bridge/memory.h).
 *
 * The cgroup limit is read where a process sees its own cgroup when it runs in a container (a cgroup namespace):
 * /sys/fs/cgroup/memory.max (v2), else /sys/fs/cgroup/memory/memory.limit_in_bytes (v1). A process in a nested cgroup
 * without a namespace reads the root's there (no limit): set max_memory_bytes for it.
 *
 * Why trim: freed memory that the allocator keeps for later (glibc keeps it in its arenas, and the top of a heap is only
 * given back past M_TRIM_THRESHOLD) still counts in RSS, so a process whose peers have gone could stay "over" for good.
 * malloc_trim(0) gives every arena's free pages back (madvise), so RSS falls when the memory is really free.
 */
#include "bridge/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MEMORY_CGROUP_V2 "/sys/fs/cgroup/memory.max"
#define MEMORY_CGROUP_V1 "/sys/fs/cgroup/memory/memory.limit_in_bytes"

/* Reads a small file whole into buf (NUL-terminated). Returns false when it cannot. */
static bool read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return false;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return n > 0;
}

uint64_t memory_parse_meminfo(const char *text)
{
    const char *p = strstr(text, "MemTotal:");
    if (!p || (p != text && p[-1] != '\n'))
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long kb = strtoull(p + strlen("MemTotal:"), &end, 10);
    if (errno != 0 || end == p + strlen("MemTotal:") || kb > UINT64_MAX / 1024)
        return 0;
    return (uint64_t)kb * 1024;
}

uint64_t memory_parse_cgroup_limit(const char *text)
{
    if (strncmp(text, "max", 3) == 0)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || v == 0)
        return 0;
    if (v >= (unsigned long long)INT64_MAX - 65536) /* v1's "no limit": INT64_MAX rounded down to a page */
        return 0;
    return (uint64_t)v;
}

uint64_t memory_parse_statm(const char *text, uint64_t page_size)
{
    unsigned long long size = 0, resident = 0;
    if (sscanf(text, "%llu %llu", &size, &resident) != 2 || resident > UINT64_MAX / page_size)
        return 0;
    return (uint64_t)resident * page_size;
}

uint64_t memory_rss(int statm_fd)
{
    char buf[256];
    ssize_t n;
    do {
        n = pread(statm_fd, buf, sizeof(buf) - 1, 0); /* procfs regenerates the text at offset 0 */
    } while (n == -1 && errno == EINTR);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long page = sysconf(_SC_PAGESIZE);
    return memory_parse_statm(buf, page > 0 ? (uint64_t)page : 4096);
}

void memory_trim(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

struct memory_budget memory_budget_for(uint64_t bytes, int pct, uint64_t memtotal, uint64_t cgroup_limit)
{
    if (bytes > 0)
        return (struct memory_budget){.bytes = bytes, .from = "max_memory_bytes"};
    if (pct <= 0)
        return (struct memory_budget){.from = "off"};
    uint64_t machine = memtotal;
    const char *from = "MemTotal";
    if (cgroup_limit > 0 && (machine == 0 || cgroup_limit < machine)) {
        machine = cgroup_limit;
        from = "the cgroup memory limit";
    }
    if (machine == 0)
        return (struct memory_budget){.from = "unknown"};
    return (struct memory_budget){.bytes = machine / 100 * (uint64_t)pct, .machine = machine, .from = from};
}

struct memory_budget memory_budget_get(uint64_t bytes, int pct)
{
    char buf[4096];
    uint64_t memtotal = 0, cg = 0;
    if (bytes == 0 && pct > 0) {
        if (read_small("/proc/meminfo", buf, sizeof(buf)))
            memtotal = memory_parse_meminfo(buf);
        if (read_small(MEMORY_CGROUP_V2, buf, sizeof(buf)) || read_small(MEMORY_CGROUP_V1, buf, sizeof(buf)))
            cg = memory_parse_cgroup_limit(buf);
    }
    return memory_budget_for(bytes, pct, memtotal, cg);
}

const char *memory_change_str(enum memory_change ch)
{
    switch (ch) {
    case MEMORY_SAME:
        return "same";
    case MEMORY_OVER:
        return "over";
    case MEMORY_UNDER:
        return "under";
    }
    return "?";
}

void memory_gauge_set(struct memory_gauge *g, uint64_t budget)
{
    g->budget = budget;
    g->low = budget / 100 * MEMORY_LOW_WATER_PCT;
}

enum memory_change memory_gauge_update(struct memory_gauge *g, uint64_t rss)
{
    if (!g->over && g->budget > 0 && rss >= g->budget) {
        g->over = true;
        return MEMORY_OVER;
    }
    if (g->over && (g->budget == 0 || rss <= g->low)) {
        g->over = false;
        return MEMORY_UNDER;
    }
    return MEMORY_SAME;
}

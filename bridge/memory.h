/*
 * bridge/memory.h — the process's memory budget (max_memory_bytes, max_memory_pct): what it is, what the process uses,
 * and when it is over.
 *
 * What is measured is the process's resident set (RSS, /proc/self/statm): it counts everything (buffers, inflaters,
 * TLS, the allocator's own slack), so no buffer can be forgotten. The budget is max_memory_bytes, or max_memory_pct of
 * the machine (MemTotal, or the cgroup's memory limit when that is lower) when it is 0; 0 % means no budget. A gauge
 * goes over when a sample reaches the budget and back under when one falls to the low-water mark
 * (MEMORY_LOW_WATER_PCT of the budget), so a process hovering at the line does not flap. What happens over the budget
 * (the acceptor refuses, the workers stop reading) is bridge/main.c's and bridge/acceptor.c's; this file only reads
 * numbers. No libevent: the parsers and the gauge are unit-tested (tests/unit/test-bridge-memory.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Back under the budget once RSS falls to this share of it. */
#define MEMORY_LOW_WATER_PCT 90

/* The budget and where it came from (for the startup log). */
struct memory_budget {
    uint64_t bytes;   /* 0: no budget */
    uint64_t machine; /* MemTotal or the cgroup limit it was derived from; 0 when configured or unknown */
    const char *from; /* "max_memory_bytes", "MemTotal", "the cgroup memory limit", "off", "unknown" */
};

/*
 * The budget for max_memory_bytes `bytes` and max_memory_pct `pct`: `bytes` when not 0; else `pct` % of the smaller of
 * `memtotal` and `cgroup_limit` (each 0 when unknown or unlimited); 0 when pct is 0 or both are unknown.
 */
struct memory_budget memory_budget_for(uint64_t bytes, int pct, uint64_t memtotal, uint64_t cgroup_limit);

/* The budget from the configuration and this machine (reads /proc/meminfo and the cgroup limit). */
struct memory_budget memory_budget_get(uint64_t bytes, int pct);

/* MemTotal in bytes from the text of /proc/meminfo; 0 when absent. */
uint64_t memory_parse_meminfo(const char *text);

/*
 * A cgroup memory limit in bytes from the text of memory.max (v2: a number or "max") or memory.limit_in_bytes (v1: a
 * number; one within a page of INT64_MAX means none). 0 when unlimited or unreadable.
 */
uint64_t memory_parse_cgroup_limit(const char *text);

/* Resident bytes from the text of /proc/self/statm (second field, pages of `page_size`); 0 when unreadable. */
uint64_t memory_parse_statm(const char *text, uint64_t page_size);

/* The process's resident bytes now, read from `statm_fd` (an open /proc/self/statm); 0 when it cannot be read. */
uint64_t memory_rss(int statm_fd);

/* Gives the allocator's free memory back to the system (glibc malloc_trim), so that RSS follows what is in use. */
void memory_trim(void);

/* Over or under the budget, with hysteresis. */
struct memory_gauge {
    uint64_t budget; /* 0: never over */
    uint64_t low;    /* MEMORY_LOW_WATER_PCT of budget */
    bool over;
};

enum memory_change {
    MEMORY_SAME = 0,
    MEMORY_OVER = 1,  /* a sample reached the budget */
    MEMORY_UNDER = 2, /* a sample fell to the low-water mark (or the budget went away) */
};

const char *memory_change_str(enum memory_change ch);

/* Sets the budget (startup, reload); the state is kept and the next update decides. */
void memory_gauge_set(struct memory_gauge *g, uint64_t budget);

/* Takes one sample `rss`. Returns the change it makes. */
enum memory_change memory_gauge_update(struct memory_gauge *g, uint64_t rss);

/*
 * procstat.h — the machine's capacity and use, read from /proc (Linux).
 *
 * The parsers take the file's text so tests can feed fixtures; the readers wrap them.
 */
#ifndef HODEI_CLI_PROCSTAT_H
#define HODEI_CLI_PROCSTAT_H

#include <stdint.h>

/* From /proc/meminfo, in kB. */
struct meminfo {
    uint64_t total_kb;
    uint64_t available_kb;
};

/* Aggregate "cpu" line of /proc/stat, in clock ticks. */
struct cpu_times {
    uint64_t busy;
    uint64_t total;
};

/* 0 when text holds MemTotal and MemAvailable, -1 otherwise. */
int    meminfo_parse(const char *text, struct meminfo *out);
/* 0 when text starts with a well-formed aggregate "cpu" line, -1 otherwise. */
int    cpu_times_parse(const char *text, struct cpu_times *out);
/* Machine-wide CPU use between two samples, 0..100 (0 when no tick elapsed). */
double cpu_percent_between(const struct cpu_times *before, const struct cpu_times *after);
/* MemTotal - MemAvailable, in MB. */
double meminfo_used_mb(const struct meminfo *m);

int    meminfo_read(struct meminfo *out);     /* /proc/meminfo */
int    cpu_times_read(struct cpu_times *out); /* /proc/stat */

#endif

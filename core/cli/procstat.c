/*
 * procstat.c — /proc/meminfo and /proc/stat parsers.
 */
#include "procstat.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Value of a "Key:   1234 kB" line of /proc/meminfo. */
static int meminfo_field(const char *text, const char *key, uint64_t *out)
{
    size_t n = strlen(key);
    const char *line = text;
    while (line) {
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            return sscanf(line + n + 1, "%" SCNu64, out) == 1 ? 0 : -1;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

int meminfo_parse(const char *text, struct meminfo *out)
{
    if (meminfo_field(text, "MemTotal", &out->total_kb) < 0 ||
        meminfo_field(text, "MemAvailable", &out->available_kb) < 0)
        return -1;
    return 0;
}

int cpu_times_parse(const char *text, struct cpu_times *out)
{
    /* user nice system idle iowait irq softirq steal; guest time is already inside user. */
    uint64_t t[8] = {0};
    if (strncmp(text, "cpu ", 4) != 0)
        return -1;
    int n = sscanf(text + 4, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                         " %" SCNu64 " %" SCNu64 " %" SCNu64,
                   &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7]);
    if (n < 4)
        return -1;
    uint64_t total = 0;
    for (int i = 0; i < 8; i++)
        total += t[i];
    out->total = total;
    out->busy = total - t[3] - t[4];   /* idle and iowait are not use */
    return 0;
}

double cpu_percent_between(const struct cpu_times *before, const struct cpu_times *after)
{
    if (after->total <= before->total || after->busy < before->busy)
        return 0.0;
    double pct = 100.0 * (double)(after->busy - before->busy) / (double)(after->total - before->total);
    return pct > 100.0 ? 100.0 : pct;
}

double meminfo_used_mb(const struct meminfo *m)
{
    uint64_t used = m->total_kb > m->available_kb ? m->total_kb - m->available_kb : 0;
    return (double)used / 1024.0;
}

/* Reads a small /proc file whole into buf (NUL-terminated); -1 when it cannot. */
static int read_small_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    int err = ferror(f);
    fclose(f);
    if (err)
        return -1;
    buf[n] = '\0';
    return 0;
}

int meminfo_read(struct meminfo *out)
{
    char buf[8192];
    return read_small_file("/proc/meminfo", buf, sizeof buf) < 0 ? -1 : meminfo_parse(buf, out);
}

int cpu_times_read(struct cpu_times *out)
{
    char buf[512];   /* the aggregate line comes first */
    return read_small_file("/proc/stat", buf, sizeof buf) < 0 ? -1 : cpu_times_parse(buf, out);
}

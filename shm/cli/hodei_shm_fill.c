/*
 * hodei-shm-fill [--tenants N] [--workers N] [--error-types N] [--event-types N] [--seed N] PATH
 *
 * Replaces PATH with a valid segment holding one populated snapshot (deterministic, non-zero
 * values), so tests and benchmarks get realistic or huge snapshots without the daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hodei_fill.h"
#include "hodei_segment.h"
#include "hodei_snapshot.h"

static void usage(void)
{
    fprintf(stderr, "usage: hodei-shm-fill [--tenants N] [--workers N] [--error-types N] "
                    "[--event-types N] [--seed N] PATH\n");
    exit(2);
}

static unsigned long number(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || s[0] == '-')
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct hodei_fill_params p = HODEI_FILL_DEFAULTS;
    const char *path = NULL;

    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--tenants") == 0)
            p.tenants = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--workers") == 0)
            p.workers = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--error-types") == 0)
            p.error_types = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--event-types") == 0)
            p.event_types = (unsigned) number(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0)
            p.seed = number(argv[++i]);
        else if (argv[i][0] == '-' || path)
            usage();
        else
            path = argv[i];
    }
    if (path == NULL)
        usage();

    uint32_t caps[HODEI_F_COUNT];
    hodei_fill_caps(&p, caps);
    size_t cap = hodei_payload_bound(caps);
    void *buf = aligned_alloc(8, cap);
    size_t len = buf ? hodei_fill_build(buf, cap, &p) : 0;
    if (len == 0) {
        fprintf(stderr, "hodei-shm-fill: parameters out of range (tenants/workers 1..1000000, "
                        "error types 1..%d, event types 1..%d)\n", HODEI_ERR_COUNT, HODEI_EV_COUNT);
        return 1;
    }
    struct hodei_seg_writer w;
    char err[256];
    if (hodei_seg_create(&w, path, HODEI_SEG_MIN_SLOTS, len, err, sizeof(err)) != 0
        || hodei_seg_publish(&w, buf, len) != 0) {
        fprintf(stderr, "hodei-shm-fill: %s\n", err);
        return 1;
    }
    hodei_seg_close(&w);
    free(buf);
    return 0;
}

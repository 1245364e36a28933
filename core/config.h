/*
 * config.h — the daemon's settings: defaults, then a JSON file (--config), then flags.
 * Every file key has the flag of the same name with '-' for '_' (e.g. max_tenants and
 * --max-tenants).
 */
#ifndef HODEI_CORE_CONFIG_H
#define HODEI_CORE_CONFIG_H

#include <stdint.h>
#include "scheduler.h"

struct config {
    char     listen_host[64];     /* IPv4 address */
    unsigned listen_port;
    char     segment[4096];
    unsigned publish_interval_ms;
    unsigned sse_queue;           /* events an SSE client may have waiting */
    int      log_level;
    struct sched_config sched;
};

/* Fills cfg from defaults, the file named by --config and the flags.  Returns 0, 1 when the
 * program should exit 0 (--help, --version), or -1 after printing why to stderr. */
int config_load(struct config *cfg, int argc, char **argv, const char *version);

#endif

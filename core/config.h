/*
 * config.h — the daemon's settings: defaults, then a JSON file (--config), then flags.
 * Every file key has the flag of the same name with '-' for '_' (e.g. max_tenants and
 * --max-tenants).
 */
#ifndef HODEI_CORE_CONFIG_H
#define HODEI_CORE_CONFIG_H

#include <netinet/in.h>
#include <stdint.h>
#include "scheduler.h"

#define CONFIG_TRUSTED_PROXIES_MAX 16

struct config {
    char     listen_host[64];     /* IPv4 address */
    unsigned listen_port;
    char     segment[4096];
    unsigned publish_interval_ms;
    unsigned sse_queue;           /* events an SSE client may have waiting */
    int      log_level;
    /* access (DESIGN §9) */
    char     tokens[4096];        /* the tokens file, "" with insecure_no_auth */
    int      insecure_no_auth;    /* every request is admin: loopback only */
    /* per-client resources */
    unsigned max_connections;     /* open connections overall */
    unsigned max_connections_per_ip;   /* from one address, trusted proxies exempt */
    unsigned ntrusted;
    struct in_addr trusted_proxies[CONFIG_TRUSTED_PROXIES_MAX];
    unsigned idle_timeout_s;      /* a connection with no traffic for this long is closed */
    unsigned max_event_streams;   /* open GET /events streams overall */
    struct sched_config sched;
};

/* Fills cfg from defaults, the file named by --config and the flags.  Returns 0, 1 when the
 * program should exit 0 (--help, --version), or -1 after printing why to stderr. */
int config_load(struct config *cfg, int argc, char **argv, const char *version);

#endif

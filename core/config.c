/* config.c — defaults, the JSON config file and the command line (see config.h). */
#include "config.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum key {
    K_LISTEN, K_SEGMENT, K_PUBLISH_INTERVAL_MS, K_HEARTBEAT_TIMEOUT_S, K_WORKER_TIMEOUT_S,
    K_MAX_TENANTS, K_MAX_WORKERS, K_MAX_QUEUED_JOBS, K_JOB_RETENTION, K_SSE_QUEUE, K_LOG_LEVEL,
    K_COUNT
};

static const char *const key_names[K_COUNT] = {
    "listen", "segment", "publish_interval_ms", "heartbeat_timeout_s", "worker_timeout_s",
    "max_tenants", "max_workers", "max_queued_jobs", "job_retention", "sse_queue", "log_level" };

static const char usage[] =
    "usage: hodei-scheduler [--config FILE] [--listen ADDR:PORT] [--segment PATH]\n"
    "                       [--publish-interval-ms N] [--heartbeat-timeout-s S]\n"
    "                       [--worker-timeout-s S] [--max-tenants N] [--max-workers N]\n"
    "                       [--max-queued-jobs N] [--job-retention N] [--sse-queue N]\n"
    "                       [--log-level error|warn|info|debug] [--version]\n"
    "defaults: --listen 127.0.0.1:8081 --segment /dev/shm/hodei-metrics\n"
    "          --publish-interval-ms 250 --heartbeat-timeout-s 10 --worker-timeout-s 30\n"
    "          --max-tenants 1000 --max-workers 10000 --max-queued-jobs 100000\n"
    "          --job-retention 10000 --sse-queue 1024 --log-level info\n";

static void defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8081;
    strcpy(cfg->segment, "/dev/shm/hodei-metrics");
    cfg->publish_interval_ms = 250;
    cfg->sse_queue = 1024;
    cfg->log_level = LOG_INFO;
    cfg->sched.heartbeat_timeout = 10;
    cfg->sched.worker_timeout = 30;
    cfg->sched.max_tenants = 1000;
    cfg->sched.max_workers = 10000;
    cfg->sched.max_jobs = 100000;
    cfg->sched.job_retention = 10000;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, uint32_t *out)
{
    char *end;
    if (!*s || *s == '-')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v < min || v > max)
        return -1;
    *out = (uint32_t) v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v <= 0 || v > 86400)
        return -1;
    *out = v;
    return 0;
}

static int parse_listen(struct config *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    struct in_addr addr;
    uint32_t port;
    if (!colon || (size_t) (colon - s) >= sizeof cfg->listen_host)
        return -1;
    char host[sizeof cfg->listen_host];
    memcpy(host, s, (size_t) (colon - s));
    host[colon - s] = '\0';
    if (inet_pton(AF_INET, host, &addr) != 1 || parse_uint(colon + 1, 1, 65535, &port) < 0)
        return -1;
    strcpy(cfg->listen_host, host);
    cfg->listen_port = port;
    return 0;
}

/* Applies one setting given as text; returns 0 or -1. */
static int set(struct config *cfg, enum key k, const char *v)
{
    switch (k) {
    case K_LISTEN:
        return parse_listen(cfg, v);
    case K_SEGMENT:
        if (!*v || strlen(v) >= sizeof cfg->segment)
            return -1;
        strcpy(cfg->segment, v);
        return 0;
    case K_PUBLISH_INTERVAL_MS:
        return parse_uint(v, 10, 60000, &cfg->publish_interval_ms);
    case K_HEARTBEAT_TIMEOUT_S:
        return parse_seconds(v, &cfg->sched.heartbeat_timeout);
    case K_WORKER_TIMEOUT_S:
        return parse_seconds(v, &cfg->sched.worker_timeout);
    case K_MAX_TENANTS:
        return parse_uint(v, 1, 1000000, &cfg->sched.max_tenants);
    case K_MAX_WORKERS:
        return parse_uint(v, 1, 1000000, &cfg->sched.max_workers);
    case K_MAX_QUEUED_JOBS:
        return parse_uint(v, 1, 100000000, &cfg->sched.max_jobs);
    case K_JOB_RETENTION:
        return parse_uint(v, 0, 100000000, &cfg->sched.job_retention);
    case K_SSE_QUEUE:
        return parse_uint(v, 1, 1000000, &cfg->sse_queue);
    case K_LOG_LEVEL:
        if (log_level_parse(v) < 0)
            return -1;
        cfg->log_level = log_level_parse(v);
        return 0;
    default:
        return -1;
    }
}

static int load_file(struct config *cfg, const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fprintf(stderr, "hodei-scheduler: %s:%d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    int rc = 0;
    const char *key;
    json_t *value;
    if (!json_is_object(root)) {
        fprintf(stderr, "hodei-scheduler: %s: the configuration must be a JSON object\n", path);
        rc = -1;
    }
    json_object_foreach(root, key, value) {
        int k = hodei_name_index(key_names, K_COUNT, key);
        char text[4096];
        if (json_is_string(value))
            snprintf(text, sizeof text, "%s", json_string_value(value));
        else if (json_is_integer(value))
            snprintf(text, sizeof text, "%lld", (long long) json_integer_value(value));
        else if (json_is_real(value))
            snprintf(text, sizeof text, "%.17g", json_real_value(value));
        else
            text[0] = '\0';
        if (k < 0 || !text[0] || set(cfg, (enum key) k, text) < 0) {
            fprintf(stderr, "hodei-scheduler: %s: bad or unknown setting '%s'\n", path, key);
            rc = -1;
            break;
        }
    }
    json_decref(root);
    return rc;
}

int config_load(struct config *cfg, int argc, char **argv, const char *version)
{
    defaults(cfg);
    enum { O_CONFIG = K_COUNT, O_HELP, O_VERSION };
    struct option opts[K_COUNT + 4];
    char names[K_COUNT][32];
    for (int k = 0; k < K_COUNT; k++) {
        snprintf(names[k], sizeof names[k], "%s", key_names[k]);
        for (char *c = names[k]; *c; c++)
            if (*c == '_')
                *c = '-';
        opts[k] = (struct option) { names[k], required_argument, NULL, k };
    }
    opts[K_COUNT] = (struct option) { "config", required_argument, NULL, O_CONFIG };
    opts[K_COUNT + 1] = (struct option) { "help", no_argument, NULL, O_HELP };
    opts[K_COUNT + 2] = (struct option) { "version", no_argument, NULL, O_VERSION };
    opts[K_COUNT + 3] = (struct option) { 0, 0, 0, 0 };

    /* the file first, so that flags override it */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (c == O_CONFIG && load_file(cfg, optarg) < 0)
            return -1;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == O_CONFIG)
            continue;
        if (c == O_HELP) {
            fputs(usage, stdout);
            return 1;
        }
        if (c == O_VERSION) {
            printf("hodei-scheduler %s\n", version);
            return 1;
        }
        if (c < 0 || c >= K_COUNT || set(cfg, (enum key) c, optarg) < 0) {
            if (c >= 0 && c < K_COUNT)
                fprintf(stderr, "hodei-scheduler: bad value for --%s: %s\n", names[c], optarg);
            fputs(usage, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hodei-scheduler: unexpected argument '%s'\n%s", argv[optind], usage);
        return -1;
    }
    if (cfg->sched.worker_timeout <= cfg->sched.heartbeat_timeout) {
        fprintf(stderr, "hodei-scheduler: worker_timeout_s must be longer than "
                        "heartbeat_timeout_s\n");
        return -1;
    }
    return 0;
}

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
    K_TOKENS, K_INSECURE_NO_AUTH, K_MAX_CONNECTIONS, K_MAX_CONNECTIONS_PER_IP,
    K_TRUSTED_PROXIES, K_IDLE_TIMEOUT_S, K_MAX_EVENT_STREAMS, K_MAX_JOBS_PER_TENANT,
    K_ASSIGNMENT_LEASE_S, K_OUTPUT_MEMORY_MB,
    K_COUNT
};

static const char *const key_names[K_COUNT] = {
    "listen", "segment", "publish_interval_ms", "heartbeat_timeout_s", "worker_timeout_s",
    "max_tenants", "max_workers", "max_queued_jobs", "job_retention", "sse_queue", "log_level",
    "tokens", "insecure_no_auth", "max_connections", "max_connections_per_ip",
    "trusted_proxies", "idle_timeout_s", "max_event_streams", "max_jobs_per_tenant",
    "assignment_lease_s", "output_memory_mb" };

static const char usage[] =
    "usage: hodei-scheduler (--tokens FILE | --insecure-no-auth) [--config FILE]\n"
    "                       [--listen ADDR:PORT] [--segment PATH] [--publish-interval-ms N]\n"
    "                       [--heartbeat-timeout-s S] [--worker-timeout-s S]\n"
    "                       [--max-tenants N] [--max-workers N] [--max-queued-jobs N]\n"
    "                       [--max-jobs-per-tenant N] [--assignment-lease-s S]\n"
    "                       [--job-retention N] [--output-memory-mb N] [--sse-queue N]\n"
    "                       [--max-event-streams N] [--max-connections N]\n"
    "                       [--max-connections-per-ip N] [--trusted-proxies ADDR,...]\n"
    "                       [--idle-timeout-s S] [--log-level error|warn|info|debug]\n"
    "                       [--version]\n"
    "defaults: --listen 127.0.0.1:8081 --segment /dev/shm/hodei-metrics\n"
    "          --publish-interval-ms 250 --heartbeat-timeout-s 10 --worker-timeout-s 30\n"
    "          --max-tenants 1000 --max-workers 10000 --max-queued-jobs 100000\n"
    "          --max-jobs-per-tenant 10000 --assignment-lease-s 30 --job-retention 10000\n"
    "          --output-memory-mb 64 --sse-queue 1024 --max-event-streams 256\n"
    "          --max-connections 10000 --max-connections-per-ip 64\n"
    "          --trusted-proxies 127.0.0.1 --idle-timeout-s 60 --log-level info\n"
    "--insecure-no-auth lets every request in as an admin; it refuses a non-loopback --listen.\n";

static void defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8081;
    strcpy(cfg->segment, "/dev/shm/hodei-metrics");
    cfg->publish_interval_ms = 250;
    cfg->sse_queue = 1024;
    cfg->log_level = LOG_INFO;
    cfg->max_connections = 10000;
    cfg->max_connections_per_ip = 64;
    cfg->ntrusted = 1;
    inet_pton(AF_INET, "127.0.0.1", &cfg->trusted_proxies[0]);
    cfg->idle_timeout_s = 60;
    cfg->max_event_streams = 256;
    cfg->sched.max_jobs_per_tenant = 10000;
    cfg->sched.assignment_lease = 30;
    cfg->sched.output_budget = (size_t) 64 << 20;
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

/* ADDR[,ADDR...]: IPv4 addresses; "" for none. */
static int parse_proxies(struct config *cfg, const char *s)
{
    char list[CONFIG_TRUSTED_PROXIES_MAX * 16 + 1];
    if (strlen(s) >= sizeof list)
        return -1;
    strcpy(list, s);
    cfg->ntrusted = 0;
    for (char *save = NULL, *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        if (cfg->ntrusted == CONFIG_TRUSTED_PROXIES_MAX
            || inet_pton(AF_INET, a, &cfg->trusted_proxies[cfg->ntrusted]) != 1)
            return -1;
        cfg->ntrusted++;
    }
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* Applies one setting given as text; returns 0 or -1. */
static int set(struct config *cfg, enum key k, const char *v)
{
    uint32_t n;
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
    case K_TOKENS:
        if (!*v || strlen(v) >= sizeof cfg->tokens)
            return -1;
        strcpy(cfg->tokens, v);
        return 0;
    case K_INSECURE_NO_AUTH:
        return parse_bool(v, &cfg->insecure_no_auth);
    case K_MAX_CONNECTIONS:
        return parse_uint(v, 16, 1000000, &cfg->max_connections);
    case K_MAX_CONNECTIONS_PER_IP:
        return parse_uint(v, 1, 1000000, &cfg->max_connections_per_ip);
    case K_TRUSTED_PROXIES:
        return parse_proxies(cfg, v);
    case K_IDLE_TIMEOUT_S:
        return parse_uint(v, 1, 86400, &cfg->idle_timeout_s);
    case K_MAX_EVENT_STREAMS:
        return parse_uint(v, 1, 1000000, &cfg->max_event_streams);
    case K_MAX_JOBS_PER_TENANT:
        return parse_uint(v, 1, 100000000, &cfg->sched.max_jobs_per_tenant);
    case K_ASSIGNMENT_LEASE_S:
        return parse_seconds(v, &cfg->sched.assignment_lease);
    case K_OUTPUT_MEMORY_MB:
        if (parse_uint(v, 0, 1024 * 1024, &n) < 0)
            return -1;
        cfg->sched.output_budget = (size_t) n << 20;
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
        else if (json_is_boolean(value))
            snprintf(text, sizeof text, "%s", json_is_true(value) ? "true" : "false");
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
        opts[k] = (struct option) { names[k], k == K_INSECURE_NO_AUTH ? no_argument
                                                                      : required_argument,
                                    NULL, k };
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
        if (c < 0 || c >= K_COUNT || set(cfg, (enum key) c, optarg ? optarg : "true") < 0) {
            if (c >= 0 && c < K_COUNT)
                fprintf(stderr, "hodei-scheduler: bad value for --%s: %s\n", names[c],
                        optarg ? optarg : "");
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
    struct in_addr listen;
    inet_pton(AF_INET, cfg->listen_host, &listen);
    if (cfg->insecure_no_auth && cfg->tokens[0]) {
        fprintf(stderr, "hodei-scheduler: --tokens and --insecure-no-auth exclude each other\n");
        return -1;
    }
    if (cfg->insecure_no_auth && (ntohl(listen.s_addr) >> 24) != 127) {
        fprintf(stderr, "hodei-scheduler: --insecure-no-auth serves loopback only; %s is not a "
                        "loopback address\n", cfg->listen_host);
        return -1;
    }
    if (!cfg->insecure_no_auth && !cfg->tokens[0]) {
        fprintf(stderr, "hodei-scheduler: no tokens file: give --tokens FILE (create tokens "
                        "with: hodeictl token create --tokens FILE ...), or --insecure-no-auth "
                        "on loopback\n");
        return -1;
    }
    return 0;
}

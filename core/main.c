/* main.c — hodei-scheduler: configuration, start-up, SIGHUP (tokens file re-read) and a
 * clean stop on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "alloc.h"
#include "api.h"
#include "auth.h"
#include "bus.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"

#ifndef HODEI_VERSION
#define HODEI_VERSION "0.0.0"
#endif

/* Descriptors the daemon keeps besides connections: segment, logs, epoll sets, ... */
#define FD_RESERVE 64

/* Raises the descriptor limit as far as allowed, and keeps the connection cap below it. */
static void raise_nofile(struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t) cfg->max_connections + FD_RESERVE) {
        unsigned cap = rl.rlim_cur > FD_RESERVE + 16 ? (unsigned) rl.rlim_cur - FD_RESERVE : 16;
        log_warn("the descriptor limit is %llu: at most %u connections instead of %u (raise "
                 "LimitNOFILE)", (unsigned long long) rl.rlim_cur, cap, cfg->max_connections);
        cfg->max_connections = cap;
    }
}

int main(int argc, char **argv)
{
    static struct config cfg;
    int rc = config_load(&cfg, argc, argv, HODEI_VERSION);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    log_threshold = (enum log_level) cfg.log_level;
    alloc_install();
    raise_nofile(&cfg);

    struct auth *auth = NULL;
    if (cfg.insecure_no_auth) {
        log_warn("--insecure-no-auth: every request on %s:%u is an admin's", cfg.listen_host,
                 cfg.listen_port);
    } else {
        char err[512];
        auth = auth_open(cfg.tokens, err, sizeof err);
        if (!auth) {
            log_error("cannot use the tokens file: %s", err);
            return 1;
        }
    }

    /* every thread inherits this mask; only sigwait below sees the signals */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct engine engine;
    static struct metrics_publisher publisher;
    struct bus *bus = bus_new();
    if (engine_start(&engine, &cfg.sched, bus) < 0)
        return 1;
    if (metrics_start(&publisher, cfg.segment, &engine.sched, bus, HODEI_VERSION,
                      cfg.publish_interval_ms, cfg.sched.max_tenants, cfg.sched.max_workers) < 0)
        return 1;
    struct api *api = api_start(&cfg, &engine, bus, auth);
    if (!api)
        return 1;
    log_info("hodei-scheduler %s listening on %s:%u (max %u tenants, %u workers, %u unfinished "
             "jobs, %u connections, %u per client address)", HODEI_VERSION, cfg.listen_host,
             cfg.listen_port, cfg.sched.max_tenants, cfg.sched.max_workers, cfg.sched.max_jobs,
             cfg.max_connections, cfg.max_connections_per_ip);

    int sig = 0;
    for (;;) {
        sigwait(&signals, &sig);
        if (sig != SIGHUP)
            break;
        char err[512];
        if (!auth)
            log_info("SIGHUP: no tokens file to re-read (--insecure-no-auth)");
        else if (auth_reload(auth, err, sizeof err) < 0)
            log_error("SIGHUP: the tokens file was not re-read, the previous tokens stay: %s",
                      err);
    }
    log_info("%s: shutting down", strsignal(sig));
    api_stop(api);
    engine_stop(&engine);
    metrics_stop(&publisher);
    engine_destroy(&engine);
    bus_free(bus);
    auth_free(auth);
    log_info("stopped");
    return 0;
}

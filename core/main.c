/* main.c — hodei-scheduler: configuration, start-up, and a clean stop on SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bus.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"

#ifndef HODEI_VERSION
#define HODEI_VERSION "0.0.0"
#endif

int main(int argc, char **argv)
{
    static struct config cfg;
    int rc = config_load(&cfg, argc, argv, HODEI_VERSION);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    log_threshold = (enum log_level) cfg.log_level;

    /* every thread inherits this mask; only sigwait below sees the signals */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct engine engine;
    static struct metrics_publisher publisher;
    struct bus *bus = bus_new();
    if (!bus || engine_start(&engine, &cfg.sched, bus) < 0)
        return 1;
    if (metrics_start(&publisher, cfg.segment, &engine.sched, bus, HODEI_VERSION,
                      cfg.publish_interval_ms, cfg.sched.max_tenants, cfg.sched.max_workers) < 0)
        return 1;
    struct api *api = api_start(&cfg, &engine, bus, HODEI_VERSION);
    if (!api)
        return 1;
    log_info("hodei-scheduler %s listening on %s:%u (max %u tenants, %u workers, %u unfinished "
             "jobs)", HODEI_VERSION, cfg.listen_host, cfg.listen_port, cfg.sched.max_tenants,
             cfg.sched.max_workers, cfg.sched.max_jobs);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("%s: shutting down", strsignal(sig));
    api_stop(api);
    engine_stop(&engine);
    metrics_stop(&publisher);
    engine_destroy(&engine);
    bus_free(bus);
    log_info("stopped");
    return 0;
}
